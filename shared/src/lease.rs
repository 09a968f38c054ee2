//! A node's lease: how long it may keep serving users on its own after it last heard the
//! coordinator. Pure bookkeeping: the agent passes in when it sent each heartbeat and when a
//! grant came back; the time is the caller's.
//!
//! The coordinator grants each heartbeat it accepts (`LeaseGrant {seq}`), and grants nothing
//! on a connection it has given up on. A grant for heartbeat `seq` makes the lease valid
//! until `sent(seq) + duration` by the node's own monotonic clock: counted from when the node
//! *sent* the heartbeat, which is before the coordinator received it, so the node's lease
//! always ends before the coordinator's view of it does. The coordinator declares a node lost
//! — and starts a cloud copy of its sessions — only after `lost_within` of silence, and the
//! duration it grants is a fifth shorter than that (room for the two clocks' rates to differ),
//! so a node stops serving before a copy can start elsewhere: never two copies taking input.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How many heartbeats may wait for their grant; older ones are forgotten (their grant, if it
/// ever comes, is ignored — a later one supersedes it anyway).
const OUTSTANDING: usize = 64;

/// The lease a coordinator grants for a loss bound of `lost_within`: a fifth shorter, so a
/// node whose clock runs up to 25 % slow still stops first.
pub fn duration_for(lost_within: Duration) -> Duration {
    lost_within * 4 / 5
}

/// The node's side of the lease.
#[derive(Debug, Clone)]
pub struct Lease {
    duration: Duration,
    /// Heartbeats sent on this connection and not yet granted: sequence number and when.
    outstanding: VecDeque<(u64, Instant)>,
    valid_until: Option<Instant>,
}

impl Lease {
    /// No lease yet: nothing is served until a grant arrives.
    pub fn new(duration: Duration) -> Self {
        Self {
            duration,
            outstanding: VecDeque::new(),
            valid_until: None,
        }
    }

    /// A new connection: its heartbeats count from the start again. What was granted holds.
    pub fn new_connection(&mut self) {
        self.outstanding.clear();
    }

    /// What each grant is worth from now on (the welcome says).
    pub fn set_duration(&mut self, duration: Duration) {
        self.duration = duration;
    }

    /// Heartbeat `seq` (0: the hello) left at `at`.
    pub fn sent(&mut self, seq: u64, at: Instant) {
        if self.outstanding.len() == OUTSTANDING {
            self.outstanding.pop_front();
        }
        self.outstanding.push_back((seq, at));
    }

    /// The coordinator granted heartbeat `seq`. Grants only ever extend the lease.
    pub fn granted(&mut self, seq: u64) {
        let Some(position) = self.outstanding.iter().position(|(s, _)| *s == seq) else {
            return;
        };
        let sent = self.outstanding[position].1;
        self.outstanding.drain(..=position);
        let until = sent + self.duration;
        self.valid_until = Some(self.valid_until.map_or(until, |old| old.max(until)));
    }

    /// Whether the node may serve users on its own at `now`.
    pub fn holds(&self, now: Instant) -> bool {
        self.valid_until.is_some_and(|until| now < until)
    }

    /// When it runs out, unless renewed first.
    pub fn valid_until(&self) -> Option<Instant> {
        self.valid_until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn nothing_holds_before_a_grant() {
        let mut lease = Lease::new(SECOND);
        let t0 = Instant::now();
        assert!(!lease.holds(t0));
        lease.sent(0, t0);
        assert!(!lease.holds(t0), "sending is not being granted");
        lease.granted(0);
        assert!(lease.holds(t0 + SECOND / 2));
    }

    #[test]
    fn a_grant_counts_from_when_its_heartbeat_left() {
        let mut lease = Lease::new(SECOND);
        let t0 = Instant::now();
        lease.sent(1, t0);
        // Granted late (a slow link): the lease still ends a second after sending.
        lease.granted(1);
        assert!(lease.holds(t0 + SECOND - Duration::from_millis(1)));
        assert!(!lease.holds(t0 + SECOND));
        assert_eq!(lease.valid_until(), Some(t0 + SECOND));
    }

    #[test]
    fn grants_only_extend_and_a_late_old_grant_changes_nothing() {
        let mut lease = Lease::new(SECOND);
        let t0 = Instant::now();
        lease.sent(1, t0);
        lease.sent(2, t0 + SECOND / 2);
        lease.granted(2);
        assert_eq!(lease.valid_until(), Some(t0 + SECOND * 3 / 2));
        // 1 was superseded by 2's grant and forgotten.
        lease.granted(1);
        assert_eq!(lease.valid_until(), Some(t0 + SECOND * 3 / 2));
        // A grant for a heartbeat never sent (or of another connection) is ignored.
        lease.granted(9);
        assert_eq!(lease.valid_until(), Some(t0 + SECOND * 3 / 2));
    }

    #[test]
    fn a_new_connection_forgets_pending_heartbeats_but_keeps_the_lease() {
        let mut lease = Lease::new(SECOND);
        let t0 = Instant::now();
        lease.sent(1, t0);
        lease.granted(1);
        lease.sent(2, t0 + SECOND / 2);
        lease.new_connection();
        lease.set_duration(SECOND * 2);
        // The old connection's heartbeat 2 is gone; the new one numbers from 0 again.
        lease.granted(2);
        assert_eq!(lease.valid_until(), Some(t0 + SECOND));
        lease.sent(0, t0 + SECOND / 2);
        lease.granted(0);
        assert_eq!(lease.valid_until(), Some(t0 + SECOND * 5 / 2));
    }

    #[test]
    fn outstanding_heartbeats_are_bounded() {
        let mut lease = Lease::new(SECOND);
        let t0 = Instant::now();
        for seq in 0..1000 {
            lease.sent(seq, t0);
        }
        assert!(lease.outstanding.len() <= OUTSTANDING);
        lease.granted(999);
        assert!(lease.holds(t0));
    }

    #[test]
    fn the_lease_ends_before_the_loss_bound_with_room_for_clock_rates() {
        let lost_within = Duration::from_secs(2);
        let lease = duration_for(lost_within);
        assert_eq!(lease, Duration::from_millis(1600));
        // A node clock 25 % slow still ends its lease by the coordinator's bound.
        assert!(lease.mul_f64(1.25) <= lost_within);
    }
}

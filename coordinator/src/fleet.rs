//! The coordinator's view of its nodes: what each said in its hello and last heartbeat, its
//! round-trip time, and its liveness.
//!
//! Liveness has three states. `connected`: the link is up. `disconnected`: the link broke
//! (QUIC idle timeout or a closed connection) — a short state that kills nothing, since the
//! node may be back in a moment. `lost`: no word from the node for [`Fleet::lost_after`]
//! (2 s by default) and no link: its sessions are to be failed over. A new connection from the
//! node makes it `connected` again, whatever state it was in.
//!
//! Pure state: the link feeds it events with the time they happened, and a sweeper calls
//! [`Fleet::sweep`] to find the nodes that just became lost.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fogshell_shared::node::{Health, Load};
pub use fogshell_shared::node::{NodeState, NodeView};
use fogshell_shared::wire::{Heartbeat, Hello};
use fogshell_shared::{NodeId, Timestamp, TrustTier};

struct Entry {
    view: NodeView,
    /// Which connection is current: events of older connections are ignored.
    generation: u64,
    /// Monotonic time of the last word from the node.
    last_contact: Instant,
}

/// How often the sweeper looks for lost nodes; the loss threshold is this much under the
/// promised bound, so a node is declared lost *within* it.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(50);

/// The node registry.
pub struct Fleet {
    nodes: Mutex<BTreeMap<NodeId, Entry>>,
    next_generation: Mutex<u64>,
    lost_after: Duration,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("lost_after", &self.lost_after)
            .finish_non_exhaustive()
    }
}

/// The tier granted at connection for a claimed one: `attested` only later, once a TPM quote
/// verifies ([`Fleet::set_trust`] from the attestation watch); everything else as configured
/// on the node.
pub fn granted_tier(claimed: TrustTier) -> TrustTier {
    match claimed {
        TrustTier::Attested => TrustTier::Unattested,
        other => other,
    }
}

impl Fleet {
    /// A fleet that declares a silent node lost within `lost_within` of its last word (the
    /// threshold is one sweep interval less, so the sweep that notices falls inside it).
    pub fn new(lost_within: Duration) -> Self {
        Self {
            nodes: Mutex::new(BTreeMap::new()),
            next_generation: Mutex::new(0),
            lost_after: lost_within.saturating_sub(SWEEP_INTERVAL),
        }
    }

    /// How long a silent node takes to become lost.
    pub fn lost_after(&self) -> Duration {
        self.lost_after
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<NodeId, Entry>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A node's link came up with this hello. Returns the connection's generation.
    pub fn connected(&self, hello: &Hello, rtt: Duration, now: Instant, at: Timestamp) -> u64 {
        let generation = {
            let mut next = self
                .next_generation
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            *next += 1;
            *next
        };
        let view = NodeView {
            node_id: hello.node_id.clone(),
            state: NodeState::Connected,
            trust_tier: granted_tier(hello.claimed_tier),
            region: hello.region.clone(),
            labels: hello.labels.clone(),
            arch: hello.arch,
            agent_version: hello.agent_version.clone(),
            runtime_drivers: hello.runtime_drivers.clone(),
            capacity: hello.capacity,
            free: hello.capacity,
            health: Health::default(),
            load: Load::default(),
            running: hello.running.iter().map(|r| r.session_id).collect(),
            rtt_us: rtt.as_micros() as u64,
            last_heartbeat: at,
        };
        self.lock().insert(
            hello.node_id.clone(),
            Entry {
                view,
                generation,
                last_contact: now,
            },
        );
        generation
    }

    /// A heartbeat arrived on connection `generation`.
    pub fn heartbeat(
        &self,
        node: &NodeId,
        generation: u64,
        hb: &Heartbeat,
        rtt: Duration,
        now: Instant,
        at: Timestamp,
    ) {
        let mut nodes = self.lock();
        let Some(entry) = nodes.get_mut(node).filter(|e| e.generation == generation) else {
            return;
        };
        entry.last_contact = now;
        let view = &mut entry.view;
        view.state = NodeState::Connected;
        view.free = hb.free;
        view.health = hb.health;
        view.load = hb.load;
        view.running = hb.running.clone();
        view.rtt_us = rtt.as_micros() as u64;
        view.last_heartbeat = at;
    }

    /// Attestation's verdict on connection `generation`: the tier the node now holds. Returns
    /// whether it changed (an older connection's verdict changes nothing).
    pub fn set_trust(&self, node: &NodeId, generation: u64, tier: TrustTier) -> bool {
        let mut nodes = self.lock();
        match nodes.get_mut(node).filter(|e| e.generation == generation) {
            Some(entry) if entry.view.trust_tier != tier => {
                entry.view.trust_tier = tier;
                true
            }
            _ => false,
        }
    }

    /// Connection `generation` of a node ended. A newer connection keeps the node connected.
    pub fn disconnected(&self, node: &NodeId, generation: u64) {
        let mut nodes = self.lock();
        if let Some(entry) = nodes.get_mut(node).filter(|e| e.generation == generation)
            && entry.view.state == NodeState::Connected
        {
            entry.view.state = NodeState::Disconnected;
        }
    }

    /// Marks lost every node without a link that has been silent for `lost_after`; returns
    /// the nodes that became lost now.
    pub fn sweep(&self, now: Instant) -> Vec<NodeId> {
        let mut lost = Vec::new();
        for (id, entry) in self.lock().iter_mut() {
            if entry.view.state == NodeState::Disconnected
                && now.saturating_duration_since(entry.last_contact) >= self.lost_after
            {
                entry.view.state = NodeState::Lost;
                lost.push(id.clone());
            }
        }
        lost
    }

    /// Every node.
    pub fn views(&self) -> Vec<NodeView> {
        self.lock().values().map(|e| e.view.clone()).collect()
    }

    /// Runs `f` over every node's view without copying them (placement does this); the
    /// registry is locked meanwhile, so `f` must be quick.
    pub fn with_views<R>(&self, f: impl FnOnce(&mut dyn Iterator<Item = &NodeView>) -> R) -> R {
        let nodes = self.lock();
        f(&mut nodes.values().map(|e| &e.view))
    }

    /// One node.
    pub fn view(&self, node: &NodeId) -> Option<NodeView> {
        self.lock().get(node).map(|e| e.view.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fogshell_shared::Resources;
    use fogshell_shared::wire::samples;

    fn at() -> Timestamp {
        Timestamp::UNIX_EPOCH
    }

    #[test]
    fn a_node_goes_connected_disconnected_lost_and_back() {
        let fleet = Fleet::new(Duration::from_secs(2));
        let hello = samples::hello();
        let t0 = Instant::now();
        let g1 = fleet.connected(&hello, Duration::from_millis(3), t0, at());
        let id = hello.node_id.clone();
        assert_eq!(fleet.view(&id).unwrap().state, NodeState::Connected);
        assert_eq!(fleet.view(&id).unwrap().rtt_us, 3000);

        fleet.disconnected(&id, g1);
        assert_eq!(fleet.view(&id).unwrap().state, NodeState::Disconnected);
        assert!(
            fleet.sweep(t0 + Duration::from_millis(1949)).is_empty(),
            "not lost yet"
        );
        // One sweep interval under the 2 s bound, so the sweep that notices falls within it.
        assert_eq!(
            fleet.sweep(t0 + Duration::from_millis(1950)),
            vec![id.clone()]
        );
        assert_eq!(fleet.view(&id).unwrap().state, NodeState::Lost);
        assert!(
            fleet.sweep(t0 + Duration::from_secs(3)).is_empty(),
            "lost only once"
        );

        let g2 = fleet.connected(
            &hello,
            Duration::from_millis(1),
            t0 + Duration::from_secs(4),
            at(),
        );
        assert_eq!(fleet.view(&id).unwrap().state, NodeState::Connected);
        // The old connection's end does not touch the new one.
        fleet.disconnected(&id, g1);
        assert_eq!(fleet.view(&id).unwrap().state, NodeState::Connected);
        assert!(g2 > g1);
    }

    #[test]
    fn heartbeats_refresh_state_and_keep_a_node_from_being_lost() {
        let fleet = Fleet::new(Duration::from_secs(2));
        let hello = samples::hello();
        let id = hello.node_id.clone();
        let t0 = Instant::now();
        let g = fleet.connected(&hello, Duration::ZERO, t0, at());
        let hb = Heartbeat {
            seq: 1,
            health: Health {
                disk_pressure: true,
                memory_pressure: false,
            },
            free: Resources {
                cpu_millis: 1,
                memory_bytes: 2,
                session_slots: 3,
            },
            load: Load { load1_milli: 700 },
            running: vec![],
        };
        fleet.heartbeat(
            &id,
            g,
            &hb,
            Duration::from_millis(7),
            t0 + Duration::from_secs(5),
            at(),
        );
        fleet.disconnected(&id, g);
        assert!(
            fleet.sweep(t0 + Duration::from_secs(6)).is_empty(),
            "heard from 1 s ago"
        );
        let view = fleet.view(&id).unwrap();
        assert_eq!(view.free.session_slots, 3);
        assert!(view.health.disk_pressure);
        assert_eq!(view.rtt_us, 7000);
    }

    #[test]
    fn attested_is_never_granted_on_a_claim() {
        assert_eq!(granted_tier(TrustTier::Attested), TrustTier::Unattested);
        assert_eq!(granted_tier(TrustTier::Cloud), TrustTier::Cloud);
        assert_eq!(granted_tier(TrustTier::Dev), TrustTier::Dev);
    }
}

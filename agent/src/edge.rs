//! What a node's edge gateway keeps between its link and its users: the attach-token keys the
//! coordinator published, and the audit records of what the gateway decided, until the
//! coordinator has them in its chain.
//!
//! Both live in `<state>/edge/` and survive a restart: the keys so tokens are checked while
//! the coordinator cannot be reached, the records so none is lost or sent twice. Records are
//! numbered by the node (1, 2, 3, …); the coordinator commits each once and acknowledges the
//! highest, and only then are they forgotten here ([`fogshell_shared::wire::edge`]).
//!
//! And the node's lease ([`fogshell_shared::lease`]), in memory only: the gateway serves
//! users only while the coordinator's last grant holds, and fences its direct viewers when it
//! runs out — before the coordinator can start a copy of their sessions elsewhere. An agent
//! that restarts holds no lease until its link is back.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use fogshell_shared::Timestamp;
use fogshell_shared::attach_token::{AttachKey, MAX_KEYS};
use fogshell_shared::files::{Durability, write_atomically};
use fogshell_shared::lease::Lease;
use fogshell_shared::wire::edge::{EdgeEvent, EdgeRecord, MAX_RECORDS};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use crate::lock;

/// Records kept while the coordinator cannot be reached. Past this, refusals are only counted
/// (and the count recorded once there is room), so a flood of bad tokens cannot fill the disk.
pub const MAX_PENDING: usize = 10_000;

/// The outbox as it is kept on disk.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Outbox {
    /// The number the next record gets.
    next_seq: u64,
    /// Records not yet acknowledged, oldest first.
    pending: Vec<EdgeRecord>,
    /// Refusals not recorded because the outbox was full.
    dropped: u64,
}

/// What the coordinator tells the gateway to trust, as it is kept on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Trust {
    /// The keys attach tokens are signed with.
    keys: Vec<AttachKey>,
    /// The origins browser pages may open terminals from.
    console_origins: Vec<String>,
}

/// The edge gateway's durable state.
#[derive(Debug)]
pub struct EdgeState {
    dir: PathBuf,
    trust: Mutex<Trust>,
    outbox: Mutex<Outbox>,
    /// Woken when a record is added, so the link sends it at once.
    recorded: Notify,
    lease: Mutex<Lease>,
    /// Woken when the lease changed, so its watch looks again.
    lease_changed: Notify,
    /// Whether the node serves no one directly now (no lease).
    fenced: watch::Sender<bool>,
}

/// The monotonic clock the lease is kept by (tokio's, so tests can stop time).
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

const TRUST_FILE: &str = "trust.json";
const OUTBOX_FILE: &str = "audit-outbox.json";

fn read_json<T: serde::de::DeserializeOwned + Default>(path: &Path) -> Result<T, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), String> {
    let bytes = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    write_atomically(path, &bytes, 0o600, Durability::Synced)
        .map_err(|e| format!("{}: {e}", path.display()))
}

impl EdgeState {
    /// Opens (or starts) the state in `<state_dir>/edge/`.
    pub fn open(state_dir: &Path) -> Result<Self, String> {
        let dir = state_dir.join("edge");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let trust: Trust = read_json(&dir.join(TRUST_FILE))?;
        let mut outbox: Outbox = read_json(&dir.join(OUTBOX_FILE))?;
        outbox.next_seq = outbox.next_seq.max(1);
        Ok(Self {
            dir,
            trust: Mutex::new(trust),
            outbox: Mutex::new(outbox),
            recorded: Notify::new(),
            // Until a welcome says otherwise, a grant is worth nothing.
            lease: Mutex::new(Lease::new(Duration::ZERO)),
            lease_changed: Notify::new(),
            fenced: watch::Sender::new(true),
        })
    }

    /// A new connection to the coordinator: its heartbeats count from 0 (the hello) again.
    pub fn lease_new_connection(&self) {
        lock(&self.lease).new_connection();
    }

    /// Heartbeat `seq` (0: the hello) leaves now.
    pub fn lease_sent(&self, seq: u64) {
        lock(&self.lease).sent(seq, now());
    }

    /// What a welcome tells the gateway: the attach keys, the consoles' origins, and the
    /// lease (what each grant is worth, and the hello's grant).
    pub fn welcomed(&self, welcome: &fogshell_shared::wire::Welcome) {
        self.set_keys(welcome.attach_keys.clone());
        self.set_console_origins(welcome.console_origins.clone());
        self.lease_welcomed(Duration::from_millis(u64::from(welcome.lease_ms)));
    }

    /// The welcome's lease: what each grant is worth, and the hello's grant.
    fn lease_welcomed(&self, lease: Duration) {
        {
            let mut current = lock(&self.lease);
            current.set_duration(lease);
            current.granted(0);
        }
        self.lease_changed.notify_one();
    }

    /// The coordinator granted heartbeat `seq`.
    pub fn lease_granted(&self, seq: u64) {
        lock(&self.lease).granted(seq);
        self.lease_changed.notify_one();
    }

    /// Whether the node may serve users directly now.
    pub fn lease_holds(&self) -> bool {
        lock(&self.lease).holds(now())
    }

    /// Follows whether the node is fenced (serves no one directly).
    pub fn fenced(&self) -> watch::Receiver<bool> {
        self.fenced.subscribe()
    }

    /// Keeps [`Self::fenced`] true exactly while the lease does not hold: wakes when it runs
    /// out and whenever it changes. Runs until aborted.
    pub async fn watch_lease(&self) {
        loop {
            let (holds, until) = {
                let lease = lock(&self.lease);
                (lease.holds(now()), lease.valid_until())
            };
            self.fenced.send_if_modified(|fenced| {
                let changed = *fenced == holds;
                if changed {
                    if holds {
                        tracing::info!("the coordinator granted a lease: serving users directly");
                    } else {
                        tracing::warn!(
                            "the lease ran out (no word from the coordinator): fenced, direct viewers go to the relay"
                        );
                    }
                }
                *fenced = !holds;
                changed
            });
            match until.filter(|_| holds) {
                Some(until) => tokio::select! {
                    () = tokio::time::sleep_until(until.into()) => {}
                    () = self.lease_changed.notified() => {}
                },
                None => self.lease_changed.notified().await,
            }
        }
    }

    /// The keys tokens are checked against now.
    pub fn keys(&self) -> Vec<AttachKey> {
        lock(&self.trust).keys.clone()
    }

    /// The origins browser pages may open terminals from.
    pub fn console_origins(&self) -> Vec<String> {
        lock(&self.trust).console_origins.clone()
    }

    /// Takes the coordinator's published keys (from a welcome or a rotation) and keeps them.
    pub fn set_keys(&self, mut keys: Vec<AttachKey>) {
        keys.truncate(MAX_KEYS);
        self.update_trust(|trust| trust.keys = keys);
    }

    /// Takes the consoles' origins from a welcome and keeps them.
    fn set_console_origins(&self, mut origins: Vec<String>) {
        origins.truncate(fogshell_gateway::MAX_ORIGINS);
        origins.retain(|o| o.len() <= fogshell_shared::wire::edge::MAX_GATEWAY_URL);
        self.update_trust(|trust| trust.console_origins = origins);
    }

    fn update_trust(&self, change: impl FnOnce(&mut Trust)) {
        let mut trust = lock(&self.trust);
        let mut next = trust.clone();
        change(&mut next);
        if *trust == next {
            return;
        }
        if let Err(error) = write_json(&self.dir.join(TRUST_FILE), &next) {
            // Still used in memory: only a restart during a partition would miss it.
            tracing::warn!(%error, "could not keep what the coordinator trusts");
        }
        tracing::info!(
            keys = next.keys.len(),
            origins = ?next.console_origins,
            "attach keys and console origins updated"
        );
        *trust = next;
    }

    /// Records what the gateway decided; returns the record's number (`None` when the outbox
    /// is full and only counts refusals).
    pub fn record(&self, at: Timestamp, event: EdgeEvent) -> Option<u64> {
        let seq = {
            let mut outbox = lock(&self.outbox);
            if outbox.pending.len() >= MAX_PENDING {
                outbox.dropped += 1;
                if outbox.dropped == 1 {
                    tracing::warn!("the edge audit outbox is full; counting refusals only");
                }
                return None;
            }
            if outbox.dropped > 0 {
                let count = std::mem::take(&mut outbox.dropped);
                let seq = outbox.next_seq;
                outbox.next_seq += 1;
                outbox.pending.push(EdgeRecord {
                    seq,
                    at,
                    event: EdgeEvent::Refused {
                        rule_id: "edge.refusals_uncounted".into(),
                        reason: format!(
                            "{count} refusals were not recorded one by one while the coordinator could not be reached"
                        ),
                        session_id: None,
                    },
                });
            }
            let seq = outbox.next_seq;
            outbox.next_seq += 1;
            outbox.pending.push(EdgeRecord { seq, at, event });
            if let Err(error) = write_json(&self.dir.join(OUTBOX_FILE), &*outbox) {
                tracing::error!(%error, "could not keep an edge audit record");
            }
            seq
        };
        self.recorded.notify_one();
        Some(seq)
    }

    /// Records after `after`, oldest first, as many as one message carries.
    pub fn pending_after(&self, after: u64) -> Vec<EdgeRecord> {
        lock(&self.outbox)
            .pending
            .iter()
            .filter(|r| r.seq > after)
            .take(MAX_RECORDS)
            .cloned()
            .collect()
    }

    /// The coordinator has every record up to `through`: forget them.
    pub fn acknowledged(&self, through: u64) {
        let mut outbox = lock(&self.outbox);
        let before = outbox.pending.len();
        outbox.pending.retain(|r| r.seq > through);
        if outbox.pending.len() != before
            && let Err(error) = write_json(&self.dir.join(OUTBOX_FILE), &*outbox)
        {
            tracing::warn!(%error, "could not forget acknowledged edge audit records");
        }
    }

    /// Resolves when a record was added since the last call.
    pub async fn recorded(&self) {
        self.recorded.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fogshell_shared::SessionId;

    fn attached(n: u8) -> EdgeEvent {
        EdgeEvent::Attached {
            session_id: SessionId::from_random_bytes([n; 16]),
        }
    }

    #[test]
    fn records_survive_a_restart_until_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let state = EdgeState::open(dir.path()).unwrap();
        assert_eq!(state.record(Timestamp::UNIX_EPOCH, attached(1)), Some(1));
        assert_eq!(state.record(Timestamp::UNIX_EPOCH, attached(2)), Some(2));
        state.set_keys(vec![AttachKey {
            kid: 4,
            public_key: [1; 32],
        }]);
        state.set_console_origins(vec!["https://shell.example.org".into()]);
        drop(state);
        let state = EdgeState::open(dir.path()).unwrap();
        assert_eq!(state.keys().len(), 1);
        assert_eq!(state.console_origins(), ["https://shell.example.org"]);
        let pending: Vec<u64> = state.pending_after(0).iter().map(|r| r.seq).collect();
        assert_eq!(pending, [1, 2]);
        assert_eq!(state.pending_after(1).len(), 1);
        state.acknowledged(1);
        drop(state);
        let state = EdgeState::open(dir.path()).unwrap();
        let pending: Vec<u64> = state.pending_after(0).iter().map(|r| r.seq).collect();
        assert_eq!(pending, [2]);
        // Numbers go on from where they were, never reused.
        assert_eq!(state.record(Timestamp::UNIX_EPOCH, attached(3)), Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn direct_service_is_fenced_when_the_lease_runs_out() {
        let dir = tempfile::tempdir().unwrap();
        let state = std::sync::Arc::new(EdgeState::open(dir.path()).unwrap());
        let mut fenced = state.fenced();
        let watch = tokio::spawn({
            let state = std::sync::Arc::clone(&state);
            async move { state.watch_lease().await }
        });
        assert!(*fenced.borrow_and_update(), "no lease before a welcome");
        state.lease_new_connection();
        state.lease_sent(0);
        state.lease_welcomed(Duration::from_millis(1600));
        fenced.changed().await.unwrap();
        assert!(!*fenced.borrow_and_update());
        assert!(state.lease_holds());
        // Heartbeats granted keep it.
        for seq in 1..=4 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            state.lease_sent(seq);
            state.lease_granted(seq);
        }
        assert!(!*fenced.borrow());
        // Silence: 1.6 s after the last granted heartbeat left, the node is fenced.
        let cut = tokio::time::Instant::now();
        fenced.changed().await.unwrap();
        assert!(*fenced.borrow_and_update());
        assert_eq!(cut.elapsed(), Duration::from_millis(1600));
        assert!(!state.lease_holds());
        watch.abort();
    }

    #[test]
    fn a_full_outbox_counts_refusals_and_records_the_count_later() {
        let dir = tempfile::tempdir().unwrap();
        let state = EdgeState::open(dir.path()).unwrap();
        {
            let mut outbox = lock(&state.outbox);
            for seq in 1..=MAX_PENDING as u64 {
                outbox.pending.push(EdgeRecord {
                    seq,
                    at: Timestamp::UNIX_EPOCH,
                    event: attached(0),
                });
            }
            outbox.next_seq = MAX_PENDING as u64 + 1;
        }
        assert_eq!(state.record(Timestamp::UNIX_EPOCH, attached(1)), None);
        assert_eq!(state.record(Timestamp::UNIX_EPOCH, attached(1)), None);
        state.acknowledged(MAX_PENDING as u64);
        let seq = state.record(Timestamp::UNIX_EPOCH, attached(2)).unwrap();
        let pending = state.pending_after(0);
        assert_eq!(pending.len(), 2);
        assert!(matches!(
            &pending[0].event,
            EdgeEvent::Refused { rule_id, reason, .. }
                if rule_id == "edge.refusals_uncounted" && reason.starts_with("2 ")
        ));
        assert_eq!(pending[1].seq, seq);
        assert_eq!(pending[0].seq + 1, seq);
    }
}

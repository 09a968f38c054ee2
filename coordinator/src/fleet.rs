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
//!
//! A node's free capacity is what its last heartbeat said, corrected by what the coordinator
//! did since: a session placed on it holds its share ([`Fleet::place`]) until a heartbeat
//! lists it as running (the node's own figure then counts it), and a session that ended gives
//! its share back at once ([`Fleet::ended`]) until a heartbeat no longer lists it. Without
//! this, two sessions created within one heartbeat interval could both be placed on a node
//! with room for one, and a deleted session's room stayed taken until the next heartbeat.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fogshell_shared::node::{Health, Load};
pub use fogshell_shared::node::{NodeState, NodeView};
use fogshell_shared::placement::Placement;
use fogshell_shared::wire::{Heartbeat, Hello};
use fogshell_shared::{NodeId, ResourceLimits, Resources, SessionId, Timestamp, TrustTier};

struct Entry {
    view: NodeView,
    /// Which connection is current: events of older connections are ignored.
    generation: u64,
    /// Monotonic time of the last word from the node.
    last_contact: Instant,
    /// Free capacity as the node last reported it; `view.free` corrects it.
    reported_free: Resources,
    /// Sessions placed here that no heartbeat has listed yet, and when.
    reserved: BTreeMap<SessionId, (ResourceLimits, Instant)>,
    /// Sessions that ended here while the last heartbeat still listed them.
    released: BTreeMap<SessionId, ResourceLimits>,
}

impl Entry {
    /// `view.free`: the reported figure less what is reserved, plus what was released, never
    /// above the node's capacity.
    fn correct_free(&mut self) {
        let mut free = self.reported_free;
        // Released first: subtracting first could stop at zero and lose a reservation.
        for limits in self.released.values() {
            free.cpu_millis = free.cpu_millis.saturating_add(limits.cpu_millis);
            free.memory_bytes = free.memory_bytes.saturating_add(limits.memory_bytes);
            free.session_slots = free.session_slots.saturating_add(1);
        }
        for (limits, _) in self.reserved.values() {
            free.cpu_millis = free.cpu_millis.saturating_sub(limits.cpu_millis);
            free.memory_bytes = free.memory_bytes.saturating_sub(limits.memory_bytes);
            free.session_slots = free.session_slots.saturating_sub(1);
        }
        let capacity = self.view.capacity;
        free.cpu_millis = free.cpu_millis.min(capacity.cpu_millis);
        free.memory_bytes = free.memory_bytes.min(capacity.memory_bytes);
        free.session_slots = free.session_slots.min(capacity.session_slots);
        self.view.free = free;
    }
}

/// How long a placement holds its share without a heartbeat listing the session: longer than
/// any allocation may take (an image pull included), so only a reservation nobody settled —
/// a coordinator bug — ever runs out.
pub const RESERVATION_LIFETIME: Duration = Duration::from_secs(300);

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
        fogshell_shared::sync::lock(&self.nodes)
    }

    /// A node's link came up with this hello. Returns the connection's generation.
    pub fn connected(&self, hello: &Hello, rtt: Duration, now: Instant, at: Timestamp) -> u64 {
        let generation = {
            let mut next = fogshell_shared::sync::lock(&self.next_generation);
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
            gateway_url: hello.gateway_url.clone(),
        };
        let mut nodes = self.lock();
        // Sessions being started there when the link broke still hold their share.
        let reserved = nodes
            .remove(&hello.node_id)
            .map(|old| old.reserved)
            .unwrap_or_default();
        let mut entry = Entry {
            reported_free: view.free,
            view,
            generation,
            last_contact: now,
            reserved,
            released: BTreeMap::new(),
        };
        entry.correct_free();
        nodes.insert(hello.node_id.clone(), entry);
        generation
    }

    /// A heartbeat arrived on connection `generation`. Returns whether it counts (the
    /// connection is the node's current one): only then is the node's lease renewed.
    pub fn heartbeat(
        &self,
        node: &NodeId,
        generation: u64,
        hb: &Heartbeat,
        rtt: Duration,
        now: Instant,
        at: Timestamp,
    ) -> bool {
        let mut nodes = self.lock();
        let Some(entry) = nodes.get_mut(node).filter(|e| e.generation == generation) else {
            return false;
        };
        entry.last_contact = now;
        entry.reported_free = hb.free;
        // Listed: the node's own figure counts it now. Not listed after ending: the same.
        entry.reserved.retain(|session, (_, at)| {
            !hb.running.contains(session)
                && now.saturating_duration_since(*at) < RESERVATION_LIFETIME
        });
        entry
            .released
            .retain(|session, _| hb.running.contains(session));
        let view = &mut entry.view;
        view.state = NodeState::Connected;
        view.health = hb.health;
        view.load = hb.load;
        view.running = hb.running.clone();
        view.rtt_us = rtt.as_micros() as u64;
        view.last_heartbeat = at;
        entry.correct_free();
        true
    }

    /// Runs placement (`choose`) over every node's view and, in the same hold of the registry,
    /// reserves the chosen node's share for `session` (`limits`): a placement running at the
    /// same time sees it taken.
    pub fn place<E>(
        &self,
        session: SessionId,
        limits: ResourceLimits,
        now: Instant,
        choose: impl FnOnce(&mut dyn Iterator<Item = &NodeView>) -> Result<Placement, E>,
    ) -> Result<Placement, E> {
        let mut nodes = self.lock();
        let placement = choose(&mut nodes.values().map(|e| &e.view))?;
        if let Some(entry) = nodes.get_mut(&placement.node_id) {
            entry.reserved.insert(session, (limits, now));
            entry.correct_free();
        }
        Ok(placement)
    }

    /// `session` on `node` ended (or never started): its reservation goes, and if the node's
    /// last heartbeat still counted it (`limits`), its share is free again at once.
    pub fn ended(&self, node: &NodeId, session: SessionId, limits: Option<ResourceLimits>) {
        let mut nodes = self.lock();
        let Some(entry) = nodes.get_mut(node) else {
            return;
        };
        entry.reserved.remove(&session);
        if let Some(limits) = limits
            && entry.view.running.contains(&session)
        {
            entry.released.insert(session, limits);
        }
        entry.correct_free();
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

    /// Placement as the coordinator runs it, reduced to "the first node with room".
    fn first_fit(
        limits: ResourceLimits,
    ) -> impl FnOnce(&mut dyn Iterator<Item = &NodeView>) -> Result<Placement, ()> {
        move |nodes| {
            for n in nodes {
                if n.free.fits(&limits) {
                    return Ok(Placement {
                        node_id: n.node_id.clone(),
                        region: n.region.clone(),
                        trust_tier: n.trust_tier,
                        reasons: Vec::new(),
                    });
                }
            }
            Err(())
        }
    }

    fn heartbeat(free_slots: u32, running: Vec<SessionId>) -> Heartbeat {
        Heartbeat {
            seq: 1,
            health: Health::default(),
            free: Resources {
                cpu_millis: 4000,
                memory_bytes: 8 << 30,
                session_slots: free_slots,
            },
            load: Load::default(),
            running,
        }
    }

    /// A fleet of the sample node, connected, with `free_slots` free by its first heartbeat;
    /// with its id, connection generation and the time it connected.
    fn fleet_with_one_node(free_slots: u32) -> (Fleet, NodeId, u64, Instant) {
        let fleet = Fleet::new(Duration::from_secs(2));
        let hello = samples::hello();
        let id = hello.node_id.clone();
        let t0 = Instant::now();
        let g = fleet.connected(&hello, Duration::ZERO, t0, at());
        fleet.heartbeat(
            &id,
            g,
            &heartbeat(free_slots, vec![]),
            Duration::ZERO,
            t0,
            at(),
        );
        (fleet, id, g, t0)
    }

    fn two_sessions() -> (SessionId, SessionId) {
        (
            SessionId::from_random_bytes([1; 16]),
            SessionId::from_random_bytes([2; 16]),
        )
    }

    #[test]
    fn a_placement_holds_its_share_until_the_node_reports_the_session() {
        let (fleet, id, g, t0) = fleet_with_one_node(1);
        let limits = ResourceLimits::DEFAULT;
        let (a, b) = two_sessions();

        // Room for one: the second placement, within the same heartbeat interval, finds none.
        assert!(fleet.place(a, limits, t0, first_fit(limits)).is_ok());
        assert_eq!(fleet.view(&id).unwrap().free.session_slots, 0);
        assert!(fleet.place(b, limits, t0, first_fit(limits)).is_err());
        let cpu = fleet.view(&id).unwrap().free.cpu_millis;
        assert_eq!(cpu, 4000 - limits.cpu_millis);

        // A heartbeat taken before the session started still holds it back.
        fleet.heartbeat(&id, g, &heartbeat(1, vec![]), Duration::ZERO, t0, at());
        assert_eq!(fleet.view(&id).unwrap().free.session_slots, 0);
        // Once the node lists it, the node's own figure counts it: not twice.
        fleet.heartbeat(&id, g, &heartbeat(0, vec![a]), Duration::ZERO, t0, at());
        assert_eq!(fleet.view(&id).unwrap().free.session_slots, 0);
        assert_eq!(fleet.view(&id).unwrap().free.cpu_millis, 4000);

        // It ends: its room is free at once, before the node says so …
        fleet.ended(&id, a, Some(limits));
        assert_eq!(fleet.view(&id).unwrap().free.session_slots, 1);
        assert!(fleet.place(b, limits, t0, first_fit(limits)).is_ok());
        assert_eq!(fleet.view(&id).unwrap().free.session_slots, 0);
        // … and a heartbeat that no longer lists it counts it free itself.
        fleet.heartbeat(&id, g, &heartbeat(1, vec![]), Duration::ZERO, t0, at());
        assert_eq!(fleet.view(&id).unwrap().free.session_slots, 0, "b is held");
    }

    #[test]
    fn a_share_survives_a_reconnect_and_a_failed_or_forgotten_start_gives_it_back() {
        let (fleet, id, _, t0) = fleet_with_one_node(2);
        let limits = ResourceLimits::DEFAULT;
        let (a, b) = two_sessions();
        fleet.place(a, limits, t0, first_fit(limits)).unwrap();
        fleet.place(b, limits, t0, first_fit(limits)).unwrap();
        assert_eq!(fleet.view(&id).unwrap().free.session_slots, 0);

        // A reconnect (a new hello) keeps what is being started there.
        let g = fleet.connected(&samples::hello(), Duration::ZERO, t0, at());
        assert_eq!(fleet.view(&id).unwrap().free.session_slots, 16 - 2);
        fleet.heartbeat(&id, g, &heartbeat(2, vec![]), Duration::ZERO, t0, at());
        assert_eq!(fleet.view(&id).unwrap().free.session_slots, 0);

        // `a` never started: its share comes back, and no release is counted for it.
        fleet.ended(&id, a, Some(limits));
        assert_eq!(fleet.view(&id).unwrap().free.session_slots, 1);

        // `b` was never settled: it holds its share only so long.
        let late = t0 + RESERVATION_LIFETIME;
        fleet.heartbeat(&id, g, &heartbeat(2, vec![]), Duration::ZERO, late, at());
        assert_eq!(fleet.view(&id).unwrap().free.session_slots, 2);
        // Never more than the node has.
        fleet.ended(&id, b, Some(limits));
        assert!(fleet.view(&id).unwrap().free.session_slots <= 16);
    }

    #[test]
    fn attested_is_never_granted_on_a_claim() {
        assert_eq!(granted_tier(TrustTier::Attested), TrustTier::Unattested);
        assert_eq!(granted_tier(TrustTier::Cloud), TrustTier::Cloud);
        assert_eq!(granted_tier(TrustTier::Dev), TrustTier::Dev);
    }
}

//! The placement decision: `place(request, &[NodeView]) -> Result<Placement, NoPlacement>`.
//!
//! Hard filters first, in this order, and a node is rejected for the first it fails:
//! connected and healthy; trust tier (and a container runtime, unless the profile asks for
//! nothing); data locality (the tenant's jurisdictions, the hint's regions and labels);
//! capacity for the profile. Of the nodes left, fog nodes beat cloud nodes — the cloud is the
//! fallback — and then the lowest expected latency to the user wins, then the lowest load.
//!
//! Expected latency is what a terminal's bytes cross: the client's side (its own measurement
//! to the node's region from the hint, else the configured region table from its region) plus
//! the coordinator's QUIC round trip to the node. A node whose distance from the client
//! nobody knows ranks after every node whose distance is known, so a missing table entry
//! never makes a far region look near.

use std::collections::BTreeMap;
use std::fmt;

use crate::ids::{LabelKey, LabelValue, NodeId, Region};
use crate::node::{Labels, NodeState, NodeView, RuntimeDriver, TrustTier};
use crate::profile::Profile;

use super::{LatencyTable, Placement, PlacementHint, ReasonCode};

/// The node label that names a node's jurisdiction (`jurisdiction=eu`), matched against the
/// tenant's.
pub const JURISDICTION_LABEL: &str = "jurisdiction";

/// What placement is asked.
#[derive(Debug, Clone, Copy)]
pub struct PlacementRequest<'a> {
    /// The session's profile: its limits and minimum trust tier.
    pub profile: &'a Profile,
    /// What the client said about where it is and where the session may go.
    pub hint: Option<&'a PlacementHint>,
    /// The tenant's jurisdictions; a node must carry one of them in its `jurisdiction` label.
    /// Empty: no constraint.
    pub jurisdictions: &'a [LabelValue],
    /// Region-to-region round trips, for clients that measured nothing.
    pub latency: &'a LatencyTable,
    /// Failover: the session's lost node. Then only cloud nodes are considered, never that
    /// one.
    pub failover_from: Option<&'a NodeId>,
}

/// How many rejected nodes a [`NoPlacement`] names (the rest are only counted).
const EXAMPLES: usize = 8;

/// Why no node qualified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoPlacement {
    /// How many nodes each reason turned away.
    pub rejected: BTreeMap<ReasonCode, u32>,
    /// The first few rejected nodes and why.
    pub examples: Vec<(NodeId, ReasonCode)>,
    /// Whether this was a failover (which only looks at cloud nodes).
    pub failover: bool,
}

impl fmt::Display for NoPlacement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.failover { "cloud node" } else { "node" };
        if self.rejected.is_empty() {
            return write!(f, "no {kind} is connected");
        }
        write!(f, "no {kind} can take the session:")?;
        for (reason, count) in &self.rejected {
            let names: Vec<&str> = self
                .examples
                .iter()
                .filter(|(_, r)| r == reason)
                .map(|(n, _)| n.as_str())
                .collect();
            let more = *count as usize - names.len();
            write!(f, " {} {}", count, reason_text(*reason))?;
            if !names.is_empty() {
                write!(f, " ({}", names.join(", "))?;
                if more > 0 {
                    write!(f, " and {more} more")?;
                }
                f.write_str(")")?;
            }
            f.write_str(";")?;
        }
        Ok(())
    }
}

fn reason_text(reason: ReasonCode) -> &'static str {
    match reason {
        ReasonCode::RejectUnhealthy => "not connected or unhealthy",
        ReasonCode::RejectTrustTier => "below the profile's trust tier",
        ReasonCode::RejectLocality => "outside the locality demanded",
        ReasonCode::RejectCapacity => "without capacity for the profile",
        _ => "rejected",
    }
}

/// Whether `node` stands in one of `regions` (none: any) and carries all of `labels`.
fn within(node: &NodeView, regions: &[Region], labels: &Labels) -> bool {
    (regions.is_empty() || regions.contains(&node.region))
        && labels.iter().all(|(k, v)| node.labels.get(k) == Some(v))
}

/// The hard filters, in order; `None` when the node qualifies.
fn rejection(
    node: &NodeView,
    request: &PlacementRequest<'_>,
    jurisdiction_key: &LabelKey,
) -> Option<ReasonCode> {
    if node.state != NodeState::Connected || !node.health.is_healthy() {
        return Some(ReasonCode::RejectUnhealthy);
    }
    let profile = request.profile;
    // The tier ladder ranks fog nodes; a cloud node — the operator's own region — is the
    // trusted fallback for every profile (seed §3: "attested fog node vs cloud fallback").
    let tier_ok = (node.trust_tier.satisfies(profile.min_trust_tier)
        || node.trust_tier == TrustTier::Cloud)
        // A host-shell node runs only what demands nothing.
        && (profile.min_trust_tier == TrustTier::Dev
            || node.runtime_drivers.contains(&RuntimeDriver::Libcontainer));
    if !tier_ok {
        return Some(ReasonCode::RejectTrustTier);
    }
    if !request.jurisdictions.is_empty()
        && !node
            .labels
            .get(jurisdiction_key)
            .is_some_and(|j| request.jurisdictions.contains(j))
    {
        return Some(ReasonCode::RejectLocality);
    }
    let hint_ok = request
        .hint
        .is_none_or(|h| within(node, &h.allowed_regions, &h.required_labels));
    if !within(node, &profile.regions, &profile.labels) || !hint_ok {
        return Some(ReasonCode::RejectLocality);
    }
    if !node.free.fits(&profile.limits()) {
        return Some(ReasonCode::RejectCapacity);
    }
    None
}

/// How a qualified node ranks; lower is better. The last field (load) only breaks ties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    cloud: bool,
    distance_unknown: bool,
    latency_us: u64,
    load: u32,
}

impl Rank {
    fn latency_part(&self) -> (bool, bool, u64) {
        (self.cloud, self.distance_unknown, self.latency_us)
    }
}

/// Which way a user's terminal reaches a node, and its round trip when the client measured it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserPath {
    /// Straight to the node's own gateway.
    Direct {
        /// The client's measured round trip to that gateway, microseconds.
        rtt_us: Option<u64>,
    },
    /// Through the coordinator's relay.
    Relayed {
        /// The client's measured round trip to the coordinator plus the coordinator's QUIC
        /// round trip to the node, microseconds.
        rtt_us: Option<u64>,
    },
}

impl UserPath {
    fn rtt_us(self) -> Option<u64> {
        match self {
            Self::Direct { rtt_us } | Self::Relayed { rtt_us } => rtt_us,
        }
    }
}

/// How much faster the relay path must measure than a node's own gateway to be preferred:
/// more than a probe's noise on a busy machine, since the direct path has more going for it
/// than its round trip (it keeps working while the cloud is cut off, and spares the cloud).
const RELAY_MARGIN_US: u64 = 5000;

/// The user's best path to `node`: its own gateway when it has one the client can reach and
/// that is not slower than the relay, else the coordinator's relay. A client that measured no
/// gateway at all (an API client that does not probe) is sent to the edge: it is near by
/// design, and the relay stays its fallback.
pub fn user_path(node: &NodeView, hint: Option<&PlacementHint>) -> UserPath {
    let measured = hint.filter(|h| h.measured_gateways());
    let relayed = measured
        .and_then(|h| h.relay_rtt_ms)
        .map(|ms| u64::from(ms) * 1000 + node.rtt_us);
    if node.gateway_url.is_none() {
        return UserPath::Relayed { rtt_us: relayed };
    }
    let Some(hint) = measured else {
        return UserPath::Direct { rtt_us: None };
    };
    match hint.gateway_rtt_ms.get(&node.node_id) {
        Some(ms) => {
            let direct = u64::from(*ms) * 1000;
            // The relay carries every byte through one more hop than its probe shows, and
            // probes count whole milliseconds: it must be clearly faster to win.
            if relayed.is_some_and(|relayed| relayed + RELAY_MARGIN_US < direct) {
                UserPath::Relayed { rtt_us: relayed }
            } else {
                UserPath::Direct {
                    rtt_us: Some(direct),
                }
            }
        }
        // Measured others, not this one: the client could not reach it.
        None => UserPath::Relayed { rtt_us: relayed },
    }
}

fn rank(node: &NodeView, hint: Option<&PlacementHint>, client_row: ClientRow<'_>) -> Rank {
    let cloud = node.trust_tier == TrustTier::Cloud;
    let load = node.load.load1_milli;
    // What the client measured of the real path beats any estimate from regions.
    if let Some(latency_us) = user_path(node, hint).rtt_us() {
        return Rank {
            cloud,
            distance_unknown: false,
            latency_us,
            load,
        };
    }
    let client_ms = hint
        .and_then(|h| h.region_rtt_ms.get(&node.region).copied())
        .or_else(|| client_row.rtt_ms(&node.region));
    let known = client_ms.is_some() || client_row.knows_nothing();
    Rank {
        cloud,
        distance_unknown: !known,
        latency_us: u64::from(client_ms.unwrap_or(0)) * 1000 + node.rtt_us,
        load,
    }
}

/// What is known about the client's distance to regions, looked up once per decision.
#[derive(Clone, Copy)]
struct ClientRow<'a> {
    region: Option<&'a Region>,
    table_row: Option<&'a BTreeMap<Region, u32>>,
    measured_any: bool,
}

impl ClientRow<'_> {
    fn rtt_ms(&self, to: &Region) -> Option<u32> {
        let region = self.region?;
        match self.table_row.and_then(|row| row.get(to)) {
            Some(ms) => Some(*ms),
            None if region == to => Some(0),
            None => None,
        }
    }

    /// Nothing at all is known of the client, so every node is equally unknown: only the
    /// coordinator's RTT counts.
    fn knows_nothing(&self) -> bool {
        self.region.is_none() && !self.measured_any
    }
}

/// The reason cloud took a session no fog node could: what turned most fog nodes away.
fn fallback_reason(fog_rejections: &[u32; 4]) -> ReasonCode {
    const BY_INDEX: [ReasonCode; 4] = [
        ReasonCode::FallbackCloudNoFogHealthy,
        ReasonCode::FallbackCloudTrustTier,
        ReasonCode::FallbackCloudLocality,
        ReasonCode::FallbackCloudNoFogCapacity,
    ];
    let (mut best, mut most) = (0, 0);
    for (i, count) in fog_rejections.iter().enumerate() {
        if *count > most {
            (best, most) = (i, *count);
        }
    }
    BY_INDEX[best]
}

fn rejection_index(reason: ReasonCode) -> usize {
    match reason {
        ReasonCode::RejectUnhealthy => 0,
        ReasonCode::RejectTrustTier => 1,
        ReasonCode::RejectLocality => 2,
        _ => 3,
    }
}

/// Chooses the node for a session, or says why none can take it. `nodes` is any walk over the
/// fleet, so the coordinator places under its registry's lock without copying it.
pub fn place<'n>(
    request: &PlacementRequest<'_>,
    nodes: impl IntoIterator<Item = &'n NodeView>,
) -> Result<Placement, NoPlacement> {
    let jurisdiction_key = LabelKey::new(JURISDICTION_LABEL).expect("a valid label key");
    let hint = request.hint;
    let client_region = hint.and_then(|h| h.client_region.as_ref());
    let client_row = ClientRow {
        region: client_region,
        table_row: client_region.and_then(|r| request.latency.from_region(r)),
        measured_any: hint.is_some_and(|h| !h.region_rtt_ms.is_empty() || h.measured_gateways()),
    };
    let failover = request.failover_from.is_some();

    let mut rejected: BTreeMap<ReasonCode, u32> = BTreeMap::new();
    let mut fog_rejections = [0u32; 4];
    let mut examples = Vec::new();
    let mut best: Option<(Rank, &NodeView)> = None;
    let mut tied_on_latency = false;
    for node in nodes {
        let is_cloud = node.trust_tier == TrustTier::Cloud;
        if failover && (!is_cloud || Some(&node.node_id) == request.failover_from) {
            continue;
        }
        if let Some(reason) = rejection(node, request, &jurisdiction_key) {
            *rejected.entry(reason).or_default() += 1;
            if !is_cloud {
                fog_rejections[rejection_index(reason)] += 1;
            }
            if examples.len() < EXAMPLES {
                examples.push((node.node_id.clone(), reason));
            }
            continue;
        }
        let candidate = rank(node, hint, client_row);
        match best {
            Some((leader, _)) if candidate.latency_part() > leader.latency_part() => {}
            Some((leader, _)) if candidate.latency_part() == leader.latency_part() => {
                tied_on_latency = true;
                if candidate.load < leader.load {
                    best = Some((candidate, node));
                }
            }
            _ => {
                tied_on_latency = false;
                best = Some((candidate, node));
            }
        }
    }
    let Some((rank, node)) = best else {
        return Err(NoPlacement {
            rejected,
            examples,
            failover,
        });
    };
    let mut reasons = vec![if failover {
        ReasonCode::FailoverNodeLost
    } else if rank.cloud {
        fallback_reason(&fog_rejections)
    } else {
        ReasonCode::FogLowestLatency
    }];
    if tied_on_latency {
        reasons.push(ReasonCode::LeastLoaded);
    }
    if hint.is_some_and(|h| *h != PlacementHint::default()) {
        reasons.push(ReasonCode::HintHonored);
    }
    if hint.is_some_and(PlacementHint::measured_gateways) {
        reasons.push(match user_path(node, hint) {
            UserPath::Direct { .. } => ReasonCode::UserPathDirect,
            UserPath::Relayed { .. } => ReasonCode::UserPathRelayed,
        });
    }
    // The passed-over nodes' reasons, so the audit event says why not them.
    reasons.extend(rejected.keys().copied());
    Ok(Placement {
        node_id: node.node_id.clone(),
        region: node.region.clone(),
        trust_tier: node.trust_tier,
        reasons,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{Arch, Health, Load, Resources};
    use crate::timestamp::Timestamp;

    fn node(id: &str, tier: TrustTier, rtt_ms: u64) -> NodeView {
        let resources = Resources {
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
            session_slots: 10,
        };
        NodeView {
            node_id: id.parse().unwrap(),
            state: NodeState::Connected,
            trust_tier: tier,
            region: "eu-west".parse().unwrap(),
            labels: Default::default(),
            arch: Arch::X86_64,
            agent_version: "0.1.0".into(),
            runtime_drivers: vec![RuntimeDriver::Libcontainer],
            capacity: resources,
            free: resources,
            health: Health::default(),
            load: Load::default(),
            running: vec![],
            rtt_us: rtt_ms * 1000,
            last_heartbeat: Timestamp::UNIX_EPOCH,
            gateway_url: None,
        }
    }

    fn in_region(mut node: NodeView, region: &str) -> NodeView {
        node.region = region.parse().unwrap();
        node
    }

    fn labelled(mut node: NodeView, key: &str, value: &str) -> NodeView {
        node.labels
            .insert(key.parse().unwrap(), value.parse().unwrap());
        node
    }

    const TABLE: &LatencyTable = &LatencyTable::new();
    static DEFAULT_PROFILE: Profile = Profile::DEFAULT;

    fn request<'a>(profile: &'a Profile, hint: Option<&'a PlacementHint>) -> PlacementRequest<'a> {
        PlacementRequest {
            profile,
            hint,
            jurisdictions: &[],
            latency: TABLE,
            failover_from: None,
        }
    }

    fn chosen(request: &PlacementRequest<'_>, nodes: &[NodeView]) -> (String, Vec<ReasonCode>) {
        let placement = place(request, nodes).unwrap();
        (placement.node_id.to_string(), placement.reasons)
    }

    #[test]
    fn the_nearest_qualified_fog_node_wins() {
        let mut full = node("fog-full", TrustTier::Unattested, 1);
        full.free.session_slots = 0;
        let mut sick = node("fog-sick", TrustTier::Unattested, 1);
        sick.health.memory_pressure = true;
        let mut gone = node("fog-gone", TrustTier::Unattested, 1);
        gone.state = NodeState::Disconnected;
        let nodes = [
            node("cloud-1", TrustTier::Cloud, 1),
            node("fog-far", TrustTier::Unattested, 40),
            node("fog-near", TrustTier::Unattested, 5),
            full,
            sick,
            gone,
            node("fog-dev", TrustTier::Dev, 1),
        ];
        let (winner, reasons) = chosen(&request(&DEFAULT_PROFILE, None), &nodes);
        assert_eq!(winner, "fog-near");
        assert_eq!(
            reasons,
            [
                ReasonCode::FogLowestLatency,
                ReasonCode::RejectTrustTier,
                ReasonCode::RejectCapacity,
                ReasonCode::RejectUnhealthy
            ]
        );
    }

    #[test]
    fn latency_ties_go_to_the_least_loaded() {
        let mut busy = node("fog-busy", TrustTier::Unattested, 5);
        busy.load.load1_milli = 3000;
        let (winner, reasons) = chosen(
            &request(&DEFAULT_PROFILE, None),
            &[busy, node("fog-idle", TrustTier::Unattested, 5)],
        );
        assert_eq!(winner, "fog-idle");
        assert_eq!(
            reasons,
            [ReasonCode::FogLowestLatency, ReasonCode::LeastLoaded]
        );
    }

    #[test]
    fn cloud_takes_what_fog_cannot_and_says_why() {
        let mut full = node("fog-a", TrustTier::Unattested, 5);
        full.free.memory_bytes = 1;
        let nodes = [full, node("cloud-1", TrustTier::Cloud, 80)];
        let (winner, reasons) = chosen(&request(&DEFAULT_PROFILE, None), &nodes);
        assert_eq!(winner, "cloud-1");
        assert_eq!(reasons[0], ReasonCode::FallbackCloudNoFogCapacity);

        // An attested-only profile with only unattested fog nodes: the trusted cloud.
        let attested = Profile {
            min_trust_tier: TrustTier::Attested,
            ..Profile::DEFAULT
        };
        let nodes = [
            node("fog-a", TrustTier::Unattested, 5),
            node("cloud-1", TrustTier::Cloud, 80),
        ];
        let (winner, reasons) = chosen(&request(&attested, None), &nodes);
        assert_eq!(winner, "cloud-1");
        assert_eq!(reasons[0], ReasonCode::FallbackCloudTrustTier);
        // An attested fog node is preferred to the cloud.
        let with_attested = [
            nodes[0].clone(),
            nodes[1].clone(),
            node("fog-t", TrustTier::Attested, 40),
        ];
        assert_eq!(chosen(&request(&attested, None), &with_attested).0, "fog-t");
        // Without a cloud node, nothing qualifies.
        let error = place(&request(&attested, None), &nodes[..1]).unwrap_err();
        assert_eq!(error.rejected[&ReasonCode::RejectTrustTier], 1);
    }

    #[test]
    fn the_clients_distance_comes_first() {
        let nodes = [
            in_region(node("fog-eu", TrustTier::Unattested, 30), "eu-west"),
            in_region(node("fog-us", TrustTier::Unattested, 2), "us-east"),
        ];
        // The client measured its own round trips.
        let measured = PlacementHint {
            region_rtt_ms: [
                ("eu-west".parse().unwrap(), 10),
                ("us-east".parse().unwrap(), 90),
            ]
            .into(),
            ..Default::default()
        };
        let (winner, reasons) = chosen(&request(&DEFAULT_PROFILE, Some(&measured)), &nodes);
        assert_eq!(winner, "fog-eu");
        assert!(reasons.contains(&ReasonCode::HintHonored));

        // Only its region: the table fills in.
        let mut table = LatencyTable::default();
        table.add_entry("eu-west/us-east=85").unwrap();
        let from_us = PlacementHint {
            client_region: Some("us-east".parse().unwrap()),
            ..Default::default()
        };
        let mut from_table = request(&DEFAULT_PROFILE, Some(&from_us));
        from_table.latency = &table;
        assert_eq!(chosen(&from_table, &nodes).0, "fog-us");

        // A region nobody knows the distance to never looks near.
        let unknown = in_region(node("fog-ap", TrustTier::Unattested, 1), "ap-south");
        let far_but_known = in_region(node("fog-eu", TrustTier::Unattested, 30), "eu-west");
        assert_eq!(chosen(&from_table, &[unknown, far_but_known]).0, "fog-eu");
    }

    fn with_gateway(mut node: NodeView) -> NodeView {
        node.gateway_url = Some(format!("wss://{}.example.org:8444", node.node_id));
        node
    }

    #[test]
    fn the_users_measured_path_ranks_nodes() {
        // fog-a is 40 ms from the coordinator but 5 ms from the user through its own gateway;
        // fog-b has no gateway and is 10 ms from the coordinator, which is 40 ms from the user.
        let nodes = [
            with_gateway(node("fog-a", TrustTier::Unattested, 40)),
            node("fog-b", TrustTier::Unattested, 10),
        ];
        let hint = PlacementHint {
            relay_rtt_ms: Some(40),
            gateway_rtt_ms: [("fog-a".parse().unwrap(), 5)].into(),
            ..Default::default()
        };
        let (winner, reasons) = chosen(&request(&DEFAULT_PROFILE, Some(&hint)), &nodes);
        assert_eq!(winner, "fog-a");
        assert!(reasons.contains(&ReasonCode::UserPathDirect), "{reasons:?}");
        assert_eq!(
            user_path(&nodes[0], Some(&hint)),
            UserPath::Direct { rtt_us: Some(5000) }
        );
        assert_eq!(
            user_path(&nodes[1], Some(&hint)),
            UserPath::Relayed {
                rtt_us: Some(50_000)
            }
        );

        // The client could not reach fog-a's gateway: fog-a is ranked by the relayed path
        // (80 ms), and fog-b (50 ms) wins.
        let unreachable = PlacementHint {
            gateway_rtt_ms: Default::default(),
            ..hint.clone()
        };
        let (winner, reasons) = chosen(&request(&DEFAULT_PROFILE, Some(&unreachable)), &nodes);
        assert_eq!(winner, "fog-b");
        assert!(
            reasons.contains(&ReasonCode::UserPathRelayed),
            "{reasons:?}"
        );
        assert_eq!(
            user_path(&nodes[0], Some(&unreachable)),
            UserPath::Relayed {
                rtt_us: Some(80_000)
            }
        );

        // A gateway slower than the relay path is not the best path.
        let slow = PlacementHint {
            relay_rtt_ms: Some(1),
            gateway_rtt_ms: [("fog-a".parse().unwrap(), 90)].into(),
            ..Default::default()
        };
        assert!(matches!(
            user_path(&nodes[0], Some(&slow)),
            UserPath::Relayed { .. }
        ));

        // On loopback both measure about nothing: the direct path wins near-ties.
        let near = PlacementHint {
            relay_rtt_ms: Some(0),
            gateway_rtt_ms: [("fog-a".parse().unwrap(), 1)].into(),
            ..Default::default()
        };
        let mut close = nodes[0].clone();
        close.rtt_us = 300;
        assert!(matches!(
            user_path(&close, Some(&near)),
            UserPath::Direct { .. }
        ));

        // Nothing measured: a node with a gateway is reached there; no path reason is given.
        assert_eq!(
            user_path(&nodes[0], None),
            UserPath::Direct { rtt_us: None }
        );
        let (_, reasons) = chosen(&request(&DEFAULT_PROFILE, None), &nodes);
        assert!(!reasons.contains(&ReasonCode::UserPathDirect));
    }

    #[test]
    fn locality_filters_regions_labels_and_jurisdictions() {
        let nodes = [
            labelled(
                in_region(node("fog-us", TrustTier::Unattested, 1), "us-east"),
                "jurisdiction",
                "us",
            ),
            labelled(
                node("fog-eu", TrustTier::Unattested, 9),
                "jurisdiction",
                "eu",
            ),
            labelled(node("fog-lab", TrustTier::Unattested, 20), "site", "lab-2"),
        ];
        let eu_only = PlacementHint {
            allowed_regions: vec!["eu-west".parse().unwrap()],
            ..Default::default()
        };
        let (winner, reasons) = chosen(&request(&DEFAULT_PROFILE, Some(&eu_only)), &nodes);
        assert_eq!(winner, "fog-eu");
        assert!(reasons.contains(&ReasonCode::HintHonored));
        assert!(reasons.contains(&ReasonCode::RejectLocality));

        let lab = PlacementHint {
            required_labels: [("site".parse().unwrap(), "lab-2".parse().unwrap())].into(),
            ..Default::default()
        };
        assert_eq!(
            chosen(&request(&DEFAULT_PROFILE, Some(&lab)), &nodes).0,
            "fog-lab"
        );

        let eu = ["eu".parse().unwrap()];
        let mut tenant_in_eu = request(&DEFAULT_PROFILE, None);
        tenant_in_eu.jurisdictions = &eu;
        assert_eq!(chosen(&tenant_in_eu, &nodes).0, "fog-eu");

        // A profile may demand regions and labels of its own.
        let in_lab = Profile {
            labels: [("site".parse().unwrap(), "lab-2".parse().unwrap())].into(),
            ..Profile::DEFAULT
        };
        assert_eq!(chosen(&request(&in_lab, None), &nodes).0, "fog-lab");
        let in_us = Profile {
            regions: vec!["us-east".parse().unwrap()],
            ..Profile::DEFAULT
        };
        let (winner, reasons) = chosen(&request(&in_us, None), &nodes);
        assert_eq!(winner, "fog-us");
        assert!(reasons.contains(&ReasonCode::RejectLocality), "{reasons:?}");

        // Only a cloud node in the jurisdiction: the fallback says locality was why.
        let nodes = [
            labelled(
                node("fog-us", TrustTier::Unattested, 1),
                "jurisdiction",
                "us",
            ),
            labelled(node("cloud-eu", TrustTier::Cloud, 80), "jurisdiction", "eu"),
        ];
        let (winner, reasons) = chosen(&tenant_in_eu, &nodes);
        assert_eq!(winner, "cloud-eu");
        assert_eq!(reasons[0], ReasonCode::FallbackCloudLocality);
    }

    #[test]
    fn failover_goes_to_the_nearest_cloud_node_never_back() {
        let nodes = [
            node("fog-a", TrustTier::Unattested, 1),
            node("fog-b", TrustTier::Unattested, 2),
            node("cloud-far", TrustTier::Cloud, 120),
            node("cloud-near", TrustTier::Cloud, 80),
        ];
        let lost: NodeId = "fog-a".parse().unwrap();
        let mut failover = request(&DEFAULT_PROFILE, None);
        failover.failover_from = Some(&lost);
        let (winner, reasons) = chosen(&failover, &nodes);
        assert_eq!(winner, "cloud-near");
        assert_eq!(reasons, [ReasonCode::FailoverNodeLost]);

        let error = place(&failover, &nodes[..2]).unwrap_err();
        assert!(error.failover);
        assert_eq!(error.to_string(), "no cloud node is connected");
    }

    #[test]
    fn nothing_qualifies_says_why_node_by_node() {
        let mut process = node("laptop", TrustTier::Dev, 1);
        process.runtime_drivers = vec![RuntimeDriver::Process];
        let error = place(&request(&DEFAULT_PROFILE, None), &[process.clone()]).unwrap_err();
        assert_eq!(
            error.examples,
            vec![(process.node_id.clone(), ReasonCode::RejectTrustTier)]
        );
        assert_eq!(
            error.to_string(),
            "no node can take the session: 1 below the profile's trust tier (laptop);"
        );
        let dev = Profile {
            min_trust_tier: TrustTier::Dev,
            ..Profile::DEFAULT
        };
        assert_eq!(chosen(&request(&dev, None), &[process]).0, "laptop");
        assert_eq!(
            place(&request(&DEFAULT_PROFILE, None), &[])
                .unwrap_err()
                .to_string(),
            "no node is connected"
        );
        let many: Vec<_> = (0..20)
            .map(|i| {
                let mut n = node(&format!("fog-{i}"), TrustTier::Unattested, 1);
                n.free.session_slots = 0;
                n
            })
            .collect();
        let error = place(&request(&DEFAULT_PROFILE, None), &many).unwrap_err();
        assert_eq!(error.examples.len(), EXAMPLES);
        assert!(
            error.to_string().ends_with("fog-7 and 12 more);"),
            "{error}"
        );
    }
}

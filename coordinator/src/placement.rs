//! Choosing a node for a new session: a pure function of the fleet's current view.
//!
//! A node qualifies when it is connected and healthy, its granted trust tier satisfies the
//! profile, it has a free slot and the profile's CPU and memory, and it lies within the
//! client's locality constraints. Of those, fog nodes win over cloud ones; then the lowest
//! round-trip time; then the least loaded. (Latency to the *user*, from the placement hint,
//! comes with the placement issue; RTT to the coordinator stands in for it here.)

use fogshell_shared::node::RuntimeDriver;
use fogshell_shared::placement::PlacementHint;
use fogshell_shared::profile::Profile;
use fogshell_shared::{NodeId, Placement, ReasonCode, TrustTier};

use crate::fleet::{NodeState, NodeView};

/// Why no node qualified: each node with the first check it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoPlacement {
    /// Node by node.
    pub rejected: Vec<(NodeId, ReasonCode)>,
}

impl std::fmt::Display for NoPlacement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.rejected.is_empty() {
            return f.write_str("no node is connected");
        }
        f.write_str("no node qualified: ")?;
        for (i, (node, reason)) in self.rejected.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{node} ({reason:?})")?;
        }
        Ok(())
    }
}

fn rejection(
    node: &NodeView,
    profile: &Profile,
    hint: Option<&PlacementHint>,
) -> Option<ReasonCode> {
    if node.state != NodeState::Connected || !node.health.is_healthy() {
        return Some(ReasonCode::RejectUnhealthy);
    }
    let tier_ok = node.trust_tier.satisfies(profile.min_trust_tier)
        // A host-shell node runs only what demands nothing.
        && (profile.min_trust_tier == TrustTier::Dev
            || node.runtime_drivers.contains(&RuntimeDriver::Libcontainer));
    if !tier_ok {
        return Some(ReasonCode::RejectTrustTier);
    }
    if let Some(hint) = hint {
        let region_ok =
            hint.allowed_regions.is_empty() || hint.allowed_regions.contains(&node.region);
        let labels_ok = hint
            .required_labels
            .iter()
            .all(|(k, v)| node.labels.get(k) == Some(v));
        if !region_ok || !labels_ok {
            return Some(ReasonCode::RejectLocality);
        }
    }
    if !node.free.fits(&profile.limits()) {
        return Some(ReasonCode::RejectCapacity);
    }
    None
}

/// Places a session with `profile` on one of `nodes`.
pub fn place(
    nodes: &[NodeView],
    profile: &Profile,
    hint: Option<&PlacementHint>,
) -> Result<Placement, NoPlacement> {
    let mut rejected = Vec::new();
    let mut best: Option<&NodeView> = None;
    for node in nodes {
        if let Some(reason) = rejection(node, profile, hint) {
            rejected.push((node.node_id.clone(), reason));
            continue;
        }
        let key = |n: &NodeView| {
            (
                n.trust_tier == TrustTier::Cloud,
                n.rtt_us,
                n.load.load1_milli,
            )
        };
        if best.is_none_or(|b| key(node) < key(b)) {
            best = Some(node);
        }
    }
    let node = best.ok_or(NoPlacement {
        rejected: rejected.clone(),
    })?;
    let mut reasons = vec![if node.trust_tier == TrustTier::Cloud {
        ReasonCode::FallbackCloudNoFogCapacity
    } else {
        ReasonCode::FogLowestLatency
    }];
    if hint.is_some_and(|h| !h.allowed_regions.is_empty() || !h.required_labels.is_empty()) {
        reasons.push(ReasonCode::HintHonored);
    }
    // The passed-over nodes' reasons, so the audit event says why not them.
    let mut seen: Vec<ReasonCode> = rejected.iter().map(|(_, r)| *r).collect();
    seen.sort();
    seen.dedup();
    reasons.extend(seen);
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
    use fogshell_shared::node::{Arch, Health, Load};
    use fogshell_shared::{Resources, Timestamp};

    fn node(id: &str, tier: TrustTier, rtt_us: u64) -> NodeView {
        NodeView {
            node_id: id.parse().unwrap(),
            state: NodeState::Connected,
            trust_tier: tier,
            region: "eu-west".parse().unwrap(),
            labels: Default::default(),
            arch: Arch::X86_64,
            agent_version: "0.1.0".into(),
            runtime_drivers: vec![RuntimeDriver::Libcontainer],
            capacity: Resources {
                cpu_millis: 4000,
                memory_bytes: 8 << 30,
                session_slots: 10,
            },
            free: Resources {
                cpu_millis: 4000,
                memory_bytes: 8 << 30,
                session_slots: 10,
            },
            health: Health::default(),
            load: Load::default(),
            running: vec![],
            rtt_us,
            last_heartbeat: Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn the_nearest_qualified_fog_node_wins() {
        let mut full = node("fog-full", TrustTier::Unattested, 100);
        full.free.session_slots = 0;
        let mut sick = node("fog-sick", TrustTier::Unattested, 50);
        sick.health.memory_pressure = true;
        let nodes = [
            node("cloud-1", TrustTier::Cloud, 10),
            node("fog-far", TrustTier::Unattested, 9000),
            node("fog-near", TrustTier::Unattested, 800),
            full,
            sick,
            node("fog-dev", TrustTier::Dev, 1),
        ];
        let placement = place(&nodes, &Profile::DEFAULT, None).unwrap();
        assert_eq!(placement.node_id.as_str(), "fog-near");
        assert_eq!(placement.reasons[0], ReasonCode::FogLowestLatency);
        assert!(placement.reasons.contains(&ReasonCode::RejectCapacity));
        assert!(placement.reasons.contains(&ReasonCode::RejectUnhealthy));
        assert!(placement.reasons.contains(&ReasonCode::RejectTrustTier));
    }

    #[test]
    fn cloud_takes_what_fog_cannot() {
        let mut full = node("fog-a", TrustTier::Unattested, 100);
        full.free.memory_bytes = 1;
        let placement = place(
            &[full, node("cloud-1", TrustTier::Cloud, 5000)],
            &Profile::DEFAULT,
            None,
        )
        .unwrap();
        assert_eq!(placement.node_id.as_str(), "cloud-1");
        assert_eq!(placement.reasons[0], ReasonCode::FallbackCloudNoFogCapacity);
    }

    #[test]
    fn nothing_qualifies_says_why() {
        let mut process = node("laptop", TrustTier::Dev, 1);
        process.runtime_drivers = vec![RuntimeDriver::Process];
        let error = place(&[process.clone()], &Profile::DEFAULT, None).unwrap_err();
        assert_eq!(
            error.rejected,
            vec![(process.node_id.clone(), ReasonCode::RejectTrustTier)]
        );
        let dev_profile = Profile {
            min_trust_tier: TrustTier::Dev,
            ..Profile::DEFAULT
        };
        assert_eq!(
            place(&[process], &dev_profile, None)
                .unwrap()
                .node_id
                .as_str(),
            "laptop"
        );
        assert!(
            place(&[], &Profile::DEFAULT, None)
                .unwrap_err()
                .to_string()
                .contains("no node")
        );
    }

    #[test]
    fn locality_hints_filter() {
        let mut other = node("fog-us", TrustTier::Unattested, 1);
        other.region = "us-east".parse().unwrap();
        let hint = PlacementHint {
            allowed_regions: vec!["eu-west".parse().unwrap()],
            ..PlacementHint::default()
        };
        let placement = place(
            &[other, node("fog-eu", TrustTier::Unattested, 900)],
            &Profile::DEFAULT,
            Some(&hint),
        )
        .unwrap();
        assert_eq!(placement.node_id.as_str(), "fog-eu");
        assert!(placement.reasons.contains(&ReasonCode::HintHonored));
        assert!(placement.reasons.contains(&ReasonCode::RejectLocality));
    }
}

//! Placement: where a session runs. The inputs and outputs as the API and the audit log show
//! them, the latency model ([`latency`]) and the decision itself ([`place()`]), a pure function
//! of the fleet's view, so it is tested and benchmarked without a single socket.

mod latency;
mod place;

pub use latency::{LatencyTable, ParseLatencyError};
pub use place::{JURISDICTION_LABEL, NoPlacement, PlacementRequest, UserPath, place, user_path};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{NodeId, Region};
use crate::node::{Labels, TrustTier};

/// Why placement chose what it chose, or why it passed a node over. The codes are stable
/// strings: they go into `placement.decided` audit events and API responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReasonCode {
    /// A fog node with the lowest expected latency to the user was chosen.
    FogLowestLatency,
    /// Latency tied; the least loaded node won.
    LeastLoaded,
    /// The client asked for this node or region and it qualified.
    HintHonored,
    /// No fog node had capacity; a cloud region took the session.
    FallbackCloudNoFogCapacity,
    /// No fog node was healthy and connected; a cloud region took the session.
    FallbackCloudNoFogHealthy,
    /// No fog node met the trust tier; a cloud region took the session.
    FallbackCloudTrustTier,
    /// No fog node lay within the locality demanded; a cloud region took the session.
    FallbackCloudLocality,
    /// The session was moved to a cloud region after its node was lost.
    FailoverNodeLost,
    /// A node was passed over: its trust tier is below the profile's minimum.
    RejectTrustTier,
    /// A node was passed over: it is outside the region, jurisdiction or labels demanded.
    RejectLocality,
    /// A node was passed over: not enough free capacity for the profile.
    RejectCapacity,
    /// A node was passed over: unhealthy or not connected.
    RejectUnhealthy,
    /// The user's terminal goes straight to the node's own gateway, ranked by the round trip
    /// the client measured to it.
    UserPathDirect,
    /// The user's terminal goes through the coordinator's relay, ranked by the client's
    /// measured round trip to the coordinator plus the coordinator's QUIC round trip to the
    /// node.
    UserPathRelayed,
}

/// Where a session runs, and why there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Placement {
    /// The node the session runs on.
    pub node_id: NodeId,
    /// That node's region.
    pub region: Region,
    /// That node's trust tier when it was chosen.
    pub trust_tier: TrustTier,
    /// Why it was chosen, most important first.
    pub reasons: Vec<ReasonCode>,
}

/// What a client may tell placement (`placement_hint` in `POST /v1/sessions`). Every field is
/// optional; an empty hint is the same as none.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(deny_unknown_fields)]
pub struct PlacementHint {
    /// The region the client is in, as it knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_region: Option<Region>,
    /// Round-trip times the client measured to regions, in milliseconds.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub region_rtt_ms: BTreeMap<Region, u32>,
    /// Only these regions may run the session (data locality).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_regions: Vec<Region>,
    /// Node labels the node must carry (data locality).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub required_labels: Labels,
    /// The round trip the client measured to the coordinator's relay (`GET /v1/gateways`),
    /// in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_rtt_ms: Option<u32>,
    /// Round trips the client measured to nodes' own gateways, by node, in milliseconds. A
    /// gateway listed by `GET /v1/gateways` but missing here is one the client could not reach.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gateway_rtt_ms: BTreeMap<NodeId, u32>,
}

impl PlacementHint {
    /// Limits on a hint's size, so a request cannot make placement do unbounded work.
    pub const MAX_ENTRIES: usize = 64;

    /// Checks the size limits serde cannot express.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.region_rtt_ms.len() > Self::MAX_ENTRIES
            || self.allowed_regions.len() > Self::MAX_ENTRIES
            || self.required_labels.len() > Self::MAX_ENTRIES
            || self.gateway_rtt_ms.len() > Self::MAX_ENTRIES
        {
            return Err("placement_hint has too many entries (at most 64 of each)");
        }
        Ok(())
    }

    /// Whether the client measured any gateway (then an unmeasured node gateway is one it
    /// could not reach).
    pub fn measured_gateways(&self) -> bool {
        self.relay_rtt_ms.is_some() || !self.gateway_rtt_ms.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_are_screaming_snake() {
        assert_eq!(
            serde_json::to_string(&ReasonCode::FallbackCloudNoFogCapacity).unwrap(),
            "\"FALLBACK_CLOUD_NO_FOG_CAPACITY\""
        );
        assert_eq!(
            serde_json::to_string(&ReasonCode::FogLowestLatency).unwrap(),
            "\"FOG_LOWEST_LATENCY\""
        );
    }

    #[test]
    fn hints_refuse_unknown_fields_and_oversize() {
        let err = serde_json::from_str::<PlacementHint>(r#"{"client_regoin":"eu"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let hint: PlacementHint = serde_json::from_str(r#"{"client_region":"eu-west"}"#).unwrap();
        assert!(hint.validate().is_ok());
        let many = PlacementHint {
            allowed_regions: (0..65)
                .map(|i| Region::new(format!("r{i}")).unwrap())
                .collect(),
            ..Default::default()
        };
        assert!(many.validate().is_err());
    }
}

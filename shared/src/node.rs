//! What a node is and what it has: trust tier, runtime drivers, resources, health.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{LabelKey, LabelValue, NodeId, Region, SessionId};
use crate::timestamp::Timestamp;

/// How far a node is trusted, weakest first, so `Ord` compares trust:
/// `attested > cloud > unattested > dev`.
///
/// - `dev`: the development `process` driver, a host shell with no isolation.
/// - `unattested`: real containers, but nothing proves what software the node runs.
/// - `cloud`: a cloud-region node, trusted by configuration (the operator's own region).
/// - `attested`: a TPM quote over the node's boot state passed the coordinator's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum TrustTier {
    /// Development only; every non-dev policy refuses it.
    Dev,
    /// Containers without proof of the node's software.
    Unattested,
    /// A configured cloud-region node.
    Cloud,
    /// Proven by a TPM quote.
    Attested,
}

impl TrustTier {
    /// The lowercase name used in JSON, config and audit (`attested`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dev => "dev",
            Self::Unattested => "unattested",
            Self::Cloud => "cloud",
            Self::Attested => "attested",
        }
    }

    /// Whether a node of this tier may run a session that demands at least `minimum`.
    pub fn satisfies(self, minimum: TrustTier) -> bool {
        self >= minimum
    }
}

impl fmt::Display for TrustTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an agent runs sessions (runtime connector drivers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum RuntimeDriver {
    /// OCI containers through youki's libcontainer (production).
    Libcontainer,
    /// A host shell on a PTY (development; trust tier `dev`).
    Process,
}

/// CPU architecture of a node, as Rust's `std::env::consts::ARCH` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// x86-64.
    X86_64,
    /// 64-bit ARM.
    Aarch64,
}

impl Arch {
    /// Parses `std::env::consts::ARCH`; `None` for architectures fogshell does not build for.
    pub fn from_rust_arch(arch: &str) -> Option<Self> {
        match arch {
            "x86_64" => Some(Self::X86_64),
            "aarch64" => Some(Self::Aarch64),
            _ => None,
        }
    }
}

/// An amount of each resource placement counts: totals in a hello, free amounts in a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Resources {
    /// CPU in thousandths of a core.
    pub cpu_millis: u32,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// How many more sessions the node will take.
    pub session_slots: u32,
}

impl Resources {
    /// Whether `self` (free capacity) can hold `limits` (one session's limits) and a slot.
    pub fn fits(&self, limits: &ResourceLimits) -> bool {
        self.session_slots >= 1
            && self.cpu_millis >= limits.cpu_millis
            && self.memory_bytes >= limits.memory_bytes
    }
}

/// A session's resource limits, from its profile, enforced through cgroups on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct ResourceLimits {
    /// CPU quota in thousandths of a core (1000 = one core).
    pub cpu_millis: u32,
    /// Memory limit in bytes.
    pub memory_bytes: u64,
    /// Maximum number of processes and threads.
    pub pids: u32,
}

impl ResourceLimits {
    /// The built-in `default` profile's limits: 1 CPU, 512 MiB, 256 pids.
    pub const DEFAULT: Self = Self {
        cpu_millis: 1000,
        memory_bytes: 512 * 1024 * 1024,
        pids: 256,
    };

    /// No limit at all: what a driver without cgroups (the `process` driver) has in force.
    pub const UNLIMITED: Self = Self {
        cpu_millis: u32::MAX,
        memory_bytes: u64::MAX,
        pids: u32::MAX,
    };
}

/// Whether a node is fit for new work. A node under pressure takes no new sessions but keeps
/// the ones it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Health {
    /// The data directory's disk is nearly full.
    pub disk_pressure: bool,
    /// The node is short of memory (PSI or free memory under the threshold).
    pub memory_pressure: bool,
}

impl Health {
    /// No pressure of any kind.
    pub fn is_healthy(&self) -> bool {
        !self.disk_pressure && !self.memory_pressure
    }
}

/// Load on a node: the 1-minute load average in thousandths, so it compares and hashes as an
/// integer (`1500` = 1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Load {
    /// 1-minute load average × 1000.
    pub load1_milli: u32,
}

/// A node's labels, for data-locality filters (`site=lab-2`, `gpu=true`).
pub type Labels = BTreeMap<LabelKey, LabelValue>;

/// A node's liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// The link is up.
    Connected,
    /// The link broke a moment ago; nothing is done about it yet.
    Disconnected,
    /// Silent for too long: its sessions are failed over.
    Lost,
}

/// What the API shows of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    /// The node (from its certificate).
    pub node_id: NodeId,
    /// Liveness.
    pub state: NodeState,
    /// The tier the coordinator grants it.
    pub trust_tier: TrustTier,
    /// Region.
    pub region: Region,
    /// Labels.
    pub labels: Labels,
    /// Architecture.
    pub arch: Arch,
    /// The agent's release.
    pub agent_version: String,
    /// Runtime drivers.
    pub runtime_drivers: Vec<RuntimeDriver>,
    /// Total resources.
    pub capacity: Resources,
    /// Free resources, from the last heartbeat.
    pub free: Resources,
    /// Pressure, from the last heartbeat.
    pub health: Health,
    /// Load, from the last heartbeat.
    pub load: Load,
    /// Sessions it runs.
    pub running: Vec<SessionId>,
    /// Smoothed round-trip time, microseconds (QUIC's estimate).
    pub rtt_us: u64,
    /// When it last said anything.
    pub last_heartbeat: Timestamp,
    /// The node's own edge gateway (`wss://host:port`), when it runs one: terminals of its
    /// sessions can reach it directly instead of through the coordinator's relay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_url: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_tiers_order_as_the_design_says() {
        use TrustTier::*;
        assert!(Attested > Cloud && Cloud > Unattested && Unattested > Dev);
        assert!(Attested.satisfies(Cloud));
        assert!(!Dev.satisfies(Unattested));
        assert_eq!(serde_json::to_string(&Attested).unwrap(), "\"attested\"");
        assert_eq!(Cloud.to_string(), "cloud");
    }

    #[test]
    fn capacity_fit_needs_a_slot_and_room() {
        let free = Resources {
            cpu_millis: 1000,
            memory_bytes: 512 << 20,
            session_slots: 1,
        };
        assert!(free.fits(&ResourceLimits::DEFAULT));
        assert!(
            !Resources {
                session_slots: 0,
                ..free
            }
            .fits(&ResourceLimits::DEFAULT)
        );
        assert!(
            !Resources {
                cpu_millis: 999,
                ..free
            }
            .fits(&ResourceLimits::DEFAULT)
        );
    }

    #[test]
    fn arch_names_follow_rust() {
        assert_eq!(Arch::from_rust_arch("aarch64"), Some(Arch::Aarch64));
        assert_eq!(Arch::from_rust_arch("riscv64"), None);
    }
}

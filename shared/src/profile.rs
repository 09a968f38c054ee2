//! Session profiles: named sets of limits, as operators configure them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{ProfileName, Region};
use crate::node::{Labels, ResourceLimits, TrustTier};

/// What a session of a profile gets, and where it may run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// CPU in thousandths of a core.
    pub cpu_millis: u32,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Processes and threads.
    pub pids: u32,
    /// Whether sessions get a network (off unless a profile says so).
    #[serde(default)]
    pub network: bool,
    /// The weakest node trust tier that may run it.
    #[serde(default = "Profile::default_min_tier")]
    pub min_trust_tier: TrustTier,
    /// Data locality: only nodes in these regions (none: any region).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<Region>,
    /// Data locality: only nodes carrying all these labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
    /// What happens to a running session when its node loses the tier the profile demands
    /// (a failed TPM quote): `terminate` (default) or `keep`.
    #[serde(default)]
    pub on_trust_loss: TrustLoss,
}

/// A profile's answer to its node losing the trust tier the profile demands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustLoss {
    /// End the session, telling attached terminals why.
    #[default]
    Terminate,
    /// Let it run; only new sessions avoid the node.
    Keep,
}

impl Profile {
    /// The built-in `default` profile: 1 CPU, 512 MiB, 256 pids, no network, any real node.
    pub const DEFAULT: Self = Self {
        cpu_millis: ResourceLimits::DEFAULT.cpu_millis,
        memory_bytes: ResourceLimits::DEFAULT.memory_bytes,
        pids: ResourceLimits::DEFAULT.pids,
        network: false,
        min_trust_tier: TrustTier::Unattested,
        regions: Vec::new(),
        labels: BTreeMap::new(),
        on_trust_loss: TrustLoss::Terminate,
    };

    fn default_min_tier() -> TrustTier {
        TrustTier::Unattested
    }

    /// The cgroup limits.
    pub fn limits(&self) -> ResourceLimits {
        ResourceLimits {
            cpu_millis: self.cpu_millis,
            memory_bytes: self.memory_bytes,
            pids: self.pids,
        }
    }

    /// Checks that the limits can hold a shell at all.
    pub fn validate(&self) -> Result<(), String> {
        if self.cpu_millis < 10 {
            return Err("cpu_millis must be at least 10 (a hundredth of a core)".into());
        }
        if self.memory_bytes < 16 << 20 {
            return Err("memory_bytes must be at least 16 MiB".into());
        }
        if self.pids < 4 {
            return Err("pids must be at least 4".into());
        }
        Ok(())
    }
}

/// The profiles a node or coordinator knows: the configured ones, and the built-in `default`
/// unless the configuration redefines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profiles(BTreeMap<ProfileName, Profile>);

impl Profiles {
    /// `configured` plus the built-in `default` (a configured `default` wins); each profile is
    /// validated.
    pub fn new(configured: BTreeMap<ProfileName, Profile>) -> Result<Self, String> {
        for (name, profile) in &configured {
            profile
                .validate()
                .map_err(|e| format!("profile {name}: {e}"))?;
        }
        let mut all = configured;
        all.entry(Self::default_name()).or_insert(Profile::DEFAULT);
        Ok(Self(all))
    }

    /// The name `default`.
    pub fn default_name() -> ProfileName {
        ProfileName::new("default").unwrap_or_else(|_| unreachable!("`default` is a valid name"))
    }

    /// A profile by name.
    pub fn get(&self, name: &ProfileName) -> Option<&Profile> {
        self.0.get(name)
    }

    /// Every profile, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&ProfileName, &Profile)> {
        self.0.iter()
    }
}

impl Default for Profiles {
    fn default() -> Self {
        Self([(Self::default_name(), Profile::DEFAULT)].into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_profile_exists_without_configuration() {
        let profiles = Profiles::default();
        let default = profiles.get(&Profiles::default_name()).unwrap();
        assert_eq!(default.limits(), ResourceLimits::DEFAULT);
        assert!(!default.network);
    }

    #[test]
    fn configured_profiles_are_validated_and_may_replace_default() {
        let small = Profile {
            cpu_millis: 250,
            memory_bytes: 64 << 20,
            pids: 32,
            ..Profile::DEFAULT
        };
        let profiles = Profiles::new(
            [
                ("default".parse().unwrap(), small.clone()),
                ("large".parse().unwrap(), Profile::DEFAULT),
            ]
            .into(),
        )
        .unwrap();
        assert_eq!(profiles.get(&"default".parse().unwrap()), Some(&small));
        assert_eq!(profiles.iter().count(), 2);
        let tiny = Profile {
            memory_bytes: 1024,
            ..Profile::DEFAULT
        };
        let err = Profiles::new([("tiny".parse().unwrap(), tiny)].into()).unwrap_err();
        assert!(
            err.contains("profile tiny") && err.contains("memory_bytes"),
            "{err}"
        );
    }

    #[test]
    fn profiles_read_from_config_text() {
        let p: Profile =
            serde_json::from_str(r#"{"cpu_millis":500,"memory_bytes":268435456,"pids":64}"#)
                .unwrap();
        assert_eq!(p.min_trust_tier, TrustTier::Unattested);
        assert!(
            serde_json::from_str::<Profile>(
                r#"{"cpu_millis":500,"memory_bytes":1,"pids":64,"gpu":1}"#
            )
            .is_err()
        );
    }
}

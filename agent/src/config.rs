//! The agent's configuration file (`/etc/fogshell/agent.toml` by default). Every setting has
//! a default, so an agent runs with no file at all:
//!
//! ```toml
//! state_dir = "/var/lib/fogshell-agent"
//!
//! [registries]
//! insecure = ["127.0.0.1:5000"]        # spoken to over plain HTTP
//!
//! [profiles.small]                     # `default` (1 CPU, 512 MiB, 256 pids) is built in
//! cpu_millis = 500
//! memory_bytes = 268435456
//! pids = 128
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fogshell_shared::ProfileName;
use fogshell_shared::profile::{Profile, Profiles};
use serde::Deserialize;

use crate::image::registry::RegistryConfig;

/// Where the agent looks when no `--config` is given.
pub const DEFAULT_PATH: &str = "/etc/fogshell/agent.toml";

/// The file's contents.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default = "default_state_dir")]
    state_dir: PathBuf,
    #[serde(default)]
    registries: Registries,
    #[serde(default)]
    profiles: BTreeMap<ProfileName, Profile>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Registries {
    #[serde(default)]
    insecure: Vec<String>,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/fogshell-agent")
}

/// The agent's settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Where session state, containers and images live.
    pub state_dir: PathBuf,
    /// Where images come from.
    pub registries: RegistryConfig,
    /// Session profiles (with the built-in `default`).
    pub profiles: Profiles,
}

impl AgentConfig {
    /// Parses a configuration file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, String> {
        let file: File = toml::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
        Ok(Self {
            state_dir: file.state_dir,
            registries: RegistryConfig {
                insecure: file.registries.insecure,
            },
            profiles: Profiles::new(file.profiles).map_err(|e| format!("{origin}: {e}"))?,
        })
    }

    /// Loads `path`, or the default path if it exists, or the defaults. A file named
    /// explicitly must exist.
    pub fn load(path: Option<&Path>) -> Result<Self, String> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_PATH), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                Self::parse("", "defaults")
            }
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_gives_working_defaults() {
        let config = AgentConfig::parse("", "test").unwrap();
        assert_eq!(config.state_dir, default_state_dir());
        assert!(config.profiles.get(&"default".parse().unwrap()).is_some());
        assert!(config.registries.insecure.is_empty());
    }

    #[test]
    fn profiles_and_registries_are_read() {
        let config = AgentConfig::parse(
            "state_dir = \"/srv/fs\"\n[registries]\ninsecure = [\"127.0.0.1:5000\"]\n\
             [profiles.small]\ncpu_millis = 500\nmemory_bytes = 268435456\npids = 128\n",
            "test",
        )
        .unwrap();
        assert_eq!(config.state_dir, PathBuf::from("/srv/fs"));
        assert_eq!(
            config.registries.insecure,
            vec!["127.0.0.1:5000".to_owned()]
        );
        let small = config.profiles.get(&"small".parse().unwrap()).unwrap();
        assert_eq!(small.limits().pids, 128);
    }

    #[test]
    fn mistakes_are_named() {
        let err = AgentConfig::parse("state_dri = \"/x\"", "agent.toml").unwrap_err();
        assert!(
            err.contains("agent.toml") && err.contains("state_dri"),
            "{err}"
        );
        let err = AgentConfig::parse(
            "[profiles.Bad]\ncpu_millis=1\nmemory_bytes=1\npids=1",
            "agent.toml",
        )
        .unwrap_err();
        assert!(err.contains("profile"), "{err}");
        assert!(AgentConfig::load(Some(Path::new("/nonexistent/agent.toml"))).is_err());
    }
}

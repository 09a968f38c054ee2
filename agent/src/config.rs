//! The agent's configuration file (`/etc/fogshell/agent.toml` by default). Every setting has
//! a default, so an agent runs with no file at all:
//!
//! ```toml
//! state_dir = "/var/lib/fogshell-agent"
//!
//! [registries]
//! insecure = ["127.0.0.1:5000"]        # spoken to over plain HTTP
//! auth_file = "/etc/fogshell/registry-auth.json"  # logins, as `skopeo login --authfile` writes
//!
//! [node]
//! coordinator = "shell.example.org:7443"
//! region = "eu-west"
//! tpm = "device:/dev/tpmrm0"           # prove the `attested` tier with this TPM
//!
//! [gateway]                            # off unless `listen` is set: users' terminals
//! listen = "0.0.0.0:8444"              # reach this node's sessions here, not via the cloud
//! url = "wss://fog-a.example.org:8444" # what users reach it by (the attach answer names it)
//! tls_certificate = "/etc/fogshell/gateway.crt"  # PEM chain; plain ws only on loopback
//! tls_key = "/etc/fogshell/gateway.key"
//!
//! [pressure]                           # below these, the node takes no new sessions
//! disk_free_min_bytes = 2147483648     # default: 5 % of the state dir's disk, at most 2 GiB
//! memory_available_min_bytes = 1073741824  # default: 10 % of memory, at most 1 GiB
//!
//! [profiles.small]                     # `default` (1 CPU, 512 MiB, 256 pids) is built in
//! cpu_millis = 500
//! memory_bytes = 268435456
//! pids = 128
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fogshell_shared::node::Labels;
use fogshell_shared::profile::{Profile, Profiles};
use fogshell_shared::{ProfileName, Region, RuntimeDriver, TrustTier};
use serde::Deserialize;

use fogshell_supply::credentials::Credentials;

use crate::image::registry::RegistryConfig;
use crate::node_facts::Pressure;

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
    #[serde(default)]
    node: NodeSection,
    #[serde(default)]
    pressure: Pressure,
    #[serde(default)]
    gateway: GatewaySection,
}

/// `[gateway]`: the node's own edge gateway, serving the seed's PTY endpoint for the sessions
/// on this node so keystrokes stay at the edge. Off unless `listen` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// Where to listen (`0.0.0.0:8444`).
    #[serde(default)]
    pub listen: Option<std::net::SocketAddr>,
    /// The base URL users reach it by (`wss://fog-a.example.org:8444`); by default
    /// `wss://<listen>` (`ws://` without TLS on loopback).
    #[serde(default)]
    pub url: Option<String>,
    /// The TLS certificate chain (PEM) the gateway presents: the operator's own, or one
    /// `fogshell-coordinator gateway-cert` issued from the coordinator's CA.
    #[serde(default)]
    pub tls_certificate: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Viewers one session may have here at once; past it a viewer is refused (429,
    /// `pty.viewer_limit`). Default 8.
    #[serde(default = "GatewaySection::default_max_viewers_per_session")]
    pub max_viewers_per_session: usize,
}

impl Default for GatewaySection {
    fn default() -> Self {
        Self {
            listen: None,
            url: None,
            tls_certificate: None,
            tls_key: None,
            max_viewers_per_session: Self::default_max_viewers_per_session(),
        }
    }
}

impl GatewaySection {
    fn default_max_viewers_per_session() -> usize {
        fogshell_gateway::viewers::ViewerLimits::default().per_session
    }

    /// The gateway's base URL, when it is on: as configured, or from the listen address.
    pub fn url(&self) -> Option<String> {
        let listen = self.listen?;
        Some(self.url.clone().unwrap_or_else(|| {
            let scheme = if self.tls_certificate.is_some() {
                "wss"
            } else {
                "ws"
            };
            format!("{scheme}://{listen}")
        }))
    }

    /// Checks that the section describes a gateway that can run: TLS both or neither, plain
    /// only on loopback, a URL users can be sent to.
    fn validate(&self) -> Result<(), String> {
        let Some(listen) = self.listen else {
            if self.url.is_some() || self.tls_certificate.is_some() || self.tls_key.is_some() {
                return Err("[gateway] needs `listen` to be on".into());
            }
            return Ok(());
        };
        match (&self.tls_certificate, &self.tls_key) {
            (Some(_), Some(_)) => {}
            (None, None) if listen.ip().is_loopback() => {}
            (None, None) => {
                return Err(format!(
                    "[gateway] listens on {listen}: off loopback it needs tls_certificate and tls_key"
                ));
            }
            _ => return Err("[gateway] needs both tls_certificate and tls_key".into()),
        }
        if let Some(url) = self.url() {
            fogshell_shared::wire::edge::validate_gateway_url(&url)
                .map_err(|e| format!("[gateway] {e}"))?;
        }
        Ok(())
    }
}

/// `[node]`: how this node describes itself to the coordinator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// The coordinator's QUIC endpoint, `host:port`.
    #[serde(default)]
    pub coordinator: Option<String>,
    /// Where the node stands.
    #[serde(default = "NodeSection::default_region")]
    pub region: Region,
    /// Labels for locality filters.
    #[serde(default)]
    pub labels: Labels,
    /// The tier the node claims: `unattested` (default) or `cloud` for a cloud-region node
    /// (`dev` is implied by the process driver; `attested` needs a TPM quote).
    #[serde(default = "NodeSection::default_tier")]
    pub trust_tier: TrustTier,
    /// How many sessions the node takes at once.
    #[serde(default = "NodeSection::default_slots")]
    pub session_slots: u32,
    /// `libcontainer` (default) or `process`.
    #[serde(default = "NodeSection::default_driver")]
    pub driver: RuntimeDriver,
    /// The node's TPM as a TCTI string (`device:/dev/tpmrm0`, `swtpm:host=…,port=…`). With
    /// one, the node claims `attested` and proves it with quotes; without, it is at most
    /// `unattested`.
    #[serde(default)]
    pub tpm: Option<String>,
    /// Terminals the coordinator's relay may have open on this node at once (each is a QUIC
    /// stream); past them the next viewer is refused. Default 1024.
    #[serde(default = "NodeSection::default_max_terminals")]
    pub max_terminals: u32,
}

impl NodeSection {
    fn default_max_terminals() -> u32 {
        crate::link::DEFAULT_MAX_TERMINALS
    }
    fn default_region() -> Region {
        Region::new("default").unwrap_or_else(|_| unreachable!("`default` is a valid region"))
    }
    fn default_tier() -> TrustTier {
        TrustTier::Unattested
    }
    fn default_slots() -> u32 {
        16
    }
    fn default_driver() -> RuntimeDriver {
        RuntimeDriver::Libcontainer
    }
}

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            coordinator: None,
            region: Self::default_region(),
            labels: Labels::new(),
            trust_tier: Self::default_tier(),
            session_slots: Self::default_slots(),
            max_terminals: Self::default_max_terminals(),
            driver: Self::default_driver(),
            tpm: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Registries {
    #[serde(default)]
    insecure: Vec<String>,
    #[serde(default)]
    auth_file: Option<PathBuf>,
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
    /// How the node describes itself.
    pub node: NodeSection,
    /// When the node is under pressure.
    pub pressure: Pressure,
    /// The node's own edge gateway.
    pub gateway: GatewaySection,
}

impl AgentConfig {
    /// Parses a configuration file's text, and reads the registry auth file it names;
    /// `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, String> {
        let file: File = toml::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
        file.gateway
            .validate()
            .map_err(|e| format!("{origin}: {e}"))?;
        let credentials = Credentials::load_optional(file.registries.auth_file.as_deref())
            .map_err(|e| format!("{origin}: [registries] auth_file: {e}"))?;
        Ok(Self {
            state_dir: file.state_dir,
            registries: RegistryConfig {
                insecure: file.registries.insecure,
                credentials,
            },
            profiles: Profiles::new(file.profiles).map_err(|e| format!("{origin}: {e}"))?,
            node: file.node,
            pressure: file.pressure,
            gateway: file.gateway,
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
        assert_eq!(config.node.session_slots, 16);
        let node = AgentConfig::parse(
            "[node]\ncoordinator = \"10.0.0.1:7443\"\nregion = \"eu-west\"\ntrust_tier = \"cloud\"\ndriver = \"process\"\ntpm = \"device:/dev/tpmrm0\"\n[node.labels]\nsite = \"lab-2\"\n",
            "test",
        )
        .unwrap()
        .node;
        assert_eq!(node.region.as_str(), "eu-west");
        assert_eq!(node.trust_tier, TrustTier::Cloud);
        assert_eq!(node.driver, RuntimeDriver::Process);
        assert_eq!(node.labels.len(), 1);
        assert_eq!(node.tpm.as_deref(), Some("device:/dev/tpmrm0"));
        let pressure = AgentConfig::parse("[pressure]\ndisk_free_min_bytes = 1024\n", "test")
            .unwrap()
            .pressure;
        assert_eq!(pressure.disk_free_min_bytes, Some(1024));
        assert_eq!(pressure.memory_available_min_bytes, None);
    }

    #[test]
    fn the_gateway_is_off_by_default_and_checked_when_on() {
        let off = AgentConfig::parse("", "test").unwrap().gateway;
        assert_eq!(off.url(), None);
        let loopback = AgentConfig::parse("[gateway]\nlisten = \"127.0.0.1:8444\"\n", "test")
            .unwrap()
            .gateway;
        assert_eq!(loopback.url().as_deref(), Some("ws://127.0.0.1:8444"));
        let tls = AgentConfig::parse(
            "[gateway]\nlisten = \"0.0.0.0:8444\"\nurl = \"wss://fog-a.example.org:8444\"\n\
             tls_certificate = \"/c.pem\"\ntls_key = \"/k.pem\"\n",
            "test",
        )
        .unwrap()
        .gateway;
        assert_eq!(tls.url().as_deref(), Some("wss://fog-a.example.org:8444"));
        for (bad, why) in [
            ("listen = \"0.0.0.0:8444\"", "tls_certificate"),
            ("listen = \"127.0.0.1:1\"\ntls_key = \"/k\"", "both"),
            ("url = \"wss://a\"", "listen"),
            ("listen = \"127.0.0.1:1\"\nurl = \"https://a\"", "wss://"),
        ] {
            let err = AgentConfig::parse(&format!("[gateway]\n{bad}\n"), "agent.toml").unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
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
        let err = AgentConfig::parse(
            "[registries]\nauth_file = \"/nonexistent/auth.json\"\n",
            "agent.toml",
        )
        .unwrap_err();
        assert!(
            err.contains("agent.toml") && err.contains("/nonexistent/auth.json"),
            "{err}"
        );
    }
}

//! A whole fogshell for a test: the loopback OIDC issuer, `fogshell-coordinator serve` (plain
//! HTTP on loopback, SQLite in a temporary directory), and a `fogshell-agent` that joined it
//! and runs containers through libcontainer with the default image imported from
//! `images/out/default`. Everything is a real process; everything is stopped when dropped.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::binary;
use crate::issuer::{AUDIENCE, Issuer};

/// The default image's OCI layout, built by `images/build.sh` (scripts/test.sh runs it).
pub fn default_layout() -> PathBuf {
    let layout = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/out/default");
    assert!(
        layout.join("index.json").is_file(),
        "{} is missing: build it with images/build.sh (scripts/test.sh does)",
        layout.display()
    );
    layout
}

/// The default image, pinned: `local/default@sha256:…`.
pub fn default_image() -> String {
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(default_layout().join("index.json")).expect("index.json"),
    )
    .expect("index.json is JSON");
    format!(
        "local/default@{}",
        index["manifests"][0]["digest"]
            .as_str()
            .expect("a manifest digest")
    )
}

/// A node for [`Stack::add`].
#[derive(Debug, Clone)]
pub struct NodeSpec<'a> {
    /// Its id.
    pub node_id: &'a str,
    /// The tier it claims.
    pub tier: &'a str,
    /// Its region.
    pub region: &'a str,
    /// Its labels.
    pub labels: &'a [(&'a str, &'a str)],
    /// How many sessions it takes.
    pub slots: u32,
    /// Delay each way on its link (through a [`crate::relay::DelayRelay`]).
    pub delay: Option<Duration>,
    /// Runs in a network namespace of its own on the stack's bridge (a [`crate::netns::FogHost`]),
    /// reaching the coordinator through a relay at [`crate::netns::BRIDGE_IP`].
    pub netns: bool,
    /// Its TPM, as a TCTI string ([`crate::swtpm::Swtpm::tcti`]).
    pub tpm: Option<String>,
    /// Registries (`host:port`) it pulls from over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Its registry logins (`[registries] auth_file`).
    pub registry_auth_file: Option<PathBuf>,
    /// Below this many bytes free on its disk, it is under pressure and takes no new sessions.
    /// 0 by default: every test node shares this machine's disk, and how full that is says
    /// nothing about the test.
    pub disk_free_min_bytes: u64,
    /// Runs the node's own edge gateway on loopback, reached by users through a
    /// [`crate::tcp_relay::TcpDelayRelay`] the test can delay or cut ([`Stack::gateway`]).
    pub gateway: bool,
    /// The gateway serves TLS with a certificate `fogshell-coordinator gateway-cert` issued
    /// from the coordinator's CA for 127.0.0.1 (clients trust `<data dir>/pki/ca.crt`).
    pub gateway_tls: bool,
    /// Delay each way on the user's path to the gateway (through its
    /// [`crate::tcp_relay::TcpDelayRelay`]).
    pub gateway_delay: Duration,
}

impl<'a> NodeSpec<'a> {
    /// An unattested node in `eu-west` with 16 slots, no labels, no added delay.
    pub fn new(node_id: &'a str) -> Self {
        Self {
            node_id,
            tier: "unattested",
            region: "eu-west",
            labels: &[],
            slots: 16,
            delay: None,
            netns: false,
            tpm: None,
            insecure_registries: Vec::new(),
            registry_auth_file: None,
            disk_free_min_bytes: 0,
            gateway: false,
            gateway_tls: false,
            gateway_delay: Duration::ZERO,
        }
    }
}

/// A test node's `[pressure]` section: every test node shares this machine's disk and memory,
/// and how much of them is free says nothing about the test.
fn pressure_section(disk_free_min_bytes: u64) -> String {
    format!(
        "[pressure]\ndisk_free_min_bytes = {disk_free_min_bytes}\nmemory_available_min_bytes = 0\n"
    )
}

/// What an agent logs once the coordinator welcomed its connection.
const LINKED: &str = "linked to the coordinator";
/// What an agent logs once its edge gateway listens.
const GATEWAY_LISTENING: &str = "edge gateway listening";

/// A running stack.
#[derive(Debug)]
pub struct Stack {
    /// Holds the data directories.
    pub dir: tempfile::TempDir,
    /// The identity provider.
    pub issuer: Issuer,
    /// `http://127.0.0.1:port`.
    pub api: String,
    /// The QUIC endpoint, `127.0.0.1:port`.
    pub quic: String,
    coordinator: Option<Child>,
    agent: Option<Child>,
    /// More nodes on the host's network ([`Stack::add_node`]): id and process.
    others: Vec<(String, Child)>,
    /// The delay relays in front of some of them.
    relays: Vec<(String, crate::relay::DelayRelay)>,
    /// The users' paths to the nodes' own gateways.
    gateways: Vec<(String, crate::tcp_relay::TcpDelayRelay)>,
    /// The nodes in namespaces of their own, and the bridge joining them (made on first use).
    fog_hosts: Vec<(String, crate::netns::FogHost)>,
    bridge: Option<crate::netns::Bridge>,
    /// Another OpenID provider than [`Stack::issuer`]: its URL and the audience.
    external_oidc: Option<(String, String)>,
    extra: Vec<String>,
    /// The agent runs in this network namespace, reaching the coordinator over a veth.
    net: Option<crate::netns::TestNet>,
}

/// A loopback address no one listens on now (for a server that must be told its port).
fn free_loopback_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

impl Stack {
    /// The coordinator's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("coordinator")
    }

    /// The agent's state directory.
    pub fn agent_dir(&self) -> PathBuf {
        self.dir.path().join("agent")
    }

    /// The state directory of a node added with [`Stack::add_node`].
    pub fn node_dir(&self, node_id: &str) -> PathBuf {
        self.dir.path().join(node_id)
    }

    /// A stack with nothing started yet but its issuer.
    fn unstarted(
        quic: &str,
        extra: Vec<String>,
        net: Option<crate::netns::TestNet>,
        external_oidc: Option<(String, String)>,
    ) -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
            issuer: Issuer::start(),
            api: String::new(),
            quic: quic.into(),
            coordinator: None,
            agent: None,
            others: Vec::new(),
            relays: Vec::new(),
            gateways: Vec::new(),
            fog_hosts: Vec::new(),
            bridge: None,
            external_oidc,
            extra,
            net,
        }
    }

    /// Starts the issuer and a coordinator (no agent yet); `extra` goes on `serve`'s line.
    pub fn coordinator_only(extra: &[&str]) -> Self {
        let extra = extra.iter().map(|s| (*s).to_owned()).collect();
        let mut stack = Self::unstarted("127.0.0.1:0", extra, None, None);
        stack.start_coordinator("127.0.0.1:0");
        stack
    }

    /// A coordinator on `http` (`127.0.0.1:PORT`) that trusts the OpenID provider at
    /// `issuer` for tokens with `audience`, and no node yet; `extra` goes on `serve`'s line.
    pub fn coordinator_for_issuer(
        issuer: &str,
        audience: &str,
        http: &str,
        extra: &[&str],
    ) -> Self {
        let oidc = Some((issuer.to_owned(), audience.to_owned()));
        let extra = extra.iter().map(|s| (*s).to_owned()).collect();
        let mut stack = Self::unstarted("127.0.0.1:0", extra, None, oidc);
        stack.start_coordinator(http);
        stack
    }

    /// Like [`Stack::start`], with the agent in a network namespace of its own whose link to
    /// the coordinator the test can cut ([`Stack::net`]).
    pub fn start_with_netns() -> Self {
        assert!(
            is_root(),
            "network namespaces and containers need root (CI runs as root)"
        );
        let mut stack = Self::unstarted(
            // Every address, so nodes on the host's own network reach it while fog-a's link
            // is cut.
            "0.0.0.0:0",
            vec!["--name".into(), crate::netns::HOST_IP.into()],
            Some(crate::netns::TestNet::create("link")),
            None,
        );
        stack.start_coordinator("127.0.0.1:0");
        stack.join_agent();
        stack.start_agent();
        stack
    }

    /// The agent's network, when it has one of its own.
    pub fn net(&self) -> Option<&crate::netns::TestNet> {
        self.net.as_ref()
    }

    /// `fogshell-agent`, inside the agent's namespace when there is one.
    fn agent_command(&self) -> Command {
        match &self.net {
            Some(net) => {
                let mut command = Command::new("nsenter");
                command
                    .args(net.nsenter_args())
                    .arg(binary("fogshell-agent"));
                command
            }
            None => Command::new(binary("fogshell-agent")),
        }
    }

    /// Starts the issuer, a coordinator and an agent with containers, and waits until the
    /// node is connected.
    pub fn start() -> Self {
        assert!(
            is_root(),
            "these tests run containers and need root (CI runs them as root)"
        );
        let mut stack = Self::coordinator_only(&[]);
        stack.join_agent();
        stack.start_agent();
        stack
    }

    fn start_coordinator(&mut self, http: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("coordinator.log"))
            .expect("log file");
        let mut child = Command::new(binary("fogshell-coordinator"))
            .args([
                "--log-format",
                "json",
                "serve",
                "--listen",
                &self.quic,
                "--http",
                http,
            ])
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--plain-http", "--name", "127.0.0.1"])
            .args(["--name", crate::netns::BRIDGE_IP])
            .args(match &self.external_oidc {
                Some((issuer, audience)) => [
                    "--oidc-issuer".to_owned(),
                    issuer.clone(),
                    "--oidc-audience".to_owned(),
                    audience.clone(),
                ],
                None => [
                    "--oidc-issuer".to_owned(),
                    self.issuer.url.clone(),
                    "--oidc-audience".to_owned(),
                    AUDIENCE.to_owned(),
                ],
            })
            .args(["--default-image", &default_image()])
            // The default image comes from an OCI layout, with no signatures to check: dev
            // mode runs it unverified. Tests of admission bring a policy instead.
            .args((!self.extra.iter().any(|a| a == "--admission-policy")).then_some("--dev"))
            .args(&self.extra)
            .env("RUST_LOG", "info,fogshell_coordinator=debug")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("starting the coordinator");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let logs = self.dir.path().join("coordinator.log");
        let mut next = |prefix: &str| {
            let line = lines.next().and_then(Result::ok).unwrap_or_else(|| {
                panic!(
                    "the coordinator did not start:\n{}",
                    std::fs::read_to_string(&logs).unwrap_or_default()
                )
            });
            line.strip_prefix(prefix)
                .unwrap_or_else(|| panic!("expected {prefix:?}, got {line:?}"))
                .to_owned()
        };
        self.quic = next("listening on ");
        self.api = next("api on ");
        self.coordinator = Some(child);
    }

    fn agent_config(&self) -> PathBuf {
        self.write_agent_config(
            &self.agent_dir(),
            "unattested",
            "eu-west",
            self.net.is_some(),
        )
    }

    /// Where an agent dials the coordinator: across the veth from the namespace, over
    /// loopback from the host.
    fn quic_for(&self, in_netns: bool) -> String {
        let (host, port) = self.quic.rsplit_once(':').expect("host:port");
        match host {
            "0.0.0.0" if in_netns => format!("{}:{port}", crate::netns::HOST_IP),
            "0.0.0.0" => format!("127.0.0.1:{port}"),
            _ => self.quic.clone(),
        }
    }

    fn write_agent_config(&self, dir: &Path, tier: &str, region: &str, in_netns: bool) -> PathBuf {
        let path = dir.join("agent.toml");
        std::fs::write(
            &path,
            format!(
                "{}[node]\nregion = \"{region}\"\ntrust_tier = \"{tier}\"\ncoordinator = \"{}\"\n",
                pressure_section(0),
                self.quic_for(in_netns)
            ),
        )
        .expect("agent config");
        path
    }

    fn join_agent(&mut self) {
        std::fs::create_dir_all(self.agent_dir()).expect("agent dir");
        let joined = self
            .agent_command()
            .args(self.join_args("fog-a", self.net.is_some()))
            .arg("--config")
            .arg(self.agent_config())
            .arg("--state-dir")
            .arg(self.agent_dir())
            .output()
            .expect("starting the agent");
        assert!(joined.status.success(), "join failed: {joined:?}");
    }

    /// Joins and starts one more node, on the host's own network, and waits until it is
    /// connected: `tier` is what it claims (`cloud` for a cloud-region node).
    pub fn add_node(&mut self, node_id: &str, tier: &str, region: &str) {
        self.add(&NodeSpec {
            tier,
            region,
            ..NodeSpec::new(node_id)
        });
    }

    /// Joins and starts a node as `spec` describes, and waits until it is connected.
    pub fn add(&mut self, spec: &NodeSpec<'_>) {
        let node_id = spec.node_id;
        let dir = self.node_dir(node_id);
        std::fs::create_dir_all(&dir).expect("node dir");
        if spec.netns {
            assert!(is_root(), "network namespaces need root (CI runs as root)");
            let bridge = self
                .bridge
                .get_or_insert_with(|| crate::netns::Bridge::create("bed"));
            let host = bridge.add_host();
            self.fog_hosts.push((node_id.to_owned(), host));
        }
        let coordinator = match (spec.delay, spec.netns) {
            (None, false) => self.quic_for(false),
            (delay, netns) => {
                let upstream = self
                    .quic_for(false)
                    .parse()
                    .expect("the coordinator's address");
                let at = if netns {
                    crate::netns::BRIDGE_IP
                } else {
                    "127.0.0.1"
                };
                let relay =
                    crate::relay::DelayRelay::start_at(at, upstream, delay.unwrap_or_default());
                let addr = relay.addr.to_string();
                self.relays.push((node_id.to_owned(), relay));
                addr
            }
        };
        let mut config = pressure_section(spec.disk_free_min_bytes);
        config += &format!(
            "[node]\nregion = \"{}\"\ntrust_tier = \"{}\"\nsession_slots = {}\ncoordinator = \"{coordinator}\"\n[node.labels]\n",
            spec.region, spec.tier, spec.slots
        );
        let quoted: Vec<String> = spec
            .insecure_registries
            .iter()
            .map(|r| format!("\"{r}\""))
            .collect();
        let mut registries = format!("[registries]\ninsecure = [{}]\n", quoted.join(", "));
        if let Some(file) = &spec.registry_auth_file {
            registries.push_str(&format!("auth_file = \"{}\"\n", file.display()));
        }
        config.insert_str(0, &registries);
        if let Some(tcti) = &spec.tpm {
            config.insert_str(
                config.find("[node.labels]").unwrap_or(0),
                &format!("tpm = \"{tcti}\"\n"),
            );
        }
        for (key, value) in spec.labels {
            config.push_str(&format!("{key} = \"{value}\"\n"));
        }
        if spec.gateway {
            // A node in a namespace listens on its own address (TLS: it is off loopback).
            let listen = match spec.netns {
                true => {
                    assert!(spec.gateway_tls, "a gateway off loopback needs TLS");
                    let host = self.fog_host(node_id).expect("the node's namespace");
                    format!("{}:8444", host.ip).parse().expect("an address")
                }
                false => free_loopback_port(),
            };
            let relay = crate::tcp_relay::TcpDelayRelay::start(listen, spec.gateway_delay);
            let scheme = if spec.gateway_tls { "wss" } else { "ws" };
            config.push_str(&format!(
                "[gateway]\nlisten = \"{listen}\"\nurl = \"{scheme}://{}\"\n",
                relay.addr
            ));
            if spec.gateway_tls {
                let issued = crate::run(
                    "fogshell-coordinator",
                    &[
                        "gateway-cert",
                        "--data-dir",
                        &self.data_dir().display().to_string(),
                        "--node",
                        node_id,
                        "--name",
                        "127.0.0.1",
                        "--out-dir",
                        &dir.display().to_string(),
                    ],
                );
                assert!(issued.status.success(), "gateway-cert: {issued:?}");
                config.push_str(&format!(
                    "tls_certificate = \"{}\"\ntls_key = \"{}\"\n",
                    dir.join("gateway.crt").display(),
                    dir.join("gateway.key").display()
                ));
            }
            self.gateways.push((node_id.to_owned(), relay));
        }
        let config_path = dir.join("agent.toml");
        std::fs::write(&config_path, config).expect("agent config");
        let mut join = self.join_args(node_id, false);
        join[2] = coordinator;
        let joined = self
            .node_command(node_id)
            .args(join)
            .arg("--config")
            .arg(&config_path)
            .arg("--state-dir")
            .arg(&dir)
            .output()
            .expect("starting the agent");
        assert!(joined.status.success(), "join failed: {joined:?}");
        let child = self.spawn_node(node_id);
        self.others.push((node_id.to_owned(), child));
        if self.external_oidc.is_some() {
            // No token of that provider here to ask the API with: the agent's log says it.
            self.wait_for_log(&format!("{node_id}.log"), "linked to the coordinator");
        } else {
            self.wait_for(node_id, "connected");
        }
    }

    /// The user's path to `node_id`'s own gateway (made with [`NodeSpec::gateway`]).
    pub fn gateway(&self, node_id: &str) -> &crate::tcp_relay::TcpDelayRelay {
        self.gateways
            .iter()
            .find(|(id, _)| id == node_id)
            .map(|(_, relay)| relay)
            .unwrap_or_else(|| panic!("{node_id} runs no gateway"))
    }

    /// Waits until the log file `name` holds `needle`.
    pub fn wait_for_log(&self, name: &str, needle: &str) {
        let path = self.dir.path().join(name);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !std::fs::read_to_string(&path).is_ok_and(|log| log.contains(needle)) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in {name} within 30 s\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `fogshell-agent` for a node made by [`Stack::add`], in its namespace if it has one.
    fn node_command(&self, node_id: &str) -> Command {
        match self.fog_hosts.iter().find(|(id, _)| id == node_id) {
            Some((_, host)) => {
                let mut command = Command::new("nsenter");
                command
                    .args(host.nsenter_args())
                    .arg(binary("fogshell-agent"));
                command
            }
            None => Command::new(binary("fogshell-agent")),
        }
    }

    /// The namespace host of a node added with `netns`.
    pub fn fog_host(&self, node_id: &str) -> Option<&crate::netns::FogHost> {
        self.fog_hosts
            .iter()
            .find(|(id, _)| id == node_id)
            .map(|(_, host)| host)
    }

    /// `fogshell-agent serve` for a node made by [`Stack::add`].
    fn spawn_node(&self, node_id: &str) -> Child {
        let dir = self.node_dir(node_id);
        self.node_command(node_id)
            .args(["--log-format", "json", "serve"])
            .arg("--config")
            .arg(dir.join("agent.toml"))
            .arg("--state-dir")
            .arg(&dir)
            .arg("--image-layout")
            .arg(default_layout())
            .env("RUST_LOG", "info,fogshell_agent=debug")
            .stdout(Stdio::null())
            .stderr(self.log_file(&format!("{node_id}.log")))
            .spawn()
            .expect("starting the agent")
    }

    /// Kills a node made by [`Stack::add`] (SIGKILL) and starts it again; waits until the new
    /// agent is linked. (The coordinator may still count the killed agent's connection as
    /// `connected` for up to its idle timeout, so the node's state alone says nothing.)
    pub fn restart_node(&mut self, node_id: &str) {
        let linked_before = self.log_count(node_id, LINKED);
        self.respawn_node(node_id);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.log_count(node_id, LINKED) <= linked_before {
            assert!(
                Instant::now() < deadline,
                "the restarted {node_id} did not link within 30 s\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.wait_for(node_id, "connected");
    }

    /// Kills a node made by [`Stack::add`] (SIGKILL) and starts it again without waiting for
    /// its link (which may be cut); waits until its edge gateway listens again when it runs
    /// one.
    pub fn restart_node_unlinked(&mut self, node_id: &str) {
        let listening_before = self.log_count(node_id, GATEWAY_LISTENING);
        self.respawn_node(node_id);
        if self.gateways.iter().any(|(id, _)| id == node_id) {
            let deadline = Instant::now() + Duration::from_secs(30);
            while self.log_count(node_id, GATEWAY_LISTENING) <= listening_before {
                assert!(
                    Instant::now() < deadline,
                    "the restarted {node_id}'s gateway did not listen within 30 s\n{}",
                    self.logs()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// How often `needle` stands in `node_id`'s log.
    fn log_count(&self, node_id: &str, needle: &str) -> usize {
        std::fs::read_to_string(self.dir.path().join(format!("{node_id}.log")))
            .unwrap_or_default()
            .matches(needle)
            .count()
    }

    fn respawn_node(&mut self, node_id: &str) {
        let index = self
            .others
            .iter()
            .position(|(id, _)| id == node_id)
            .unwrap_or_else(|| panic!("no node {node_id}"));
        let _ = self.others[index].1.kill();
        let _ = self.others[index].1.wait();
        self.others[index].1 = self.spawn_node(node_id);
    }

    /// The delay relay in front of a node added with a delay.
    pub fn relay(&self, node_id: &str) -> Option<&crate::relay::DelayRelay> {
        self.relays
            .iter()
            .find(|(id, _)| id == node_id)
            .map(|(_, relay)| relay)
    }

    fn log_file(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(name))
            .expect("log file")
    }

    /// `join` with a fresh token, for `node_id`.
    fn join_args(&self, node_id: &str, in_netns: bool) -> Vec<String> {
        let data = self.data_dir();
        let token = crate::run(
            "fogshell-coordinator",
            &[
                "join-token",
                "create",
                "--data-dir",
                data.to_str().expect("utf-8"),
            ],
        );
        let field = |name: &str| {
            String::from_utf8_lossy(&token.stdout)
                .lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
                .unwrap_or_else(|| panic!("no {name} in {token:?}"))
        };
        [
            "join",
            "--coordinator",
            &self.quic_for(in_netns),
            "--node-id",
            node_id,
            "--token",
            &field("token:"),
            "--ca-hash",
            &field("ca hash:"),
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Starts (or restarts) the agent and waits for the node to be connected.
    pub fn start_agent(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.log"))
            .expect("log file");
        let child = self
            .agent_command()
            .args(["--log-format", "json", "serve"])
            .arg("--config")
            .arg(self.agent_config())
            .arg("--state-dir")
            .arg(self.agent_dir())
            .arg("--image-layout")
            .arg(default_layout())
            .env("RUST_LOG", "info,fogshell_agent=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting the agent");
        self.agent = Some(child);
        self.wait_for_node("connected");
    }

    /// Waits until `GET /v1/nodes/fog-a` says `state`.
    pub fn wait_for_node(&self, state: &str) {
        self.wait_for("fog-a", state);
    }

    /// Waits until `GET /v1/nodes/{node_id}` says `state`.
    pub fn wait_for(&self, node_id: &str, state: &str) {
        self.wait_for_node_field(node_id, "state", state, Duration::from_secs(30));
    }

    /// Waits up to `within` until `GET /v1/nodes/{node_id}` has `field` = `value`.
    pub fn wait_for_node_field(&self, node_id: &str, field: &str, value: &str, within: Duration) {
        let token = self.issuer.token("admin", "ops");
        let deadline = Instant::now() + within;
        loop {
            let out = Command::new("curl")
                .args(["-sf", "-H", &format!("authorization: Bearer {token}")])
                .arg(format!("{}/v1/nodes/{node_id}", self.api))
                .output();
            let body: Option<serde_json::Value> = out
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| serde_json::from_slice(&o.stdout).ok());
            if body.as_ref().is_some_and(|b| b[field] == value) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {node_id} not {field}={value} within {within:?}; last: {body:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the coordinator (SIGKILL: nothing gets flushed on the way out) and starts it
    /// again on the same ports and data.
    pub fn restart_coordinator(&mut self) {
        if let Some(mut child) = self.coordinator.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let http = self.api.trim_start_matches("http://").to_owned();
        // The OS may take a moment to release the port.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpListener::bind(&http).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.start_coordinator(&http);
    }

    /// Runs `fogshell-coordinator audit verify` on the stack's data; panics if the chain
    /// does not verify.
    pub fn verify_audit(&self) {
        let data = self.data_dir();
        let verified = crate::run(
            "fogshell-coordinator",
            &[
                "audit",
                "verify",
                "--data-dir",
                data.to_str().expect("utf-8"),
            ],
        );
        assert!(verified.status.success(), "{verified:?}");
    }

    /// Both processes' logs, for failure messages.
    pub fn logs(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        let tail = |text: String| {
            let lines: Vec<_> = text.lines().collect();
            lines[lines.len().saturating_sub(60)..].join("\n")
        };
        let mut logs = format!(
            "--- coordinator.log ---\n{}\n--- agent.log ---\n{}",
            tail(read("coordinator.log")),
            tail(read("agent.log"))
        );
        for (node_id, _) in &self.others {
            let name = format!("{node_id}.log");
            logs.push_str(&format!("\n--- {name} ---\n{}", tail(read(&name))));
        }
        logs
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        for (_, mut agent) in self.others.drain(..) {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        if let Some(mut coordinator) = self.coordinator.take() {
            let _ = coordinator.kill();
            let _ = coordinator.wait();
        }
        // Sessions outlive their agent by design (their shims are detached): kill the shims,
        // then clean up what their containers left, so a test leaves nothing behind.
        let Ok(dirs) = std::fs::read_dir(self.dir.path()) else {
            return;
        };
        for dir in dirs.flatten() {
            let sessions = dir.path().join("sessions");
            let pattern = format!("shim --dir {}/", sessions.display());
            let _ = Command::new("pkill").args(["-9", "-f", &pattern]).status();
            if let Ok(entries) = std::fs::read_dir(&sessions) {
                for entry in entries.flatten() {
                    let _ = Command::new(binary("fogshell-agent"))
                        .args(["shim", "--delete", "--dir"])
                        .arg(entry.path())
                        .output();
                }
            }
        }
    }
}

//! `fogshell-coordinator up`: the all-in-one development stack, as `k3s server` is one.
//!
//! One command starts a coordinator on loopback (SQLite in the data directory, plain HTTP,
//! the built-in development issuer) and a local agent it supervises as a child process (the
//! agent joins with a join token minted here, imports the default image from its OCI layout,
//! and links over QUIC like any other node). Without root the agent runs host shells (the
//! `process` driver, trust tier `dev`) and says so.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fogshell_coordinator::api::rate_limit::RateLimit;
use fogshell_coordinator::control::ImagePolicy;
use fogshell_coordinator::fleet::NodeState;
use fogshell_coordinator::server::{self, HttpTls, Identity, Running, ServerConfig};
use fogshell_shared::profile::{Profile, Profiles};
use fogshell_shared::{Digest, ImageRef, NodeId, TrustTier};
use tokio::process::{Child, Command};

/// The local agent's node id.
const LOCAL_NODE: &str = "local";

/// What `up` needs (from the command line).
#[derive(Debug)]
pub struct Up {
    pub data_dir: Option<PathBuf>,
    pub http: std::net::SocketAddr,
    pub quic: std::net::SocketAddr,
    pub image_layout: PathBuf,
    pub agent: Option<PathBuf>,
    pub containers: Option<bool>,
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn default_data_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from("/var/lib/fogshell");
    }
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("fogshell")
}

/// The digest of the one image in an OCI layout (its `index.json`).
fn layout_digest(layout: &Path) -> Result<Digest, String> {
    let index_path = layout.join("index.json");
    let text = std::fs::read_to_string(&index_path).map_err(|e| {
        format!(
            "{}: {e} (build the default image first: images/build.sh)",
            index_path.display()
        )
    })?;
    let index: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", index_path.display()))?;
    index["manifests"][0]["digest"]
        .as_str()
        .ok_or_else(|| format!("{} lists no image", index_path.display()))?
        .parse()
        .map_err(|e| format!("{}: {e}", index_path.display()))
}

fn agent_config(state_dir: &Path, coordinator: std::net::SocketAddr, containers: bool) -> String {
    format!(
        "# Written by `fogshell-coordinator up`.\n\
         state_dir = {state:?}\n\n\
         [node]\n\
         coordinator = \"{coordinator}\"\n\
         region = \"local\"\n\
         trust_tier = \"unattested\"\n\
         driver = \"{driver}\"\n",
        state = state_dir.display().to_string(),
        driver = if containers {
            "libcontainer"
        } else {
            "process"
        },
    )
}

/// Runs the stack until interrupted.
pub fn up(args: Up) -> Result<(), String> {
    let root = is_root();
    let containers = args.containers.unwrap_or(root);
    if containers && !root {
        return Err("containers need root: run as root, or use --driver process".into());
    }
    if !args.http.ip().is_loopback() || !args.quic.ip().is_loopback() {
        return Err("the all-in-one stack listens on loopback only".into());
    }
    let data_dir = args.data_dir.unwrap_or_else(default_data_dir);
    let agent_bin = match args.agent {
        Some(path) => path,
        None => std::env::current_exe()
            .map_err(|e| format!("own path: {e}"))?
            .with_file_name("fogshell-agent"),
    };
    if !agent_bin.exists() {
        return Err(format!(
            "{} not found (build it: cargo build --release)",
            agent_bin.display()
        ));
    }
    let image_layout = std::path::absolute(&args.image_layout).map_err(|e| e.to_string())?;
    let digest = layout_digest(&image_layout)?;
    let default_image =
        ImageRef::pinned(None, "local/default", digest).map_err(|e| e.to_string())?;
    let mut default_profile = Profile::DEFAULT;
    if !containers {
        // Host shells are trust tier `dev`; the development stack's default profile takes them.
        default_profile.min_trust_tier = TrustTier::Dev;
    }
    let profiles = Profiles::new([(Profiles::default_name(), default_profile)].into())?;
    let config = ServerConfig {
        data_dir: data_dir.clone(),
        quic_listen: args.quic,
        names: vec!["localhost".into(), "127.0.0.1".into()],
        http_listen: args.http,
        tls: HttpTls::Plain,
        public_url: None,
        identity: Identity::Dev {
            audience: "fogshell".into(),
        },
        profiles,
        images: ImagePolicy {
            default_image,
            dev_mode: true,
        },
        rate: RateLimit::default(),
        lost_within: Duration::from_secs(2),
        heartbeat_interval: fogshell_coordinator::fabric::link::HEARTBEAT_INTERVAL,
        placement: Default::default(),
        node_cert_lifetime: fogshell_coordinator::fabric::enroll::NODE_CERT_VALIDITY,
        client_scope: fogshell_coordinator::auth::dev_issuer::DEV_SCOPES.into(),
        attestation: Default::default(),
        admission_policy: None,
        insecure_registries: Vec::new(),
        registry_auth_file: None,
        attach_token_ttl: fogshell_coordinator::auth::attach::DEFAULT_TTL,
        limits_check_interval: fogshell_coordinator::control::LIMITS_CHECK_INTERVAL,
        viewer_limits: Default::default(),
        viewer_silence: fogshell_gateway::relay::VIEWER_SILENCE,
        console_origins: Vec::new(),
    };
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("tokio: {e}"))?;
    runtime.block_on(async move {
        let running = server::start(config).await?;
        let agent_dir = data_dir.join("agent");
        let result = run_stack(&running, &agent_bin, &agent_dir, &image_layout, containers).await;
        running.shutdown().await;
        result
    })
}

async fn run_stack(
    running: &Running,
    agent_bin: &Path,
    agent_dir: &Path,
    image_layout: &Path,
    containers: bool,
) -> Result<(), String> {
    std::fs::create_dir_all(agent_dir)
        .map_err(|e| format!("creating {}: {e}", agent_dir.display()))?;
    let config_path = agent_dir.join("agent.toml");
    std::fs::write(
        &config_path,
        agent_config(agent_dir, running.quic_addr, containers),
    )
    .map_err(|e| format!("writing {}: {e}", config_path.display()))?;
    if !agent_dir.join("identity/node.crt").exists() {
        join_local_agent(running, agent_bin, agent_dir, &config_path).await?;
    }
    let log_path = agent_dir.join("agent.log");
    let mut agent = start_agent(agent_bin, agent_dir, &config_path, image_layout, &log_path)?;
    wait_for_node(running, &mut agent).await?;

    let url = &running.public_url;
    let driver = if containers {
        "OCI containers (libcontainer)"
    } else {
        "host shells — no root, so the `process` driver: NO isolation, trust tier dev"
    };
    say(&format!(
        "fogshell is up — development stack: loopback only, development login, SQLite.\n\n\
         \x20 console    {url}/console/\n\
         \x20 API        {url}/v1   (OpenAPI: {url}/v1/openapi.json)\n\
         \x20 login      {url}/dev/oidc   (every login is user `dev`, tenant `dev`)\n\
         \x20 node       {LOCAL_NODE}: {driver}\n\
         \x20 data       {}\n\n\
         \x20 open a shell:   fogshell-coordinator shell --url {url}\n\
         \x20 stop:           Ctrl-C\n",
        running_data_hint(agent_dir)
    ));
    supervise(
        agent,
        agent_bin,
        agent_dir,
        &config_path,
        image_layout,
        &log_path,
    )
    .await
}

/// Writes to stdout, ignoring a closed one: the stack keeps running when whoever read its
/// banner (a pipe, `| head`) has gone away.
fn say(text: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

fn running_data_hint(agent_dir: &Path) -> String {
    agent_dir
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

async fn join_local_agent(
    running: &Running,
    agent_bin: &Path,
    agent_dir: &Path,
    config_path: &Path,
) -> Result<(), String> {
    let mut random = [0u8; 30];
    getrandom::fill(&mut random).map_err(|e| format!("randomness: {e}"))?;
    let (token, _) = running
        .enrollment
        .tokens
        .mint(
            random,
            fogshell_coordinator::clock::now(),
            300,
            "the all-in-one's local agent",
        )
        .map_err(|e| e.to_string())?;
    let output = Command::new(agent_bin)
        .arg("join")
        .arg("--coordinator")
        .arg(running.quic_addr.to_string())
        .arg("--ca-hash")
        .arg(&running.ca_hash)
        .arg("--node-id")
        .arg(LOCAL_NODE)
        .arg("--config")
        .arg(config_path)
        .arg("--state-dir")
        .arg(agent_dir)
        .env("FOGSHELL_JOIN_TOKEN", token.expose())
        .output()
        .await
        .map_err(|e| format!("starting {}: {e}", agent_bin.display()))?;
    if !output.status.success() {
        return Err(format!(
            "the local agent could not join: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(())
}

fn start_agent(
    agent_bin: &Path,
    agent_dir: &Path,
    config_path: &Path,
    image_layout: &Path,
    log_path: &Path,
) -> Result<Child, String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    let err_log = log.try_clone().map_err(|e| e.to_string())?;
    Command::new(agent_bin)
        .arg("--log-format")
        .arg("json")
        .arg("serve")
        .arg("--config")
        .arg(config_path)
        .arg("--state-dir")
        .arg(agent_dir)
        .arg("--image-layout")
        .arg(image_layout)
        .stdout(log)
        .stderr(err_log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", agent_bin.display()))
}

async fn wait_for_node(running: &Running, agent: &mut Child) -> Result<(), String> {
    let node: NodeId = LOCAL_NODE.parse().map_err(|e| format!("{e}"))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if running
            .control
            .fleet()
            .view(&node)
            .is_some_and(|v| v.state == NodeState::Connected)
        {
            return Ok(());
        }
        if let Ok(Some(status)) = agent.try_wait() {
            return Err(format!(
                "the local agent exited ({status}); see its log in the data directory"
            ));
        }
        if tokio::time::Instant::now() > deadline {
            return Err("the local agent did not connect within 60 s; see agent/agent.log".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Keeps the agent running (restarting it if it dies) until SIGINT or SIGTERM, then stops it.
/// Sessions keep running under their shims and are reconciled at the next `up`.
async fn supervise(
    mut agent: Child,
    agent_bin: &Path,
    agent_dir: &Path,
    config_path: &Path,
    image_layout: &Path,
    log_path: &Path,
) -> Result<(), String> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("watching SIGTERM: {e}"))?;
    loop {
        tokio::select! {
            status = agent.wait() => {
                tracing::warn!(?status, "the local agent exited; restarting it");
                tokio::time::sleep(Duration::from_secs(1)).await;
                agent = start_agent(agent_bin, agent_dir, config_path, image_layout, log_path)?;
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        }
    }
    if let Some(pid) = agent.id() {
        // SIGTERM, as systemd would; the agent's sessions outlive it.
        let _ = Command::new("kill").arg(pid.to_string()).status().await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), agent.wait()).await;
    say("fogshell stopped.\n");
    Ok(())
}

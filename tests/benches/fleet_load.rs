//! How much a coordinator spends on a big fleet: N simulated agents — real QUIC, real mutual
//! TLS with a node certificate each from the coordinator's CA, the agent's own link code,
//! heartbeats every second — against one `fogshell-coordinator serve` process, whose CPU and
//! RSS are read from /proc over a 10 s window once every node is connected.
//!
//!     cargo build --release --workspace --bins && cargo bench -p fogshell-e2e --bench fleet_load
//!     (FOGSHELL_LOAD_AGENTS=1000,10000 by default; as root, for the open-file limit)
//!
//! The simulated agents run in this process on the same 2 cores, so the coordinator's figure
//! is measured under that competition; this process's own CPU is printed beside it.

use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fogshell_agent::link::{Link, LocalNode};
use fogshell_agent::runtime::PtyStreams;
use fogshell_coordinator::pki::CertificateAuthority;
use fogshell_e2e::binary;
use fogshell_shared::frame::TermSize;
use fogshell_shared::node::{Arch, Health, Load};
use fogshell_shared::wire::{
    Command as WireCommand, CommandError, CommandOutput, Heartbeat, Hello, NodeEvent,
    SUPPORTED_VERSIONS,
};
use fogshell_shared::{ErrorCode, NodeId, Resources, RuntimeDriver, SessionId, TrustTier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A node that reports and never runs anything.
struct SimulatedNode {
    node_id: NodeId,
}

const CAPACITY: Resources = Resources {
    cpu_millis: 4000,
    memory_bytes: 8 << 30,
    session_slots: 16,
};

impl LocalNode for SimulatedNode {
    fn welcomed(&self, _: &fogshell_shared::wire::Welcome) {}
    async fn hello(&self) -> Hello {
        Hello {
            versions: SUPPORTED_VERSIONS,
            node_id: self.node_id.clone(),
            agent_version: "simulated".into(),
            arch: Arch::X86_64,
            region: "load".parse().unwrap(),
            labels: Default::default(),
            claimed_tier: TrustTier::Unattested,
            tpm: None,
            gateway_url: None,
            runtime_drivers: vec![RuntimeDriver::Libcontainer],
            capacity: CAPACITY,
            running: Vec::new(),
        }
    }

    async fn heartbeat(&self, seq: u64) -> Heartbeat {
        Heartbeat {
            seq,
            health: Health::default(),
            free: CAPACITY,
            load: Load::default(),
            running: Vec::new(),
        }
    }

    async fn events(&self) -> Vec<NodeEvent> {
        Vec::new()
    }

    async fn execute(&self, _: WireCommand) -> Result<CommandOutput, CommandError> {
        Err(CommandError {
            code: ErrorCode::NotFound,
            message: "a simulated node runs nothing".into(),
        })
    }

    async fn attach(
        &self,
        session_id: SessionId,
        _: TermSize,
        _: u64,
    ) -> Result<PtyStreams, CommandError> {
        Err(CommandError {
            code: ErrorCode::NotFound,
            message: format!("no session {session_id}"),
        })
    }
}

/// utime + stime of a process, in clock ticks, and its resident set in KiB.
fn cpu_and_rss(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (ticks, rss)
}

/// Each simulated node has its own UDP socket: the soft open-file limit goes up to the hard
/// one, which must allow the largest fleet asked for.
fn raise_open_files(agents: usize) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let hard: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|h| h.parse().ok())
        .unwrap_or(u64::MAX);
    let wanted = (agents as u64 + 1024).min(hard);
    let out = Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--nofile={wanted}:{hard}"),
        ])
        .status();
    assert!(
        out.is_ok_and(|s| s.success()),
        "raising the open-file limit to {wanted}"
    );
    assert!(
        wanted >= agents as u64 + 64,
        "the hard open-file limit {hard} is too low for {agents} agents"
    );
}

fn measure(agents: usize) -> (f64, f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("coordinator");
    let mut coordinator = Command::new(binary("fogshell-coordinator"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--heartbeat-interval",
            "1s",
            "--data-dir",
        ])
        .arg(&data)
        .args(fogshell_e2e::FABRIC_ONLY_SERVE_ARGS)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(coordinator.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: std::net::SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .parse()
        .unwrap();
    // The coordinator made its CA at start; this process signs node certificates with it.
    let now = time::OffsetDateTime::now_utc();
    let ca = CertificateAuthority::load_or_create(&data, now).unwrap();
    let ca_der = CertificateDer::from(ca.cert_der().to_vec());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let connected = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // One UDP socket per 500 simulated nodes: each endpoint carries ~2 MiB of buffers.
    let endpoints: Vec<quinn::Endpoint> = {
        let _guard = runtime.enter();
        (0..agents.div_ceil(500))
            .map(|_| quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap())
            .collect()
    };
    for i in 0..agents {
        let node_id: NodeId = format!("sim-{i}").parse().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = rcgen::CertificateParams::new(vec![node_id.to_string()])
            .unwrap()
            .serialize_request(&key)
            .unwrap();
        let cert = ca
            .issue_node_certificate(&node_id, csr.der(), time::Duration::days(1), now)
            .unwrap();
        let link = Link::from_identity(
            CertificateDer::from(cert.der),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            ca_der.clone(),
            addr,
            "127.0.0.1",
        )
        .unwrap();
        let node = Arc::new(SimulatedNode { node_id });
        let connected = Arc::clone(&connected);
        let endpoint = endpoints[i / 500].clone();
        runtime.spawn(async move {
            let mut counted = false;
            loop {
                let _ = link
                    .once_on(&endpoint, &node, &mut || {
                        if !counted {
                            counted = true;
                            connected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    })
                    .await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        // Spread the handshakes a little, as real nodes come up over time.
        if i % 200 == 199 {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while connected.load(std::sync::atomic::Ordering::Relaxed) < agents {
        assert!(
            Instant::now() < deadline,
            "only {} of {agents} connected",
            connected.load(std::sync::atomic::Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "{agents} agents connected in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(3)); // settle
    let ticks_per_second = 100.0; // CLK_TCK on Linux
    let (before, _) = cpu_and_rss(coordinator.id());
    let (own_before, _) = cpu_and_rss(std::process::id());
    let window = Duration::from_secs(10);
    std::thread::sleep(window);
    let (after, rss_kib) = cpu_and_rss(coordinator.id());
    let (own_after, _) = cpu_and_rss(std::process::id());
    let cores = (after - before) as f64 / ticks_per_second / window.as_secs_f64();
    let own = (own_after - own_before) as f64 / ticks_per_second / window.as_secs_f64();
    runtime.shutdown_background();
    let _ = coordinator.kill();
    let _ = coordinator.wait();
    (cores, rss_kib as f64 / 1024.0, own)
}

fn main() {
    let counts: Vec<usize> = std::env::var("FOGSHELL_LOAD_AGENTS")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .map(|n| n.trim().parse().unwrap())
        .collect();
    raise_open_files(counts.iter().copied().max().unwrap_or(0));
    println!(
        "| agents (1 s heartbeats) | coordinator CPU (cores) | coordinator RSS | load generator CPU (cores) |"
    );
    println!("|---|---|---|---|");
    for agents in counts {
        let (cores, rss_mib, own) = measure(agents);
        println!("| {agents} | {cores:.2} | {rss_mib:.0} MiB | {own:.2} |");
    }
}

//! How long the coordinator takes to declare a silent node lost: a real `fogshell-agent
//! serve` process is linked, killed with SIGKILL (no close frame: only silence), and the
//! time from the kill to the fleet saying `lost` is measured, N times.
//!
//!     cargo build --release --workspace --bins && cargo bench -p fogshell-e2e --bench node_loss
//!     (FOGSHELL_BENCH_TRIALS=50 by default)
//!
//! The coordinator runs in this process (its fleet is read directly); the agent is the real
//! binary from the target directory. Prints p50, p99 and max for docs/benchmarks.md.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fogshell_coordinator::fabric;
use fogshell_coordinator::fleet::{Fleet, NodeState};
use fogshell_coordinator::join_tokens::TokenStore;
use fogshell_coordinator::pki::CertificateAuthority;
use fogshell_shared::{NodeId, Timestamp};

/// Only the fabric and the fleet are measured here: no control plane listens.
struct FleetOnly;

impl fabric::FabricHooks for FleetOnly {
    fn node_connected(&self, _: &fogshell_shared::wire::Hello) -> Vec<fogshell_shared::SessionId> {
        Vec::new()
    }
    fn node_event(&self, _: &NodeId, _: fogshell_shared::wire::NodeEvent) {}
    fn node_lost(&self, _: &NodeId) {}
    fn trust_lost(&self, _: &NodeId, _: &str) {}
    fn record(&self, _: fogshell_shared::audit::Outcome, _: fogshell_shared::audit::AuditEvent) {}
    fn edge_audit(
        &self,
        _: &NodeId,
        _: Vec<fogshell_shared::wire::edge::EdgeRecord>,
    ) -> Option<u64> {
        None
    }
}

fn main() {
    let trials: usize = std::env::var("FOGSHELL_BENCH_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(50);
    let agent_bin = std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.join("fogshell-agent")))
        .filter(|p| p.exists())
        .expect("build the binaries first: cargo build --workspace --bins --release");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("coordinator");
    std::fs::create_dir_all(&data).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let ca = Arc::new(CertificateAuthority::load_or_create(&data, now).unwrap());
    let tokens = TokenStore::open(&data).unwrap();
    let mut random = [0u8; 30];
    getrandom::fill(&mut random).unwrap();
    let stamp = Timestamp::from_unix_millis(now.unix_timestamp() * 1000).unwrap();
    let (token, _) = tokens.mint(random, stamp, 3600, "bench").unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fleet = Arc::new(Fleet::new(Duration::from_secs(2)));
    let addr = runtime.block_on(async {
        let config = fabric::server_config(&ca, &["127.0.0.1".into()], now).unwrap();
        let endpoint = fabric::bind("127.0.0.1:0".parse().unwrap(), config).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let enrollment = Arc::new(fabric::enroll::Enrollment {
            ca: Arc::clone(&ca),
            tokens,
            node_cert_lifetime: fabric::enroll::NODE_CERT_VALIDITY,
        });
        let fabric = fabric::Fabric {
            fleet: Arc::clone(&fleet),
            links: Arc::default(),
            hooks: Arc::new(FleetOnly),
            heartbeat_interval: fabric::link::HEARTBEAT_INTERVAL,
            enrollment,
            attestor: Arc::new(
                fogshell_coordinator::attestation::AttestationConfig::default()
                    .attestor(dir.path())
                    .unwrap(),
            ),
            admission: Arc::default(),
            attach: Arc::new(
                fogshell_coordinator::auth::attach::AttachTokens::new(
                    fogshell_coordinator::auth::attach::DEFAULT_TTL,
                    fogshell_shared::Timestamp::UNIX_EPOCH,
                )
                .unwrap(),
            ),
            console_origins: Arc::default(),
        };
        tokio::spawn(fabric::serve(endpoint, fabric.clone()));
        tokio::spawn(fabric::link::sweep_forever(fabric));
        addr
    });

    let state = dir.path().join("agent");
    std::fs::create_dir_all(&state).unwrap();
    let joined = Command::new(&agent_bin)
        .args([
            "join",
            "--coordinator",
            &addr.to_string(),
            "--token",
            token.expose(),
            "--ca-hash",
            &ca.ca_hash(),
            "--node-id",
            "bench-node",
            "--state-dir",
        ])
        .arg(&state)
        .output()
        .unwrap();
    assert!(joined.status.success(), "{joined:?}");
    let config = state.join("agent.toml");
    std::fs::write(&config, "[node]\ndriver = \"process\"\n").unwrap();
    let node: NodeId = "bench-node".parse().unwrap();
    let state_of = |fleet: &Fleet| fleet.view(&node).map(|v| v.state);

    let mut samples = Vec::new();
    for trial in 0..trials {
        let mut agent = Command::new(&agent_bin)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(&state)
            .args(["--coordinator", &addr.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while state_of(&fleet) != Some(NodeState::Connected) {
            assert!(
                Instant::now() < deadline,
                "trial {trial}: the agent never connected"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // Kill at a random point of the heartbeat period.
        let mut r = [0u8; 2];
        getrandom::fill(&mut r).unwrap();
        std::thread::sleep(Duration::from_millis(
            300 + u64::from(u16::from_le_bytes(r) % 500),
        ));
        let killed = Instant::now();
        agent.kill().unwrap();
        agent.wait().unwrap();
        while state_of(&fleet) != Some(NodeState::Lost) {
            assert!(
                killed.elapsed() < Duration::from_secs(10),
                "trial {trial}: never lost"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        samples.push(killed.elapsed());
    }
    samples.sort();
    let at = |q: f64| {
        samples[((samples.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0
    };
    println!("| node-loss detection (SIGKILL → lost) | p50 ms | p99 ms | max ms | trials |");
    println!("|---|---|---|---|---|");
    println!(
        "| fogshell (idle timeout 1 s, lost after 2 s) | {:.0} | {:.0} | {:.0} | {} |",
        at(0.5),
        at(0.99),
        at(1.0),
        samples.len()
    );
}

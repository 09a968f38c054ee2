//! The agent link end to end with the real binaries: an enrolled agent connects over QUIC
//! with its node certificate; killed without a word, it is declared lost within 2 s; started
//! again, it is connected again. Read from the coordinator's JSON log.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use fogshell_e2e::{binary, run};

fn value(output: &std::process::Output, name: &str) -> String {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
        .unwrap_or_else(|| panic!("no {name:?} in {output:?}"))
}

/// A coordinator whose JSON log lines arrive on a channel.
struct Coordinator {
    child: Child,
    addr: String,
    /// Where the agents of the test write their logs (shown when a wait fails).
    agent_logs: std::path::PathBuf,
    log: mpsc::Receiver<serde_json::Value>,
}

impl Coordinator {
    fn start(data: &Path, agent_logs: &Path) -> Self {
        let mut child = Command::new(binary("fogshell-coordinator"))
            .args([
                "--log-format",
                "json",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data)
            .args(fogshell_e2e::FABRIC_ONLY_SERVE_ARGS)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap()
            .to_owned();
        let (tx, log) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        Self {
            child,
            addr,
            agent_logs: agent_logs.to_path_buf(),
            log,
        }
    }

    /// Waits for a log event with this message about `node`; returns when the coordinator
    /// logged it (its own timestamp, so pipe delays do not count).
    fn wait_for(&self, message: &str, node: &str, within: Duration) -> SystemTime {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self.log.recv_timeout(left).unwrap_or_else(|_| {
                let agents: String = std::fs::read_dir(self.agent_logs.as_path())
                    .map(|d| {
                        d.flatten()
                            .filter(|e| e.file_name().to_string_lossy().starts_with("agent-"))
                            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                            .collect()
                    })
                    .unwrap_or_default();
                panic!(
                    "no {message:?} for {node} within {within:?} (now {:?}); coordinator said:\n{}\nagent logs:\n{agents}",
                    SystemTime::now(),
                    seen.join("\n")
                )
            });
            let text = v.to_string();
            seen.push(text.clone());
            if v["fields"]["message"] == message && text.contains(node) {
                let logged = v["timestamp"]
                    .as_str()
                    .expect("log lines carry a timestamp");
                let millis = fogshell_shared::Timestamp::parse_rfc3339(logged)
                    .unwrap()
                    .unix_millis();
                return SystemTime::UNIX_EPOCH + Duration::from_millis(millis as u64);
            }
        }
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `fogshell-agent serve`; its log goes to `<state>/agent-<n>.log`.
fn agent(state: &Path, coordinator: &str, n: u32) -> Child {
    // The process driver: this test is about the link, not containers.
    let config = state.join("agent.toml");
    std::fs::write(
        &config,
        "[node]\ndriver = \"process\"\nregion = \"eu-west\"\n",
    )
    .unwrap();
    Command::new(binary("fogshell-agent"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(state)
        .args(["--coordinator", coordinator])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(state.join(format!("agent-{n}.log"))).unwrap())
        .spawn()
        .unwrap()
}

#[test]
fn a_silent_node_is_lost_within_two_seconds_and_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("coordinator");
    let data_arg = data.to_str().unwrap();
    let ca_hash = value(
        &run("fogshell-coordinator", &["init", "--data-dir", data_arg]),
        "ca hash:",
    );
    let token = value(
        &run(
            "fogshell-coordinator",
            &["join-token", "create", "--data-dir", data_arg],
        ),
        "token:",
    );
    let state = dir.path().join("agent");
    std::fs::create_dir_all(&state).unwrap();
    let coordinator = Coordinator::start(&data, &state);
    let joined = run(
        "fogshell-agent",
        &[
            "join",
            "--coordinator",
            &coordinator.addr,
            "--token",
            &token,
            "--ca-hash",
            &ca_hash,
            "--node-id",
            "fog-a",
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    assert!(joined.status.success(), "{joined:?}");

    let mut node = agent(&state, &coordinator.addr, 1);
    coordinator.wait_for("node connected", "fog-a", Duration::from_secs(10));

    // SIGKILL: no close frame, the coordinator only notices the silence.
    std::thread::sleep(Duration::from_millis(700));
    let killed = SystemTime::now();
    node.kill().unwrap();
    node.wait().unwrap();
    let lost = coordinator.wait_for("node lost", "fog-a", Duration::from_secs(5));
    let detection = lost.duration_since(killed).unwrap_or_default();
    // Within 2 s of its last heartbeat, which came before the kill.
    assert!(
        detection <= Duration::from_millis(2000),
        "lost after {detection:?}"
    );

    let mut node = agent(&state, &coordinator.addr, 2);
    coordinator.wait_for("node connected", "fog-a", Duration::from_secs(10));
    node.kill().unwrap();
    node.wait().unwrap();
}

#[test]
fn a_node_without_a_certificate_cannot_link() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("coordinator");
    run(
        "fogshell-coordinator",
        &["init", "--data-dir", data.to_str().unwrap()],
    );
    let coordinator = Coordinator::start(&data, dir.path());
    let out = Command::new(binary("fogshell-agent"))
        .args(["serve", "--state-dir"])
        .arg(dir.path().join("never-joined"))
        .args(["--coordinator", &coordinator.addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has this node joined"),
        "{out:?}"
    );
}

#[test]
fn a_certificate_from_another_ca_cannot_link() {
    // Enroll with coordinator B, then present B's node certificate to coordinator A while
    // trusting A's server: A must refuse the client certificate in the handshake.
    let dir = tempfile::tempdir().unwrap();
    let (a_data, b_data) = (dir.path().join("a"), dir.path().join("b"));
    let state = dir.path().join("agent");
    std::fs::create_dir_all(&state).unwrap();
    run(
        "fogshell-coordinator",
        &["init", "--data-dir", a_data.to_str().unwrap()],
    );
    let b_hash = value(
        &run(
            "fogshell-coordinator",
            &["init", "--data-dir", b_data.to_str().unwrap()],
        ),
        "ca hash:",
    );
    let b_token = value(
        &run(
            "fogshell-coordinator",
            &[
                "join-token",
                "create",
                "--data-dir",
                b_data.to_str().unwrap(),
            ],
        ),
        "token:",
    );
    let b = Coordinator::start(&b_data, &state);
    let joined = run(
        "fogshell-agent",
        &[
            "join",
            "--coordinator",
            &b.addr,
            "--token",
            &b_token,
            "--ca-hash",
            &b_hash,
            "--node-id",
            "fog-x",
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    assert!(joined.status.success(), "{joined:?}");
    drop(b);
    std::fs::copy(a_data.join("pki/ca.crt"), state.join("identity/ca.crt")).unwrap();

    let a = Coordinator::start(&a_data, &state);
    let mut node = agent(&state, &a.addr, 1);
    a.wait_for("handshake failed", "", Duration::from_secs(10));
    // And it never links, however often it tries.
    let deadline = Instant::now() + Duration::from_secs(2);
    while let Ok(v) = a
        .log
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        assert_ne!(
            v["fields"]["message"], "node connected",
            "a foreign certificate linked: {v}"
        );
    }
    node.kill().unwrap();
    node.wait().unwrap();
}

//! Keystrokes at the edge: echo latency of a fog session reached through its node's own
//! gateway, against the same session through the cloud coordinator's relay, a session in the
//! cloud, and a bare terminal server on the fog node reached directly (the floor), all in one
//! run on a network-namespace test bed:
//!
//!     cargo build --release --workspace --bins && cargo bench -p fogshell-e2e --bench edge_latency
//!     (as root; FOGSHELL_BENCH_ROUNDS=5, FOGSHELL_BENCH_ECHOES=100, FOGSHELL_BENCH_STARTS=10)
//!
//! The bed: the coordinator and a cloud node (`cloud-1`, next to it) on this host; fog node
//! `fog-a` in a network namespace of its own, its QUIC link to the coordinator through a UDP
//! relay adding 40 ms of round trip. The user is this host too, and every path of theirs
//! crosses a TCP relay of its own (this kernel has no netem): 5 ms round trip to fog-a (its
//! gateway and the floor's server, both TLS with a certificate from the coordinator's CA) and
//! 40 ms to the coordinator (API and relay). The floor is `websocketd --binary` running
//! `busybox sh` under `script` (a PTY) inside fog-a's namespace: a terminal on the node with
//! nothing of fogshell's in the way. Keystrokes go one at a time, each waiting for its echo
//! (`stty -icanon; cat`: the tty echoes), the paths interleaved round by round.
//!
//! Also: from `POST /v1/sessions` to the first prompt byte over the direct path (the API over
//! a warm connection, as a console has one), against the goal user↔coordinator RTT +
//! user↔fog RTT + 15 ms — the way the console and `shell` do it (`Prefer: respond-async`, the
//! nearest gateway's transport opened while the session is created) and the seed's plain way
//! (answered once running, then connected), taking turns.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use fogshell_e2e::stack::{NodeSpec, Stack};
use fogshell_e2e::tcp_relay::TcpDelayRelay;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Delay each way on the user's path to fog-a (5 ms round trip).
const USER_FOG: Duration = Duration::from_micros(2500);
/// Delay each way on the user's path to the coordinator (40 ms round trip).
const USER_CLOUD: Duration = Duration::from_millis(20);
/// Delay each way on fog-a's link to the coordinator (40 ms round trip).
const FOG_CLOUD: Duration = Duration::from_millis(20);
/// Where the floor's terminal server listens inside fog-a's namespace.
const FLOOR_PORT: u16 = 8445;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index.min(samples.len() - 1)]
}

/// A byte stream a WebSocket runs over.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// One terminal the user types into.
struct Term {
    socket: tokio_tungstenite::WebSocketStream<Box<dyn Io>>,
    /// fogshell's JSON frames, or raw binary messages (websocketd).
    frames: bool,
    seen: Vec<u8>,
}

/// Opens `url` (ws or wss, TLS trusting `tls`'s roots).
async fn connect(url: &str, tls: &Arc<rustls::ClientConfig>, frames: bool) -> Term {
    let io = transport(url, tls).await;
    connect_over(io, url, frames).await
}

/// TCP to `url`'s host and port, and TLS over it for `wss`.
async fn transport(url: &str, tls: &Arc<rustls::ClientConfig>) -> Box<dyn Io> {
    let uri: tokio_tungstenite::tungstenite::http::Uri = url.parse().expect("a ws URL");
    let host = uri.host().expect("a host").to_owned();
    let port = uri.port_u16().expect("a port");
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .expect("connecting");
    tcp.set_nodelay(true).expect("TCP_NODELAY");
    if uri.scheme_str() == Some("wss") {
        let name = rustls::pki_types::ServerName::try_from(host).expect("a server name");
        Box::new(
            tokio_rustls::TlsConnector::from(Arc::clone(tls))
                .connect(name, tcp)
                .await
                .expect("TLS"),
        )
    } else {
        Box::new(tcp)
    }
}

/// The WebSocket handshake for `url` over a transport to its host.
async fn connect_over(io: Box<dyn Io>, url: &str, frames: bool) -> Term {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let request = url.into_client_request().expect("a ws URL");
    let (socket, _) = tokio_tungstenite::client_async(request, io)
        .await
        .unwrap_or_else(|e| panic!("attaching to {url}: {e}"));
    Term {
        socket,
        frames,
        seen: Vec::new(),
    }
}

impl Term {
    async fn send(&mut self, bytes: &[u8]) {
        let message = if self.frames {
            Message::Text(
                json!({"type": "stdin", "data_b64": B64.encode(bytes)})
                    .to_string()
                    .into(),
            )
        } else {
            Message::Binary(bytes.to_vec().into())
        };
        self.socket.send(message).await.expect("sending");
    }

    /// Reads until `needle` has arrived; keeps what follows it.
    async fn wait_for(&mut self, needle: &[u8]) {
        loop {
            if let Some(at) = memchr::memmem::find(&self.seen, needle) {
                self.seen.drain(..at + needle.len());
                return;
            }
            let message = tokio::time::timeout(Duration::from_secs(30), self.socket.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no {:?} within 30 s; have {:?}",
                        String::from_utf8_lossy(needle),
                        String::from_utf8_lossy(&self.seen)
                    )
                })
                .expect("the terminal ended")
                .expect("the terminal failed");
            match message {
                Message::Binary(bytes) if !self.frames => self.seen.extend_from_slice(&bytes),
                Message::Text(text) if self.frames => {
                    let frame: Value = serde_json::from_str(&text).expect("a JSON frame");
                    if frame["type"] == "stdout" {
                        let data = frame["data_b64"].as_str().expect("data_b64");
                        self.seen
                            .extend_from_slice(&B64.decode(data).expect("base64"));
                    }
                }
                _ => {}
            }
        }
    }

    /// Drops what is still on its way (the other viewer's echoes), until it is quiet.
    async fn drain(&mut self) {
        while let Ok(Some(Ok(_))) =
            tokio::time::timeout(Duration::from_millis(200), self.socket.next()).await
        {}
        self.seen.clear();
    }

    /// Puts the tty in echo mode: it echoes each keystroke while `cat` swallows it.
    async fn echo_mode(&mut self) {
        self.send(b"stty -icanon; echo \"ec\"\"hoing\"; cat > /dev/null\n")
            .await;
        self.wait_for(b"echoing").await;
    }

    /// One keystroke to its echo.
    async fn echo(&mut self) -> Duration {
        let started = Instant::now();
        self.send(b"x").await;
        self.wait_for(b"x").await;
        started.elapsed()
    }
}

/// The floor: websocketd serving `busybox sh` on a PTY inside fog-a's namespace, over TLS.
struct Floor(std::process::Child);

impl Floor {
    fn start(stack: &Stack, ip: &str) -> Self {
        let dir = stack.node_dir("fog-a");
        let child = std::process::Command::new("nsenter")
            .args(
                stack
                    .fog_host("fog-a")
                    .expect("fog-a's namespace")
                    .nsenter_args(),
            )
            .args(["websocketd", "--binary", "--address", ip, "--port"])
            .arg(FLOOR_PORT.to_string())
            .arg("--ssl")
            .arg(format!("--sslcert={}", dir.join("gateway.crt").display()))
            .arg(format!("--sslkey={}", dir.join("gateway.key").display()))
            .args(["--loglevel=error", "env", "PS1=$ ", "script", "-qfc"])
            .args(["busybox sh", "/dev/null"])
            .spawn()
            .expect("websocketd (Debian's websocketd; scripts/install-deps.sh installs it)");
        Self(child)
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    assert!(
        std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
            .unwrap_or(false),
        "the edge bench runs containers and network namespaces: run it as root"
    );
    let rounds = env_or("FOGSHELL_BENCH_ROUNDS", 5);
    let echoes = env_or("FOGSHELL_BENCH_ECHOES", 100);
    let starts = env_or("FOGSHELL_BENCH_STARTS", 10);
    let _ = rustls::crypto::ring::default_provider().install_default();

    let mut stack = Stack::coordinator_only(&[]);
    stack.add(&NodeSpec {
        region: "edge",
        netns: true,
        delay: Some(FOG_CLOUD),
        gateway: true,
        gateway_tls: true,
        gateway_delay: USER_FOG,
        ..NodeSpec::new("fog-a")
    });
    stack.add(&NodeSpec {
        region: "cloud",
        tier: "cloud",
        ..NodeSpec::new("cloud-1")
    });
    let fog_ip = stack
        .fog_host("fog-a")
        .expect("fog-a's namespace")
        .ip
        .clone();
    let _floor = Floor::start(&stack, &fog_ip);
    let floor_path = TcpDelayRelay::start(
        format!("{fog_ip}:{FLOOR_PORT}")
            .parse()
            .expect("an address"),
        USER_FOG,
    );
    let coordinator = stack
        .api
        .trim_start_matches("http://")
        .parse()
        .expect("the coordinator's address");
    let user_to_coordinator = TcpDelayRelay::start(coordinator, USER_CLOUD);
    let api = format!("http://{}", user_to_coordinator.addr);
    let relay_ws = format!("ws://{}", user_to_coordinator.addr);
    let gateway_ws = format!("wss://{}", stack.gateway("fog-a").addr);

    let ca = stack.data_dir().join("pki/ca.crt");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_file_iter(&ca).expect("the CA") {
        roots.add(cert.expect("the CA")).expect("the CA");
    }
    let tls = Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let token = stack.issuer.token("alice", "org-a");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        // One HTTP client with a warm connection, as a console that is already loaded has.
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .build()
            .expect("an HTTP client");
        let time = |url: String| {
            let http = http.clone();
            async move {
                http.get(&url).send().await.expect("a probe");
                let started = Instant::now();
                let answer = http.get(&url).send().await.expect("a probe");
                assert_eq!(answer.status(), 204, "{url}");
                u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX)
            }
        };
        // The client measures its real paths, as the console does (the relay through the
        // user's path to it, not the address the coordinator knows itself by).
        let relay_rtt = time(format!("{api}/v1/gateway/probe")).await;
        let fog_rtt = time(format!(
            "https://{}/v1/gateway/probe",
            stack.gateway("fog-a").addr
        ))
        .await;
        println!("measured by the client: relay {relay_rtt} ms, fog-a's gateway {fog_rtt} ms");
        let hint = json!({"relay_rtt_ms": relay_rtt, "gateway_rtt_ms": {"fog-a": fog_rtt}});
        // `early`: `Prefer: respond-async`, answered once placed, as the console and `shell`
        // ask.
        let create = |hint: Value, early: bool| {
            let http = http.clone();
            let (api, token) = (api.clone(), token.clone());
            async move {
                let mut request = http
                    .post(format!("{api}/v1/sessions"))
                    .bearer_auth(&token)
                    .json(&json!({"profile": "default", "ttl_seconds": 3600, "placement_hint": hint}));
                if early {
                    request = request.header("prefer", "respond-async");
                }
                let answer = request.send().await.expect("POST /v1/sessions");
                assert_eq!(answer.status(), 201);
                answer.json::<Value>().await.expect("a session")
            }
        };
        let pty = |base: &str, session: &Value| {
            format!(
                "{base}/v1/sessions/{}/pty?token={}",
                session["session_id"].as_str().unwrap(),
                session["attach"]["token"].as_str().unwrap()
            )
        };

        // Start: POST → the first prompt byte over the direct path, two ways taking turns:
        // as the console and `shell` do it (answered once placed, the nearest gateway's
        // transport opened meanwhile), and the seed's plain way (answered once running, then
        // a fresh connection).
        let mut early_start_ms = Vec::new();
        let mut early_post_ms = Vec::new();
        let mut start_ms = Vec::new();
        let mut post_ms = Vec::new();
        for _ in 0..starts {
            for early in [true, false] {
                let started = Instant::now();
                let (session, warm) = if early {
                    let (session, io) =
                        tokio::join!(create(hint.clone(), true), transport(&gateway_ws, &tls));
                    (session, Some(io))
                } else {
                    (create(hint.clone(), false).await, None)
                };
                let posted = started.elapsed().as_secs_f64() * 1000.0;
                let url = format!("{}&cols=80&rows=24", {
                    let ws = session["attach"]["ws_url"].as_str().unwrap();
                    assert!(ws.starts_with(&gateway_ws), "placed direct: {session}");
                    format!("{ws}?token={}", session["attach"]["token"].as_str().unwrap())
                });
                let mut term = match warm {
                    Some(io) => connect_over(io, &url, true).await,
                    None => connect(&url, &tls, true).await,
                };
                term.wait_for(b"$").await;
                let prompt = started.elapsed().as_secs_f64() * 1000.0;
                let (post_samples, start_samples) = if early {
                    (&mut early_post_ms, &mut early_start_ms)
                } else {
                    (&mut post_ms, &mut start_ms)
                };
                post_samples.push(posted);
                start_samples.push(prompt);
                let _ = http
                    .delete(format!(
                        "{api}/v1/sessions/{}",
                        session["session_id"].as_str().unwrap()
                    ))
                    .bearer_auth(&token)
                    .send()
                    .await;
            }
        }

        let fog = create(hint.clone(), false).await;
        assert_eq!(fog["placement"]["node_id"], "fog-a", "{fog}");
        let cloud = create(json!({"allowed_regions": ["cloud"]}), false).await;
        assert_eq!(cloud["placement"]["node_id"], "cloud-1", "{cloud}");
        let mut paths = vec![
            (
                "bare terminal server on fog-a, direct (floor)",
                connect(&format!("wss://{}", floor_path.addr), &tls, false).await,
            ),
            (
                "fogshell on fog-a, direct (edge gateway)",
                connect(&format!("{}&cols=80&rows=24", pty(&gateway_ws, &fog)), &tls, true).await,
            ),
            (
                "fogshell on fog-a, through the coordinator's relay",
                connect(&format!("{}&cols=80&rows=24", pty(&relay_ws, &fog)), &tls, true).await,
            ),
            (
                "fogshell on cloud-1, through the coordinator's relay",
                connect(&format!("{}&cols=80&rows=24", pty(&relay_ws, &cloud)), &tls, true).await,
            ),
        ];
        for (name, term) in &mut paths {
            term.wait_for(b"$").await;
            term.echo_mode().await;
            println!("ready: {name}");
        }
        // The direct and relayed fog-a viewers share one shell: each echo reaches both, so
        // each path drains what the other's keystrokes left before it measures.
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
        for round in 0..rounds {
            for (i, (_, term)) in paths.iter_mut().enumerate() {
                term.drain().await;
                for _ in 0..echoes {
                    samples[i].push(term.echo().await.as_secs_f64() * 1000.0);
                }
            }
            println!("round {} of {rounds} done", round + 1);
        }

        let floor_p50 = percentile(&mut samples[0].clone(), 0.5);
        println!(
            "\n{rounds} rounds × {echoes} keystrokes per path, interleaved; user↔fog-a 5 ms, user↔coordinator 40 ms, coordinator↔fog-a 40 ms round trip\n"
        );
        println!("| path | echo p50 | echo p99 | p50 over the floor |");
        println!("|---|---|---|---|");
        for ((name, _), samples) in paths.iter().zip(samples.iter_mut()) {
            let p50 = percentile(samples, 0.5);
            let p99 = percentile(samples, 0.99);
            println!(
                "| {name} | {p50:.2} ms | {p99:.2} ms | {:+.2} ms |",
                p50 - floor_p50
            );
        }
        let goal = 40.0 + 5.0 + 15.0;
        println!(
            "\n`POST /v1/sessions` → first prompt byte over the direct path, {starts} starts each (goal ≤ {goal:.0} ms: user↔coordinator RTT + user↔fog RTT + 15 ms)\n"
        );
        println!("| how | first prompt byte p50 / p99 | of which the `POST` p50 / p99 |");
        println!("|---|---|---|");
        for (how, start, post) in [
            (
                "`Prefer: respond-async`, gateway connection opened meanwhile (console, `shell`)",
                &mut early_start_ms,
                &mut early_post_ms,
            ),
            ("answered once running, then connected", &mut start_ms, &mut post_ms),
        ] {
            println!(
                "| {how} | {:.1} / {:.1} ms | {:.1} / {:.1} ms |",
                percentile(&mut start.clone(), 0.5),
                percentile(start, 0.99),
                percentile(&mut post.clone(), 0.5),
                percentile(post, 0.99),
            );
        }
    });
}

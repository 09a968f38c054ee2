//! The terminal path's speed, fogshell (API → gateway → QUIC → shim → PTY in a container)
//! side by side with a bare PTY running the same busybox shell on this machine, in one run:
//!
//!     cargo build --release --workspace --bins && cargo bench -p fogshell-e2e --bench session
//!     (as root; FOGSHELL_BENCH_ROUNDS=30 by default)
//!
//! - start: `POST /v1/sessions` → the first byte of the shell's prompt over the WebSocket
//!   (warm image), p50/p99;
//! - echo: one keystroke to its echo, 500 times per round (`stty -icanon; cat`: the tty
//!   echoes), p50/p99, and what fogshell adds to the bare PTY;
//! - throughput: `head -c 100M /dev/zero | base64 | cat` to the client, MB/s;
//! - Ctrl-C: under `yes`, Ctrl-C to the next prompt, p50/p90, and bytes still arriving.
//!
//! The bare PTY is read and written on one thread with blocking calls: the fastest a local
//! terminal gets here. Prints a Markdown table for docs/benchmarks.md.

use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use fogshell_e2e::api::Api;
use fogshell_e2e::stack::Stack;
use fogshell_e2e::ws::Viewer;
use portable_pty::{CommandBuilder, PtySize, native_pty_system};

const ECHOES_PER_ROUND: usize = 500;
const THROUGHPUT_BYTES: usize = 100_000_000;

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index.min(samples.len() - 1)]
}

/// A shell on a local PTY: the baseline.
struct BarePty {
    reader: Box<dyn std::io::Read + Send>,
    writer: Box<dyn std::io::Write + Send>,
    child: Box<dyn portable_pty::Child + Send + Sync>,
    _master: Box<dyn portable_pty::MasterPty + Send>,
    seen: Vec<u8>,
}

impl BarePty {
    fn start() -> Self {
        let pty = native_pty_system()
            .openpty(PtySize {
                rows: 24,
                cols: 80,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("a PTY");
        let mut command = CommandBuilder::new("/bin/busybox");
        command.args(["sh"]);
        command.env("PS1", "$ ");
        let child = pty.slave.spawn_command(command).expect("busybox sh");
        let mut bare = Self {
            reader: pty.master.try_clone_reader().expect("reader"),
            writer: pty.master.take_writer().expect("writer"),
            child,
            _master: pty.master,
            seen: Vec::new(),
        };
        bare.wait_for(b"$ ");
        bare
    }

    fn write(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("writing the PTY");
        self.writer.flush().expect("flushing the PTY");
    }

    /// Reads until `needle` appears after what was consumed; returns the bytes read.
    fn wait_for(&mut self, needle: &[u8]) -> usize {
        let mut buf = [0u8; 65536];
        let mut read = 0;
        let mut from = 0;
        loop {
            if let Some(at) = memchr::memmem::find(&self.seen[from..], needle) {
                self.seen.drain(..from + at + needle.len());
                return read;
            }
            from = self.seen.len().saturating_sub(needle.len() - 1);
            let n = self.reader.read(&mut buf).expect("reading the PTY");
            read += n;
            self.seen.extend_from_slice(&buf[..n]);
            if from > 1 << 20 {
                self.seen.drain(..from);
                from = 0;
            }
        }
    }
}

impl Drop for BarePty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// fogshell's side, over the WebSocket.
struct Remote {
    viewer: Viewer,
    consumed: usize,
}

impl Remote {
    async fn wait_for(&mut self, needle: &[u8]) -> usize {
        let mut received = 0;
        loop {
            // Only bytes not yet searched (plus an overlap for a needle cut in two).
            let from = self.consumed;
            if let Some(at) = memchr::memmem::find(&self.viewer.output[from..], needle) {
                let end = from + at + needle.len();
                self.viewer.output.drain(..end);
                self.consumed = 0;
                return received;
            }
            self.consumed = self.viewer.output.len().saturating_sub(needle.len() - 1);
            let before = self.viewer.output.len();
            if !self.viewer.read_one(Duration::from_secs(30)).await {
                let tail = &self.viewer.output[self.viewer.output.len().saturating_sub(300)..];
                panic!(
                    "no {:?}: the terminal closed or stalled; last output: {:?}",
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(tail)
                );
            }
            received += self.viewer.output.len() - before;
            // Keep memory flat during the throughput run.
            if self.consumed > 1 << 20 {
                self.viewer.output.drain(..self.consumed);
                self.consumed = 0;
            }
        }
    }
}

struct Figures {
    start_ms: Vec<f64>,
    echo_bare_ms: Vec<f64>,
    echo_fogshell_ms: Vec<f64>,
    mbps_bare: Vec<f64>,
    mbps_fogshell: Vec<f64>,
    ctrl_c_bare_ms: Vec<f64>,
    ctrl_c_fogshell_ms: Vec<f64>,
    after_c_bare: Vec<f64>,
    after_c_fogshell: Vec<f64>,
    /// What reached the client after Ctrl-C, drawn or dropped as stale.
    after_c_received: Vec<f64>,
}

fn main() {
    let rounds: usize = std::env::var("FOGSHELL_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(30);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stack = Stack::start();
    let mut f = Figures {
        start_ms: vec![],
        echo_bare_ms: vec![],
        echo_fogshell_ms: vec![],
        mbps_bare: vec![],
        mbps_fogshell: vec![],
        ctrl_c_bare_ms: vec![],
        ctrl_c_fogshell_ms: vec![],
        after_c_bare: vec![],
        after_c_fogshell: vec![],
        after_c_received: vec![],
    };
    runtime.block_on(async {
        let api = Api::new(&stack.api).await;
        let token = stack.issuer.token("bench", "bench");
        // Warm-up: the image is imported and unpacked once, outside the measurement.
        let warm = api.create_session(&token, 3600).await;
        assert_eq!(warm.status, 201, "{}", warm.body);
        let id = warm.body["session_id"].as_str().unwrap();
        api.call(
            "DELETE",
            &format!("/v1/sessions/{id}"),
            "/v1/sessions/{id}",
            Some(&token),
            None,
        )
        .await;

        for round in 0..rounds {
            // Start-up: POST → first prompt byte.
            let started = Instant::now();
            let created = api.create_session(&token, 3600).await;
            assert_eq!(created.status, 201, "{}", created.body);
            let mut remote = Remote {
                viewer: Viewer::attach(&created.body["attach"]).await,
                consumed: 0,
            };
            // As the console does: acknowledge consumed output (flow control).
            if std::env::var_os("FOGSHELL_BENCH_NO_ACKS").is_none() {
                remote.viewer.acknowledge();
            }
            remote.wait_for(b"$ ").await;
            f.start_ms.push(started.elapsed().as_secs_f64() * 1e3);

            // The heavy measurements run on a few rounds; start-up on all.
            if round < 5 {
                let mut bare = BarePty::start();
                // Echo: the tty echoes each byte while cat reads it.
                // The marker is printed after stty ran: keystrokes typed before that could
                // land while the shell's line editor still has echo off.
                let echo_mode = b"stty -icanon; echo \"ec\"\"hoing\"; cat > /dev/null\n";
                bare.write(echo_mode);
                bare.wait_for(b"echoing\r\n");
                remote.viewer.type_bytes(echo_mode).await;
                remote.wait_for(b"echoing\r\n").await;
                for _ in 0..ECHOES_PER_ROUND {
                    let t = Instant::now();
                    bare.write(b"k");
                    bare.wait_for(b"k");
                    f.echo_bare_ms.push(t.elapsed().as_secs_f64() * 1e3);
                    let t = Instant::now();
                    remote.viewer.type_bytes(b"k").await;
                    remote.wait_for(b"k").await;
                    f.echo_fogshell_ms.push(t.elapsed().as_secs_f64() * 1e3);
                }
                bare.write(b"\x03");
                bare.wait_for(b"$ ");
                remote.viewer.type_bytes(b"\x03").await;
                remote.wait_for(b"$ ").await;

                // Throughput: the same pipeline on both.
                let flood = format!(
                    "head -c {THROUGHPUT_BYTES} /dev/zero | base64 | cat; echo \"do\"\"ne\"\n"
                );
                bare.write(flood.as_bytes());
                bare.wait_for(b"/dev/zero");
                let t = Instant::now();
                let n = bare.wait_for(b"done\r\n");
                f.mbps_bare.push(n as f64 / t.elapsed().as_secs_f64() / 1e6);
                remote.viewer.type_bytes(flood.as_bytes()).await;
                remote.wait_for(b"/dev/zero").await;
                let t = Instant::now();
                let n = remote.wait_for(b"done\r\n").await;
                f.mbps_fogshell
                    .push(n as f64 / t.elapsed().as_secs_f64() / 1e6);
                bare.wait_for(b"$ ");
                remote.wait_for(b"$ ").await;

                // Ctrl-C under a flood: to the next prompt, and what still arrives after it.
                for _ in 0..5 {
                    bare.write(b"yes\n");
                    bare.wait_for(b"y\r\ny\r\n");
                    std::thread::sleep(Duration::from_millis(200));
                    let t = Instant::now();
                    bare.write(b"\x03");
                    let n = bare.wait_for(b"$ ");
                    f.ctrl_c_bare_ms.push(t.elapsed().as_secs_f64() * 1e3);
                    f.after_c_bare.push(n as f64 / 1e3);

                    remote.viewer.type_bytes(b"yes\n").await;
                    remote.wait_for(b"y\r\ny\r\n").await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let t = Instant::now();
                    let received = remote.viewer.received;
                    remote.viewer.type_bytes(b"\x03").await;
                    let n = remote.wait_for(b"$ ").await;
                    f.ctrl_c_fogshell_ms.push(t.elapsed().as_secs_f64() * 1e3);
                    f.after_c_fogshell.push(n as f64 / 1e3);
                    f.after_c_received
                        .push((remote.viewer.received - received) as f64 / 1e3);
                }
            }
            let id = created.body["session_id"].as_str().unwrap();
            api.call(
                "DELETE",
                &format!("/v1/sessions/{id}"),
                "/v1/sessions/{id}",
                Some(&token),
                None,
            )
            .await;
        }
    });
    let p = |v: &mut Vec<f64>, q: f64| percentile(v, q);
    println!("| measure | bare PTY | fogshell | goal |");
    println!("|---|---|---|---|");
    println!(
        "| POST /v1/sessions → first prompt byte, p50 / p99 ({} runs) | – | {:.1} / {:.1} ms | ≤ 50 ms p50 |",
        f.start_ms.len(),
        p(&mut f.start_ms, 0.5),
        p(&mut f.start_ms, 0.99)
    );
    let (b50, b99) = (p(&mut f.echo_bare_ms, 0.5), p(&mut f.echo_bare_ms, 0.99));
    let (r50, r99) = (
        p(&mut f.echo_fogshell_ms, 0.5),
        p(&mut f.echo_fogshell_ms, 0.99),
    );
    println!(
        "| keystroke echo, p50 / p99 ({} keystrokes) | {b50:.3} / {b99:.3} ms | {r50:.3} / {r99:.3} ms (adds {:.3} / {:.3}) | adds ≤ 0.3 / 0.5 ms |",
        f.echo_bare_ms.len(),
        r50 - b50,
        r99 - b99
    );
    println!(
        "| output throughput, median of {} | {:.1} MB/s | {:.1} MB/s | no slower than the bare PTY |",
        f.mbps_bare.len(),
        p(&mut f.mbps_bare, 0.5),
        p(&mut f.mbps_fogshell, 0.5)
    );
    println!(
        "| Ctrl-C under `yes` → prompt, p50 / p90 ({} tries) | {:.1} / {:.1} ms | {:.1} / {:.1} ms | bare + 5 ms |",
        f.ctrl_c_bare_ms.len(),
        p(&mut f.ctrl_c_bare_ms, 0.5),
        p(&mut f.ctrl_c_bare_ms, 0.9),
        p(&mut f.ctrl_c_fogshell_ms, 0.5),
        p(&mut f.ctrl_c_fogshell_ms, 0.9)
    );
    println!(
        "| output drawn after Ctrl-C, median (received: drawn + dropped as stale) | {:.0} KB | {:.0} KB ({:.0} KB) | little |",
        p(&mut f.after_c_bare, 0.5),
        p(&mut f.after_c_fogshell, 0.5),
        p(&mut f.after_c_received, 0.5)
    );
}

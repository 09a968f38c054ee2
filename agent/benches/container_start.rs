//! Container start-up, fogshell's libcontainer driver (through its shim) side by side with
//! `crun run` and `runc run` (Debian's) on the same image, in one run, rounds interleaved.
//!
//!     sudo cargo bench -p fogshell-agent --bench container_start      (FOGSHELL_BENCH_RUNS=30)
//!
//! Needs root, the default image (images/build.sh), crun and runc. Prints a Markdown table
//! of p50/p95 per scenario, the shims' memory, and the agent binary's size, for
//! docs/benchmarks.md.
//!
//! Scenarios:
//! - `true`: create → start → exit → delete of `/bin/true`;
//! - `echo`: create → start → first output byte of `echo hi`, and on to exit → delete;
//! - `prompt` (fogshell only): session start to the first bytes of the shell's prompt.
//!
//! fogshell gives every container a PTY and goes through its shim, a process of its own, as
//! crun and runc are. crun runs twice: without a terminal (cheaper), and with one handed over
//! a console socket and read from its master, as fogshell's shim does (`crun + pty`, the like
//! for like); runc without.
#![allow(unsafe_code)] // one pre_exec hook, below, to put crun in its mount namespace

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fogshell_agent::image::ImageStore;
use fogshell_agent::runtime::container::ContainerRuntime;
use fogshell_agent::runtime::{Runtime, SessionRequest, ShimHost};
use fogshell_agent::shim::protocol::ShimEvent;
use fogshell_shared::frame::TermSize;
use fogshell_shared::{ImageRef, ResourceLimits, SessionId, TrustTier};

fn main() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "the benchmark needs root"
    );
    let runs: usize = std::env::var("FOGSHELL_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(30);
    let layout = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/out/default");
    assert!(
        layout.join("index.json").exists(),
        "build the default image first: images/build.sh"
    );

    let state = tempfile::tempdir().unwrap();
    let images = Arc::new(ImageStore::new(&state.path().join("images")).unwrap());
    let digest = images.import_layout(&layout, Some("default")).unwrap();
    let prepared = images.prepare(&digest).unwrap(); // unpacking is not part of start-up
    let image = ImageRef::pinned(None, "fogshell/default", digest).unwrap();
    let host = ShimHost::new(
        state.path(),
        PathBuf::from(env!("CARGO_BIN_EXE_fogshell-agent")),
    )
    .unwrap();
    let fogshell = ContainerRuntime::new(host, Arc::clone(&images), None, state.path());
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let peers = Peers::new(state.path(), &prepared);
    let mut results: Vec<(&str, &str, Vec<Duration>)> = Vec::new();
    let mut record = |system: &'static str, scenario: &'static str, d: Duration| match results
        .iter_mut()
        .find(|(s, c, _)| *s == system && *c == scenario)
    {
        Some((_, _, v)) => v.push(d),
        None => results.push((system, scenario, vec![d])),
    };

    let request = |command: Option<&[&str]>| {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).unwrap();
        SessionRequest {
            session_id: SessionId::from_random_bytes(bytes),
            tenant: "bench".parse().unwrap(),
            profile: "default".parse().unwrap(),
            limits: ResourceLimits::DEFAULT,
            network: false,
            trust_tier: TrustTier::Unattested,
            image_ref: Some(image.clone()),
            command: command.map(|c| c.iter().map(|s| s.to_string()).collect()),
        }
    };

    eprintln!("{runs} rounds…");
    for round in 0..runs + 2 {
        let warmup = round < 2;
        let mut keep = |system, scenario, d| {
            if !warmup {
                record(system, scenario, d);
            }
        };
        // fogshell
        let (total, _, phases) = tokio.block_on(fogshell_once(
            &fogshell,
            request(Some(&["/bin/true"])),
            None,
        ));
        keep("fogshell", "true", total);
        keep("fogshell", "true: allocate (create+start)", phases.allocate);
        keep("fogshell", "true: terminate (delete)", phases.terminate);
        let (total, first, _) = tokio.block_on(fogshell_once(
            &fogshell,
            request(Some(&["/bin/echo", "hi"])),
            Some("hi"),
        ));
        keep("fogshell", "echo: first byte", first.unwrap());
        keep("fogshell", "echo: exit+delete", total);
        let (_, first, _) = tokio.block_on(fogshell_once(&fogshell, request(None), Some("$ ")));
        keep("fogshell", "prompt", first.unwrap());
        // peers, on the same image and limits
        for (system, runtime, terminal) in [
            ("crun", "crun", false),
            ("crun + pty", "crun", true),
            ("runc", "runc", false),
        ] {
            let (total, _) = peers.run(runtime, &["/bin/true"], round, terminal);
            keep(system, "true", total);
            let (total, first) = peers.run(runtime, &["/bin/echo", "hi"], round, terminal);
            keep(system, "echo: first byte", first.unwrap());
            keep(system, "echo: exit+delete", total);
        }
    }

    println!("| scenario | system | p50 ms | p95 ms | runs |");
    println!("|---|---|---|---|---|");
    let mut order: Vec<_> = results.iter().map(|(_, c, _)| *c).collect();
    order.dedup();
    let mut seen = Vec::new();
    for scenario in order {
        if seen.contains(&scenario) {
            continue;
        }
        seen.push(scenario);
        for (system, _, samples) in results.iter().filter(|(_, c, _)| *c == scenario) {
            let (p50, p95) = percentiles(samples);
            println!(
                "| {scenario} | {system} | {p50:.2} | {p95:.2} | {} |",
                samples.len()
            );
        }
    }

    // Memory: shims of idle shells, one and ten.
    let mut sessions = Vec::new();
    for _ in 0..10 {
        let r = request(None);
        tokio.block_on(fogshell.allocate(&r)).unwrap();
        sessions.push(r.session_id);
    }
    std::thread::sleep(Duration::from_millis(300));
    let shim_rss: Vec<u64> = sessions
        .iter()
        .map(|id| {
            let pid = tokio.block_on(fogshell.host().status(*id)).unwrap().pid;
            rss_kib(parent_of(pid))
        })
        .collect();
    println!();
    println!("| memory | KiB |");
    println!("|---|---|");
    println!("| one shim (idle shell) | {} |", shim_rss[0]);
    println!("| ten shims together | {} |", shim_rss.iter().sum::<u64>());
    println!(
        "| this benchmark process (the agent's runtime, 10 sessions) | {} |",
        rss_kib(std::process::id() as i32)
    );
    for id in sessions {
        tokio.block_on(fogshell.terminate(id)).unwrap();
    }
    let binary = Path::new(env!("CARGO_BIN_EXE_fogshell-agent"));
    println!();
    println!(
        "fogshell-agent binary ({}): {:.1} MiB",
        binary.display(),
        std::fs::metadata(binary).unwrap().len() as f64 / (1 << 20) as f64
    );
}

/// Where one fogshell session's time went.
struct Phases {
    allocate: Duration,
    terminate: Duration,
}

/// One session: allocate, attach, optionally wait for `needle` in the output (first-byte
/// time), wait for the exit when a command was given, terminate. Returns (total, first,
/// phases).
async fn fogshell_once(
    runtime: &ContainerRuntime,
    request: SessionRequest,
    needle: Option<&str>,
) -> (Duration, Option<Duration>, Phases) {
    let t0 = Instant::now();
    let runs_to_exit = request.command.is_some();
    runtime.allocate(&request).await.unwrap();
    let allocate = t0.elapsed();
    let mut pty = runtime
        .attach_pty(request.session_id, TermSize::new(80, 24).unwrap(), 0)
        .await
        .unwrap();
    let mut first = None;
    let mut seen = String::new();
    loop {
        if first.is_some() && !runs_to_exit {
            break;
        }
        match pty.output.next_event().await.unwrap() {
            Some(ShimEvent::Output { data, .. }) => {
                seen.push_str(&String::from_utf8_lossy(&data));
                if first.is_none() && needle.is_some_and(|n| seen.contains(n)) {
                    first = Some(t0.elapsed());
                }
            }
            Some(ShimEvent::Exited { .. }) => break,
            Some(_) => {}
            None => panic!("shim closed"),
        }
    }
    let before_terminate = Instant::now();
    runtime.terminate(request.session_id).await.unwrap();
    let terminate = before_terminate.elapsed();
    (
        t0.elapsed(),
        first,
        Phases {
            allocate,
            terminate,
        },
    )
}

/// crun and runc on a bundle of the same image, root and limits as fogshell's spec, without
/// a terminal.
struct Peers {
    dir: PathBuf,
    rootfs: PathBuf,
    /// A mount namespace in which crun accepts this hybrid cgroup host (notes/runtime.md):
    /// `cgroup.controllers` of the v2 mount is hidden by an empty file.
    crun_ns: Option<std::fs::File>,
    holder: Option<std::process::Child>,
}

impl Peers {
    fn new(state: &Path, prepared: &fogshell_agent::image::PreparedImage) -> Self {
        let dir = state.join("peers");
        std::fs::create_dir_all(&dir).unwrap();
        let controllers = Path::new("/sys/fs/cgroup/unified/cgroup.controllers");
        let (crun_ns, holder) = if controllers.exists() {
            let empty = dir.join("empty");
            std::fs::write(&empty, "").unwrap();
            // A sleeping process holds the namespace; crun joins it through /proc/PID/ns/mnt.
            let holder = Command::new("unshare")
                .args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg(format!(
                    "mount --bind {} {} && exec sleep 100000",
                    empty.display(),
                    controllers.display()
                ))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(300));
            let ns = std::fs::File::open(format!("/proc/{}/ns/mnt", child_of(holder.id() as i32)))
                .unwrap();
            (Some(ns), Some(holder))
        } else {
            (None, None)
        };
        Self {
            dir,
            rootfs: prepared.rootfs.clone(),
            crun_ns,
            holder,
        }
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        if let Some(holder) = &mut self.holder {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child_of(holder.id() as i32)),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = holder.kill();
            let _ = holder.wait();
        }
    }
}

impl Peers {
    /// `<runtime> run` of `args`; returns (total, first output byte). With `terminal`, the
    /// container gets a PTY as fogshell's do: its master comes over a console socket and the
    /// output is read from it.
    fn run(
        &self,
        runtime: &str,
        args: &[&str],
        round: usize,
        terminal: bool,
    ) -> (Duration, Option<Duration>) {
        let id = format!("bench-{runtime}-{round}-{}-{terminal}", args.len());
        let bundle = self.dir.join(&id);
        std::fs::create_dir_all(&bundle).unwrap();
        let run = fogshell_agent::image::RunConfig {
            user: Some("1000:1000".into()),
            ..Default::default()
        };
        let passwd = std::fs::read_to_string(self.rootfs.join("etc/passwd")).unwrap();
        let group = std::fs::read_to_string(self.rootfs.join("etc/group")).unwrap();
        let cgroups = format!("/fogshell-bench/{id}");
        let spec =
            fogshell_agent::runtime::bundle::spec(&fogshell_agent::runtime::bundle::BundleParams {
                rootfs: &self.rootfs,
                run: &run,
                passwd: &passwd,
                group: &group,
                limits: ResourceLimits::DEFAULT,
                session: &id,
                cgroups_path: &cgroups,
                size: TermSize::new(80, 24).unwrap(),
            })
            .unwrap();
        let mut value = serde_json::to_value(&spec).unwrap();
        value["process"]["terminal"] = terminal.into();
        value["process"]["args"] = args.into();
        std::fs::write(bundle.join("config.json"), value.to_string()).unwrap();

        let mut command = Command::new(runtime);
        command
            .arg("--root")
            .arg(self.dir.join(format!("{runtime}-state")))
            .arg("run");
        let console = bundle.join("console.sock");
        let listener = terminal.then(|| std::os::unix::net::UnixListener::bind(&console).unwrap());
        if terminal {
            command.arg("--console-socket").arg(&console);
        }
        command
            .arg("--bundle")
            .arg(&bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if runtime == "crun"
            && let Some(ns) = &self.crun_ns
        {
            let fd = ns.as_raw_fd();
            // SAFETY: between fork and exec only setns(2) runs, an async-signal-safe syscall;
            // the fd stays open in the parent for the whole call.
            unsafe {
                command.pre_exec(move || {
                    let ns = std::os::fd::BorrowedFd::borrow_raw(fd);
                    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNS)
                        .map_err(std::io::Error::from)
                });
            }
        }
        let t0 = Instant::now();
        let mut child = command.spawn().unwrap();
        let pty_reader = listener.map(|listener| {
            std::thread::spawn(move || {
                use std::io::Read;
                let mut master = fogshell_agent::shim::child::receive_terminal(&listener).unwrap();
                let mut buf = [0u8; 64];
                let mut first = None;
                // EIO once the container's side closes.
                while let Ok(n) = master.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    first.get_or_insert_with(|| t0.elapsed());
                }
                first
            })
        });
        let mut stdout = child.stdout.take().unwrap();
        let mut first = None;
        let mut buf = [0u8; 64];
        loop {
            use std::io::Read;
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    first.get_or_insert_with(|| t0.elapsed());
                }
            }
        }
        let status = child.wait().unwrap();
        let total = t0.elapsed();
        if let Some(reader) = pty_reader {
            first = reader.join().unwrap();
        }
        assert!(status.success(), "{runtime} run failed");
        let _ = std::fs::remove_dir_all(&bundle);
        (total, first)
    }
}

fn percentiles(samples: &[Duration]) -> (f64, f64) {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.95))
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn parent_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

/// The only child of `pid` (the `sleep` that `unshare … sh -c 'exec sleep'` became is the
/// unshare's child).
fn child_of(pid: i32) -> i32 {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    children
        .split_whitespace()
        .next()
        .map_or(pid, |c| c.parse().unwrap())
}

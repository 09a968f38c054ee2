//! Helpers the runtime tests share: driving a terminal through a shim.
#![allow(dead_code)] // each test file uses a different subset

use std::time::Duration;

use fogshell_agent::runtime::PtyStreams;
use fogshell_agent::shim::protocol::{ShimEvent, ShimRequest};
use fogshell_shared::frame::TermSize;
use fogshell_shared::{ResourceLimits, SessionId, TrustTier};

/// The default image's OCI layout, built by `images/build.sh`.
pub fn default_image_layout() -> std::path::PathBuf {
    let path = std::env::var_os("FOGSHELL_DEFAULT_IMAGE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/out/default")
        });
    assert!(
        path.join("index.json").is_file(),
        "the default image is not built at {}: run images/build.sh (scripts/test.sh does)",
        path.display()
    );
    path
}

pub fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "container tests need root (CI runs as root): run them with sudo or as root"
    );
}

/// How long any one expected output may take.
pub const PATIENCE: Duration = Duration::from_secs(15);

pub fn size(cols: u16, rows: u16) -> TermSize {
    TermSize::new(cols, rows).unwrap()
}

pub fn request(seed: u8, trust_tier: TrustTier) -> fogshell_agent::runtime::SessionRequest {
    fogshell_agent::runtime::SessionRequest {
        // Random bytes, so concurrent test runs on one machine never share a session id.
        session_id: {
            let mut bytes = [seed; 16];
            getrandom::fill(&mut bytes[..12]).unwrap();
            SessionId::from_random_bytes(bytes)
        },
        tenant: "org:test".parse().unwrap(),
        profile: "default".parse().unwrap(),
        limits: ResourceLimits::DEFAULT,
        network: false,
        trust_tier,
        image_ref: None,
        command: None,
    }
}

/// Reads output until `needle` appears; returns everything read. Fails after [`PATIENCE`].
pub async fn read_until(streams: &mut PtyStreams, needle: &str) -> String {
    let mut seen = String::new();
    let wait = async {
        loop {
            match streams.output.next_event().await.unwrap() {
                Some(ShimEvent::Output { data, .. }) => {
                    seen.push_str(&String::from_utf8_lossy(&data));
                    if seen.contains(needle) {
                        return;
                    }
                }
                Some(ShimEvent::Exited { code }) => {
                    panic!("shell exited ({code}) before {needle:?}: {seen}")
                }
                Some(_) => {}
                None => panic!("shim closed before {needle:?}: {seen}"),
            }
        }
    };
    if tokio::time::timeout(PATIENCE, wait).await.is_err() {
        panic!("no {needle:?} within {PATIENCE:?}; saw: {seen:?}");
    }
    seen
}

/// Waits for the shell's first prompt and answers its cursor-position query (`ESC[6n`), as
/// any terminal does: busybox's line editor waits for that answer and swallows what is typed
/// meanwhile.
pub async fn wait_for_prompt(streams: &mut PtyStreams) {
    read_until(streams, "\x1b[6n").await;
    streams
        .input
        .send(&ShimRequest::Input(b"\x1b[24;1R".to_vec()))
        .await
        .unwrap();
}

/// Types a line (with its newline) into the terminal.
pub async fn type_line(streams: &mut PtyStreams, line: &str) {
    streams
        .input
        .send(&ShimRequest::Input(format!("{line}\n").into_bytes()))
        .await
        .unwrap();
}

/// Waits for the shell's exit status.
pub async fn wait_exit(streams: &mut PtyStreams) -> i32 {
    let wait = async {
        loop {
            match streams.output.next_event().await.unwrap() {
                Some(ShimEvent::Exited { code }) => return code,
                Some(_) => {}
                None => panic!("shim closed without an exit status"),
            }
        }
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .expect("an exit status in time")
}

/// The parent of a process, from `/proc/<pid>/stat`.
pub fn parent_pid(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name is in parentheses and may hold spaces: fields start after the last ')'.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let after = &stat[stat.rfind(')').unwrap() + 2..];
            !after.starts_with('Z')
        })
        .unwrap_or(false)
}

/// Waits until a process is gone (or a zombie), failing after [`PATIENCE`].
pub async fn wait_gone(pid: i32) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while alive(pid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "process {pid} still runs"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

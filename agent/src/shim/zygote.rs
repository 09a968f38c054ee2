//! The shim zygote: one shim process, exec'd once, that forks a fresh shim for each session.
//!
//! Why not exec a shim per session: exec'ing the agent binary costs about 2 ms of CPU, most
//! of it the dynamic loader binding libcrypto and the TPM libraries the agent links. On a
//! two-core fog node that work competes with the very session it starts (measured:
//! docs/benchmarks.md). A fork of this small, single-threaded process costs a tenth of it, and
//! the forked shim is as fit to call libcontainer as an exec'd one: the zygote never starts a
//! thread, so its child starts with one.
//!
//! Protocol. The zygote's stdin is a Unix socket from the agent. Each message is a session
//! directory's path (it must be in the zygote's sessions directory) carrying two descriptors
//! (`SCM_RIGHTS`): the write end of a pipe that becomes the new shim's stdout, and the read
//! end of a "go" pipe. The agent asks before it writes the session's files, so the fork and
//! the shim's setting itself up overlap with that writing; the shim waits for a byte on "go"
//! (its end without one: the agent gave up) before it touches the session's directory.
//! Through stdout the shim says `shim <its pid>` at once, then `ready <shell pid>` as an
//! exec'd shim does; when it fails, the agent sees the pipe close and reads the reason in the
//! session's `shim.log`.
//! The end of stdin (the agent stopped) ends the zygote; the shims it forked live on, as
//! shims outlive an agent restart.

use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::unistd::{ForkResult, Pid, fork, setpgid};
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};

/// The longest session path a request may carry.
const MAX_REQUEST: usize = 4096;

/// Serves fork requests on stdin until it closes. Called before any thread exists, and must
/// never start one.
pub fn run_zygote(sessions: &Path) -> Result<(), String> {
    // The kernel reaps the forked shims: the zygote never waits for them.
    set_sigchld(SigHandler::SigIgn, SaFlags::SA_NOCLDWAIT)?;
    // libcontainer reaches /proc through pathrs, which mounts a private procfs the first time
    // and caches it for the process. Made here once, every forked shim — and the container
    // processes libcontainer forks from it — finds it made instead of mounting its own.
    if let Err(error) = pathrs::procfs::ProcfsHandle::new() {
        tracing::debug!(%error, "no procfs handle cached for the shims");
    }
    let control = rustix::stdio::stdin();
    loop {
        let Some(Request { dir, ready, go }) = next_request(&control)? else {
            return Ok(());
        };
        if dir.parent() != Some(sessions.components().as_path()) || !dir.is_dir() {
            // Dropping the pipe tells the agent the start failed.
            tracing::warn!(dir = %dir.display(), "not a session directory; refused");
            continue;
        }
        // SAFETY: this process has exactly one thread (it never starts one), so the child
        // may go on running ordinary code: no lock can be held by a thread that is not there.
        #[allow(unsafe_code)]
        match unsafe { fork() } {
            Ok(ForkResult::Child) => std::process::exit(become_shim(&dir, ready, go)),
            Ok(ForkResult::Parent { .. }) => drop((ready, go)),
            Err(error) => tracing::warn!(%error, "fork failed; the session's start fails"),
        }
    }
}

/// One session's request.
struct Request {
    dir: PathBuf,
    /// Becomes the shim's stdout: what it answers the agent on.
    ready: OwnedFd,
    /// A byte here tells the shim its session's files are written; the end without one, that
    /// the agent gave the session up.
    go: OwnedFd,
}

/// Reads one request: the session directory and the descriptors sent with it. `None` at the
/// end of the stream.
fn next_request(control: &impl AsFd) -> Result<Option<Request>, String> {
    loop {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
        let mut ancillary = RecvAncillaryBuffer::new(&mut space);
        let mut buf = vec![0u8; MAX_REQUEST];
        let received = recvmsg(
            control,
            &mut [IoSliceMut::new(&mut buf)],
            &mut ancillary,
            RecvFlags::CMSG_CLOEXEC,
        );
        let received = match received {
            Ok(received) => received,
            Err(rustix::io::Errno::INTR) => continue,
            Err(error) => return Err(format!("reading a request: {error}")),
        };
        let mut fds = Vec::new();
        for message in ancillary.drain() {
            if let RecvAncillaryMessage::ScmRights(rights) = message {
                fds.extend(rights);
            }
        }
        if received.bytes == 0 && fds.is_empty() {
            return Ok(None);
        }
        let (Some(go), Some(ready), None) = (fds.pop(), fds.pop(), fds.pop()) else {
            tracing::warn!("a request without exactly two descriptors");
            continue;
        };
        buf.truncate(received.bytes);
        let Ok(path) = String::from_utf8(buf) else {
            tracing::warn!("a request whose path is not UTF-8");
            continue;
        };
        return Ok(Some(Request {
            dir: PathBuf::from(path),
            ready,
            go,
        }));
    }
}

/// In the forked child: leaves the zygote's process group and signal setup, takes `ready` as
/// stdout, says who it is, waits for `go`, takes the session's log as stderr, and runs the
/// session. Returns the exit status.
fn become_shim(dir: &Path, ready: OwnedFd, go: OwnedFd) -> i32 {
    let prepared = (|| {
        // First: an ignored SIGCHLD would be inherited by the container's processes, and the
        // shim itself must wait for its shell.
        set_sigchld(SigHandler::SigDfl, SaFlags::empty())?;
        // A group of its own, as an exec'd shim has: signals to the zygote's group (or the
        // agent's) never reach the shells.
        setpgid(Pid::from_raw(0), Pid::from_raw(0)).map_err(|e| format!("setpgid: {e}"))?;
        rustix::stdio::dup2_stdout(&ready).map_err(|e| format!("taking the pipe: {e}"))?;
        drop(ready);
        let null = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
        rustix::stdio::dup2_stdin(&null).map_err(|e| format!("closing stdin: {e}"))?;
        use std::io::Write as _;
        let mut stdout = std::io::stdout();
        writeln!(stdout, "shim {}", std::process::id())
            .and_then(|()| stdout.flush())
            .map_err(|e| format!("answering the agent: {e}"))?;
        // Nothing is made in the session's directory before the agent says its files are
        // written; the end of `go` without a byte means it gave the session up.
        let mut said = [0u8; 1];
        let heard = loop {
            match rustix::io::read(&go, &mut said) {
                Err(rustix::io::Errno::INTR) => continue,
                other => break other,
            }
        };
        if !matches!(heard, Ok(1)) {
            return Err("the agent gave the session up before it started".to_owned());
        }
        drop(go);
        let log = std::fs::File::create(dir.join("shim.log"))
            .map_err(|e| format!("creating the log: {e}"))?;
        rustix::stdio::dup2_stderr(&log).map_err(|e| format!("redirecting the log: {e}"))
    })();
    match prepared.and_then(|()| super::run(dir)) {
        Ok(()) => 0,
        Err(error) => {
            tracing::error!("{error}");
            1
        }
    }
}

fn set_sigchld(handler: SigHandler, flags: SaFlags) -> Result<(), String> {
    let action = SigAction::new(handler, flags, SigSet::empty());
    // SAFETY: no handler function is installed (only SIG_IGN or SIG_DFL), so nothing can run
    // in signal context.
    #[allow(unsafe_code)]
    unsafe { sigaction(Signal::SIGCHLD, &action) }
        .map(drop)
        .map_err(|e| format!("setting SIGCHLD: {e}"))
}

//! Session directories and shims, the part both drivers share.
//!
//! `<state dir>/sessions/<session id>/` holds `session.json` (what the agent knows of the
//! session), `spec.json` (what the shim runs), `shim.sock`, `shim.log`, and whatever the
//! driver needs (a bundle, a home directory). The directory is the session's record: after an
//! agent restart, the sessions are the directories whose shim still answers.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use fogshell_shared::frame::TermSize;
use fogshell_shared::wire::RunningSession;
use fogshell_shared::{ResourceLimits, RuntimeRef, SessionId, TenantId, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use super::{PtyStreams, RuntimeError};
use crate::shim::protocol::{ShimEvent, ShimRequest, ShimSpec, ShimStatus};
use crate::shim::{client, socket_path, spec_path};

/// How long a shim may take to start its shell (image unpacking is done before this).
const SHIM_START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a released shim may take to clean up and exit.
const SHIM_RELEASE_TIMEOUT: Duration = Duration::from_secs(20);

/// What the agent records about a session, in `session.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The session.
    pub session_id: SessionId,
    /// Whose.
    pub tenant: TenantId,
    /// The driver's handle.
    pub runtime_ref: RuntimeRef,
    /// The limits asked for.
    pub limits: ResourceLimits,
    /// When the shell started.
    pub started_at: Timestamp,
}

/// Owns the sessions directory and the shims in it.
#[derive(Debug, Clone)]
pub struct ShimHost {
    sessions: PathBuf,
    shim_exe: PathBuf,
    /// The shim zygote (`crate::shim::zygote`), which forks each session's shim: no exec on
    /// a session's start path, and none competing with it for the CPU.
    zygote: Arc<std::sync::Mutex<Option<Zygote>>>,
}

/// The running zygote and the socket it takes requests on.
#[derive(Debug)]
struct Zygote {
    process: tokio::process::Child,
    control: std::os::unix::net::UnixStream,
}

/// How long handing a session to the zygote may block: its socket buffer holds many
/// requests, so only a stuck zygote makes this wait.
const ZYGOTE_SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// A shim forked for a session before the session's files are written: it sets itself up,
/// then waits for [`ShimHost::start`] to say they are there. Dropped unused, it ends.
#[derive(Debug)]
pub struct EarlyShim {
    /// What the shim answers on (`shim <pid>`, `ready <pid>`).
    answers: std::os::fd::OwnedFd,
    /// One byte here lets the shim go on; closing it without one makes the shim end.
    go: std::os::fd::OwnedFd,
}

/// Asks the zygote for a shim for the session in `dir`.
fn request_fork(zygote: &Zygote, dir: &Path) -> std::io::Result<EarlyShim> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};
    use std::os::fd::AsFd as _;
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let (go_read, go_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let rights = [write.as_fd(), go_read.as_fd()];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut ancillary = SendAncillaryBuffer::new(&mut space);
    ancillary.push(SendAncillaryMessage::ScmRights(&rights));
    let path = dir.as_os_str().as_encoded_bytes();
    let sent = sendmsg(
        &zygote.control,
        &[std::io::IoSlice::new(path)],
        &mut ancillary,
        SendFlags::NOSIGNAL,
    )?;
    if sent != path.len() {
        return Err(std::io::Error::other("the request was cut short"));
    }
    // Only the shim may hold these ends: its exit must close the answers pipe, and the
    // agent's closing of `go` must reach it.
    drop((write, go_read));
    Ok(EarlyShim {
        answers: read,
        go: go_write,
    })
}

fn record_path(dir: &Path) -> PathBuf {
    dir.join("session.json")
}

impl ShimHost {
    /// Uses `<state_dir>/sessions`, created 0700; shims are started as `<shim_exe> shim`.
    pub fn new(state_dir: &Path, shim_exe: PathBuf) -> Result<Self, RuntimeError> {
        let sessions = state_dir.join("sessions");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&sessions)
            .map_err(RuntimeError::io(format!("creating {}", sessions.display())))?;
        Ok(Self {
            sessions,
            shim_exe,
            zygote: Arc::default(),
        })
    }

    /// `<shim_exe> shim` with `args`, in its own process group, with a clean environment.
    fn shim_command(&self, args: &[&std::ffi::OsStr]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.shim_exe);
        command
            .args(["--log-format", "json", "shim"])
            .args(args)
            .stdout(Stdio::piped())
            // Its own process group: a signal to the agent's group (Ctrl-C, systemd stopping
            // the agent) does not reach the shells.
            .process_group(0)
            .env_clear()
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            );
        command
    }

    /// Has the zygote fork the session's shim now, before the session's files are written,
    /// so the fork and the shim's setting itself up overlap with the caller's writing them;
    /// [`Self::start`] then lets it go. `None` when no zygote runs or it failed (it is then
    /// dropped, and `start` execs a shim instead).
    pub fn fork_early(&self, dir: &Path) -> Option<EarlyShim> {
        let mut slot = crate::lock(&self.zygote);
        let zygote = slot.as_mut()?;
        if !matches!(zygote.process.try_wait(), Ok(None)) {
            tracing::warn!("the shim zygote is gone");
            *slot = None;
            return None;
        }
        match request_fork(zygote, dir) {
            Ok(early) => Some(early),
            Err(error) => {
                tracing::warn!(%error, "the shim zygote did not take the session");
                if let Some(mut zygote) = slot.take() {
                    let _ = zygote.process.start_kill();
                }
                None
            }
        }
    }

    /// The zygote's process id, if one runs.
    pub fn zygote_pid(&self) -> Option<u32> {
        let slot = crate::lock(&self.zygote);
        slot.as_ref().and_then(|z| z.process.id())
    }

    /// Starts the shim zygote unless one runs. Its command line (`shim --dir <sessions dir>/
    /// --zygote`) names the sessions directory as every shim's does, so `pgrep -f "shim --dir
    /// <sessions dir>/"` finds them all (forked shims keep the zygote's command line). It ends
    /// by itself when the agent goes (its socket closes).
    pub fn prepare_zygote(&self) {
        let mut slot = crate::lock(&self.zygote);
        if let Some(zygote) = slot.as_mut()
            && matches!(zygote.process.try_wait(), Ok(None))
        {
            return;
        }
        let started = (|| {
            let (control, theirs) = std::os::unix::net::UnixStream::pair()?;
            control.set_write_timeout(Some(ZYGOTE_SEND_TIMEOUT))?;
            let mut sessions = self.sessions.clone().into_os_string();
            sessions.push("/");
            let process = self
                .shim_command(&["--dir".as_ref(), sessions.as_ref(), "--zygote".as_ref()])
                .stdin(std::os::fd::OwnedFd::from(theirs))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            Ok::<_, std::io::Error>(Zygote { process, control })
        })();
        match started {
            Ok(zygote) => *slot = Some(zygote),
            Err(error) => tracing::warn!(%error, "could not start the shim zygote"),
        }
    }

    /// The session's directory (it may not exist).
    pub fn session_dir(&self, session_id: SessionId) -> PathBuf {
        self.sessions.join(session_id.to_string())
    }

    /// Makes a new session's directory; refuses a session that already has one.
    pub fn create_dir(&self, session_id: SessionId) -> Result<PathBuf, RuntimeError> {
        let dir = self.session_dir(session_id);
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(RuntimeError::AlreadyRunning(session_id))
            }
            Err(e) => Err(RuntimeError::io(format!("creating {}", dir.display()))(e)),
        }
    }

    /// The record of a session on this node.
    pub fn record(&self, session_id: SessionId) -> Result<SessionRecord, RuntimeError> {
        let path = record_path(&self.session_dir(session_id));
        let bytes = std::fs::read(&path).map_err(|_| RuntimeError::NoSuchSession(session_id))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| RuntimeError::Shim(format!("{} is corrupt: {e}", path.display())))
    }

    /// Every session directory's record; directories without a readable record are skipped
    /// with a warning (a crash between `create_dir` and `start` leaves one).
    pub fn records(&self) -> Result<Vec<SessionRecord>, RuntimeError> {
        let entries = std::fs::read_dir(&self.sessions).map_err(RuntimeError::io(format!(
            "listing {}",
            self.sessions.display()
        )))?;
        let mut records = Vec::new();
        for entry in entries.flatten() {
            let path = record_path(&entry.path());
            match std::fs::read(&path).map(|b| serde_json::from_slice::<SessionRecord>(&b)) {
                Ok(Ok(record)) => records.push(record),
                _ => tracing::warn!(path = %path.display(), "session directory without a record"),
            }
        }
        records.sort_by_key(|r| r.started_at);
        Ok(records)
    }

    /// Writes the spec and the record, starts the shim — lets `early` go, or has the zygote
    /// fork one, or execs one when no zygote runs — and waits until its shell runs.
    pub async fn start(
        &self,
        record: &SessionRecord,
        spec: &ShimSpec,
        early: Option<EarlyShim>,
    ) -> Result<(), RuntimeError> {
        let dir = self.session_dir(record.session_id);
        write_json(&spec_path(&dir), spec)?;
        let forked = early.or_else(|| self.fork_early(&dir)).map(|early| {
            // The files are there: the shim may go on.
            let _ = rustix::io::write(&early.go, b"g");
            early.answers
        });
        let log_path = dir.join("shim.log");
        // What the shim answers on: the pipe the zygote's child writes to, or an exec'd shim's
        // stdout.
        let (answers, mut exec_child): (Box<dyn AsyncRead + Send + Unpin>, _) = match forked {
            Some(read) => (
                Box::new(
                    tokio::net::unix::pipe::Receiver::from_owned_fd(read)
                        .map_err(RuntimeError::io("the shim's pipe"))?,
                ),
                None,
            ),
            None => {
                let log = std::fs::File::create(&log_path)
                    .map_err(RuntimeError::io(format!("creating {}", log_path.display())))?;
                let mut child = self
                    .shim_command(&["--dir".as_ref(), dir.as_os_str()])
                    .stdin(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .map_err(RuntimeError::io(format!(
                        "starting {}",
                        self.shim_exe.display()
                    )))?;
                let stdout = child
                    .stdout
                    .take()
                    .ok_or_else(|| RuntimeError::Shim("no stdout".into()))?;
                (Box::new(stdout), Some(child))
            }
        };
        // The record is written while the shim starts the shell, off the session's path.
        let recorded = write_json(&record_path(&dir), record);
        // A forked shim first says who it is (`shim <pid>`), so it can be killed if its shell
        // never comes up; every shim then says `ready <shell pid>`.
        let mut shim_pid = None;
        let mut answers = BufReader::new(answers);
        let ready = tokio::time::timeout(SHIM_START_TIMEOUT, async {
            let mut line = String::new();
            loop {
                line.clear();
                if answers.read_line(&mut line).await.ok()? == 0 {
                    return None;
                }
                tracing::debug!(answer = line.trim_end(), "the shim answered");
                if line.starts_with("ready ") {
                    return Some(());
                }
                if let Some(pid) = line.strip_prefix("shim ") {
                    shim_pid = pid.trim().parse::<i32>().ok();
                }
            }
        })
        .await;
        if !matches!(ready, Ok(Some(()))) {
            if let Some(child) = &mut exec_child {
                let _ = child.start_kill();
                let _ = child.wait().await;
            } else if let Some(pid) = shim_pid {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(RuntimeError::Shim(format!(
                "the shim did not start the shell: {}",
                last_error_line(&log)
            )));
        }
        if let Err(error) = recorded {
            // A shell the node cannot account for after a restart is not started: it ends
            // the ordinary way (the caller removes what is left).
            let _ = self.release(record.session_id).await;
            return Err(error);
        }
        if let Some(mut child) = exec_child {
            // Reap the shim whenever it ends, so it never lingers as a zombie of the agent;
            // and start a zygote for the next session, off this one's path.
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
            let host = self.clone();
            tokio::spawn(async move { host.prepare_zygote() });
        }
        Ok(())
    }

    /// Connects a viewer to the session's terminal.
    pub async fn attach(
        &self,
        session_id: SessionId,
        size: TermSize,
        from_offset: u64,
    ) -> Result<PtyStreams, RuntimeError> {
        let socket = self.live_socket(session_id)?;
        let (mut input, mut output) = client::connect(&socket)
            .await
            .map_err(|e| RuntimeError::Shim(format!("connecting: {e}")))?;
        input
            .send(&ShimRequest::Attach { size, from_offset })
            .await
            .map_err(|e| RuntimeError::Shim(format!("attaching: {e}")))?;
        match output.next_event().await {
            Ok(Some(ShimEvent::Attached { from_offset })) => Ok(PtyStreams {
                from_offset,
                input,
                output,
            }),
            other => Err(RuntimeError::Shim(format!(
                "unexpected answer to attach: {other:?}"
            ))),
        }
    }

    /// Asks the shim how the shell is doing.
    pub async fn status(&self, session_id: SessionId) -> Result<ShimStatus, RuntimeError> {
        let socket = self.live_socket(session_id)?;
        match client::request(&socket, &ShimRequest::Status).await {
            Ok(Some(ShimEvent::Status(status))) => Ok(status),
            other => Err(RuntimeError::Shim(format!(
                "unexpected answer to status: {other:?}"
            ))),
        }
    }

    /// Kills the shell, lets the shim clean up and exit, then removes the session directory.
    /// When the shim is already gone, a cleanup process (`shim --delete`) kills and deletes
    /// what its shell left instead.
    pub async fn release(&self, session_id: SessionId) -> Result<(), RuntimeError> {
        let dir = self.session_dir(session_id);
        if !dir.exists() {
            return Err(RuntimeError::NoSuchSession(session_id));
        }
        let socket = socket_path(&dir);
        // The shim answers `Released` once its cleanup is done, or closes the connection by
        // dying; it removes its socket just before it answers, so a socket still there means
        // the cleanup did not finish.
        let released = async {
            let (mut writer, mut reader) = client::connect(&socket).await?;
            writer.send(&ShimRequest::Release).await?;
            while let Some(event) = reader.next_event().await? {
                if event == ShimEvent::Released {
                    break;
                }
            }
            Ok::<_, std::io::Error>(())
        };
        if tokio::time::timeout(SHIM_RELEASE_TIMEOUT, released)
            .await
            .is_err()
        {
            return Err(RuntimeError::Shim(format!(
                "session {session_id}: the shim did not finish within {SHIM_RELEASE_TIMEOUT:?}"
            )));
        }
        if socket.exists() {
            self.delete_orphan(&dir).await?;
        }
        std::fs::remove_dir_all(&dir)
            .map_err(RuntimeError::io(format!("removing {}", dir.display())))
    }

    async fn delete_orphan(&self, dir: &Path) -> Result<(), RuntimeError> {
        if !spec_path(dir).exists() {
            // Nothing was started for it (a crash before the shim ran).
            return Ok(());
        }
        let output = tokio::process::Command::new(&self.shim_exe)
            .arg("shim")
            .arg("--dir")
            .arg(dir)
            .arg("--delete")
            .env_clear()
            .output()
            .await
            .map_err(RuntimeError::io(format!(
                "starting {}",
                self.shim_exe.display()
            )))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(RuntimeError::Shim(format!(
                "cleaning up {}: {}",
                dir.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            )))
        }
    }

    /// Removes every session whose shim no longer answers (it crashed, or the node rebooted):
    /// what its shell left is killed and deleted. Returns the sessions removed. An agent calls
    /// this when it starts, before it reports what runs.
    pub async fn reap_dead(&self) -> Result<Vec<SessionId>, RuntimeError> {
        let entries = std::fs::read_dir(&self.sessions).map_err(RuntimeError::io(format!(
            "listing {}",
            self.sessions.display()
        )))?;
        let mut reaped = Vec::new();
        for entry in entries.flatten() {
            let Some(session_id) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                tracing::warn!(path = %entry.path().display(), "not a session directory; left alone");
                continue;
            };
            if self.status(session_id).await.is_ok() {
                continue;
            }
            tracing::info!(%session_id, "removing a session whose shim is gone");
            self.release(session_id).await?;
            reaped.push(session_id);
        }
        Ok(reaped)
    }

    /// The running sessions, as the wire protocol reports them: those whose shim answers.
    pub async fn running(&self) -> Result<Vec<RunningSession>, RuntimeError> {
        let mut running = Vec::new();
        for record in self.records()? {
            if self.status(record.session_id).await.is_ok() {
                running.push(RunningSession {
                    session_id: record.session_id,
                    runtime_ref: record.runtime_ref,
                    started_at: record.started_at,
                });
            }
        }
        Ok(running)
    }

    fn live_socket(&self, session_id: SessionId) -> Result<PathBuf, RuntimeError> {
        let socket = socket_path(&self.session_dir(session_id));
        if socket.exists() {
            Ok(socket)
        } else {
            Err(RuntimeError::NoSuchSession(session_id))
        }
    }
}

/// Writes JSON so that a crash of the agent never leaves a half-written file: a temporary
/// file renamed into place. No fsync: these files describe running processes, which a power
/// loss ends anyway, and an fsync on the session start path costs milliseconds.
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), RuntimeError> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| RuntimeError::Shim(format!("encoding {}: {e}", path.display())))?;
    fogshell_shared::files::write_atomically(
        path,
        &bytes,
        0o600,
        fogshell_shared::files::Durability::ProcessCrashOnly,
    )
    .map_err(RuntimeError::io(format!("writing {}", path.display())))
}

/// The most useful line of a shim's JSON log for an error message: its last error.
fn last_error_line(log: &str) -> String {
    log.lines()
        .rev()
        .find_map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            (v["level"] == "ERROR").then(|| v["fields"]["message"].as_str().map(str::to_owned))?
        })
        .unwrap_or_else(|| "it exited without saying why (see shim.log)".into())
}

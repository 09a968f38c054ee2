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
use tokio::io::{AsyncBufReadExt, BufReader};

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
    /// A shim started ahead of time, waiting on stdin for its session: a session start then
    /// has no exec on its path (about 1.4 ms here).
    standby: Arc<std::sync::Mutex<Option<tokio::process::Child>>>,
}

/// Gives a standby shim its session: the directory's path, one line on its stdin.
async fn hand_over(
    mut standby: tokio::process::Child,
    dir: &Path,
) -> std::io::Result<tokio::process::Child> {
    use tokio::io::AsyncWriteExt as _;
    let mut stdin = standby
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("a standby shim without stdin"))?;
    let mut line = dir.as_os_str().as_encoded_bytes().to_vec();
    line.push(b'\n');
    stdin.write_all(&line).await?;
    Ok(standby)
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
            standby: Arc::default(),
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

    /// The standby shim, if one is waiting and alive.
    fn take_standby(&self) -> Option<tokio::process::Child> {
        let mut slot = self.standby.lock().unwrap_or_else(|p| p.into_inner());
        let mut child = slot.take()?;
        match child.try_wait() {
            Ok(None) => Some(child),
            _ => None,
        }
    }

    /// The waiting standby shim's process id, if one waits.
    pub fn standby_pid(&self) -> Option<u32> {
        let slot = self.standby.lock().unwrap_or_else(|p| p.into_inner());
        slot.as_ref().and_then(tokio::process::Child::id)
    }

    /// Starts a standby shim if none waits. Its command line (`shim --dir <sessions dir>/
    /// --standby`) names the sessions directory as every shim's does, so `pgrep -f "shim --dir
    /// <sessions dir>/"` finds them all, used or waiting.
    pub fn prepare_standby(&self) {
        let mut slot = self.standby.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return;
        }
        let mut sessions = self.sessions.clone().into_os_string();
        sessions.push("/");
        let spawned = self
            .shim_command(&["--dir".as_ref(), sessions.as_ref(), "--standby".as_ref()])
            .stdin(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        match spawned {
            Ok(child) => *slot = Some(child),
            Err(error) => tracing::warn!(%error, "could not start a standby shim"),
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

    /// Writes the record and the spec, starts the shim, and waits until its shell runs.
    pub async fn start(&self, record: &SessionRecord, spec: &ShimSpec) -> Result<(), RuntimeError> {
        let dir = self.session_dir(record.session_id);
        write_json(&spec_path(&dir), spec)?;
        let log_path = dir.join("shim.log");
        let standby = match self.take_standby() {
            Some(standby) => hand_over(standby, &dir)
                .await
                .inspect_err(|error| {
                    tracing::warn!(%error, "the standby shim is gone; starting one for the session")
                })
                .ok(),
            None => None,
        };
        let mut child = match standby {
            Some(child) => child,
            None => {
                let log = std::fs::File::create(&log_path)
                    .map_err(RuntimeError::io(format!("creating {}", log_path.display())))?;
                self.shim_command(&["--dir".as_ref(), dir.as_os_str()])
                    .stdin(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .map_err(RuntimeError::io(format!(
                        "starting {}",
                        self.shim_exe.display()
                    )))?
            }
        };
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| RuntimeError::Shim("no stdout".into()))?;
        let mut line = String::new();
        let read = tokio::time::timeout(
            SHIM_START_TIMEOUT,
            BufReader::new(stdout).read_line(&mut line),
        )
        .await;
        if !matches!(read, Ok(Ok(_))) || !line.starts_with("ready ") {
            let _ = child.start_kill();
            let _ = child.wait().await;
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(RuntimeError::Shim(format!(
                "the shim did not start the shell: {}",
                last_error_line(&log)
            )));
        }
        write_json(&record_path(&dir), record)?;
        // The next session's shim starts now that this one runs, off both their paths.
        let host = self.clone();
        tokio::spawn(async move { host.prepare_standby() });
        // Reap the shim whenever it ends, so it never lingers as a zombie of the agent.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
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
        // The shim closes the connection by exiting, after its cleanup; it removes its socket
        // as the very last step, so a socket still there means the cleanup did not finish.
        let released = async {
            let (mut writer, mut reader) = client::connect(&socket).await?;
            writer.send(&ShimRequest::Release).await?;
            while reader.next_event().await?.is_some() {}
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

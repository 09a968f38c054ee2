//! Starting, controlling and reaping a session's shell inside the shim.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use portable_pty::{CommandBuilder, MasterPty, PtySize, native_pty_system};

use fogshell_shared::frame::TermSize;

use super::protocol::{ChildSpec, ShimSpec};

/// A running shell and the master side of its terminal.
pub struct Shell {
    pid: i32,
    kind: Kind,
}

enum Kind {
    /// A host process started by portable-pty; it leads its own session and process group.
    /// The master is shared with the viewer threads, which resize through it.
    Process {
        master: Arc<Mutex<Box<dyn MasterPty + Send>>>,
    },
}

/// What the viewer side needs of the terminal: typing into it and resizing it.
pub struct Controls {
    writer: Box<dyn Write + Send>,
    resize: Box<dyn Fn(TermSize) -> std::io::Result<()> + Send>,
}

impl Controls {
    /// Types `bytes` into the terminal.
    pub fn write_input(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes)?;
        self.writer.flush()
    }

    /// Sets the terminal's size; the shell gets SIGWINCH.
    pub fn resize(&self, size: TermSize) -> std::io::Result<()> {
        (self.resize)(size)
    }
}

impl std::fmt::Debug for Shell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shell")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Controls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controls").finish_non_exhaustive()
    }
}

fn pty_size(size: TermSize) -> PtySize {
    PtySize {
        rows: size.rows(),
        cols: size.cols(),
        pixel_width: 0,
        pixel_height: 0,
    }
}

impl Shell {
    /// Starts the shell the spec describes.
    pub fn start(spec: &ShimSpec) -> std::io::Result<Self> {
        match &spec.child {
            ChildSpec::Process { argv, cwd, env } => {
                let (program, args) = argv
                    .split_first()
                    .ok_or_else(|| std::io::Error::other("empty argv"))?;
                let pair = native_pty_system()
                    .openpty(pty_size(spec.size))
                    .map_err(std::io::Error::other)?;
                let mut cmd = CommandBuilder::new(program);
                cmd.args(args);
                cmd.cwd(cwd);
                // A clean environment: nothing of the agent's (or its secrets) leaks in.
                cmd.env_clear();
                for (k, v) in env {
                    cmd.env(k, v);
                }
                let child = pair
                    .slave
                    .spawn_command(cmd)
                    .map_err(std::io::Error::other)?;
                let pid = child
                    .process_id()
                    .and_then(|p| i32::try_from(p).ok())
                    .ok_or_else(|| std::io::Error::other("shell has no pid"))?;
                // The shim reaps by pid (`wait_for_exit`); the handle is not needed.
                drop(child);
                Ok(Self {
                    pid,
                    kind: Kind::Process {
                        master: Arc::new(Mutex::new(pair.master)),
                    },
                })
            }
            ChildSpec::Container { .. } => Err(std::io::Error::other(
                "this agent build has no container support",
            )),
        }
    }

    /// The shell's pid on the host.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// A reader of the terminal's output.
    pub fn reader(&self) -> std::io::Result<Box<dyn Read + Send>> {
        match &self.kind {
            Kind::Process { master } => lock(master)
                .try_clone_reader()
                .map_err(std::io::Error::other),
        }
    }

    /// Input and resize handles, for the viewer threads.
    pub fn controls(&mut self) -> std::io::Result<Controls> {
        match &mut self.kind {
            Kind::Process { master } => {
                let writer = lock(master).take_writer().map_err(std::io::Error::other)?;
                let master = Arc::clone(master);
                let resize = move |size: TermSize| {
                    lock(&master)
                        .resize(pty_size(size))
                        .map_err(std::io::Error::other)
                };
                Ok(Controls {
                    writer,
                    resize: Box::new(resize),
                })
            }
        }
    }

    /// SIGKILL to the shell's whole process group.
    pub fn kill(&self) -> std::io::Result<()> {
        let pid = Pid::from_raw(self.pid);
        match &self.kind {
            Kind::Process { .. } => killpg(pid, Signal::SIGKILL)
                .or_else(|_| kill(pid, Signal::SIGKILL))
                .map_err(std::io::Error::from),
        }
    }

    /// Removes what the shell leaves behind once it has exited.
    pub fn cleanup(self) -> std::io::Result<()> {
        match self.kind {
            // Closing the master hangs up the terminal; nothing else is left.
            Kind::Process { master } => {
                drop(master);
                Ok(())
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits for the shell to exit and gives its status as a shell reports it: the exit code, or
/// 128 + the signal number.
pub fn wait_for_exit(pid: i32) -> i32 {
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, signal, _)) => return 128 + signal as i32,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            // ECHILD: not our child any more (cannot happen for the shim's own shell).
            Err(_) => return -1,
        }
    }
}

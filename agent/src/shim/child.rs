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
    /// A libcontainer container; its PTY master came through the console socket.
    Container {
        container: Box<libcontainer::container::Container>,
        master: Arc<std::fs::File>,
    },
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
    /// The terminal's line settings, read through the master (on Linux a PTY master reports
    /// its slave's).
    termios: Box<dyn Fn() -> std::io::Result<rustix::termios::Termios> + Send>,
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

    /// Whether a Ctrl-C (0x03) typed now interrupts and makes the tty discard its pending
    /// output: ISIG on, NOFLSH off, and 0x03 the interrupt character. A program in raw mode
    /// gets the byte as a key instead, and nothing is discarded.
    pub fn ctrl_c_flushes(&self) -> bool {
        use rustix::termios::{LocalModes, SpecialCodeIndex};
        (self.termios)().is_ok_and(|t| {
            t.local_modes.contains(LocalModes::ISIG)
                && !t.local_modes.contains(LocalModes::NOFLSH)
                && t.special_codes[SpecialCodeIndex::VINTR] == fogshell_shared::ctrl_c::CTRL_C
        })
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
            ChildSpec::Container {
                bundle,
                container_id,
                state_root,
            } => {
                let (container, master) = container::create(bundle, container_id, state_root)?;
                let pid = container
                    .pid()
                    .map(|p| p.as_raw())
                    .ok_or_else(|| std::io::Error::other("container has no init pid"))?;
                Ok(Self {
                    pid,
                    kind: Kind::Container {
                        container: Box::new(container),
                        master: Arc::new(master),
                    },
                })
            }
        }
    }

    /// The shell's pid on the host.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// A reader of the terminal's output.
    pub fn reader(&self) -> std::io::Result<Box<dyn Read + Send>> {
        match &self.kind {
            Kind::Container { master, .. } => Ok(Box::new(master.try_clone()?)),
            Kind::Process { master } => crate::lock(master)
                .try_clone_reader()
                .map_err(std::io::Error::other),
        }
    }

    /// Input and resize handles, for the viewer threads.
    pub fn controls(&mut self) -> std::io::Result<Controls> {
        match &mut self.kind {
            Kind::Container { master, .. } => {
                let writer = Box::new(master.try_clone()?);
                let for_termios = Arc::clone(master);
                let termios =
                    move || rustix::termios::tcgetattr(&*for_termios).map_err(std::io::Error::from);
                let master = Arc::clone(master);
                let resize = move |size: TermSize| {
                    let winsize = rustix::termios::Winsize {
                        ws_row: size.rows(),
                        ws_col: size.cols(),
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    };
                    rustix::termios::tcsetwinsize(&*master, winsize).map_err(std::io::Error::from)
                };
                Ok(Controls {
                    writer,
                    resize: Box::new(resize),
                    termios: Box::new(termios),
                })
            }
            Kind::Process { master } => {
                let writer = crate::lock(master)
                    .take_writer()
                    .map_err(std::io::Error::other)?;
                // portable-pty lends no descriptor safely; the slave's settings are read by
                // opening it for the moment of the check (holding it open would keep the
                // terminal from hanging up when the shell exits).
                let slave = crate::lock(master)
                    .tty_name()
                    .ok_or_else(|| std::io::Error::other("the PTY has no name"))?;
                let termios = move || {
                    use rustix::fs::{Mode, OFlags};
                    let tty = rustix::fs::open(
                        &slave,
                        OFlags::RDONLY | OFlags::NOCTTY | OFlags::CLOEXEC,
                        Mode::empty(),
                    )?;
                    rustix::termios::tcgetattr(&tty).map_err(std::io::Error::from)
                };
                let master = Arc::clone(master);
                let resize = move |size: TermSize| {
                    crate::lock(&master)
                        .resize(pty_size(size))
                        .map_err(std::io::Error::other)
                };
                Ok(Controls {
                    writer,
                    resize: Box::new(resize),
                    termios: Box::new(termios),
                })
            }
        }
    }

    /// SIGKILL to everything the shell started: the container's every process, or the
    /// host shell's process group.
    pub fn kill(&mut self) -> std::io::Result<()> {
        let pid = Pid::from_raw(self.pid);
        match &mut self.kind {
            Kind::Container { container, .. } => {
                // Killing a pid namespace's init kills every process in it; libcontainer's
                // own kill (every pid in the cgroup) covers an init that already went.
                match kill(pid, Signal::SIGKILL) {
                    Ok(()) => Ok(()),
                    Err(_) => container
                        .kill(Signal::SIGKILL, true)
                        .map_err(|e| std::io::Error::other(format!("killing the container: {e}"))),
                }
            }
            Kind::Process { .. } => killpg(pid, Signal::SIGKILL)
                .or_else(|_| kill(pid, Signal::SIGKILL))
                .map_err(std::io::Error::from),
        }
    }

    /// Removes what the shell leaves behind once it has exited.
    pub fn cleanup(self) -> std::io::Result<()> {
        match self.kind {
            // The container's cgroups and libcontainer state go; its mounts went with its
            // mount namespace; the session directory is the agent's to remove.
            Kind::Container { mut container, .. } => {
                if let Err(error) = container::delete_stopped(&container) {
                    tracing::warn!(%error, "deleting the container through libcontainer instead");
                }
                if !container.root.exists() {
                    return Ok(());
                }
                container
                    .delete(true)
                    .map_err(|e| std::io::Error::other(format!("deleting the container: {e}")))
            }
            // Closing the master hangs up the terminal; nothing else is left.
            Kind::Process { master } => {
                drop(master);
                Ok(())
            }
        }
    }
}

mod container {
    //! Creating a container with libcontainer, in the shim, while it is single-threaded.

    use std::os::unix::net::UnixListener;
    use std::path::Path;

    use libcontainer::config::YoukiConfig;
    use libcontainer::container::Container;
    use libcontainer::container::builder::ContainerBuilder;
    use libcontainer::syscall::syscall::SyscallType;
    use libcontainer::workload::default::DefaultExecutor;
    use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
    use oci_spec::runtime::Spec;

    /// Execs the container's process with every signal at its default and none blocked.
    /// Ignored signals survive `exec`: without this the shell, and every program in the
    /// session, would inherit the shim's (Rust ignores SIGPIPE; an agent started in the
    /// background by a script ignores SIGINT and SIGQUIT) — Ctrl-C would not stop a program,
    /// nor a closed pipe its writer.
    #[derive(Clone)]
    struct ShellExecutor;

    impl Executor for ShellExecutor {
        fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
            reset_signals();
            DefaultExecutor {}.exec(spec)
        }

        fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
            DefaultExecutor {}.validate(spec)
        }
    }

    /// Every signal to its default disposition, and an empty signal mask.
    fn reset_signals() {
        use nix::sys::signal::{
            SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal, sigaction, sigprocmask,
        };
        let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
        for signal in Signal::iterator() {
            if matches!(signal, Signal::SIGKILL | Signal::SIGSTOP) {
                continue;
            }
            // SAFETY: installs no handler function, only the default disposition.
            #[allow(unsafe_code)]
            let _ = unsafe { sigaction(signal, &default) };
        }
        let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    }

    /// Creates and starts the container; returns it and its terminal's master side.
    pub fn create(
        bundle: &Path,
        container_id: &str,
        state_root: &Path,
    ) -> std::io::Result<(Container, std::fs::File)> {
        let to_io = |what: &str| {
            let what = what.to_owned();
            move |e: libcontainer::error::LibcontainerError| {
                std::io::Error::other(format!("{what}: {e}"))
            }
        };
        std::fs::create_dir_all(state_root)?;
        // The runtime connects here and passes the PTY master (SCM_RIGHTS) during `build`;
        // it waits in the socket's queue until accepted below.
        let console = bundle.join("console.sock");
        let _ = std::fs::remove_file(&console);
        let listener = UnixListener::bind(&console)?;
        let mut container = ContainerBuilder::new(container_id.to_owned(), SyscallType::default())
            .with_executor(ShellExecutor)
            .with_root_path(state_root)
            .map_err(to_io("state root"))?
            .with_console_socket(Some(&console))
            .as_init(bundle)
            .with_systemd(false)
            .with_detach(true)
            .build()
            .map_err(to_io("creating the container"))?;
        let master = super::receive_terminal(&listener);
        let _ = std::fs::remove_file(&console);
        let master = match master {
            Ok(master) => master,
            Err(error) => {
                let _ = container.delete(true);
                return Err(error);
            }
        };
        if let Err(error) = container.start() {
            let _ = container.delete(true);
            return Err(std::io::Error::other(format!(
                "starting the container: {error}"
            )));
        }
        Ok((container, master))
    }

    /// Deletes a container whose init has exited and been reaped — the shim's usual end —
    /// doing what libcontainer's `delete` does for a stopped container of fogshell's specs
    /// (no hooks, no Intel RDT): its cgroups go, after killing whatever is left in them, then
    /// its state folder. Why not `delete` itself: it builds a cgroup manager first, which reads
    /// the mount table again through pathrs for every controller; that was 1 ms of a session's
    /// ~8 ms start-to-end, against 0.2 ms for this (docs/benchmarks.md). Anything unusual
    /// (hooks in the config, a directory that will not go) is an error, and the caller falls
    /// back to libcontainer.
    pub fn delete_stopped(container: &Container) -> std::io::Result<()> {
        let config = YoukiConfig::load(&container.root)
            .map_err(|e| std::io::Error::other(format!("reading the container's config: {e}")))?;
        if config.hooks.is_some() {
            return Err(std::io::Error::other("the container has hooks to run"));
        }
        let cgroup = config.cgroup_path.to_string_lossy();
        crate::runtime::cgroup::Layout::detect().remove(&cgroup)?;
        std::fs::remove_dir_all(&container.root)
    }
}

/// Accepts one connection on a console socket and takes the terminal's master end the runtime
/// sends over it (`SCM_RIGHTS`), as runc and crun hand it over.
pub fn receive_terminal(
    listener: &std::os::unix::net::UnixListener,
) -> std::io::Result<std::fs::File> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};
    use std::io::IoSliceMut;
    use std::mem::MaybeUninit;

    let (conn, _) = listener.accept()?;
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut ancillary = RecvAncillaryBuffer::new(&mut space);
    let mut buf = [0u8; 256];
    recvmsg(
        &conn,
        &mut [IoSliceMut::new(&mut buf)],
        &mut ancillary,
        RecvFlags::empty(),
    )?;
    for message in ancillary.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = message
            && let Some(fd) = fds.next()
        {
            return Ok(std::fs::File::from(fd));
        }
    }
    Err(std::io::Error::other("the runtime sent no terminal"))
}

/// Kills and removes what a dead shim's shell left: the container (libcontainer finds its
/// processes through its cgroup), or the host shell's process group.
pub fn delete_orphan(spec: &ShimSpec, pid: Option<i32>) -> std::io::Result<()> {
    match &spec.child {
        ChildSpec::Container {
            container_id,
            state_root,
            ..
        } => {
            let state = state_root.join(container_id);
            if !state.exists() {
                return Ok(());
            }
            let mut container = libcontainer::container::Container::load(state)
                .map_err(|e| std::io::Error::other(format!("loading the container: {e}")))?;
            // A running container is killed first; `delete(force)` does that too, but the
            // explicit kill reaches every process in the cgroup.
            let _ = container.kill(Signal::SIGKILL, true);
            container
                .delete(true)
                .map_err(|e| std::io::Error::other(format!("deleting the container: {e}")))
        }
        ChildSpec::Process { .. } => {
            if let Some(pid) = pid {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            Ok(())
        }
    }
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

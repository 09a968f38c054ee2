//! The per-session shim: `fogshell-agent shim --dir <session dir>`.
//!
//! One shim per session, forked by the [`zygote`] (or exec'd by the agent when no zygote
//! answers) and detached from the agent (its own process group), so the shell outlives an
//! agent restart, as containerd's shims and conmon do. It starts the
//! shell (a host process or a libcontainer container) while it is still single-threaded —
//! libcontainer forks with a raw `clone3`, which deadlocks in a multi-threaded caller
//! (notes/runtime.md) — then holds the PTY master, reaps the shell, keeps the last
//! [`RING_BYTES`] of output, and serves the agent over `shim.sock` ([`protocol`]).
//!
//! Threads, started only after the shell runs: one reads the PTY, one accepts agent
//! connections (and one per connection reads its requests), one waits for the shell to exit,
//! one watches that the socket is still there ([`SOCKET_CHECK`]); the main thread owns the
//! lifecycle (kill, exit, release).

pub mod child;
pub mod client;
pub mod protocol;
pub mod ring;
pub mod zygote;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use fogshell_shared::ctrl_c::CTRL_C;
use fogshell_shared::wire::{Decoder, encode};

use self::child::Shell;
use self::protocol::{ShimEvent, ShimRequest, ShimSpec, ShimStatus};
use self::ring::OutputRing;

/// Output kept for viewers that reconnect (the lossless-resume window).
pub const RING_BYTES: usize = 1024 * 1024;

/// How far the shell may run ahead of the most advanced viewer that acknowledges what it
/// consumed: what a flood stopped by Ctrl-C can still leave queued on the way to the screen.
/// Two of the gateway's largest frames, so output keeps flowing while an acknowledgement is
/// on its way back (64 KiB made the stream wait for each one: docs/benchmarks.md).
pub const FLOW_WINDOW: u64 = 128 * 1024;

/// How long a write to a viewer may block before the viewer is dropped: a stuck agent must
/// not stall the shell's output forever.
const VIEWER_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long to wait for the last output after the shell exits. A background job can hold the
/// PTY open after its shell is gone, so this is bounded.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// How often a shim checks that its socket is still where the agent finds it. Once the
/// socket is gone or replaced (its session directory was removed by hand, or with the agent's
/// state), no agent can attach, release or even find the shell again: it is ended rather
/// than left running for ever.
pub const SOCKET_CHECK: Duration = Duration::from_secs(2);

/// Files in a session directory.
pub fn spec_path(dir: &Path) -> PathBuf {
    dir.join("spec.json")
}
/// The shim's socket in a session directory.
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join("shim.sock")
}

/// What the shim's threads share.
struct State {
    ring: OutputRing,
    /// Every attached viewer (one per agent connection that sent `Attach`), by connection id.
    viewers: Vec<(u64, UnixStream)>,
    /// What the viewers that acknowledge have consumed, by connection id.
    acked: BTreeMap<u64, u64>,
    exited: Option<i32>,
}

impl State {
    /// Whether the terminal must not be read now: some viewer acknowledges, and even the most
    /// advanced of them is a whole window behind.
    fn flow_blocked(&self) -> bool {
        self.acked
            .values()
            .max()
            .is_some_and(|acked| self.ring.end() >= acked.saturating_add(FLOW_WINDOW))
    }

    /// Forgets a viewer's flow state.
    fn forget(&mut self, id: u64) {
        self.acked.remove(&id);
    }
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when a viewer acknowledges or leaves: the terminal may be read again.
    room: Condvar,
    pid: i32,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        fogshell_shared::sync::lock(&self.state)
    }
}

/// Sends one event to every viewer; drops a viewer that cannot keep up. Output is not read
/// from the PTY while this blocks, which is the back-pressure that keeps buffers small.
fn broadcast(state: &mut State, event: &ShimEvent) {
    if state.viewers.is_empty() {
        return;
    }
    let Ok(bytes) = encode(event) else { return };
    let acked = &mut state.acked;
    state
        .viewers
        .retain_mut(|(id, viewer)| match viewer.write_all(&bytes) {
            Ok(()) => true,
            Err(error) => {
                tracing::info!(viewer = *id, %error, "viewer gone or stuck; disconnecting it");
                acked.remove(id);
                // Shut the connection, not just this handle: the agent must see the end, not
                // a terminal that silently stopped.
                let _ = viewer.shutdown(std::net::Shutdown::Both);
                false
            }
        });
}

/// Sends one event to one viewer.
fn send_to(viewer: &mut UnixStream, event: &ShimEvent) -> std::io::Result<()> {
    let bytes = encode(event).map_err(std::io::Error::other)?;
    viewer.write_all(&bytes)
}

enum Lifecycle {
    Exited(i32),
    Kill,
    /// Release asked on this connection, which gets the `Released` answer.
    Release(UnixStream),
    /// The socket is gone: nobody can release this shim any more.
    Orphaned,
}

/// The shell's pid, written once it runs: what a cleanup needs when the shim is gone.
fn pid_path(dir: &Path) -> PathBuf {
    dir.join("shell.pid")
}

fn read_spec(dir: &Path) -> Result<ShimSpec, String> {
    std::fs::read(spec_path(dir))
        .map_err(|e| format!("reading {}: {e}", spec_path(dir).display()))
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| format!("bad spec.json: {e}")))
}

/// Cleans up after a shim that died: kills what its shell left running and deletes the
/// container. Run as its own single-threaded process (`fogshell-agent shim --delete`), since
/// it calls libcontainer.
pub fn delete(dir: &Path) -> Result<(), String> {
    let spec = read_spec(dir)?;
    let pid = std::fs::read_to_string(pid_path(dir))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok());
    tracing::info!(session_id = %spec.session_id, ?pid, "cleaning up after a dead shim");
    child::delete_orphan(&spec, pid).map_err(|e| format!("cleaning up: {e}"))?;
    let _ = std::fs::remove_file(socket_path(dir));
    Ok(())
}

/// Runs the shim until the agent releases it. Called before any thread exists.
pub fn run(dir: &Path) -> Result<(), String> {
    let started = std::time::Instant::now();
    // `ps`, `top` and `pgrep fogshell-shim` tell shims from the agent (and the zygote, whose
    // command line forked shims share).
    if let Err(error) = nix::sys::prctl::set_name(c"fogshell-shim") {
        tracing::debug!(%error, "could not name the shim process");
    }
    let spec = read_spec(dir)?;
    let span = tracing::info_span!("shim", session_id = %spec.session_id);
    let _entered = span.enter();

    let socket = socket_path(dir);
    let _ = std::fs::remove_file(&socket);
    let listener =
        UnixListener::bind(&socket).map_err(|e| format!("binding {}: {e}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod {}: {e}", socket.display()))?;
    let bound = socket_identity(&socket)
        .ok_or_else(|| format!("{} vanished as it was made", socket.display()))?;

    // The shell starts here, while this process has one thread.
    let mut shell = Shell::start(&spec).map_err(|e| format!("starting the shell: {e}"))?;
    let pid = shell.pid();
    // Tell the agent we are up first (it reads this one line and stops reading): what
    // follows is bookkeeping, not on the session's start path.
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "ready {pid}");
    let _ = stdout.flush();
    if let Err(error) = std::fs::write(pid_path(dir), format!("{pid}\n")) {
        tracing::warn!(%error, "could not record the shell's pid");
    }
    tracing::info!(
        pid,
        startup_us = started.elapsed().as_micros() as u64,
        "shell started"
    );

    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            ring: OutputRing::new(RING_BYTES),
            viewers: Vec::new(),
            acked: BTreeMap::new(),
            exited: None,
        }),
        room: Condvar::new(),
        pid,
    });
    let (lifecycle_tx, lifecycle_rx) = mpsc::channel();

    // The agent attaches right after `ready`: viewers are accepted first, output is kept in
    // the ring for them from the start either way.
    {
        let shared = Arc::clone(&shared);
        let controls = shell.controls().map_err(|e| format!("PTY writer: {e}"))?;
        let tx = lifecycle_tx.clone();
        std::thread::spawn(move || accept_viewers(listener, &shared, controls, tx));
    }
    let reader = shell.reader().map_err(|e| format!("PTY reader: {e}"))?;
    // The output thread holds the sender: its end, however it comes, disconnects the channel.
    let (output_done_tx, output_done_rx) = mpsc::channel::<()>();
    {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || {
            let _done = output_done_tx;
            pump_output(reader, &shared);
        });
    }
    {
        let socket = socket.clone();
        let tx = lifecycle_tx.clone();
        std::thread::spawn(move || watch_socket(&socket, bound, &tx));
    }
    std::thread::spawn(move || {
        let code = child::wait_for_exit(pid);
        let _ = lifecycle_tx.send(Lifecycle::Exited(code));
    });

    // `None` once the shell's remains are deleted.
    let mut shell = Some(shell);
    let mut releasers: Vec<UnixStream> = Vec::new();
    let mut orphaned = false;
    for event in lifecycle_rx {
        match event {
            Lifecycle::Exited(code) => {
                // Let the last output reach the ring (and the viewer) before the exit does.
                let _ = output_done_rx.recv_timeout(DRAIN_AFTER_EXIT);
                let mut state = shared.lock();
                state.exited = Some(code);
                broadcast(&mut state, &ShimEvent::Exited { code });
                drop(state);
                tracing::info!(code, "shell exited");
                // Nothing runs in the container any more: delete it now, as `crun run` does,
                // while the exit travels to the agent, rather than when it asks.
                if let Some(shell) = shell.take() {
                    shell.cleanup().map_err(|e| format!("cleaning up: {e}"))?;
                }
                if !releasers.is_empty() || orphaned {
                    break;
                }
            }
            Lifecycle::Kill => {
                tracing::info!("killing the shell");
                if let Some(Err(error)) = shell.as_mut().map(Shell::kill) {
                    tracing::warn!(%error, "kill failed");
                }
            }
            Lifecycle::Release(releaser) => {
                releasers.push(releaser);
                if shared.lock().exited.is_some() {
                    break;
                }
                // Released while running: end the shell first; its exit ends the loop.
                if let Some(Err(error)) = shell.as_mut().map(Shell::kill) {
                    tracing::warn!(%error, "kill failed");
                }
            }
            Lifecycle::Orphaned => {
                orphaned = true;
                if shared.lock().exited.is_some() {
                    break;
                }
                if let Some(Err(error)) = shell.as_mut().map(Shell::kill) {
                    tracing::warn!(%error, "kill failed");
                }
            }
        }
    }
    if let Some(shell) = shell {
        // The loop ended without an exit (every sender gone): clean up all the same.
        shell.cleanup().map_err(|e| format!("cleaning up: {e}"))?;
    }
    let _ = std::fs::remove_file(&socket);
    for mut releaser in releasers {
        let _ = send_to(&mut releaser, &ShimEvent::Released);
    }
    tracing::info!("released");
    Ok(())
}

/// The file a path names, as `(device, inode)`: a socket removed and bound again by someone
/// else is not ours.
fn socket_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Checks every [`SOCKET_CHECK`] that the socket this shim bound is still in place, and says
/// [`Lifecycle::Orphaned`] once it is not.
fn watch_socket(socket: &Path, bound: (u64, u64), lifecycle: &mpsc::Sender<Lifecycle>) {
    loop {
        std::thread::sleep(SOCKET_CHECK);
        if socket_identity(socket) != Some(bound) {
            // A failed send: the shim is ending and removed the socket itself.
            if lifecycle.send(Lifecycle::Orphaned).is_ok() {
                tracing::warn!(
                    socket = %socket.display(),
                    "the session's socket is gone, so no agent can reach this shell: ending it"
                );
            }
            return;
        }
    }
}

/// Reads the PTY until it closes, into the ring and to the viewer.
fn pump_output(mut reader: Box<dyn Read + Send>, shared: &Shared) {
    // Reads of at most 16 KiB: each becomes one message on every hop to the browser, and
    // every hop holds about one message, so this bounds what a flood leaves queued.
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Flow control: while the viewers that acknowledge are a window behind, the shell's
        // writes block on the full terminal, as on a real terminal whose reader is slow.
        {
            let mut state = shared.lock();
            while state.flow_blocked() {
                state = shared
                    .room
                    .wait_timeout(state, Duration::from_millis(200))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
        let n = match reader.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // EIO: the shell and everything holding the terminal are gone.
            Err(_) => return,
        };
        let mut state = shared.lock();
        let offset = state.ring.end();
        state.ring.push(&buf[..n]);
        broadcast(
            &mut state,
            &ShimEvent::Output {
                offset,
                data: buf[..n].to_vec(),
            },
        );
    }
}

fn accept_viewers(
    listener: UnixListener,
    shared: &Arc<Shared>,
    controls: child::Controls,
    lifecycle: mpsc::Sender<Lifecycle>,
) {
    let controls = Arc::new(Mutex::new(controls));
    for (id, conn) in (0u64..).zip(listener.incoming()) {
        let Ok(conn) = conn else { continue };
        let shared = Arc::clone(shared);
        let controls = Arc::clone(&controls);
        let lifecycle = lifecycle.clone();
        std::thread::spawn(move || {
            let result = serve_viewer(id, conn, &shared, &controls, &lifecycle);
            {
                let mut state = shared.lock();
                state.viewers.retain(|(v, _)| *v != id);
                state.forget(id);
            }
            shared.room.notify_all();
            if let Err(error) = result {
                tracing::info!(%error, "viewer connection ended");
            }
        });
    }
}

fn serve_viewer(
    id: u64,
    mut conn: UnixStream,
    shared: &Shared,
    controls: &Mutex<child::Controls>,
    lifecycle: &mpsc::Sender<Lifecycle>,
) -> std::io::Result<()> {
    let mut decoder = Decoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        decoder.extend(&buf[..n]);
        while let Some(request) = decoder
            .next_message::<ShimRequest>()
            .map_err(std::io::Error::other)?
        {
            handle_request(id, request, &conn, shared, controls, lifecycle)?;
        }
    }
}

fn handle_request(
    id: u64,
    request: ShimRequest,
    conn: &UnixStream,
    shared: &Shared,
    controls: &Mutex<child::Controls>,
    lifecycle: &mpsc::Sender<Lifecycle>,
) -> std::io::Result<()> {
    let controls = || fogshell_shared::sync::lock(controls);
    match request {
        ShimRequest::Attach { size, from_offset } => {
            let mut viewer = conn.try_clone()?;
            viewer.set_write_timeout(Some(VIEWER_WRITE_TIMEOUT))?;
            controls().resize(size)?;
            // Under the state lock, so no live output slips between the replay and the join.
            let mut state = shared.lock();
            state.viewers.retain(|(v, _)| *v != id);
            state.forget(id);
            shared.room.notify_all();
            let (start, data) = state.ring.since(from_offset);
            let replayed = (|| {
                send_to(&mut viewer, &ShimEvent::Attached { from_offset: start })?;
                for (i, chunk) in data.chunks(64 * 1024).enumerate() {
                    let offset = start + (i * 64 * 1024) as u64;
                    let data = chunk.to_vec();
                    send_to(&mut viewer, &ShimEvent::Output { offset, data })?;
                }
                match state.exited {
                    Some(code) => send_to(&mut viewer, &ShimEvent::Exited { code }),
                    None => Ok(()),
                }
            })();
            match replayed {
                Ok(()) => state.viewers.push((id, viewer)),
                // The viewer left already; what else it sent (typing) is still carried out.
                Err(error) => tracing::info!(viewer = id, %error, "viewer gone during replay"),
            }
        }
        // Input carrying Ctrl-C is answered with where the interrupt fell.
        ShimRequest::Input(bytes) if bytes.contains(&CTRL_C) => {
            let mut controls = controls();
            // The mode the keystroke meets is the running program's: read before writing, for
            // once the interrupt has landed a shell's line editor may switch to raw mode at once.
            let discard = controls.ctrl_c_flushes();
            // Where the output stood before the keystroke: all of it came before the interrupt.
            let before = shared.lock().ring.end();
            controls.write_input(&bytes)?;
            drop(controls);
            // After every output before `before` on each viewer's connection (broadcast under
            // the same lock), so a viewer knows what it may drop.
            let mut state = shared.lock();
            broadcast(&mut state, &ShimEvent::Interrupted { before, discard });
        }
        ShimRequest::Input(bytes) => controls().write_input(&bytes)?,
        ShimRequest::Resize(size) => controls().resize(size)?,
        ShimRequest::Kill => {
            let _ = lifecycle.send(Lifecycle::Kill);
        }
        ShimRequest::Release => {
            let _ = lifecycle.send(Lifecycle::Release(conn.try_clone()?));
        }
        ShimRequest::Ack { offset } => {
            let mut state = shared.lock();
            let consumed = offset.min(state.ring.end());
            let entry = state.acked.entry(id).or_insert(consumed);
            *entry = (*entry).max(consumed);
            drop(state);
            shared.room.notify_all();
        }
        ShimRequest::Status => {
            // Written under the state lock, so it cannot interleave with output to this
            // connection if it is also the viewer.
            let state = shared.lock();
            let status = ShimEvent::Status(ShimStatus {
                pid: shared.pid,
                exited: state.exited,
                output_end: state.ring.end(),
            });
            let bytes = encode(&status).map_err(std::io::Error::other)?;
            (&*conn).write_all(&bytes)?;
            drop(state);
        }
    }
    Ok(())
}

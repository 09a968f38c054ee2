//! One viewer's WebSocket ↔ a terminal stream.
//!
//! Two loops per viewer, so neither direction waits on the other: output (terminal →
//! WebSocket) goes through a small bounded queue to the socket writer, which is the
//! back-pressure that keeps a flood from piling up anywhere; input (WebSocket → terminal) goes
//! straight down, so Ctrl-C overtakes any output still queued. A malformed frame gets an
//! `error` frame and the close code its kind defines; the shell and other viewers carry on.
//!
//! What happens when the terminal stops without an exit is the gateway's own
//! ([`Backend`]): the coordinator's relay tells the viewer how the session moves and re-binds
//! it to the next terminal; a node's edge gateway tells it to go to the relay.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use fogshell_shared::frame::{ClientFrame, MAX_PAYLOAD_BYTES, ServerFrame, StreamState, TermSize};
use fogshell_shared::sync::lock;
use fogshell_shared::wire::PtyMessage;
use fogshell_shared::wire::stream::{FramedReader, write_message};
use fogshell_shared::{ErrorCode, NodeId, Placement, SessionStatus};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// Output frames queued for a slow viewer before the relay stops reading the terminal: one,
/// as ttyd does, so a flood queues little and Ctrl-C is felt at once.
const OUTPUT_QUEUE: usize = 1;

/// A viewer not heard from (any message, pongs included) for this long is gone, unless the
/// gateway says otherwise ([`Backend::viewer_silence`]). Viewers are pinged three times in
/// that span: an idle terminal's socket is otherwise never written to, and a viewer that
/// vanished (a closed laptop, a cut network) would hold its place for good.
pub const VIEWER_SILENCE: Duration = Duration::from_secs(60);

/// How long what is queued when a viewer's relay ends (an exit, a close) may take to go out
/// to a viewer that takes nothing more.
const FLUSH_GRACE: Duration = Duration::from_secs(5);

/// WebSocket close codes (RFC 6455 §7.4.1).
pub mod close_code {
    /// The session ended or the viewer is done.
    pub const NORMAL: u16 = 1000;
    /// The gateway cannot serve the terminal any more; the client should use another path
    /// (the relay).
    pub const GOING_AWAY: u16 = 1001;
    /// A binary frame.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// A frame over the size limit.
    pub const TOO_BIG: u16 = 1009;
}

/// The byte streams of one terminal: [`PtyMessage`]s go down `send`, come up `recv`.
pub struct Terminal {
    /// Input, resizes and acknowledgements.
    pub send: Box<dyn AsyncWrite + Send + Unpin>,
    /// Output and the exit status.
    pub recv: FramedReader<Box<dyn AsyncRead + Send + Unpin>>,
}

impl std::fmt::Debug for Terminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminal").finish_non_exhaustive()
    }
}

impl Terminal {
    /// A terminal over these two halves.
    pub fn new(
        send: impl AsyncWrite + Send + Unpin + 'static,
        recv: impl AsyncRead + Send + Unpin + 'static,
    ) -> Self {
        Self {
            send: Box::new(send),
            recv: FramedReader::new(Box::new(recv)),
        }
    }
}

/// A change in a session's life, as a viewer hears it.
#[derive(Debug, Clone)]
pub struct Change {
    /// The session's new status.
    pub status: SessionStatus,
    /// Where it runs now.
    pub placement: Placement,
    /// Why, when the change is not the usual course.
    pub reason: Option<String>,
}

impl Change {
    /// The terminal at `placement` stopped without an exit, for `reason`.
    pub fn interrupted(placement: &Placement, reason: String) -> Self {
        Self {
            status: SessionStatus::Interrupted,
            placement: placement.clone(),
            reason: Some(reason),
        }
    }
}

/// The `running` or `resumed` frame a new terminal is announced with, sent once the node said
/// where its output starts, so it carries that offset.
#[derive(Debug)]
pub struct Announcement {
    /// `running` (the same shell) or `resumed` (a new one after a failover).
    pub state: StreamState,
    /// Where the terminal's session runs, when the gateway knows it as the control plane
    /// decided it (a node's own gateway does not).
    pub placement: Option<Placement>,
    /// Why, when there is news.
    pub reason: Option<String>,
}

impl Announcement {
    fn frame(self, offset: Option<u64>) -> Message {
        text(&ServerFrame::Status {
            state: self.state,
            placement: self.placement,
            reason: self.reason,
            offset,
        })
    }
}

/// What a viewer is told while it has no terminal, and what it gets at the end of it.
#[derive(Debug)]
pub enum Rebound {
    /// A terminal again, and how to announce it.
    Terminal(Box<(Terminal, Announcement)>),
    /// The session ended or this gateway cannot serve it; the viewer has been told and its
    /// socket closed.
    Over,
}

/// What a gateway does around the relay: when its session moves, and what a viewer whose
/// terminal stopped gets next.
pub trait Backend: Send {
    /// Resolves when the session leaves the terminal on `node` (a failover, an ending with a
    /// reason), or with `None` when no such news can come any more.
    fn moved_away(&mut self, node: &NodeId) -> impl Future<Output = Option<Change>> + Send;
    /// The terminal's stream broke (`reason`): the change to tell the viewer, if any.
    fn broken(&mut self, placement: &Placement, reason: String) -> Option<Change>;
    /// Tells the viewer what happens to its session (starting with `first`) until a terminal
    /// can be opened again, sized `size`, its output from `offset` when it is the same shell.
    fn rebind(
        &mut self,
        output: &Outbox,
        size: TermSize,
        first: Option<Change>,
        offset: u64,
    ) -> impl Future<Output = Rebound> + Send;
    /// Whether `running` frames name the placement (only a gateway that knows it as the
    /// control plane decided it says so).
    fn announces_placement(&self) -> bool {
        true
    }
    /// How long a viewer may stay silent (no message, no pong) before it is dropped.
    fn viewer_silence(&self) -> Duration {
        VIEWER_SILENCE
    }
}

/// The viewer's outgoing queue, for a [`Backend`] to tell it things.
#[derive(Debug, Clone)]
pub struct Outbox(mpsc::Sender<Message>);

impl Outbox {
    /// Queues a status frame; false once the viewer is gone.
    pub async fn status(
        &self,
        state: StreamState,
        placement: Option<&Placement>,
        reason: Option<String>,
    ) -> bool {
        let frame = ServerFrame::Status {
            state,
            placement: placement.cloned(),
            reason,
            offset: None,
        };
        self.0.send(text(&frame)).await.is_ok()
    }

    /// Queues a close frame; the writer stops after it.
    pub async fn close(&self, code: u16, reason: &str) {
        let _ = self.0.send(close(code, reason)).await;
    }

    async fn send(&self, message: Message) -> bool {
        self.0.send(message).await.is_ok()
    }
}

/// Tells a viewer the gateway holds before relaying (its shell is still starting) the
/// terminal's `state`; false once the viewer is gone.
pub async fn tell(socket: &mut WebSocket, state: StreamState, reason: Option<String>) -> bool {
    let frame = ServerFrame::Status {
        state,
        placement: None,
        reason,
        offset: None,
    };
    socket.send(text(&frame)).await.is_ok()
}

/// Closes such a viewer's socket with `code`.
pub async fn end(mut socket: WebSocket, code: u16, reason: &str) {
    let _ = socket.send(close(code, reason)).await;
}

fn text(frame: &ServerFrame) -> Message {
    Message::Text(frame.encode().into())
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.to_owned().into(),
    }))
}

/// What a viewer's acknowledgements (`{"type":"ack","bytes":N}`) mean for the terminal
/// it reads now: the client counts `stdout` bytes on its socket, the node counts the
/// session's output; this ties the two together at the current terminal's start.
#[derive(Debug, Default)]
struct Flow {
    /// `stdout` payload bytes sent on this socket.
    sent: u64,
    /// `sent` and the session's output offset when the current terminal's output began
    /// (`None` until its node says where that is).
    base: Option<(u64, u64)>,
    /// Whether the client acknowledges: only such a client gets `flush` frames.
    acking: bool,
}

impl Flow {
    /// The session offset a client that consumed `bytes` has reached, if it has reached the
    /// current terminal's output at all.
    fn offset_for(&self, bytes: u64) -> Option<u64> {
        let (base_sent, base_offset) = self.base?;
        let consumed = bytes.min(self.sent).checked_sub(base_sent)?;
        Some(base_offset + consumed)
    }

    /// Where the session offset `offset` falls in this socket's `stdout` bytes, if the client
    /// acknowledges and the current terminal's output has begun.
    fn bytes_at(&self, offset: u64) -> Option<u64> {
        let (base_sent, base_offset) = self.base.filter(|_| self.acking)?;
        Some((base_sent + offset.saturating_sub(base_offset)).min(self.sent))
    }
}

/// How a terminal's output ended.
enum Ended {
    /// The shell exited.
    Exit(i32),
    /// The stream broke or closed without an exit.
    Broken(String),
    /// The viewer is gone.
    ViewerGone,
}

/// Relays the terminal's output to the viewer until it ends. `offset` follows the session's
/// output: where the next byte to reach the viewer sits, so a stream that breaks can be
/// picked up exactly there.
async fn pump(
    recv: &mut FramedReader<Box<dyn AsyncRead + Send + Unpin>>,
    output: &Outbox,
    node: &NodeId,
    offset: &mut u64,
    announce: &mut Option<Announcement>,
    flow: &Mutex<Flow>,
) -> Ended {
    let mut waiting: Option<PtyMessage> = None;
    loop {
        let message = match waiting.take() {
            Some(message) => Ok(Some(message)),
            None => recv.next::<PtyMessage>().await,
        };
        match message {
            Ok(Some(PtyMessage::Data(mut bytes))) => {
                // A node that never said where its output starts: announce without an offset.
                if let Some(announcement) = announce.take()
                    && !output.send(announcement.frame(None)).await
                {
                    return Ended::ViewerGone;
                }
                // What has already arrived joins this frame (up to the frame cap); the first
                // byte of a burst is never held back for more.
                while bytes.len() < MAX_PAYLOAD_BYTES {
                    match recv.next_buffered::<PtyMessage>() {
                        Ok(Some(PtyMessage::Data(more))) => bytes.extend(more),
                        Ok(Some(other)) => {
                            waiting = Some(other);
                            break;
                        }
                        _ => break,
                    }
                }
                for frame in ServerFrame::stdout_frames(&bytes) {
                    if !output.send(text(&frame)).await {
                        return Ended::ViewerGone;
                    }
                }
                *offset += bytes.len() as u64;
                lock(flow).sent += bytes.len() as u64;
            }
            Ok(Some(PtyMessage::Start { from_offset })) => {
                if from_offset > *offset {
                    // More than the node's buffer holds went by while no stream was open.
                    tracing::warn!(
                        lost_bytes = from_offset - *offset,
                        "output fell out of the node's buffer"
                    );
                }
                *offset = from_offset;
                {
                    let mut flow = lock(flow);
                    flow.base = Some((flow.sent, from_offset));
                }
                if let Some(announcement) = announce.take()
                    && !output.send(announcement.frame(Some(from_offset))).await
                {
                    return Ended::ViewerGone;
                }
            }
            Ok(Some(PtyMessage::Interrupted { before, discard })) => {
                let at = lock(flow).bytes_at(before);
                if let Some(bytes) = at
                    && !output
                        .send(text(&ServerFrame::Flush { bytes, discard }))
                        .await
                {
                    return Ended::ViewerGone;
                }
            }
            Ok(Some(PtyMessage::Exit { code })) => return Ended::Exit(code),
            Ok(Some(PtyMessage::Resize(_) | PtyMessage::Ack { .. })) => {}
            Ok(None) => return Ended::Broken(format!("node {node} closed the terminal")),
            Err(error) => return Ended::Broken(format!("the link to node {node} broke: {error}")),
        }
    }
}

/// Relays one viewer's `socket` to `terminal` — the session's at `placement`, output from
/// `from_offset`, sized `size` — until the shell exits, the viewer goes, or `backend` says
/// the session is over for this gateway.
pub async fn relay<B: Backend>(
    socket: WebSocket,
    mut backend: B,
    terminal: Terminal,
    placement: Placement,
    size: TermSize,
    from_offset: u64,
) {
    let (mut ws_out, mut ws_in) = socket.split();
    let (queue, mut queued) = mpsc::channel::<Message>(OUTPUT_QUEUE);
    let writer = async move {
        while let Some(message) = queued.recv().await {
            let closing = matches!(message, Message::Close(_));
            if ws_out.send(message).await.is_err() || closing {
                break;
            }
        }
        let _ = ws_out.close().await;
    };
    // The current terminal's input half: none while the session has no terminal.
    let Terminal { send, recv } = terminal;
    let input = tokio::sync::Mutex::new(Some(send));
    let size = Mutex::new(size);
    let flow = Mutex::new(Flow::default());
    let heard = Mutex::new(Instant::now());
    // The loops borrow these; each owns its own sender, so the writer ends once all do.
    let (input, size, flow, heard) = (&input, &size, &flow, &heard);
    let output = Outbox(queue.clone());
    let pings = Outbox(queue.clone());
    let silence = backend.viewer_silence();
    let keepalive = async move {
        let mut tick = tokio::time::interval(silence / 3);
        tick.tick().await;
        loop {
            tick.tick().await;
            if lock(heard).elapsed() > silence {
                tracing::info!("the viewer answers no pings: gone");
                return;
            }
            if !pings.send(Message::Ping(Default::default())).await {
                return;
            }
        }
    };
    let upward = async move {
        let mut placement = placement;
        let mut announce = Some(Announcement {
            state: StreamState::Running,
            placement: backend.announces_placement().then(|| placement.clone()),
            reason: None,
        });
        let mut recv = recv;
        let mut offset = from_offset;
        loop {
            let node = placement.node_id.clone();
            let ended = tokio::select! {
                ended = pump(&mut recv, &output, &node, &mut offset, &mut announce, flow) => Ok(ended),
                change = backend.moved_away(&node) => Err(change),
            };
            *input.lock().await = None;
            // Acknowledgements wait for the next terminal's start.
            lock(flow).base = None;
            let first = match ended {
                Ok(Ended::ViewerGone) => return,
                Ok(Ended::Exit(code)) => {
                    tracing::info!(code, "shell exited");
                    let _ = output.send(text(&ServerFrame::Exit { code })).await;
                    output.close(close_code::NORMAL, "exited").await;
                    return;
                }
                Ok(Ended::Broken(reason)) => {
                    tracing::info!(%reason, "terminal interrupted");
                    backend.broken(&placement, reason)
                }
                Err(None) => return,
                Err(Some(change)) => Some(change),
            };
            let current = *lock(size);
            match backend.rebind(&output, current, first, offset).await {
                Rebound::Over => return,
                Rebound::Terminal(bound) => {
                    let (terminal, announcement) = *bound;
                    if let Some(next) = &announcement.placement {
                        if next.node_id != node {
                            offset = 0;
                        }
                        tracing::info!(node_id = %next.node_id, "viewer re-bound");
                        placement = next.clone();
                    }
                    announce = Some(announcement);
                    *input.lock().await = Some(terminal.send);
                    recv = terminal.recv;
                }
            }
        }
    };
    let downward = async move {
        let refuse = |code: ErrorCode, message: String, close_with: u16| async move {
            let frame = ServerFrame::Error { code, message };
            let _ = queue.send(text(&frame)).await;
            let _ = queue.send(close(close_with, "malformed frame")).await;
        };
        while let Some(message) = ws_in.next().await {
            *lock(heard) = Instant::now();
            let forward = match message {
                Ok(Message::Text(body)) => match ClientFrame::decode(body.as_str()) {
                    Ok(ClientFrame::Stdin(data)) => PtyMessage::Data(data.into_bytes()),
                    Ok(ClientFrame::Resize(new_size)) => {
                        // A terminal opened after a failover gets the viewer's size.
                        *lock(size) = new_size;
                        PtyMessage::Resize(new_size)
                    }
                    Ok(ClientFrame::Ack { bytes }) => {
                        let reached = {
                            let mut flow = lock(flow);
                            flow.acking = true;
                            flow.offset_for(bytes)
                        };
                        match reached {
                            Some(offset) => PtyMessage::Ack { offset },
                            None => continue,
                        }
                    }
                    Err(error) => {
                        tracing::info!(%error, "malformed frame");
                        let code = if error.close_code() == close_code::TOO_BIG {
                            ErrorCode::PayloadTooLarge
                        } else {
                            ErrorCode::InvalidRequest
                        };
                        return refuse(code, error.to_string(), error.close_code()).await;
                    }
                },
                Ok(Message::Binary(_)) => {
                    return refuse(
                        ErrorCode::InvalidRequest,
                        "frames are JSON text, not binary".into(),
                        close_code::UNSUPPORTED_DATA,
                    )
                    .await;
                }
                Ok(Message::Close(_)) => return,
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Err(error) => {
                    tracing::info!(%error, "viewer socket failed");
                    return refuse(
                        ErrorCode::PayloadTooLarge,
                        "the message is too large".into(),
                        close_code::TOO_BIG,
                    )
                    .await;
                }
            };
            let mut current = input.lock().await;
            if let Some(send) = current.as_mut()
                && let Err(error) = write_message(send, &forward).await
            {
                // The output side notices the break and finds the next terminal.
                tracing::info!(%error, "the node stopped taking input");
                *current = None;
            }
        }
    };
    // The relay ends when output ends (exit, the session's end) or the viewer goes; the
    // writer then sends what is queued (the exit frame, the close) and stops.
    let relay = async {
        tokio::select! {
            () = upward => {}
            () = downward => {}
            () = keepalive => {}
        }
    };
    tokio::pin!(writer);
    tokio::select! {
        // The socket failed: the viewer is gone.
        () = &mut writer => {}
        // What is queued goes out, if the viewer still takes it.
        () = relay => {
            let _ = tokio::time::timeout(FLUSH_GRACE, writer).await;
        }
    }
    tracing::info!("viewer detached");
}

/// The PTY endpoint's query: `?token=…&cols=…&rows=…&from_offset=…`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PtyQuery {
    /// The attach token.
    pub token: String,
    /// The terminal's width (80 when absent).
    pub cols: Option<u16>,
    /// The terminal's height (24 when absent).
    pub rows: Option<u16>,
    /// Resume the output here (a `running` frame's `offset` plus what arrived since).
    pub from_offset: Option<u64>,
}

impl PtyQuery {
    /// The terminal size asked for.
    pub fn size(&self) -> Result<TermSize, &'static str> {
        TermSize::new(self.cols.unwrap_or(80), self.rows.unwrap_or(24))
            .ok_or("cols and rows must be 1 to 1000")
    }
}

impl std::fmt::Debug for PtyQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token never reaches a log.
        f.debug_struct("PtyQuery")
            .field("token", &"<redacted>")
            .field("cols", &self.cols)
            .field("rows", &self.rows)
            .field("from_offset", &self.from_offset)
            .finish()
    }
}

/// The largest WebSocket message a gateway reads: over the frame cap, so an oversize frame
/// reaches the decoder and gets its error frame; past this, the socket itself refuses it.
pub const MAX_MESSAGE_SIZE: usize = 4 * fogshell_shared::frame::MAX_FRAME_TEXT_BYTES;

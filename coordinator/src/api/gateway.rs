//! The PTY gateway: `GET /v1/sessions/{id}/pty?token=…` upgrades to a WebSocket and relays
//! the seed's JSON frames to and from the node's QUIC terminal stream.
//!
//! Two loops per viewer, so neither direction waits on the other: output (QUIC → WebSocket)
//! goes through a small bounded queue to the socket writer, which is the back-pressure that
//! keeps a flood from piling up anywhere; input (WebSocket → QUIC) goes straight down, so
//! Ctrl-C overtakes any output still queued. A malformed frame gets an `error` frame and
//! the close code its kind defines; the shell and other viewers carry on.
//!
//! A viewer outlives its node. When the terminal stream breaks or the control plane moves
//! the session, the viewer is told (`status` frames: interrupted, resuming, then resumed
//! with the new placement, or failed with the reason) and its socket is re-bound to the
//! session's new terminal — after a failover, or when the same node comes back — without the
//! user reconnecting. Input typed while no shell is attached is dropped: the banner says so.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use fogshell_shared::frame::{
    ClientFrame, MAX_FRAME_TEXT_BYTES, MAX_PAYLOAD_BYTES, ServerFrame, StreamState, TermSize,
};
use fogshell_shared::wire::PtyMessage;
use fogshell_shared::wire::stream::write_message;
use fogshell_shared::{ErrorCode, Placement, SessionId, SessionStatus};
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};
use tracing::Instrument as _;

use super::AppState;
use super::extract::ApiQuery;
use crate::control::{ControlPlane, SessionChange};
use crate::error::ApiError;
use crate::fabric::nodes::Terminal;
use crate::store::SessionRecord;

/// Output frames queued for a slow viewer before the relay stops reading the node: one, as
/// ttyd does, so a flood queues little and Ctrl-C is felt at once.
const OUTPUT_QUEUE: usize = 1;

/// How often a viewer without a terminal looks whether its session can be reached again
/// (its node came back without the session ever leaving `running`).
const RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// WebSocket close codes (RFC 6455 §7.4.1).
mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const TOO_BIG: u16 = 1009;
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PtyQuery {
    token: String,
    cols: Option<u16>,
    rows: Option<u16>,
    /// Resume the output here (a `running` frame's `offset` plus what arrived since).
    from_offset: Option<u64>,
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

/// `GET /v1/sessions/{id}/pty`. The token and the session are checked before the upgrade, so
/// a refusal is an ordinary HTTP error with the API's body.
pub(super) async fn attach(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<PtyQuery>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let result = async {
        let session_id: SessionId = id
            .parse()
            .map_err(|_| ApiError::new(ErrorCode::NotFound, format!("no session {id:?}")))?;
        let upgrade = upgrade.map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!("a WebSocket upgrade is required: {e}"),
            )
        })?;
        let size =
            TermSize::new(query.cols.unwrap_or(80), query.rows.unwrap_or(24)).ok_or_else(|| {
                ApiError::new(ErrorCode::InvalidRequest, "cols and rows must be 1 to 1000")
            })?;
        let from_offset = query.from_offset.unwrap_or(0);
        // Subscribed before the terminal opens, so no change falls between the two.
        let changes = state.control.subscribe();
        let (session, terminal) = state
            .control
            .open_terminal(session_id, &query.token, size, from_offset)
            .await?;
        let control = Arc::clone(&state.control);
        Ok::<_, ApiError>(
            upgrade
                // Over our own frame cap, so an oversize frame reaches the decoder and gets
                // its error frame; past this, the socket itself refuses it.
                .max_message_size(4 * MAX_FRAME_TEXT_BYTES)
                .on_upgrade(move |socket| {
                    relay(
                        socket,
                        Attached {
                            control,
                            changes,
                            session,
                            size,
                            from_offset,
                        },
                        terminal,
                    )
                }),
        )
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
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

/// One viewer's attachment: the terminal it has now and what it needs to find the next.
struct Attached {
    control: Arc<ControlPlane>,
    changes: broadcast::Receiver<SessionChange>,
    session: SessionRecord,
    size: TermSize,
    /// Where in the output the viewer asked to start.
    from_offset: u64,
}

fn status(state: StreamState, placement: Option<&Placement>, reason: Option<String>) -> Message {
    text(&ServerFrame::Status {
        state,
        placement: placement.cloned(),
        reason,
        offset: None,
    })
}

/// The `running` or `resumed` frame a new terminal is announced with, sent once the node said
/// where its output starts, so it carries that offset.
struct Announcement {
    state: StreamState,
    placement: Placement,
    reason: Option<String>,
}

impl Announcement {
    fn frame(self, offset: Option<u64>) -> Message {
        text(&ServerFrame::Status {
            state: self.state,
            placement: Some(self.placement),
            reason: self.reason,
            offset,
        })
    }
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
    recv: &mut fogshell_shared::wire::stream::FramedReader<quinn::RecvStream>,
    output: &mpsc::Sender<Message>,
    node: &fogshell_shared::NodeId,
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
                    && output.send(announcement.frame(None)).await.is_err()
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
                    if output.send(text(&frame)).await.is_err() {
                        return Ended::ViewerGone;
                    }
                }
                *offset += bytes.len() as u64;
                flow.lock().unwrap_or_else(|p| p.into_inner()).sent += bytes.len() as u64;
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
                    let mut flow = flow.lock().unwrap_or_else(|p| p.into_inner());
                    flow.base = Some((flow.sent, from_offset));
                }
                if let Some(announcement) = announce.take()
                    && output
                        .send(announcement.frame(Some(from_offset)))
                        .await
                        .is_err()
                {
                    return Ended::ViewerGone;
                }
            }
            Ok(Some(PtyMessage::Interrupted { before, discard })) => {
                let at = flow
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .bytes_at(before);
                if let Some(bytes) = at
                    && output
                        .send(text(&ServerFrame::Flush { bytes, discard }))
                        .await
                        .is_err()
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

/// Waits for a change that takes the session away from the terminal on `node`.
async fn moved_away(
    changes: &mut broadcast::Receiver<SessionChange>,
    session_id: SessionId,
    node: &fogshell_shared::NodeId,
) -> Option<SessionChange> {
    loop {
        match changes.recv().await {
            Ok(change) if change.session_id == session_id => {
                let elsewhere = change.placement.node_id != *node;
                // An ending with a reason (the node lost the trust the profile demands) is
                // told as such, before the node's closing stream says only "closed".
                let ended_why = change.status.is_final() && change.reason.is_some();
                if matches!(
                    change.status,
                    SessionStatus::Interrupted | SessionStatus::Resuming
                ) || (change.status == SessionStatus::Running && elsewhere)
                    || ended_why
                {
                    return Some(change);
                }
            }
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

/// What the viewer is told while it has no terminal, and what it gets at the end of it.
enum Rebound {
    /// A terminal again, with the session as it now stands, and how to announce it.
    Terminal(Box<(SessionRecord, Terminal, Announcement)>),
    /// The session ended; the viewer has been told and its socket closed.
    Over,
}

/// Tells the viewer what happens to its session until a terminal can be opened again.
async fn rebind(
    attached: &mut Attached,
    output: &mpsc::Sender<Message>,
    size: &Mutex<TermSize>,
    first: Option<SessionChange>,
    offset: u64,
) -> Rebound {
    let session_id = attached.session.session_id;
    let old_node = attached.session.node_id().clone();
    let mut told: Option<(StreamState, Option<String>)> = None;
    let mut pending = first;
    loop {
        let change = match pending.take() {
            Some(change) => Some(change),
            None => tokio::select! {
                change = attached.changes.recv() => match change {
                    Ok(change) if change.session_id == session_id => Some(change),
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => None,
                    Err(broadcast::error::RecvError::Closed) => return Rebound::Over,
                },
                () = tokio::time::sleep(RETRY_INTERVAL) => None,
            },
        };
        // No news: the store says how things stand.
        let (state, placement, reason) = match change {
            Some(change) => (change.status, change.placement, change.reason),
            None => match attached.control.store().session(session_id) {
                Ok(Some(stored)) => (stored.status, stored.placement, None),
                Ok(None) => (
                    SessionStatus::Failed,
                    attached.session.placement.clone(),
                    None,
                ),
                Err(error) => {
                    tracing::warn!(%error, "reading the session");
                    continue;
                }
            },
        };
        let frame_state = match state {
            SessionStatus::Pending => continue,
            SessionStatus::Interrupted => StreamState::Interrupted,
            SessionStatus::Resuming => StreamState::Resuming,
            SessionStatus::Failed | SessionStatus::Terminated => {
                let reason = reason.unwrap_or_else(|| format!("the session is {state}"));
                let _ = output
                    .send(status(StreamState::Failed, Some(&placement), Some(reason)))
                    .await;
                let _ = output
                    .send(close(close_code::NORMAL, "session ended"))
                    .await;
                return Rebound::Over;
            }
            SessionStatus::Running => {
                let current = *size.lock().unwrap_or_else(|p| p.into_inner());
                // The same shell continues where the viewer stopped; a new one starts afresh.
                let from = if placement.node_id == old_node {
                    offset
                } else {
                    0
                };
                match attached
                    .control
                    .connect_terminal(session_id, current, from)
                    .await
                {
                    Ok((session, terminal)) => {
                        let state = if *session.node_id() == old_node {
                            StreamState::Running
                        } else {
                            StreamState::Resumed
                        };
                        let announcement = Announcement {
                            state,
                            placement: session.placement.clone(),
                            reason,
                        };
                        return Rebound::Terminal(Box::new((session, terminal, announcement)));
                    }
                    Err(error) => {
                        tracing::debug!(%error, "the terminal cannot be opened yet");
                        continue;
                    }
                }
            }
        };
        // Said once per state and reason.
        let news = (frame_state, reason.clone());
        if told.as_ref() != Some(&news) {
            if output
                .send(status(frame_state, Some(&placement), reason))
                .await
                .is_err()
            {
                return Rebound::Over;
            }
            told = Some(news);
        }
    }
}

async fn relay(socket: WebSocket, attached: Attached, terminal: Terminal) {
    let session = &attached.session;
    let span = tracing::info_span!("pty", session_id = %session.session_id, tenant = %session.tenant, node_id = %session.node_id());
    async move {
        let mut attached = attached;
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
        let size = Mutex::new(attached.size);
        let flow = Mutex::new(Flow::default());
        // Both loops borrow these; each owns its own sender, so the writer ends once both do.
        let (input, size, flow) = (&input, &size, &flow);
        let output_queue = queue.clone();
        let upward = async move {
            let mut announce = Some(Announcement {
                state: StreamState::Running,
                placement: attached.session.placement.clone(),
                reason: None,
            });
            let mut recv = recv;
            let mut offset = attached.from_offset;
            loop {
                let node = attached.session.node_id().clone();
                let ended = tokio::select! {
                    ended = pump(&mut recv, &output_queue, &node, &mut offset, &mut announce, flow) => Ok(ended),
                    change = moved_away(&mut attached.changes, attached.session.session_id, &node) => Err(change),
                };
                *input.lock().await = None;
                // Acknowledgements wait for the next terminal's start.
                flow.lock().unwrap_or_else(|p| p.into_inner()).base = None;
                let first = match ended {
                    Ok(Ended::ViewerGone) => return,
                    Ok(Ended::Exit(code)) => {
                        tracing::info!(code, "shell exited");
                        let _ = output_queue.send(text(&ServerFrame::Exit { code })).await;
                        let _ = output_queue.send(close(close_code::NORMAL, "exited")).await;
                        return;
                    }
                    Ok(Ended::Broken(reason)) => {
                        tracing::info!(%reason, "terminal interrupted");
                        Some(SessionChange {
                            session_id: attached.session.session_id,
                            status: SessionStatus::Interrupted,
                            placement: attached.session.placement.clone(),
                            reason: Some(reason),
                        })
                        .filter(|_| {
                            // Ended for good (DELETE, TTL): the store says so, not "interrupted".
                            !attached
                                .control
                                .store()
                                .session(attached.session.session_id)
                                .ok()
                                .flatten()
                                .is_some_and(|s| s.status.is_final())
                        })
                    }
                    Err(None) => return,
                    Err(Some(change)) => Some(change),
                };
                match rebind(&mut attached, &output_queue, size, first, offset).await {
                    Rebound::Over => return,
                    Rebound::Terminal(bound) => {
                        let (session, terminal, announcement) = *bound;
                        announce = Some(announcement);
                        if *session.node_id() != node {
                            offset = 0;
                        }
                        tracing::info!(node_id = %session.node_id(), "viewer re-bound");
                        attached.session = session;
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
                let forward = match message {
                    Ok(Message::Text(body)) => match ClientFrame::decode(body.as_str()) {
                        Ok(ClientFrame::Stdin(data)) => PtyMessage::Data(data.into_bytes()),
                        Ok(ClientFrame::Resize(new_size)) => {
                            // A terminal opened after a failover gets the viewer's size.
                            *size.lock().unwrap_or_else(|p| p.into_inner()) = new_size;
                            PtyMessage::Resize(new_size)
                        }
                        Ok(ClientFrame::Ack { bytes }) => {
                            let reached = {
                                let mut flow = flow.lock().unwrap_or_else(|p| p.into_inner());
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
            }
        };
        tokio::join!(writer, relay);
        tracing::info!("viewer detached");
    }
    .instrument(span)
    .await
}

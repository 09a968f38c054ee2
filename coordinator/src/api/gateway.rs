//! The PTY gateway: `GET /v1/sessions/{id}/pty?token=…` upgrades to a WebSocket and relays
//! the seed's JSON frames to and from the node's QUIC terminal stream.
//!
//! Two loops per viewer, so neither direction waits on the other: output (QUIC → WebSocket)
//! goes through a small bounded queue to the socket writer, which is the back-pressure that
//! keeps a flood from piling up anywhere; input (WebSocket → QUIC) goes straight down, so
//! Ctrl-C overtakes any output still queued. A malformed frame gets an `error` frame and
//! the close code its kind defines; the shell and other viewers carry on.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use fogshell_shared::frame::{
    ClientFrame, MAX_FRAME_TEXT_BYTES, MAX_PAYLOAD_BYTES, ServerFrame, StreamState, TermSize,
};
use fogshell_shared::wire::PtyMessage;
use fogshell_shared::wire::stream::write_message;
use fogshell_shared::{ErrorCode, SessionId};
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use tokio::sync::mpsc;
use tracing::Instrument as _;

use super::AppState;
use super::extract::ApiQuery;
use crate::error::ApiError;
use crate::fabric::nodes::Terminal;
use crate::store::SessionRecord;

/// Output frames queued for a slow viewer before the relay stops reading the node: one, as
/// ttyd does, so a flood queues little and Ctrl-C is felt at once.
const OUTPUT_QUEUE: usize = 1;

/// WebSocket close codes (RFC 6455 §7.4.1).
mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PtyQuery {
    token: String,
    cols: Option<u16>,
    rows: Option<u16>,
}

impl std::fmt::Debug for PtyQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token never reaches a log.
        f.debug_struct("PtyQuery")
            .field("token", &"<redacted>")
            .field("cols", &self.cols)
            .field("rows", &self.rows)
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
        let (session, terminal) = state
            .control
            .open_terminal(session_id, &query.token, size)
            .await?;
        Ok::<_, ApiError>(
            upgrade
                // Over our own frame cap, so an oversize frame reaches the decoder and gets
                // its error frame; past this, the socket itself refuses it.
                .max_message_size(4 * MAX_FRAME_TEXT_BYTES)
                .on_upgrade(move |socket| relay(socket, session, terminal)),
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

async fn relay(socket: WebSocket, session: SessionRecord, terminal: Terminal) {
    let span = tracing::info_span!("pty", session_id = %session.session_id, tenant = %session.tenant, node_id = %session.node_id());
    async move {
        let (mut ws_out, mut ws_in) = socket.split();
        let Terminal { mut send, mut recv } = terminal;
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
        let output_queue = queue.clone();
        let upward = async move {
            let running = ServerFrame::Status {
                state: StreamState::Running,
                placement: Some(session.placement.clone()),
                reason: None,
            };
            if output_queue.send(text(&running)).await.is_err() {
                return;
            }
            let mut waiting: Option<PtyMessage> = None;
            loop {
                let message = match waiting.take() {
                    Some(message) => Ok(Some(message)),
                    None => recv.next::<PtyMessage>().await,
                };
                match message {
                    Ok(Some(PtyMessage::Data(mut bytes))) => {
                        // What has already arrived joins this frame (up to the frame cap); the
                        // first byte of a burst is never held back for more.
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
                            if output_queue.send(text(&frame)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Ok(Some(PtyMessage::Exit { code })) => {
                        tracing::info!(code, "shell exited");
                        let _ = output_queue.send(text(&ServerFrame::Exit { code })).await;
                        let _ = output_queue.send(close(close_code::NORMAL, "exited")).await;
                        return;
                    }
                    Ok(Some(PtyMessage::Resize(_))) => {}
                    other => {
                        let reason = match other {
                            Err(error) => {
                                format!("the link to node {} broke: {error}", session.node_id())
                            }
                            _ => format!("node {} closed the terminal", session.node_id()),
                        };
                        tracing::info!(%reason, "terminal interrupted");
                        let frame = ServerFrame::Status {
                            state: StreamState::Interrupted,
                            placement: None,
                            reason: Some(reason),
                        };
                        let _ = output_queue.send(text(&frame)).await;
                        let _ = output_queue
                            .send(close(close_code::INTERNAL, "interrupted"))
                            .await;
                        return;
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
                let forwarded = match message {
                    Ok(Message::Text(body)) => match ClientFrame::decode(body.as_str()) {
                        Ok(ClientFrame::Stdin(data)) => {
                            write_message(&mut send, &PtyMessage::Data(data.into_bytes())).await
                        }
                        Ok(ClientFrame::Resize(size)) => {
                            write_message(&mut send, &PtyMessage::Resize(size)).await
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
                    Ok(Message::Ping(_) | Message::Pong(_)) => Ok(()),
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
                if let Err(error) = forwarded {
                    tracing::info!(%error, "the node stopped taking input");
                    return;
                }
            }
        };
        // The relay ends when output ends (exit, lost node) or the viewer goes; the writer
        // then sends what is queued (the exit frame, the close) and stops.
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

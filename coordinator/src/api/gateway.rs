//! The coordinator's PTY relay: `GET /v1/sessions/{id}/pty?token=…` upgrades to a WebSocket
//! and relays the seed's JSON frames to and from the node's QUIC terminal stream
//! ([`fogshell_gateway::relay`]).
//!
//! A viewer here outlives its node. When the terminal stream breaks or the control plane
//! moves the session, the viewer is told (`status` frames: interrupted, resuming, then
//! resumed with the new placement, or failed with the reason) and its socket is re-bound to
//! the session's new terminal — after a failover, or when the same node comes back — without
//! the user reconnecting. Input typed while no shell is attached is dropped: the banner says
//! so.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use fogshell_gateway::relay::{
    self, Announcement, Backend, Change, MAX_MESSAGE_SIZE, Outbox, PtyQuery, Rebound, close_code,
};
use fogshell_shared::frame::{StreamState, TermSize};
use fogshell_shared::{ErrorCode, NodeId, Placement, SessionId, SessionStatus};
use tokio::sync::broadcast;
use tracing::Instrument as _;

use super::AppState;
use super::extract::ApiQuery;
use crate::control::{ControlPlane, SessionChange};
use crate::error::ApiError;
use crate::store::SessionRecord;

/// How often a viewer without a terminal looks whether its session can be reached again
/// (its node came back without the session ever leaving `running`).
const RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// `GET /v1/sessions/{id}/pty`. The token and the session are checked before the upgrade, so
/// a refusal is an ordinary HTTP error with the API's body.
pub(super) async fn attach(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    remote: Option<axum::Extension<fogshell_gateway::serve::RemoteAddr>>,
    headers: axum::http::HeaderMap,
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
        let origin = headers
            .get(axum::http::header::ORIGIN)
            .map(|o| o.to_str().unwrap_or("(not text)"));
        if !fogshell_gateway::origin_allowed(origin, state.control.console_origins()) {
            return Err(state.control.deny(
                None,
                fogshell_shared::audit::Actor::System,
                ErrorCode::Forbidden,
                fogshell_gateway::ORIGIN_REFUSED,
                format!(
                    "terminals open here only from the console's pages, not from {}",
                    origin.unwrap_or_default()
                ),
                Some(session_id.to_string()),
            ));
        }
        let size = query
            .size()
            .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e))?;
        let from_offset = query.from_offset.unwrap_or(0);
        // Subscribed before the terminal opens, so no change falls between the two.
        let changes = state.control.subscribe();
        let remote = remote.map(|axum::Extension(remote)| remote.0.ip());
        if let Err((rule_id, message)) = state.control.check_attach_token(&query.token, session_id) {
            return Ok(super::refuse_within_budget(
                &state,
                remote,
                super::Refusal {
                    code: ErrorCode::Unauthenticated,
                    tenant: None,
                    rule_id,
                    message,
                    subject: Some(session_id.to_string()),
                },
            ));
        }
        let slot = match state.control.admit_viewer(session_id)? {
            Ok(slot) => slot,
            Err((tenant, full)) => {
                return Ok(super::refuse_within_budget(
                    &state,
                    remote,
                    super::Refusal {
                        code: ErrorCode::RateLimited,
                        tenant: Some(&tenant),
                        rule_id: fogshell_gateway::viewers::VIEWER_LIMIT,
                        message: full.to_string(),
                        subject: Some(session_id.to_string()),
                    },
                ));
            }
        };
        let (session, terminal) = state
            .control
            .connect_terminal(session_id, size, from_offset)
            .await?;
        let control = Arc::clone(&state.control);
        Ok::<_, ApiError>(upgrade.max_message_size(MAX_MESSAGE_SIZE).on_upgrade(
            move |socket| {
                let span = tracing::info_span!("pty", session_id = %session.session_id, tenant = %session.tenant, node_id = %session.node_id());
                let placement = session.placement.clone();
                let attached = Attached {
                    control,
                    changes,
                    session,
                };
                async move {
                    // The viewer's place is given back when it goes.
                    let _slot = slot;
                    relay::relay(socket, attached, terminal, placement, size, from_offset).await;
                }
                .instrument(span)
            },
        ))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// One viewer's attachment: the session as it stands and what it needs to find the next
/// terminal.
struct Attached {
    control: Arc<ControlPlane>,
    changes: broadcast::Receiver<SessionChange>,
    session: SessionRecord,
}

fn change(change: SessionChange) -> Change {
    Change {
        status: change.status,
        placement: change.placement,
        reason: change.reason,
    }
}

impl Backend for Attached {
    fn viewer_silence(&self) -> Duration {
        self.control.viewer_silence()
    }

    /// Waits for a change that takes the session away from the terminal on `node`.
    async fn moved_away(&mut self, node: &NodeId) -> Option<Change> {
        let session_id = self.session.session_id;
        loop {
            match self.changes.recv().await {
                Ok(news) if news.session_id == session_id => {
                    let elsewhere = news.placement.node_id != *node;
                    // An ending with a reason (the node lost the trust the profile demands) is
                    // told as such, before the node's closing stream says only "closed".
                    let ended_why = news.status.is_final() && news.reason.is_some();
                    if matches!(
                        news.status,
                        SessionStatus::Interrupted | SessionStatus::Resuming
                    ) || (news.status == SessionStatus::Running && elsewhere)
                        || ended_why
                    {
                        return Some(change(news));
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    fn broken(&mut self, placement: &Placement, reason: String) -> Option<Change> {
        // Ended for good (DELETE, TTL): the store says so, not "interrupted".
        let ended = self
            .control
            .store()
            .session(self.session.session_id)
            .ok()
            .flatten()
            .is_some_and(|s| s.status.is_final());
        (!ended).then(|| Change::interrupted(placement, reason))
    }

    /// Tells the viewer what happens to its session until a terminal can be opened again.
    async fn rebind(
        &mut self,
        output: &Outbox,
        size: TermSize,
        first: Option<Change>,
        offset: u64,
    ) -> Rebound {
        let session_id = self.session.session_id;
        let old_node = self.session.node_id().clone();
        let mut told: Option<(StreamState, Option<String>)> = None;
        let mut pending = first;
        loop {
            let news = match pending.take() {
                Some(news) => Some(news),
                None => tokio::select! {
                    news = self.changes.recv() => match news {
                        Ok(news) if news.session_id == session_id => Some(change(news)),
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(_)) => None,
                        Err(broadcast::error::RecvError::Closed) => return Rebound::Over,
                    },
                    () = tokio::time::sleep(RETRY_INTERVAL) => None,
                },
            };
            // No news: the store says how things stand.
            let (state, placement, reason) = match news {
                Some(news) => (news.status, news.placement, news.reason),
                None => match self.control.store().session(session_id) {
                    Ok(Some(stored)) => (stored.status, stored.placement, None),
                    Ok(None) => (SessionStatus::Failed, self.session.placement.clone(), None),
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
                    output
                        .status(StreamState::Failed, Some(&placement), Some(reason))
                        .await;
                    output.close(close_code::NORMAL, "session ended").await;
                    return Rebound::Over;
                }
                SessionStatus::Running => {
                    // The same shell continues where the viewer stopped; a new one starts
                    // afresh.
                    let from = if placement.node_id == old_node {
                        offset
                    } else {
                        0
                    };
                    match self.control.connect_terminal(session_id, size, from).await {
                        Ok((session, terminal)) => {
                            let state = if *session.node_id() == old_node {
                                StreamState::Running
                            } else {
                                StreamState::Resumed
                            };
                            let announcement = Announcement {
                                state,
                                placement: Some(session.placement.clone()),
                                reason,
                            };
                            self.session = session;
                            return Rebound::Terminal(Box::new((terminal, announcement)));
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
                if !output.status(frame_state, Some(&placement), reason).await {
                    return Rebound::Over;
                }
                told = Some(news);
            }
        }
    }
}

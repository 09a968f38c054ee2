//! The node's own edge gateway: the seed's PTY endpoint
//! (`wss://<gateway>/v1/sessions/{id}/pty?token=…`) served by the agent for the sessions on
//! this node, so a user near the node types to it directly instead of through the cloud
//! coordinator. Same path, same frames, same attach tokens as the coordinator's relay
//! ([`fogshell_gateway::relay`]); tokens are checked here, offline, against the keys the
//! coordinator published ([`crate::edge`]), and must name this node.
//!
//! Every attach and every refusal is recorded for the coordinator's audit chain. When the
//! terminal stops here without an exit, the viewer is told so and its socket closed with
//! 1001 ("going away"): the client continues through the relay (`fallback_ws_url`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use fogshell_gateway::relay::{
    self, Backend, Change, MAX_MESSAGE_SIZE, Outbox, PtyQuery, Rebound, Terminal, close_code,
};
use fogshell_shared::api::GATEWAY_PROBE_PATH;
use fogshell_shared::frame::{StreamState, TermSize};
use fogshell_shared::wire::edge::EdgeEvent;
use fogshell_shared::wire::stream::FramedReader;
use fogshell_shared::{ErrorBody, ErrorCode, NodeId, Placement, SessionId};
use tracing::Instrument as _;

use crate::config::GatewaySection;
use crate::edge::EdgeState;
use crate::link::{LocalNode, TerminalError, relay_terminal};

/// Bytes in flight between the gateway's relay and the shim's: one coalesced output message.
const PIPE_BYTES: usize = 32 * 1024;

/// What the gateway's requests share.
struct Gateway<N> {
    node: Arc<N>,
    edge: Arc<EdgeState>,
    /// This node, as its sessions are described to a direct viewer.
    placement: Placement,
}

impl<N> std::fmt::Debug for Gateway<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("node_id", &self.placement.node_id)
            .finish_non_exhaustive()
    }
}

/// A running gateway.
#[derive(Debug)]
pub struct Running {
    /// Where it listens.
    pub local_addr: SocketAddr,
    /// The server; abort it to stop.
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts the gateway `section` describes, serving `node`'s sessions; `placement` is how
/// they are announced to its viewers.
pub async fn start<N: LocalNode>(
    section: &GatewaySection,
    node: Arc<N>,
    edge: Arc<EdgeState>,
    placement: Placement,
) -> Result<Running, String> {
    let listen = section
        .listen
        .ok_or("the gateway is off ([gateway] listen)")?;
    let tls = match (&section.tls_certificate, &section.tls_key) {
        (Some(certificate), Some(key)) => Some(
            fogshell_gateway::serve::tls_from_files(certificate, key)
                .map_err(|e| format!("[gateway] {e}"))?,
        ),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("[gateway] binding {listen}: {e}"))?;
    let local_addr = listener.local_addr().map_err(|e| e.to_string())?;
    let gateway_edge = Arc::clone(&edge);
    let gateway = Arc::new(Gateway {
        node,
        edge,
        placement,
    });
    let app = Router::new()
        .route("/v1/sessions/{id}/pty", get(attach::<N>))
        .route(
            GATEWAY_PROBE_PATH,
            get(|| async { fogshell_gateway::probe_response() }),
        )
        .with_state(gateway);
    tracing::info!(%local_addr, tls = tls.is_some(), url = ?section.url(), "edge gateway listening");
    let lease = Arc::clone(&gateway_edge);
    let task = tokio::spawn(async move {
        // The lease's watch fences direct viewers when it runs out; both end together.
        tokio::join!(
            fogshell_gateway::serve::serve(listener, app, tls),
            lease.watch_lease()
        );
    });
    Ok(Running { local_addr, task })
}

impl<N: LocalNode> Gateway<N> {
    /// Records a refusal and answers it, pointing at the record.
    fn refuse(
        &self,
        code: ErrorCode,
        rule_id: &str,
        message: String,
        session_id: Option<SessionId>,
    ) -> Response {
        tracing::info!(rule_id, %message, "policy.denied at the edge");
        let seq = self.edge.record(
            crate::clock::now(),
            EdgeEvent::Refused {
                rule_id: rule_id.to_owned(),
                reason: message.clone(),
                session_id,
            },
        );
        let mut body = ErrorBody::new(code, message);
        if let Some(seq) = seq {
            body = body.with_evidence(format!("edge:{}/{seq}", self.placement.node_id));
        }
        fogshell_gateway::error_response(body)
    }
}

/// `GET /v1/sessions/{id}/pty`: the token and the session are checked before the upgrade, so
/// a refusal is an ordinary HTTP error with the API's body.
async fn attach<N: LocalNode>(
    State(gateway): State<Arc<Gateway<N>>>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    query: Result<axum::extract::Query<PtyQuery>, axum::extract::rejection::QueryRejection>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let bad = |message: String| {
        fogshell_gateway::error_response(ErrorBody::new(ErrorCode::InvalidRequest, message))
    };
    let Ok(session_id) = id.parse::<SessionId>() else {
        return fogshell_gateway::error_response(ErrorBody::new(
            ErrorCode::NotFound,
            format!("no session {id:?}"),
        ));
    };
    let query = match query {
        Ok(axum::extract::Query(query)) => query,
        Err(rejection) => return bad(rejection.body_text()),
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(e) => return bad(format!("a WebSocket upgrade is required: {e}")),
    };
    let size = match query.size() {
        Ok(size) => size,
        Err(e) => return bad(e.into()),
    };
    let origin = headers
        .get(axum::http::header::ORIGIN)
        .map(|o| o.to_str().unwrap_or("(not text)"));
    if !fogshell_gateway::origin_allowed(origin, &gateway.edge.console_origins()) {
        return gateway.refuse(
            ErrorCode::Forbidden,
            fogshell_gateway::ORIGIN_REFUSED,
            format!(
                "terminals open here only from the console's pages, not from {}",
                origin.unwrap_or_default()
            ),
            Some(session_id),
        );
    }
    if let Err(refused) = fogshell_shared::attach_token::verify(
        &query.token,
        &gateway.edge.keys(),
        session_id,
        Some(&gateway.placement.node_id),
        crate::clock::now(),
    ) {
        return gateway.refuse(
            ErrorCode::Unauthenticated,
            refused.rule_id(),
            refused.to_string(),
            Some(session_id),
        );
    }
    // Without a lease the coordinator may already have moved the session: the relay knows.
    if !gateway.edge.lease_holds() {
        return fogshell_gateway::error_response(ErrorBody::new(
            ErrorCode::NodeUnavailable,
            format!(
                "node {} cannot reach the coordinator now: attach through the coordinator's relay",
                gateway.placement.node_id
            ),
        ));
    }
    let from_offset = query.from_offset.unwrap_or(0);
    let streams = match gateway.node.attach(session_id, size, from_offset).await {
        Ok(streams) => streams,
        Err(error) => {
            let code = match error.code {
                ErrorCode::NotFound => ErrorCode::NotFound,
                _ => ErrorCode::NodeUnavailable,
            };
            return fogshell_gateway::error_response(ErrorBody::new(
                code,
                format!(
                    "session {session_id} cannot be attached here: {}",
                    error.message
                ),
            ));
        }
    };
    gateway
        .edge
        .record(crate::clock::now(), EdgeEvent::Attached { session_id });
    let span = tracing::info_span!("pty", %session_id, node_id = %gateway.placement.node_id, path = "direct");
    // The shim's side of the terminal runs as for a coordinator's stream, over a pipe.
    let (gateway_end, agent_end) = tokio::io::duplex(PIPE_BYTES);
    tokio::spawn(
        async move {
            let (agent_read, mut agent_write) = tokio::io::split(agent_end);
            let mut agent_read = FramedReader::new(agent_read);
            match relay_terminal(streams, &mut agent_write, &mut agent_read).await {
                Ok(()) => {}
                Err(TerminalError::Malformed(error) | TerminalError::Other(error)) => {
                    tracing::info!(%error, "terminal ended");
                }
            }
        }
        .instrument(span.clone()),
    );
    let (read, write) = tokio::io::split(gateway_end);
    let terminal = Terminal::new(write, read);
    let placement = gateway.placement.clone();
    let direct = Direct {
        fenced: gateway.edge.fenced(),
        placement: placement.clone(),
    };
    upgrade
        .max_message_size(MAX_MESSAGE_SIZE)
        .on_upgrade(move |socket| {
            relay::relay(socket, direct, terminal, placement, size, from_offset).instrument(span)
        })
        .into_response()
}

/// A direct viewer: served while the node's lease holds. When it runs out (the coordinator
/// has not been heard for the lease's length, and may move the session elsewhere) or the
/// terminal stops without an exit, the viewer is told why and sent to the relay.
struct Direct {
    fenced: tokio::sync::watch::Receiver<bool>,
    /// This node, as the gateway describes it.
    placement: Placement,
}

impl Backend for Direct {
    /// The node knows where it runs, not the reasons the control plane chose it: its
    /// `running` frames leave the placement to the one the attach answer gave.
    fn announces_placement(&self) -> bool {
        false
    }

    async fn moved_away(&mut self, _node: &NodeId) -> Option<Change> {
        if self.fenced.wait_for(|fenced| *fenced).await.is_err() {
            return std::future::pending().await;
        }
        tracing::info!("fenced: the direct viewer goes to the relay");
        let reason = format!(
            "node {} has not heard the coordinator for its lease and stops taking input here",
            self.placement.node_id
        );
        Some(Change::interrupted(&self.placement, reason))
    }

    fn broken(&mut self, placement: &Placement, reason: String) -> Option<Change> {
        Some(Change::interrupted(placement, reason))
    }

    async fn rebind(
        &mut self,
        output: &Outbox,
        _size: TermSize,
        first: Option<Change>,
        _offset: u64,
    ) -> Rebound {
        let reason = first
            .and_then(|change| change.reason)
            .unwrap_or_else(|| "the terminal stopped".into());
        output
            .status(
                StreamState::Interrupted,
                None,
                Some(format!("{reason}; continuing through the coordinator")),
            )
            .await;
        output
            .close(close_code::GOING_AWAY, "continue through the coordinator")
            .await;
        Rebound::Over
    }
}

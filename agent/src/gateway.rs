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
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use fogshell_gateway::refusals::{Recording, RefusalBudget};
use fogshell_gateway::relay::{
    self, Backend, Change, MAX_MESSAGE_SIZE, Outbox, PtyQuery, Rebound, Terminal, close_code,
};
use fogshell_gateway::viewers::{ViewerLimits, Viewers};
use fogshell_shared::api::GATEWAY_PROBE_PATH;
use fogshell_shared::frame::{StreamState, TermSize};
use fogshell_shared::wire::edge::EdgeEvent;
use fogshell_shared::wire::stream::FramedReader;
use fogshell_shared::{ErrorBody, ErrorCode, NodeId, Placement, SessionId};
use tracing::Instrument as _;

use crate::config::GatewaySection;
use crate::edge::EdgeState;
use crate::link::{LocalNode, TerminalError, relay_terminal};
use crate::runtime::PtyStreams;
use crate::starts::{Board, Settled};
use fogshell_shared::wire::CommandError;
use tokio::sync::watch;

/// Bytes in flight between the gateway's relay and the shim's: one coalesced output message.
const PIPE_BYTES: usize = 32 * 1024;

/// What the gateway's requests share.
struct Gateway<N> {
    node: Arc<N>,
    edge: Arc<EdgeState>,
    /// The viewers served now, per session.
    viewers: Arc<Viewers>,
    /// How many refusals each address may have recorded one by one.
    refusals: RefusalBudget,
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
        // The node knows its sessions, not their tenants' other viewers: per session here,
        // per tenant at the coordinator.
        viewers: Viewers::new(ViewerLimits {
            per_session: section.max_viewers_per_session,
            per_tenant: usize::MAX,
        }),
        refusals: RefusalBudget::default(),
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
    /// Records a refusal and answers it, pointing at the record — within the budget of the
    /// address it came from ([`RefusalBudget`]); past it the refusal is counted, points at
    /// the address's last record, and the count goes into its next one.
    fn refuse(
        &self,
        remote: Option<std::net::IpAddr>,
        code: ErrorCode,
        rule_id: &str,
        message: String,
        session_id: Option<SessionId>,
    ) -> Response {
        let recording = remote.map_or(Recording::Record { unrecorded: 0 }, |ip| {
            self.refusals.refused(ip, std::time::Instant::now())
        });
        let (reason, pointer) = match recording {
            Recording::Record { unrecorded } => {
                let reason = match remote {
                    Some(ip) if unrecorded > 0 => format!(
                        "{message} (and {unrecorded} more refusals from {ip} since the last record)"
                    ),
                    _ => message.clone(),
                };
                tracing::info!(rule_id, %reason, "policy.denied at the edge");
                let seq = self.edge.record(
                    crate::clock::now(),
                    EdgeEvent::Refused {
                        rule_id: rule_id.to_owned(),
                        reason: reason.clone(),
                        session_id,
                    },
                );
                let pointer = seq.map(|seq| format!("edge:{}/{seq}", self.placement.node_id));
                if let Some(ip) = remote {
                    self.refusals.recorded(ip, pointer.clone());
                }
                (reason, pointer)
            }
            Recording::Counted { last_record } => {
                tracing::debug!(rule_id, "refusal counted, not recorded on its own");
                (
                    format!(
                        "{message} (too many refusals from this address to record each: counted)"
                    ),
                    last_record,
                )
            }
        };
        let mut body = ErrorBody::new(code, reason);
        if let Some(pointer) = pointer {
            body = body.with_evidence(pointer);
        }
        fogshell_gateway::error_response(body)
    }
}

/// `GET /v1/sessions/{id}/pty`: the token and the session are checked before the upgrade, so
/// a refusal is an ordinary HTTP error with the API's body.
async fn attach<N: LocalNode>(
    State(gateway): State<Arc<Gateway<N>>>,
    Path(id): Path<String>,
    remote: Option<axum::Extension<fogshell_gateway::serve::RemoteAddr>>,
    headers: axum::http::HeaderMap,
    query: Result<axum::extract::Query<PtyQuery>, axum::extract::rejection::QueryRejection>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let bad = |message: String| {
        fogshell_gateway::error_response(ErrorBody::new(ErrorCode::InvalidRequest, message))
    };
    let remote = remote.map(|axum::Extension(remote)| remote.0.ip());
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
            remote,
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
            remote,
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
    let slot = match gateway.viewers.admit(session_id, None) {
        Ok(slot) => slot,
        Err(full) => {
            return gateway.refuse(
                remote,
                ErrorCode::RateLimited,
                fogshell_gateway::viewers::VIEWER_LIMIT,
                full.to_string(),
                Some(session_id),
            );
        }
    };
    let from_offset = query.from_offset.unwrap_or(0);
    let streams = match gateway.node.attach(session_id, size, from_offset).await {
        Ok(streams) => Some(streams),
        Err(error)
            if error.code == ErrorCode::NotFound
                || gateway.node.starts().borrow().is_starting(session_id) =>
        {
            match gateway.node.starts().borrow().settled(session_id) {
                Some(Settled::Ended) => {
                    return fogshell_gateway::error_response(ErrorBody::new(
                        ErrorCode::Conflict,
                        format!("session {session_id} has ended"),
                    ));
                }
                Some(Settled::Failed(why)) => {
                    return fogshell_gateway::error_response(ErrorBody::new(
                        ErrorCode::Conflict,
                        format!("session {session_id} could not start here: {why}"),
                    ));
                }
                // The token says the session was placed here: its start may still be on
                // the way, and the viewer is held for it.
                None => None,
            }
        }
        Err(error) => {
            return fogshell_gateway::error_response(ErrorBody::new(
                ErrorCode::NodeUnavailable,
                format!(
                    "session {session_id} cannot be attached here: {}",
                    error.message
                ),
            ));
        }
    };
    let span = tracing::info_span!("pty", %session_id, node_id = %gateway.placement.node_id, path = "direct");
    upgrade
        .max_message_size(MAX_MESSAGE_SIZE)
        .on_upgrade(move |socket| {
            async move {
                // The viewer's place is given back when it goes.
                let _slot = slot;
                let (socket, streams) = match streams {
                    Some(streams) => (socket, streams),
                    None => {
                        match hold_until_started(&gateway, socket, session_id, size, from_offset)
                            .await
                        {
                            Some(held) => held,
                            None => return,
                        }
                    }
                };
                serve_viewer(gateway, socket, session_id, streams, size, from_offset).await;
            }
            .instrument(span)
        })
        .into_response()
}

/// How long a viewer whose session this node has not heard of waits for the coordinator's
/// command to start it: the token was sent to the user as the command was sent here, and the
/// two may arrive in either order.
const COMMAND_ARRIVAL: Duration = Duration::from_secs(5);

/// How long a viewer waits for a start in progress (an image pull included), as long as the
/// coordinator waits for it.
const START_PATIENCE: Duration = Duration::from_secs(60);

/// Holds a viewer that came before its session's shell (the coordinator answered the user
/// before the node ran it): tells it the shell is starting, and attaches once it runs. When
/// the start failed, or never came, the viewer is told so and its socket closed: `failed` for
/// a start that failed, 1001 ("going away", try the relay) for one this node never got.
async fn hold_until_started<N: LocalNode>(
    gateway: &Gateway<N>,
    mut socket: WebSocket,
    session_id: SessionId,
    size: TermSize,
    from_offset: u64,
) -> Option<(WebSocket, PtyStreams)> {
    let node_id = &gateway.placement.node_id;
    relay::tell(
        &mut socket,
        StreamState::Connecting,
        Some(format!("node {node_id} is starting the shell")),
    )
    .await;
    let waited = tokio::time::timeout(
        START_PATIENCE,
        attach_once_started(gateway.node.starts(), session_id, || {
            gateway.node.attach(session_id, size, from_offset)
        }),
    )
    .await
    .unwrap_or(Err(NotStarted::Unknown));
    let (state, code, reason) = match waited {
        Ok(streams) => return Some((socket, streams)),
        Err(NotStarted::Failed(why)) => (
            StreamState::Failed,
            close_code::NORMAL,
            format!("node {node_id} could not start the session: {why}"),
        ),
        Err(NotStarted::Ended) => (
            StreamState::Failed,
            close_code::NORMAL,
            format!("session {session_id} has ended"),
        ),
        Err(NotStarted::Unknown) => (
            StreamState::Interrupted,
            close_code::GOING_AWAY,
            format!(
                "node {node_id} has no session {session_id}; continuing through the coordinator"
            ),
        ),
    };
    tracing::info!(%reason, "the held viewer is let go");
    relay::tell(&mut socket, state, Some(reason.clone())).await;
    relay::end(socket, code, &reason).await;
    None
}

/// Why a held viewer's session did not start here.
#[derive(Debug)]
enum NotStarted {
    /// The node tried and failed, for this reason.
    Failed(String),
    /// It ran here and ended.
    Ended,
    /// The node never heard of it (in time).
    Unknown,
}

/// Attaches to the session once this node runs it (`attach` answers `not_found` until then):
/// at once if it does, after the start in progress if there is one, or after a start that
/// arrives within [`COMMAND_ARRIVAL`]. `board` is the node's [`crate::starts::Board`].
async fn attach_once_started<T, A>(
    mut board: watch::Receiver<Board>,
    session_id: SessionId,
    attach: impl Fn() -> A,
) -> Result<T, NotStarted>
where
    A: Future<Output = Result<T, CommandError>>,
{
    let arrival = tokio::time::Instant::now() + COMMAND_ARRIVAL;
    loop {
        // Seen before trying: a start that settles during the try wakes the wait below.
        board.borrow_and_update();
        let error = match attach().await {
            Ok(attached) => return Ok(attached),
            Err(error) => error,
        };
        // A start that settled during the try: try again.
        if board.has_changed().unwrap_or(false) {
            continue;
        }
        let starting = {
            let board = board.borrow();
            match board.settled(session_id) {
                Some(Settled::Failed(why)) => return Err(NotStarted::Failed(why.clone())),
                Some(Settled::Ended) => return Err(NotStarted::Ended),
                None => board.is_starting(session_id),
            }
        };
        // While it starts, its shim may exist and not answer yet: only a settled session's
        // errors count.
        if !starting && error.code != ErrorCode::NotFound {
            return Err(NotStarted::Failed(error.message));
        }
        let changed = if starting {
            board.changed().await.is_ok()
        } else {
            matches!(
                tokio::time::timeout_at(arrival, board.changed()).await,
                Ok(Ok(()))
            )
        };
        if !changed {
            return Err(NotStarted::Unknown);
        }
    }
}

/// Serves an attached viewer until it leaves or the terminal stops here.
async fn serve_viewer<N: LocalNode>(
    gateway: Arc<Gateway<N>>,
    socket: WebSocket,
    session_id: SessionId,
    streams: PtyStreams,
    size: TermSize,
    from_offset: u64,
) {
    gateway
        .edge
        .record(crate::clock::now(), EdgeEvent::Attached { session_id });
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
        .in_current_span(),
    );
    let (read, write) = tokio::io::split(gateway_end);
    let terminal = Terminal::new(write, read);
    let placement = gateway.placement.clone();
    let direct = Direct {
        fenced: gateway.edge.fenced(),
        placement: placement.clone(),
    };
    relay::relay(socket, direct, terminal, placement, size, from_offset).await;
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::starts::Starts;

    fn id() -> SessionId {
        SessionId::from_random_bytes([7; 16])
    }

    /// An attach that finds the session once `running` is set.
    async fn attach(running: &AtomicBool) -> Result<(), CommandError> {
        if running.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(CommandError {
                code: ErrorCode::NotFound,
                message: "no such session".into(),
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_viewer_is_held_through_a_start_that_arrives_later_and_takes_long() {
        let starts = Arc::new(Starts::default());
        let running = Arc::new(AtomicBool::new(false));
        let node = {
            let (starts, running) = (Arc::clone(&starts), Arc::clone(&running));
            tokio::spawn(async move {
                // The command arrives after the viewer, and the start outlasts the arrival
                // window: the viewer waits for it all the same.
                tokio::time::sleep(COMMAND_ARRIVAL / 2).await;
                let start = starts.begin(id());
                tokio::time::sleep(COMMAND_ARRIVAL * 3).await;
                running.store(true, Ordering::SeqCst);
                drop(start);
            })
        };
        let attached = attach_once_started(starts.watch(), id(), || attach(&running)).await;
        assert!(attached.is_ok(), "{attached:?}");
        node.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_shim_that_does_not_answer_yet_while_starting_is_waited_for() {
        let starts = Starts::default();
        let start = starts.begin(id());
        let refusals = std::sync::atomic::AtomicU32::new(0);
        let finish = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(start);
        };
        let attach = attach_once_started(starts.watch(), id(), || async {
            if starts.watch().borrow().is_starting(id()) {
                refusals.fetch_add(1, Ordering::SeqCst);
                Err(CommandError {
                    code: ErrorCode::Internal,
                    message: "shim: connecting: Connection refused".into(),
                })
            } else {
                Ok(())
            }
        });
        let ((), attached) = tokio::join!(finish, attach);
        assert!(attached.is_ok(), "{attached:?}");
        assert_eq!(refusals.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_start_or_an_ended_session_is_told_at_once() {
        let starts = Starts::default();
        let running = AtomicBool::new(false);
        starts.begin(id()).failed("image refused".into());
        let failed = attach_once_started(starts.watch(), id(), || attach(&running)).await;
        assert!(
            matches!(&failed, Err(NotStarted::Failed(why)) if why == "image refused"),
            "{failed:?}"
        );
        starts.ended(id());
        let ended = attach_once_started(starts.watch(), id(), || attach(&running)).await;
        assert!(matches!(ended, Err(NotStarted::Ended)), "{ended:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_start_that_never_comes_lets_the_viewer_go_after_the_arrival_window() {
        let starts = Starts::default();
        let running = AtomicBool::new(false);
        let before = tokio::time::Instant::now();
        let waited = attach_once_started(starts.watch(), id(), || attach(&running)).await;
        assert!(matches!(waited, Err(NotStarted::Unknown)), "{waited:?}");
        assert_eq!(before.elapsed(), COMMAND_ARRIVAL);
    }

    #[tokio::test(start_paused = true)]
    async fn other_sessions_starting_do_not_hold_a_viewer_longer() {
        let starts = Starts::default();
        let running = AtomicBool::new(false);
        let _other = starts.begin(SessionId::from_random_bytes([8; 16]));
        let before = tokio::time::Instant::now();
        let waited = attach_once_started(starts.watch(), id(), || attach(&running)).await;
        assert!(matches!(waited, Err(NotStarted::Unknown)), "{waited:?}");
        assert_eq!(before.elapsed(), COMMAND_ARRIVAL);
    }
}

//! The connected nodes' links, for the control plane to use: commands with ids and timeouts
//! on each node's control stream, and one QUIC stream per attached terminal.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fogshell_shared::frame::TermSize;
use fogshell_shared::wire::stream::write_message;
use fogshell_shared::wire::{
    Command, CommandError, CommandOutput, CoordinatorMessage, PtyStreamHeader, Request, Response,
};
use fogshell_shared::{ErrorCode, NodeId, SessionId};
use tokio::sync::oneshot;

/// How long opening a terminal stream may wait for the node to allow one more.
const OPEN_TERMINAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// One node's live link.
pub struct NodeLink {
    node_id: NodeId,
    connection: quinn::Connection,
    control: tokio::sync::Mutex<quinn::SendStream>,
    pending: Mutex<BTreeMap<u64, oneshot::Sender<Result<CommandOutput, CommandError>>>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for NodeLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeLink")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// A terminal stream to a node: the QUIC stream's two halves.
pub use fogshell_gateway::relay::Terminal;

fn link_error(code: ErrorCode, message: impl Into<String>) -> CommandError {
    CommandError {
        code,
        message: message.into(),
    }
}

impl NodeLink {
    pub(crate) fn new(
        node_id: NodeId,
        connection: quinn::Connection,
        control: quinn::SendStream,
    ) -> Self {
        Self {
            node_id,
            connection,
            control: tokio::sync::Mutex::new(control),
            pending: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
        }
    }

    /// The node.
    pub fn node_id(&self) -> &NodeId {
        &self.node_id
    }

    /// QUIC's current round-trip estimate.
    pub fn rtt(&self) -> Duration {
        self.connection.rtt()
    }

    /// Sends one message on the control stream.
    pub(crate) async fn send(&self, message: &CoordinatorMessage) -> std::io::Result<()> {
        write_message(&mut *self.control.lock().await, message).await
    }

    /// Sends `command` and waits up to `timeout` for the node's answer.
    pub async fn request(
        &self,
        command: Command,
        timeout: Duration,
    ) -> Result<CommandOutput, CommandError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.lock_pending().insert(id, tx);
        let message = CoordinatorMessage::Request(Request {
            id,
            timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            command,
        });
        let sent = write_message(&mut *self.control.lock().await, &message).await;
        if let Err(error) = sent {
            self.lock_pending().remove(&id);
            return Err(link_error(
                ErrorCode::NodeUnavailable,
                format!("node {}: {error}", self.node_id),
            ));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(link_error(
                ErrorCode::NodeUnavailable,
                format!("node {} went away before answering", self.node_id),
            )),
            Err(_) => {
                self.lock_pending().remove(&id);
                Err(link_error(
                    ErrorCode::Timeout,
                    format!("node {} did not answer within {timeout:?}", self.node_id),
                ))
            }
        }
    }

    /// Routes a response to the request waiting for it. Returns false for an id nobody
    /// waits for (answered late, after its timeout).
    pub(crate) fn answer(&self, response: Response) -> bool {
        match self.lock_pending().remove(&response.id) {
            Some(waiter) => {
                let _ = waiter.send(response.result);
                true
            }
            None => false,
        }
    }

    /// Opens a terminal stream for `session_id`, its output from `from_offset` on.
    pub async fn open_terminal(
        &self,
        session_id: SessionId,
        size: TermSize,
        from_offset: u64,
    ) -> Result<Terminal, CommandError> {
        let unavailable =
            |e: &dyn std::fmt::Display| link_error(ErrorCode::NodeUnavailable, e.to_string());
        // A node with all its terminal streams open makes the next one wait: a refusal,
        // not a hang.
        let (mut send, recv) = tokio::time::timeout(
            OPEN_TERMINAL_TIMEOUT,
            self.connection.open_bi(),
        )
        .await
        .map_err(|_| {
            link_error(
                ErrorCode::NodeUnavailable,
                format!(
                    "node {} takes no more terminals now (its [node] max_terminals are open)",
                    self.node_id
                ),
            )
        })?
        .map_err(|e| unavailable(&e))?;
        write_message(
            &mut send,
            &PtyStreamHeader {
                session_id,
                size,
                from_offset,
            },
        )
        .await
        .map_err(|e| unavailable(&e))?;
        Ok(Terminal::new(send, recv))
    }

    fn lock_pending(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        BTreeMap<u64, oneshot::Sender<Result<CommandOutput, CommandError>>>,
    > {
        fogshell_shared::sync::lock(&self.pending)
    }
}

/// Every connected node's link, by node id.
#[derive(Debug, Default)]
pub struct Links {
    links: Mutex<BTreeMap<NodeId, Arc<NodeLink>>>,
}

impl Links {
    /// The link to `node_id`, if it is connected.
    pub fn get(&self, node_id: &NodeId) -> Option<Arc<NodeLink>> {
        self.lock().get(node_id).cloned()
    }

    pub(crate) fn insert(&self, link: Arc<NodeLink>) {
        self.lock().insert(link.node_id.clone(), link);
    }

    /// Removes `link`, unless a newer connection of the same node replaced it already.
    pub(crate) fn remove(&self, link: &Arc<NodeLink>) {
        let mut links = self.lock();
        if links
            .get(&link.node_id)
            .is_some_and(|l| Arc::ptr_eq(l, link))
        {
            links.remove(&link.node_id);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<NodeId, Arc<NodeLink>>> {
        fogshell_shared::sync::lock(&self.links)
    }
}

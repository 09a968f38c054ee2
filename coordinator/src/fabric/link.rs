//! The agent link (ALPN `fogshell/1`): one long-lived control stream per node carrying its
//! hello, then heartbeats, kept in the [`Fleet`].

use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument as _;

use fogshell_shared::ErrorCode;
use fogshell_shared::wire::{
    AgentMessage, CoordinatorMessage, Decoder, Refusal, SUPPORTED_VERSIONS, Welcome, encode,
    negotiate,
};
use fogshell_shared::{NodeId, Timestamp};

use super::close;
use crate::fleet::Fleet;
use crate::pki::node_id_of;

/// How often agents send heartbeats.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);

/// How long an agent may take to open its control stream and say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

fn now_timestamp() -> Timestamp {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
    Timestamp::from_unix_millis(millis).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Reads length-prefixed messages from a QUIC stream.
struct Reader {
    recv: quinn::RecvStream,
    decoder: Decoder,
    buf: Vec<u8>,
}

/// Why reading from the link stopped.
#[derive(Debug)]
enum ReadError {
    /// The connection went (idle timeout, reset, closed).
    Gone(String),
    /// The node sent bytes that are not a valid message.
    Malformed(String),
}

impl Reader {
    async fn next(&mut self) -> Result<Option<AgentMessage>, ReadError> {
        loop {
            if let Some(m) = self
                .decoder
                .next_message()
                .map_err(|e| ReadError::Malformed(e.to_string()))?
            {
                return Ok(Some(m));
            }
            match self.recv.read(&mut self.buf).await {
                Ok(Some(n)) => self.decoder.extend(&self.buf[..n]),
                Ok(None) => {
                    return self
                        .decoder
                        .finish()
                        .map(|()| None)
                        .map_err(|e| ReadError::Malformed(e.to_string()));
                }
                Err(e) => return Err(ReadError::Gone(e.to_string())),
            }
        }
    }
}

/// The node id in the peer's certificate (already verified against the CA by TLS).
fn peer_node_id(connection: &quinn::Connection) -> Result<NodeId, String> {
    let identity = connection.peer_identity().ok_or("no client certificate")?;
    let chain = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .map_err(|_| "unexpected peer identity")?;
    let leaf = chain.first().ok_or("empty certificate chain")?;
    node_id_of(leaf).map_err(|e| e.to_string())
}

async fn refuse(
    send: &mut quinn::SendStream,
    connection: &quinn::Connection,
    code: ErrorCode,
    message: String,
) {
    tracing::warn!(%message, "link refused");
    if let Ok(bytes) = encode(&CoordinatorMessage::Refusal(Refusal { code, message })) {
        let _ = send.write_all(&bytes).await;
        let _ = send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
    }
    connection.close(close::REFUSED.into(), b"refused");
}

/// Serves one agent's link until it ends.
pub async fn serve_connection(connection: quinn::Connection, fleet: Arc<Fleet>) {
    let remote = connection.remote_address();
    let node_id = match peer_node_id(&connection) {
        Ok(id) => id,
        Err(error) => {
            tracing::warn!(%remote, %error, "link without a node certificate");
            connection.close(close::REFUSED.into(), b"a node certificate is required");
            return;
        }
    };
    let span = tracing::info_span!("link", %node_id, %remote);
    async move {
        let Ok(Ok((mut send, recv))) =
            tokio::time::timeout(HELLO_TIMEOUT, connection.accept_bi()).await
        else {
            tracing::info!("no control stream");
            connection.close(close::PROTOCOL_ERROR.into(), b"no control stream");
            return;
        };
        let mut reader = Reader {
            recv,
            decoder: Decoder::new(),
            buf: vec![0; 64 * 1024],
        };
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, reader.next()).await {
            Ok(Ok(Some(AgentMessage::Hello(hello)))) => hello,
            other => {
                tracing::warn!(?other, "the first message was not a hello");
                connection.close(close::PROTOCOL_ERROR.into(), b"expected hello");
                return;
            }
        };
        if hello.node_id != node_id {
            let message = format!(
                "hello names {} but the certificate is {node_id}",
                hello.node_id
            );
            return refuse(&mut send, &connection, ErrorCode::PolicyDenied, message).await;
        }
        if let Err(error) = hello.validate() {
            return refuse(
                &mut send,
                &connection,
                ErrorCode::InvalidRequest,
                error.to_string(),
            )
            .await;
        }
        let version = match negotiate(SUPPORTED_VERSIONS, hello.versions) {
            Ok(v) => v,
            Err(mismatch) => {
                return refuse(
                    &mut send,
                    &connection,
                    ErrorCode::UnsupportedVersion,
                    mismatch.to_string(),
                )
                .await;
            }
        };
        let generation = fleet.connected(&hello, connection.rtt(), Instant::now(), now_timestamp());
        tracing::info!(%node_id, version, region = %hello.region, "node connected");
        let welcome = CoordinatorMessage::Welcome(Welcome {
            version,
            heartbeat_interval_ms: HEARTBEAT_INTERVAL.as_millis() as u32,
            fence: Vec::new(),
        });
        let sent = match encode(&welcome) {
            Ok(bytes) => send.write_all(&bytes).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(error) = sent {
            tracing::info!(%error, "could not welcome the node");
            fleet.disconnected(&node_id, generation);
            return;
        }
        loop {
            match reader.next().await {
                Ok(Some(AgentMessage::Heartbeat(hb))) => {
                    fleet.heartbeat(
                        &node_id,
                        generation,
                        &hb,
                        connection.rtt(),
                        Instant::now(),
                        now_timestamp(),
                    );
                }
                Ok(Some(AgentMessage::Hello(_))) => {
                    connection.close(close::PROTOCOL_ERROR.into(), b"a second hello");
                    break;
                }
                // Responses and events belong to commands, which this coordinator does not send yet.
                Ok(Some(other)) => tracing::debug!(?other, "ignored"),
                Ok(None) => break,
                Err(ReadError::Gone(reason)) => {
                    tracing::info!(%reason, "link gone");
                    break;
                }
                Err(ReadError::Malformed(error)) => {
                    tracing::warn!(%error, "malformed message; closing the link");
                    connection.close(close::PROTOCOL_ERROR.into(), b"malformed message");
                    break;
                }
            }
        }
        fleet.disconnected(&node_id, generation);
        tracing::info!("node disconnected");
    }
    .instrument(span)
    .await
}

/// Marks silent nodes lost, every [`SWEEP_INTERVAL`](crate::fleet::SWEEP_INTERVAL), until
/// the task is aborted.
pub async fn sweep_forever(fleet: Arc<Fleet>) {
    let mut tick = tokio::time::interval(crate::fleet::SWEEP_INTERVAL);
    loop {
        tick.tick().await;
        for node_id in fleet.sweep(Instant::now()) {
            // Failover of its sessions hooks in here; recorded as node.lost once audit exists.
            tracing::warn!(%node_id, "node lost");
        }
    }
}

//! The agent link (ALPN `fogshell/2`): one long-lived control stream per node carrying its
//! hello, then heartbeats (kept in the [`Fleet`](crate::fleet::Fleet)), events, and the
//! answers to commands sent through its [`NodeLink`].

use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument as _;

use fogshell_shared::ErrorCode;
use fogshell_shared::NodeId;
use fogshell_shared::audit::{AuditEvent, Outcome};
use fogshell_shared::wire::stream::{FramedReader, ReadError, write_message};
use fogshell_shared::wire::{
    AgentMessage, CoordinatorMessage, Refusal, SUPPORTED_VERSIONS, Welcome, negotiate,
};

use super::nodes::NodeLink;
use super::{Fabric, close};
use crate::fleet::granted_tier;
use crate::pki::node_id_of;

/// How often agents send heartbeats unless configured otherwise.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);

/// How long an agent may take to open its control stream and say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

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
    if write_message(
        send,
        &CoordinatorMessage::Refusal(Refusal { code, message }),
    )
    .await
    .is_ok()
    {
        let _ = send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
    }
    connection.close(close::REFUSED.into(), b"refused");
}

/// Serves one agent's link until it ends.
pub async fn serve_connection(connection: quinn::Connection, fabric: Fabric) {
    let Fabric {
        fleet,
        links,
        hooks,
        heartbeat_interval,
        enrollment,
        attestor,
        admission,
        attach,
        console_origins,
    } = fabric;
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
        let mut reader = FramedReader::new(recv);
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, reader.next::<AgentMessage>()).await {
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
        let generation = fleet.connected(&hello, connection.rtt(), Instant::now(), crate::clock::now());
        tracing::info!(%node_id, version, region = %hello.region, "node connected");
        let fence = hooks.node_connected(&hello);
        hooks.record(
            Outcome::Success,
            AuditEvent::NodeConnected {
                node_id: node_id.clone(),
                trust_tier: granted_tier(hello.claimed_tier),
            },
        );
        let welcome = CoordinatorMessage::Welcome(Welcome {
            version,
            heartbeat_interval_ms: u32::try_from(heartbeat_interval.as_millis())
                .unwrap_or(u32::MAX),
            fence,
            admission: (*admission).clone(),
            attach_keys: attach.keys(),
            lease_ms: u32::try_from(
                fogshell_shared::lease::duration_for(fleet.lost_after()).as_millis(),
            )
            .unwrap_or(u32::MAX),
            console_origins: (*console_origins).clone(),
        });
        // Key rotations from here on are pushed to the node.
        let mut keys = attach.subscribe();
        keys.mark_unchanged();
        if let Err(error) = write_message(&mut send, &welcome).await {
            tracing::info!(%error, "could not welcome the node");
            fleet.disconnected(&node_id, generation);
            return;
        }
        // From here on the control stream's sending half belongs to the link, for commands.
        let link = Arc::new(NodeLink::new(node_id.clone(), connection.clone(), send));
        links.insert(Arc::clone(&link));
        let watch = crate::attestation::watch::Watch {
            attestor,
            fleet: Arc::clone(&fleet),
            hooks: Arc::clone(&hooks),
        };
        let attestation = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(watch.run(
            Arc::clone(&link),
            hello.clone(),
            generation,
        )));
        loop {
            let message = tokio::select! {
                message = reader.next::<AgentMessage>() => message,
                Ok(()) = keys.changed() => {
                    let published = keys.borrow_and_update().clone();
                    if let Err(error) = link.send(&CoordinatorMessage::AttachKeys(published)).await {
                        tracing::info!(%error, "could not send the new attach keys");
                    }
                    continue;
                }
            };
            match message {
                Ok(Some(AgentMessage::Heartbeat(hb))) => {
                    let current = fleet.heartbeat(
                        &node_id,
                        generation,
                        &hb,
                        connection.rtt(),
                        Instant::now(),
                        crate::clock::now(),
                    );
                    // The node may serve its users on its own a while longer; a connection
                    // the fleet no longer counts renews nothing.
                    if current
                        && let Err(error) = link
                            .send(&CoordinatorMessage::LeaseGrant { seq: hb.seq })
                            .await
                    {
                        tracing::info!(%error, "could not grant the lease");
                    }
                }
                Ok(Some(AgentMessage::Hello(_))) => {
                    connection.close(close::PROTOCOL_ERROR.into(), b"a second hello");
                    break;
                }
                Ok(Some(AgentMessage::Response(response))) => {
                    let id = response.id;
                    if !link.answer(response) {
                        tracing::info!(id, "an answer nobody waits for (it came too late)");
                    }
                }
                Ok(Some(AgentMessage::Event(event))) => hooks.node_event(&node_id, event),
                Ok(Some(AgentMessage::Renew { csr_der })) => {
                    let (answer, outcome, event) =
                        enrollment.renew(&node_id, &csr_der, time::OffsetDateTime::now_utc());
                    hooks.record(outcome, event);
                    if let Err(error) = link.send(&CoordinatorMessage::Renewed(answer)).await {
                        tracing::info!(%error, "could not send the renewed certificate");
                    }
                }
                Ok(Some(AgentMessage::EdgeAudit(records))) => {
                    if let Err(error) = fogshell_shared::wire::edge::validate_batch(&records) {
                        tracing::warn!(%error, "malformed edge audit; closing the link");
                        connection.close(close::PROTOCOL_ERROR.into(), b"malformed message");
                        break;
                    }
                    if let Some(through) = hooks.edge_audit(&node_id, records)
                        && let Err(error) = link
                            .send(&CoordinatorMessage::EdgeAuditAck { through })
                            .await
                    {
                        tracing::info!(%error, "could not acknowledge edge audit records");
                    }
                }
                Ok(None) => break,
                Err(ReadError::Io(reason)) => {
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
        drop(attestation);
        links.remove(&link);
        fleet.disconnected(&node_id, generation);
        tracing::info!("node disconnected");
    }
    .instrument(span)
    .await
}

/// Marks silent nodes lost, every [`SWEEP_INTERVAL`](crate::fleet::SWEEP_INTERVAL), until
/// the task is aborted.
pub async fn sweep_forever(fabric: Fabric) {
    let mut tick = tokio::time::interval(crate::fleet::SWEEP_INTERVAL);
    loop {
        tick.tick().await;
        for node_id in fabric.fleet.sweep(Instant::now()) {
            tracing::warn!(%node_id, "node lost");
            fabric.hooks.node_lost(&node_id);
        }
    }
}

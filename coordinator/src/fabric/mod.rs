//! The coordinator's QUIC endpoint: one UDP port for both the enrollment exchange
//! (ALPN `fogshell-join/1`, no client certificate) and the agents' link (ALPN `fogshell/2`,
//! a node certificate required).
//!
//! The server presents a certificate from the coordinator's own CA followed by the CA
//! certificate, so a joining agent can check the chain against the CA key hash it pins.

pub mod enroll;
pub mod link;
pub mod nodes;

use std::net::SocketAddr;
use std::sync::Arc;

use fogshell_shared::audit::{AuditEvent, Outcome};
use fogshell_shared::wire::join::JOIN_ALPN;
use fogshell_shared::wire::{ALPN, Hello, MAX_MESSAGE_BYTES, NodeEvent, decode_body};
use fogshell_shared::{NodeId, SessionId};
use quinn::crypto::rustls::QuicServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::pki::CertificateAuthority;

/// How long the coordinator's server certificate is valid; a fresh one is made at every
/// start.
const SERVER_CERT_VALIDITY: time::Duration = time::Duration::days(30);

/// Application close codes on the QUIC connection.
pub mod close {
    /// The peer sent something malformed.
    pub const PROTOCOL_ERROR: u32 = 1;
    /// The peer is not allowed (no or bad certificate, refused token).
    pub const REFUSED: u32 = 2;
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// QUIC transport settings ([`fogshell_shared::wire::transport`], the agent's too): a link
/// silent for a second is closed, keep-alives four times as often, a bounded stream window.
pub fn transport() -> quinn::TransportConfig {
    use fogshell_shared::wire::transport::{IDLE_TIMEOUT, KEEP_ALIVE_INTERVAL, STREAM_WINDOW};
    let mut transport = quinn::TransportConfig::default();
    transport.stream_receive_window(quinn::VarInt::from_u32(STREAM_WINDOW));
    transport.max_idle_timeout(quinn::IdleTimeout::try_from(IDLE_TIMEOUT).ok());
    transport.keep_alive_interval(Some(KEEP_ALIVE_INTERVAL));
    transport
}

/// The QUIC server configuration: TLS 1.3, the two ALPNs, node certificates verified against
/// the CA when presented (the link requires one, checked per connection).
pub fn server_config(
    ca: &CertificateAuthority,
    names: &[String],
    now: time::OffsetDateTime,
) -> Result<quinn::ServerConfig, String> {
    let (cert, key) = ca
        .issue_server_certificate(names, SERVER_CERT_VALIDITY, now)
        .map_err(|e| e.to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.cert_der().to_vec()))
        .map_err(|e| format!("the CA certificate: {e}"))?;
    let client_verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| format!("client verifier: {e}"))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(
            vec![
                CertificateDer::from(cert),
                CertificateDer::from(ca.cert_der().to_vec()),
            ],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        )
        .map_err(|e| format!("server certificate: {e}"))?;
    tls.alpn_protocols = vec![JOIN_ALPN.to_vec(), ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport()));
    Ok(config)
}

/// Binds the endpoint.
pub fn bind(addr: SocketAddr, config: quinn::ServerConfig) -> std::io::Result<quinn::Endpoint> {
    quinn::Endpoint::server(config, addr)
}

/// What the control plane hears from the fabric. Called on the fabric's tasks: quick, no
/// waiting on nodes (spawn for that).
pub trait FabricHooks: Send + Sync + 'static {
    /// A node said hello (and was welcomed): reconcile what it runs; returns the sessions it
    /// must terminate (fencing: ended or moved while the node was away).
    fn node_connected(&self, hello: &Hello) -> Vec<SessionId>;
    /// Unsolicited news from a node.
    fn node_event(&self, node_id: &NodeId, event: NodeEvent);
    /// A node was silent past the liveness limit.
    fn node_lost(&self, node_id: &NodeId);
    /// A node lost the `attested` tier (a quote failed): its sessions whose profile demands
    /// `attested` are handled as the profile says.
    fn trust_lost(&self, node_id: &NodeId, reason: &str);
    /// Something for the audit log (enrollment, refusals).
    fn record(&self, outcome: Outcome, event: AuditEvent);
    /// A node's edge gateway reports what it decided: commit each record once; returns the
    /// highest record number in the chain, to acknowledge (none when the store failed).
    fn edge_audit(
        &self,
        node_id: &NodeId,
        records: Vec<fogshell_shared::wire::edge::EdgeRecord>,
    ) -> Option<u64>;
}

/// Everything the fabric's connections share.
#[derive(Clone)]
pub struct Fabric {
    /// Node registry and liveness.
    pub fleet: Arc<crate::fleet::Fleet>,
    /// Live links, for commands and terminals.
    pub links: Arc<nodes::Links>,
    /// The control plane's ears.
    pub hooks: Arc<dyn FabricHooks>,
    /// How often agents send heartbeats (the welcome tells them).
    pub heartbeat_interval: std::time::Duration,
    /// Join tokens and the CA: enrollment, and certificate renewal on the link.
    pub enrollment: Arc<enroll::Enrollment>,
    /// TPM attestation of nodes that claim `attested`.
    pub attestor: Arc<crate::attestation::Attestor>,
    /// The image admission policy agents check images against again.
    pub admission: Arc<fogshell_shared::admission::AdmissionPolicy>,
    /// The attach-token keys, published to every node (its edge gateway checks tokens).
    pub attach: Arc<crate::auth::attach::AttachTokens>,
    /// The consoles' origins, for the nodes' gateways to check browsers against.
    pub console_origins: Arc<Vec<String>>,
}

impl std::fmt::Debug for Fabric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fabric").finish_non_exhaustive()
    }
}

/// Serves connections until the endpoint closes.
pub async fn serve(endpoint: quinn::Endpoint, fabric: Fabric) {
    while let Some(incoming) = endpoint.accept().await {
        let fabric = fabric.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let connection = match incoming.await {
                Ok(c) => c,
                Err(error) => {
                    tracing::info!(%remote, %error, "handshake failed");
                    return;
                }
            };
            let alpn = connection
                .handshake_data()
                .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
                .and_then(|d| d.protocol);
            match alpn.as_deref() {
                Some(JOIN_ALPN) => {
                    enroll::serve_connection(connection, &fabric.enrollment, fabric.hooks.as_ref())
                        .await;
                }
                Some(ALPN) => link::serve_connection(connection, fabric).await,
                _ => connection.close(close::PROTOCOL_ERROR.into(), b"unknown ALPN"),
            }
        });
    }
}

/// Reads the one framed message a stream carries, then its end. Bounded by the wire
/// protocol's size limit.
pub async fn read_single<T: serde::de::DeserializeOwned>(
    recv: &mut quinn::RecvStream,
) -> Result<T, String> {
    let bytes = recv
        .read_to_end(MAX_MESSAGE_BYTES + 4)
        .await
        .map_err(|e| format!("reading: {e}"))?;
    let body = bytes.get(4..).ok_or("truncated message")?;
    let announced = u32::from_be_bytes(bytes[..4].try_into().map_err(|_| "truncated")?) as usize;
    if announced != body.len() {
        return Err(format!(
            "message length {announced} but {} bytes",
            body.len()
        ));
    }
    decode_body(body).map_err(|e| e.to_string())
}

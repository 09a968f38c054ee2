//! The agent's link to its coordinator: QUIC (ALPN `fogshell/1`), mutual TLS with the node
//! certificate from enrollment, one control stream carrying the hello and then heartbeats.
//! A broken link is re-dialled with jittered exponential backoff; the sessions keep running
//! meanwhile and are reported in the next hello.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fogshell_shared::wire::{
    ALPN, AgentMessage, CoordinatorMessage, Decoder, Heartbeat, Hello, encode,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::enroll::IdentityPaths;

/// How long a silent link lives before QUIC closes it; keep-alives go four times as often.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest wait between two dial attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the link reports about the node.
pub trait NodeReport: Send + Sync {
    /// The hello for a new connection (with what runs now).
    fn hello(&self) -> impl Future<Output = Hello> + Send;
    /// The heartbeat numbered `seq`.
    fn heartbeat(&self, seq: u64) -> impl Future<Output = Heartbeat> + Send;
}

/// Why one connection ended.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Connecting failed.
    #[error("connecting: {0}")]
    Connect(String),
    /// The coordinator refused the node (no retry helps until an operator acts).
    #[error("refused by the coordinator: {0}")]
    Refused(String),
    /// The connection broke or the coordinator sent something malformed.
    #[error("link: {0}")]
    Broken(String),
}

/// A configured link.
#[derive(Debug, Clone)]
pub struct Link {
    coordinator: SocketAddr,
    server_name: String,
    client: quinn::ClientConfig,
}

impl Link {
    /// A link to `coordinator` (its certificate must name `server_name`), authenticating with
    /// the identity enrollment stored.
    pub fn new(
        identity: &IdentityPaths,
        coordinator: SocketAddr,
        server_name: &str,
    ) -> Result<Self, String> {
        let certificate = CertificateDer::from_pem_file(&identity.certificate).map_err(|e| {
            format!(
                "{}: {e} (has this node joined?)",
                identity.certificate.display()
            )
        })?;
        let key = PrivateKeyDer::from_pem_file(&identity.key)
            .map_err(|e| format!("{}: {e}", identity.key.display()))?;
        let ca = CertificateDer::from_pem_file(&identity.ca)
            .map_err(|e| format!("{}: {e}", identity.ca.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(ca)
            .map_err(|e| format!("the coordinator CA: {e}"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![certificate], key)
            .map_err(|e| format!("the node certificate: {e}"))?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto =
            quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport.max_idle_timeout(quinn::IdleTimeout::try_from(IDLE_TIMEOUT).ok());
        transport.keep_alive_interval(Some(IDLE_TIMEOUT / 4));
        client.transport_config(Arc::new(transport));
        Ok(Self {
            coordinator,
            server_name: server_name.to_owned(),
            client,
        })
    }

    /// Keeps the link up forever: dial, hello, heartbeats; on failure wait (jittered,
    /// doubling up to 5 s) and dial again. Returns only when the coordinator refuses the node.
    pub async fn run(&self, report: &impl NodeReport) -> LinkError {
        let mut failures = 0u32;
        loop {
            match self.once(report, &mut || failures = 0).await {
                Err(refused @ LinkError::Refused(_)) => return refused,
                Err(error) => tracing::warn!(%error, "link down"),
                Ok(()) => tracing::info!("link closed"),
            }
            failures = failures.saturating_add(1);
            let ceiling = (Duration::from_millis(100) * 2u32.saturating_pow(failures.min(16)))
                .min(MAX_BACKOFF);
            let mut random = [0u8; 4];
            let _ = getrandom::fill(&mut random);
            // Full jitter: anywhere up to the ceiling, so nodes that lost the coordinator
            // together do not all come back in the same instant.
            let wait = ceiling.mul_f64(f64::from(u32::from_le_bytes(random)) / f64::from(u32::MAX));
            tokio::time::sleep(wait).await;
        }
    }

    /// One connection, until it ends. `on_welcome` runs once the coordinator accepted the hello.
    pub async fn once(
        &self,
        report: &impl NodeReport,
        on_welcome: &mut impl FnMut(),
    ) -> Result<(), LinkError> {
        let bind: SocketAddr = if self.coordinator.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .expect("valid address");
        let endpoint =
            quinn::Endpoint::client(bind).map_err(|e| LinkError::Connect(e.to_string()))?;
        let connection = endpoint
            .connect_with(self.client.clone(), self.coordinator, &self.server_name)
            .map_err(|e| LinkError::Connect(e.to_string()))?
            .await
            .map_err(|e| LinkError::Connect(e.to_string()))?;
        let result = self.converse(&connection, report, on_welcome).await;
        connection.close(0u32.into(), b"bye");
        endpoint.wait_idle().await;
        result
    }

    async fn converse(
        &self,
        connection: &quinn::Connection,
        report: &impl NodeReport,
        on_welcome: &mut impl FnMut(),
    ) -> Result<(), LinkError> {
        let broken = |e: &dyn std::fmt::Display| LinkError::Broken(e.to_string());
        let (mut send, mut recv) = connection.open_bi().await.map_err(|e| broken(&e))?;
        let hello = report.hello().await;
        let node_id = hello.node_id.clone();
        send.write_all(&encode(&AgentMessage::Hello(hello)).map_err(|e| broken(&e))?)
            .await
            .map_err(|e| broken(&e))?;
        let mut decoder = Decoder::new();
        let mut buf = vec![0u8; 64 * 1024];
        let interval = match read(&mut recv, &mut decoder, &mut buf).await? {
            Some(CoordinatorMessage::Welcome(welcome)) => {
                tracing::info!(%node_id, version = welcome.version, "linked to the coordinator");
                on_welcome();
                Duration::from_millis(u64::from(welcome.heartbeat_interval_ms.max(50)))
            }
            Some(CoordinatorMessage::Refusal(refusal)) => {
                return Err(LinkError::Refused(refusal.message));
            }
            other => {
                return Err(LinkError::Broken(format!(
                    "expected a welcome, got {other:?}"
                )));
            }
        };
        let mut tick = tokio::time::interval(interval);
        let mut seq = 0u64;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    seq += 1;
                    let heartbeat = AgentMessage::Heartbeat(report.heartbeat(seq).await);
                    send.write_all(&encode(&heartbeat).map_err(|e| broken(&e))?)
                        .await
                        .map_err(|e| broken(&e))?;
                }
                message = read(&mut recv, &mut decoder, &mut buf) => match message? {
                    None => return Ok(()),
                    // Commands arrive with the next piece of the fabric; nothing is sent yet.
                    Some(other) => tracing::debug!(?other, "not handled yet"),
                },
            }
        }
    }
}

async fn read(
    recv: &mut quinn::RecvStream,
    decoder: &mut Decoder,
    buf: &mut [u8],
) -> Result<Option<CoordinatorMessage>, LinkError> {
    loop {
        if let Some(m) = decoder
            .next_message()
            .map_err(|e| LinkError::Broken(e.to_string()))?
        {
            return Ok(Some(m));
        }
        match recv
            .read(buf)
            .await
            .map_err(|e| LinkError::Broken(e.to_string()))?
        {
            Some(n) => decoder.extend(&buf[..n]),
            None => return Ok(None),
        }
    }
}

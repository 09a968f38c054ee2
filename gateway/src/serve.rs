//! Serving an axum router over TCP: TLS with rustls, or plain HTTP (callers allow that only on
//! loopback). Both gateways and the coordinator's API use it.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

/// A TLS server configuration (ring, TLS 1.2 and 1.3, HTTP/1.1) from a PEM certificate chain
/// file and a PEM private key file.
pub fn tls_from_files(
    certificate: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(certificate)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", certificate.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    tls_config(chain, key)
}

/// A TLS server configuration (ring, TLS 1.2 and 1.3, HTTP/1.1) for this chain and key.
pub fn tls_config(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| format!("the certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// No Nagle delay on keystroke echoes.
pub fn tune_client_socket(tcp: &tokio::net::TcpStream) {
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::debug!(%error, "TCP_NODELAY");
    }
}

/// What the server grants clients: how long one may take before the server gives up on its
/// connection (a client that opens connections and never finishes them must not hold tasks
/// and sockets forever), and how many connections it serves at once (so a flood meets this
/// limit, not the process's file limit, and the store and the QUIC socket keep working).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// To finish the TLS handshake.
    pub handshake: Duration,
    /// To send a request's headers (hyper's header read timeout, which also ends a
    /// connection that stays silent before its first request).
    pub headers: Duration,
    /// Connections served at once, terminals included; past it the next waits in the
    /// kernel's queue until one ends.
    pub max_connections: usize,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            handshake: Duration::from_secs(10),
            headers: Duration::from_secs(10),
            // Well under the 65 536 descriptors the systemd units allow.
            max_connections: 16_384,
        }
    }
}

/// Serves `app` on `listener` until the task is aborted: over TLS with `tls`, else plain, with
/// the default [`Timeouts`].
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    serve_with(listener, app, tls, Timeouts::default()).await;
}

/// [`serve`] with these timeouts.
pub async fn serve_with(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    timeouts: Timeouts,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let connections = Arc::new(tokio::sync::Semaphore::new(timeouts.max_connections));
    loop {
        if connections.available_permits() == 0 {
            tracing::warn!(
                max_connections = timeouts.max_connections,
                "serving as many connections as allowed: the next waits for one to end"
            );
        }
        let Ok(permit) = Arc::clone(&connections).acquire_owned().await else {
            return;
        };
        let (tcp, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, most likely: wait for some to be freed.
                tracing::warn!(%error, "accepting a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        tune_client_socket(&tcp);
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            // Held for the connection's life, an upgraded terminal's included.
            let _permit = permit;
            let Some(acceptor) = acceptor else {
                return serve_connection(tcp, app, timeouts, remote).await;
            };
            match tokio::time::timeout(timeouts.handshake, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => serve_connection(stream, app, timeouts, remote).await,
                Ok(Err(error)) => tracing::debug!(%remote, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(%remote, "TLS handshake not finished in time"),
            }
        });
    }
}

/// The address a request's connection came from, as a request extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteAddr(pub std::net::SocketAddr);

/// HTTP/1.1 (with upgrades, for the terminal's WebSocket) on one accepted connection.
async fn serve_connection<I>(
    io: I,
    app: axum::Router,
    timeouts: Timeouts,
    remote: std::net::SocketAddr,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Handlers that limit by source (refusals before authentication) find it here.
    let app = app.layer(axum::Extension(RemoteAddr(remote)));
    let service = hyper_util::service::TowerToHyperService::new(app);
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(timeouts.headers)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .with_upgrades();
    if let Err(error) = connection.await {
        tracing::debug!(%remote, %error, "HTTP connection ended");
    }
}

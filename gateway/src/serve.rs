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

/// Serves `app` on `listener` until the task is aborted: over TLS with `tls`, else plain.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    match tls {
        None => {
            use axum::serve::ListenerExt as _;
            let listener = listener.tap_io(|tcp| tune_client_socket(tcp));
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "HTTP server stopped");
            }
        }
        Some(tls) => serve_tls(listener, app, tls).await,
    }
}

async fn serve_tls(listener: TcpListener, app: axum::Router, tls: Arc<rustls::ServerConfig>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accepting a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        tune_client_socket(&tcp);
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let stream = match acceptor.accept(tcp).await {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(%remote, %error, "TLS handshake failed");
                    return;
                }
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(error) = connection.await {
                tracing::debug!(%remote, %error, "HTTP connection ended");
            }
        });
    }
}

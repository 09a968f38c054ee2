//! Serving an axum router over TCP: TLS with rustls, or plain HTTP (callers allow that only on
//! loopback). Both gateways and the coordinator's API use it.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

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

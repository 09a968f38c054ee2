//! The server loop against clients that connect and never finish: a silent TCP connection, a
//! request whose headers never end, a TLS handshake never finished. Each is dropped once its
//! timeout passes; a well-behaved client is served meanwhile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fogshell_gateway::serve::{Timeouts, serve_with, tls_config};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const TIMEOUTS: Timeouts = Timeouts {
    handshake: Duration::from_millis(300),
    headers: Duration::from_millis(300),
    max_connections: 64,
};

async fn start(tls: Option<Arc<rustls::ServerConfig>>) -> std::net::SocketAddr {
    start_with(tls, TIMEOUTS).await
}

async fn start_with(
    tls: Option<Arc<rustls::ServerConfig>>,
    timeouts: Timeouts,
) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    tokio::spawn(serve_with(listener, app, tls, timeouts));
    addr
}

/// Reads until the server closes the connection; returns how long that took.
async fn closed_within(mut socket: TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buffer = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit, socket.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the server kept the connection open past {limit:?}"),
        }
    }
}

#[tokio::test]
async fn silent_and_slow_plain_clients_are_dropped_and_others_served() {
    let addr = start(None).await;
    let silent = TcpStream::connect(addr).await.unwrap();
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();

    // Meanwhile a whole request is answered.
    let mut good = TcpStream::connect(addr).await.unwrap();
    good.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    good.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let limit = Duration::from_secs(3);
    let waited = closed_within(silent, limit).await;
    assert!(
        waited >= Duration::from_millis(200),
        "closed early: {waited:?}"
    );
    closed_within(slow, limit).await;
}

#[tokio::test]
async fn an_unfinished_tls_handshake_is_dropped() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let tls = tls_config(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let addr = start(Some(tls)).await;
    // Connected, and not a byte of the handshake.
    let silent = TcpStream::connect(addr).await.unwrap();
    closed_within(silent, Duration::from_secs(3)).await;
    // Half a ClientHello: the record header promises more than ever comes.
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    closed_within(half, Duration::from_secs(3)).await;
}

/// Past `max_connections` a client waits for a connection to end instead of being served at
/// once: here two silent ones hold the two places until their header timeout frees them.
#[tokio::test]
async fn past_the_connection_cap_a_client_waits_for_a_place() {
    let addr = start_with(
        None,
        Timeouts {
            max_connections: 2,
            ..TIMEOUTS
        },
    )
    .await;
    let _silent: Vec<TcpStream> = vec![
        TcpStream::connect(addr).await.unwrap(),
        TcpStream::connect(addr).await.unwrap(),
    ];
    // Give the server the moment to accept both.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let mut good = TcpStream::connect(addr).await.unwrap();
    good.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(3), good.read_to_string(&mut answer))
        .await
        .expect("served once a place is free")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(150),
        "served before a place was free: {waited:?}"
    );
}

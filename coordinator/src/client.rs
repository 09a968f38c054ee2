//! `fogshell-coordinator shell`: log in, create a session, attach this terminal to it — what
//! `ssh host` feels like, over the public API and the WebSocket gateway.
//!
//! Login is the standard authorization-code flow with PKCE against the coordinator's
//! issuer: the development issuer answers at once; a real provider sends the user through
//! their browser, and the code comes back to a listener on loopback.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use fogshell_shared::api::{AttachInfo, CreateSessionRequest, CreateSessionResponse};
use fogshell_shared::ctrl_c::CtrlCHold;
use fogshell_shared::frame::{ClientFrame, Payload, ServerFrame, StreamState, ack_due};
use fogshell_shared::{ErrorBody, Secret};
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::Message;

use crate::auth::dev_issuer::pkce_challenge;

/// What `GET /v1/auth/config` says about logging in.
#[derive(Debug, Deserialize)]
pub struct AuthConfig {
    /// The OIDC issuer URL.
    pub issuer: String,
    /// The client id command-line clients use.
    pub client_id: String,
}

#[derive(Debug, Deserialize)]
struct Discovery {
    authorization_endpoint: String,
    token_endpoint: String,
}

#[derive(Debug, Deserialize)]
struct TokenResponse {
    access_token: String,
}

/// A client of one coordinator.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    tls: Arc<rustls::ClientConfig>,
}

fn random_b64(bytes: usize) -> Result<String, String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| format!("randomness: {e}"))?;
    Ok(B64.encode(buf))
}

async fn api_error(response: reqwest::Response) -> String {
    let status = response.status();
    match response.json::<ErrorBody>().await {
        Ok(body) => format!("{} ({status}): {}", body.code.as_str(), body.message),
        Err(_) => format!("HTTP {status}"),
    }
}

impl Client {
    /// A client for the API at `base` (`http(s)://host:port`), trusting `ca` (PEM) if given,
    /// else the system's roots.
    pub fn new(base: &str, ca: Option<&Path>) -> Result<Self, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = match ca {
            Some(path) => {
                use rustls::pki_types::CertificateDer;
                use rustls::pki_types::pem::PemObject;
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?
                {
                    roots
                        .add(cert.map_err(|e| format!("{}: {e}", path.display()))?)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                }
                rustls::ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth()
            }
            None => {
                use rustls_platform_verifier::ConfigVerifierExt as _;
                rustls::ClientConfig::with_platform_verifier().map_err(|e| e.to_string())?
            }
        };
        let tls = Arc::new(tls);
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            // The login reads the issuer's redirect itself.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
            tls,
        })
    }

    /// Logs in with the authorization-code flow and PKCE; returns the access token.
    pub async fn login(&self) -> Result<Secret, String> {
        let config: AuthConfig = self
            .get_json(&format!("{}/v1/auth/config", self.base))
            .await?;
        let discovery: Discovery = self
            .get_json(&format!(
                "{}/.well-known/openid-configuration",
                config.issuer.trim_end_matches('/')
            ))
            .await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("a loopback port for the login: {e}"))?;
        let redirect_uri = format!(
            "http://{}/callback",
            listener.local_addr().map_err(|e| e.to_string())?
        );
        let verifier = random_b64(32)?;
        let state = random_b64(16)?;
        let authorize = reqwest::Url::parse_with_params(
            &discovery.authorization_endpoint,
            &[
                ("response_type", "code"),
                ("client_id", config.client_id.as_str()),
                ("redirect_uri", redirect_uri.as_str()),
                ("code_challenge", pkce_challenge(&verifier).as_str()),
                ("code_challenge_method", "S256"),
                ("state", state.as_str()),
                ("scope", "openid fogshell.sessions"),
            ],
        )
        .map_err(|e| format!("the authorization endpoint: {e}"))?;
        let answer = self
            .http
            .get(authorize.clone())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let location = answer
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .filter(|l| l.starts_with(&redirect_uri))
            .map(str::to_owned);
        let callback = match location {
            Some(location) => location,
            None => {
                eprintln!("Open this address in your browser to log in:\n\n  {authorize}\n");
                wait_for_callback(&listener).await?
            }
        };
        let url = reqwest::Url::parse(&callback).map_err(|e| format!("the login callback: {e}"))?;
        let param = |name: &str| {
            url.query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        if param("state").as_deref() != Some(state.as_str()) {
            return Err("the login answer does not match the request (state)".into());
        }
        let code = param("code").ok_or_else(|| {
            format!(
                "login refused: {}",
                param("error").unwrap_or_else(|| "no code".into())
            )
        })?;
        let response = self
            .http
            .post(&discovery.token_endpoint)
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", redirect_uri.as_str()),
                ("client_id", config.client_id.as_str()),
                ("code_verifier", verifier.as_str()),
            ])
            .send()
            .await
            .map_err(|e| format!("the token endpoint: {e}"))?;
        if !response.status().is_success() {
            return Err(format!(
                "the token endpoint refused: HTTP {}",
                response.status()
            ));
        }
        let token: TokenResponse = response
            .json()
            .await
            .map_err(|e| format!("the token endpoint: {e}"))?;
        Ok(Secret::new(token.access_token))
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{url}: {}", api_error(response).await));
        }
        response.json().await.map_err(|e| format!("{url}: {e}"))
    }

    /// `POST /v1/sessions`.
    pub async fn create_session(
        &self,
        token: &Secret,
        request: &CreateSessionRequest,
    ) -> Result<CreateSessionResponse, String> {
        let response = self
            .http
            .post(format!("{}/v1/sessions", self.base))
            .bearer_auth(token.expose())
            .json(request)
            .send()
            .await
            .map_err(|e| format!("creating a session: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("creating a session: {}", api_error(response).await));
        }
        response
            .json()
            .await
            .map_err(|e| format!("creating a session: {e}"))
    }

    /// Attaches this process's terminal to the session until its shell exits; returns the
    /// exit status.
    pub async fn attach_here(&self, attach: &AttachInfo) -> Result<i32, String> {
        let size = fogshell_term::size();
        let url = format!(
            "{}?token={}&cols={}&rows={}",
            attach.ws_url,
            attach.token.expose(),
            size.cols(),
            size.rows()
        );
        let request = {
            use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
            url.as_str()
                .into_client_request()
                .map_err(|e| format!("the attach URL: {e}"))?
        };
        let uri = request.uri().clone();
        let host = uri.host().ok_or("the attach URL has no host")?.to_owned();
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("wss") {
                443
            } else {
                80
            });
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        if uri.scheme_str() == Some("wss") {
            let name =
                rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
            let tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.tls))
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS to {host}: {e}"))?;
            let (socket, _) = tokio_tungstenite::client_async(request, tls)
                .await
                .map_err(|e| format!("attaching: {e}"))?;
            relay_terminal(socket).await
        } else {
            let (socket, _) = tokio_tungstenite::client_async(request, tcp)
                .await
                .map_err(|e| format!("attaching: {e}"))?;
            relay_terminal(socket).await
        }
    }
}

async fn wait_for_callback(listener: &tokio::net::TcpListener) -> Result<String, String> {
    loop {
        let (mut stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 8192];
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        let request = String::from_utf8_lossy(&buf[..n]);
        let Some(target) = request
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
        else {
            continue;
        };
        if !target.starts_with("/callback") {
            continue;
        }
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nLogged in; you can close this tab.\n")
            .await;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        return Ok(format!("http://{addr}{target}"));
    }
}

async fn relay_terminal<S>(socket: tokio_tungstenite::WebSocketStream<S>) -> Result<i32, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = socket.split();
    let _raw = fogshell_term::RawMode::enter().map_err(|e| format!("raw mode: {e}"))?;
    let mut stdin = tokio::io::stdin();
    let mut stdout = tokio::io::stdout();
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        .map_err(|e| format!("watching resizes: {e}"))?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut stdin_open = true;
    let mut acked = 0u64;
    // Output after a Ctrl-C waits for the gateway's answer: what the interrupt made stale is
    // dropped, as a local tty drops it (`fogshell_shared::ctrl_c`).
    let mut hold = CtrlCHold::new();
    let send = |frame: ClientFrame| Message::Text(frame.encode().into());
    loop {
        let mut draw = Vec::new();
        tokio::select! {
            message = stream.next() => match message {
                Some(Ok(Message::Text(text))) => match ServerFrame::decode(text.as_str()) {
                    Ok(ServerFrame::Stdout(data)) => draw = hold.received(data.as_bytes()),
                    Ok(ServerFrame::Flush { bytes, discard }) => draw = hold.flush(bytes, discard),
                    Ok(ServerFrame::Exit { code }) => return Ok(code),
                    Ok(ServerFrame::Status { state, reason, .. }) => {
                        if state != StreamState::Running {
                            eprint!("\r\n[fogshell: session {state:?}{}]\r\n", reason.map(|r| format!(": {r}")).unwrap_or_default());
                        }
                    }
                    Ok(ServerFrame::Error { code, message }) => {
                        return Err(format!("the gateway refused: {}: {message}", code.as_str()));
                    }
                    Err(error) => return Err(format!("a malformed frame from the gateway: {error}")),
                },
                Some(Ok(Message::Close(frame))) => {
                    return Err(format!("the gateway closed the terminal{}", frame.map(|f| format!(": {}", f.reason)).unwrap_or_default()));
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(format!("the terminal connection broke: {error}")),
                None => return Err("the terminal connection ended".into()),
            },
            n = stdin.read(&mut buf), if stdin_open => {
                let bytes = match n {
                    // Input ended (a pipe, not a person): end the shell's input too.
                    Ok(0) | Err(_) => { stdin_open = false; vec![0x04] }
                    Ok(n) => buf[..n].to_vec(),
                };
                hold.sent(&bytes, std::time::Instant::now());
                let payload = Payload::new(bytes).map_err(|_| "input chunk over the frame cap")?;
                sink.send(send(ClientFrame::Stdin(payload))).await.map_err(|e| e.to_string())?;
            }
            _ = winch.recv() => {
                sink.send(send(ClientFrame::Resize(fogshell_term::size()))).await.map_err(|e| e.to_string())?;
            }
            () = sleep_until(hold.deadline()), if hold.holding() => draw = hold.release(),
        }
        if !draw.is_empty() {
            stdout.write_all(&draw).await.map_err(|e| e.to_string())?;
            stdout.flush().await.map_err(|e| e.to_string())?;
        }
        // Flow control: what reached the terminal (or was dropped as stale) is acknowledged,
        // so a flood stays a small window ahead of it and Ctrl-C stops it at once.
        let consumed = hold.consumed();
        if ack_due(consumed, acked) {
            acked = consumed;
            sink.send(send(ClientFrame::Ack { bytes: consumed }))
                .await
                .map_err(|e| e.to_string())?;
        }
    }
}

/// Sleeps until `deadline` (forever without one).
async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

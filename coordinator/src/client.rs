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
use fogshell_shared::api::{
    AttachInfo, CreateSessionRequest, CreateSessionResponse, GatewayKind, GatewayView, Page,
};
use fogshell_shared::ctrl_c::CtrlCHold;
use fogshell_shared::frame::{ClientFrame, Payload, ServerFrame, StreamState, ack_due};
use fogshell_shared::placement::PlacementHint;
use fogshell_shared::{ErrorBody, Secret, SessionId};
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

    /// `POST {path}` with `body`, answered with a `T`; errors say they were `doing` it.
    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        token: &Secret,
        path: &str,
        body: Option<&CreateSessionRequest>,
        doing: &str,
    ) -> Result<T, String> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token.expose());
        if let Some(body) = body {
            // The terminal is attached at once: the gateways hold it while the node starts
            // the session, so the answer need not wait for that.
            request = request.json(body).header("prefer", "respond-async");
        }
        let response = request.send().await.map_err(|e| format!("{doing}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{doing}: {}", api_error(response).await));
        }
        response.json().await.map_err(|e| format!("{doing}: {e}"))
    }

    /// `POST /v1/sessions`, answered once the session is placed (`Prefer: respond-async`):
    /// its node starts it while the client connects to its gateway.
    pub async fn create_session(
        &self,
        token: &Secret,
        request: &CreateSessionRequest,
    ) -> Result<CreateSessionResponse, String> {
        self.post(token, "/v1/sessions", Some(request), "creating a session")
            .await
    }

    /// Times a round trip to each gateway (`GET /v1/gateways`, then each probe, at once), for
    /// `placement_hint`: the relay's and each node gateway's it could reach within
    /// [`PROBE_TIMEOUT`]. A coordinator without the list gets no hint.
    pub async fn measure_gateways(&self, token: &Secret) -> Option<Measured> {
        let response = self
            .http
            .get(format!("{}/v1/gateways", self.base))
            .bearer_auth(token.expose())
            .send()
            .await
            .ok()?;
        let gateways: Page<GatewayView> = response.error_for_status().ok()?.json().await.ok()?;
        let probes = gateways.items.iter().map(|gateway| async move {
            // The first request opens the connection; the smallest of the next few is the
            // path's round trip (a stall on one must not decide where the session runs).
            let probe = || self.http.get(&gateway.probe_url).send();
            tokio::time::timeout(PROBE_TIMEOUT, async {
                probe().await.ok()?;
                let mut best = std::time::Duration::MAX;
                for _ in 0..PROBE_SAMPLES {
                    let started = std::time::Instant::now();
                    probe().await.ok()?.error_for_status().ok()?;
                    best = best.min(started.elapsed());
                }
                Some(u32::try_from(best.as_millis()).unwrap_or(u32::MAX))
            })
            .await
            .ok()
            .flatten()
            .map(|ms| (gateway, ms))
        });
        let mut hint = PlacementHint::default();
        let mut nearest: Option<(u32, &GatewayView)> = None;
        for (gateway, ms) in futures_util::future::join_all(probes)
            .await
            .into_iter()
            .flatten()
        {
            match (&gateway.kind, &gateway.node_id) {
                (GatewayKind::Relay, _) => hint.relay_rtt_ms = Some(ms),
                (GatewayKind::Node, Some(node)) => {
                    hint.gateway_rtt_ms.insert(node.clone(), ms);
                    if nearest.is_none_or(|(best, _)| ms < best) {
                        nearest = Some((ms, gateway));
                    }
                }
                (GatewayKind::Node, None) => {}
            }
        }
        let nearest_gateway = nearest.map(|(_, gateway)| gateway.ws_url.clone());
        hint.measured_gateways().then_some(Measured {
            hint,
            nearest_gateway,
        })
    }

    /// Opens the transport (TCP, and TLS for `wss`) to the gateway at `ws_url` ahead of
    /// the attach, while the session is being created: placement most likely picks the
    /// nearest gateway, and then the attach costs one round trip instead of three.
    pub async fn preconnect(&self, ws_url: &str) -> Result<Warm, String> {
        let uri: axum::http::Uri = ws_url
            .parse()
            .map_err(|e| format!("the gateway URL {ws_url}: {e}"))?;
        let io = self.transport(&uri).await?;
        Ok(Warm {
            ws_url: ws_url.trim_end_matches('/').to_owned(),
            io,
        })
    }

    /// TCP to `uri`'s host, with TLS over it for `wss`.
    async fn transport(&self, uri: &axum::http::Uri) -> Result<Box<dyn Io>, String> {
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
        Ok(if uri.scheme_str() == Some("wss") {
            let name =
                rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
            Box::new(
                tokio_rustls::TlsConnector::from(Arc::clone(&self.tls))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS to {host}: {e}"))?,
            )
        } else {
            Box::new(tcp)
        })
    }

    /// `POST /v1/sessions/{id}/attach`: a fresh token.
    async fn reattach(&self, token: &Secret, session_id: SessionId) -> Result<AttachInfo, String> {
        let path = format!("/v1/sessions/{session_id}/attach");
        self.post(token, &path, None, "a new attach token").await
    }

    /// Attaches this process's terminal to the session until its shell exits; returns the
    /// exit status. The best path first (`ws_url`); when that cannot be reached within
    /// [`DIRECT_TIMEOUT`], or stops serving the session, the relay (`fallback_ws_url`) with a
    /// fresh token, resuming the output where it stopped.
    ///
    /// `warm` is a transport opened ahead ([`Self::preconnect`]); it is used when `ws_url`
    /// is on its gateway.
    pub async fn attach_here(
        &self,
        token: &Secret,
        session_id: SessionId,
        attach: &AttachInfo,
        warm: Option<Warm>,
    ) -> Result<i32, String> {
        let warm = warm
            .filter(|warm| attach.ws_url.starts_with(&format!("{}/", warm.ws_url)))
            .map(|warm| warm.io);
        let Some(fallback) = &attach.fallback_ws_url else {
            let socket = self.connect(warm, &attach.ws_url, &attach.token, 0).await?;
            return match relay_terminal(socket, &mut Keyboard::spawn(), false).await? {
                Ended::Exit(code) => Ok(code),
                Ended::Closed { why, .. } => Err(why),
            };
        };
        let direct = tokio::time::timeout(
            DIRECT_TIMEOUT,
            self.connect(warm, &attach.ws_url, &attach.token, 0),
        )
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {DIRECT_TIMEOUT:?}")));
        let mut keyboard = Keyboard::spawn();
        let from_offset = match direct {
            Ok(socket) => match relay_terminal(socket, &mut keyboard, false).await? {
                Ended::Exit(code) => return Ok(code),
                Ended::Closed { why, offset } => {
                    eprint!("\r\n[fogshell: {why}; continuing through the coordinator]\r\n");
                    offset
                }
            },
            Err(why) => {
                eprint!(
                    "\r\n[fogshell: the node's gateway: {why}; continuing through the coordinator]\r\n"
                );
                0
            }
        };
        let fresh = self.reattach(token, session_id).await?;
        let relay = fresh.fallback_ws_url.as_deref().unwrap_or(fallback);
        // The relay answers 503 while the node relinks (an agent restart): try again a while.
        let deadline = std::time::Instant::now() + FALLBACK_PATIENCE;
        let socket = loop {
            match self.connect(None, relay, &fresh.token, from_offset).await {
                Ok(socket) => break socket,
                Err(why) if std::time::Instant::now() < deadline => {
                    tracing::debug!(%why, "the relay cannot attach yet");
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                }
                Err(why) => return Err(why),
            }
        };
        match relay_terminal(socket, &mut keyboard, true).await? {
            Ended::Exit(code) => Ok(code),
            Ended::Closed { why, .. } => Err(why),
        }
    }

    /// Opens the terminal's WebSocket at `ws_url`, output from `from_offset`, over `warm`
    /// when given (a transport to its gateway opened ahead).
    async fn connect(
        &self,
        warm: Option<Box<dyn Io>>,
        ws_url: &str,
        token: &Secret,
        from_offset: u64,
    ) -> Result<tokio_tungstenite::WebSocketStream<Box<dyn Io>>, String> {
        let size = fogshell_term::size();
        let url = format!(
            "{ws_url}?token={}&cols={}&rows={}&from_offset={from_offset}",
            token.expose(),
            size.cols(),
            size.rows()
        );
        let request = {
            use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
            url.as_str()
                .into_client_request()
                .map_err(|e| format!("the attach URL: {e}"))?
        };
        let io = match warm {
            Some(io) => io,
            None => self.transport(request.uri()).await?,
        };
        let (socket, _) = tokio_tungstenite::client_async(request, io)
            .await
            .map_err(|e| format!("attaching: {e}"))?;
        Ok(socket)
    }
}

/// What the client measured of its paths to the gateways.
#[derive(Debug, Clone)]
pub struct Measured {
    /// The round trips, for `placement_hint`.
    pub hint: PlacementHint,
    /// The base WebSocket URL of the nearest node gateway, if one answered.
    pub nearest_gateway: Option<String>,
}

/// A transport to a gateway opened ahead of the attach.
pub struct Warm {
    /// The gateway's base WebSocket URL.
    ws_url: String,
    io: Box<dyn Io>,
}

impl std::fmt::Debug for Warm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Warm")
            .field("ws_url", &self.ws_url)
            .finish_non_exhaustive()
    }
}

/// How long the client waits for a node's own gateway before it goes to the relay.
pub const DIRECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// How long the client keeps trying the relay after the node's gateway went away.
pub const FALLBACK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(15);

/// Round trips timed per gateway after the one that opens the connection.
const PROBE_SAMPLES: usize = 3;

/// How long one gateway probe may take.
pub const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// A byte stream a WebSocket runs over: TCP, or TLS over TCP.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// How a terminal connection ended.
#[derive(Debug)]
enum Ended {
    /// The shell exited.
    Exit(i32),
    /// The gateway closed it (or it broke) without an exit; the session's output reached
    /// `offset`.
    Closed { why: String, offset: u64 },
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

/// What the user types, read on one task for the whole session: a read of stdin cannot be
/// cancelled, so one started for a connection that then ended would swallow the next
/// keystrokes; here they wait for the next connection instead.
#[derive(Debug)]
struct Keyboard {
    typed: tokio::sync::mpsc::Receiver<Vec<u8>>,
    open: bool,
}

impl Keyboard {
    fn spawn() -> Self {
        let (tx, typed) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let bytes = match stdin.read(&mut buf).await {
                    // Input ended (a pipe, not a person): end the shell's input too.
                    Ok(0) | Err(_) => vec![0x04],
                    Ok(n) => buf[..n].to_vec(),
                };
                let end = bytes == [0x04];
                if tx.send(bytes).await.is_err() || end {
                    return;
                }
            }
        });
        Self { typed, open: true }
    }

    /// The next chunk typed; `None` once input ended.
    async fn next(&mut self) -> Option<Vec<u8>> {
        let next = self.typed.recv().await;
        self.open = next.is_some();
        next
    }
}

/// Relays the user's terminal over `socket` until the shell exits or the connection ends.
/// `resumed`: this connection continues one that broke, so its `running` is news.
async fn relay_terminal<S>(
    socket: tokio_tungstenite::WebSocketStream<S>,
    keyboard: &mut Keyboard,
    resumed: bool,
) -> Result<Ended, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = socket.split();
    let _raw = fogshell_term::RawMode::enter().map_err(|e| format!("raw mode: {e}"))?;
    let mut stdout = tokio::io::stdout();
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        .map_err(|e| format!("watching resizes: {e}"))?;
    let mut acked = 0u64;
    // Output after a Ctrl-C waits for the gateway's answer: what the interrupt made stale is
    // dropped, as a local tty drops it (`fogshell_shared::ctrl_c`).
    let mut hold = CtrlCHold::new();
    let send = |frame: ClientFrame| Message::Text(frame.encode().into());
    // Where the session's output stands: the last `running` frame's offset plus what came
    // since, so a connection through another gateway resumes it exactly.
    let mut offset = 0u64;
    let closed = |why: String, offset: u64| Ok(Ended::Closed { why, offset });
    let mut told = resumed.then_some(StreamState::Interrupted);
    loop {
        let mut draw = Vec::new();
        tokio::select! {
            message = stream.next() => match message {
                Some(Ok(Message::Text(text))) => match ServerFrame::decode(text.as_str()) {
                    Ok(ServerFrame::Stdout(data)) => {
                        offset += data.as_bytes().len() as u64;
                        draw = hold.received(data.as_bytes());
                    }
                    Ok(ServerFrame::Flush { bytes, discard }) => draw = hold.flush(bytes, discard),
                    Ok(ServerFrame::Exit { code }) => return Ok(Ended::Exit(code)),
                    Ok(ServerFrame::Status { state, reason, offset: at, .. }) => {
                        if let Some(at) = at {
                            offset = at;
                        }
                        // Said when it is news: not the shell starting, nor the first `running`,
                        // but `running` again after an interruption (typing reaches the shell
                        // again) and anything else.
                        let news = match state {
                            StreamState::Connecting => false,
                            StreamState::Running => told.is_some_and(|t| !matches!(t, StreamState::Running | StreamState::Connecting)),
                            _ => true,
                        };
                        if news {
                            eprint!("\r\n[fogshell: session {state:?}{}]\r\n", reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default());
                        }
                        if state == StreamState::Failed {
                            return Err(reason.unwrap_or_else(|| "the session failed".into()));
                        }
                        told = Some(state);
                    }
                    Ok(ServerFrame::Error { code, message }) => {
                        return Err(format!("the gateway refused: {}: {message}", code.as_str()));
                    }
                    Err(error) => return Err(format!("a malformed frame from the gateway: {error}")),
                },
                Some(Ok(Message::Close(frame))) => {
                    return closed(format!("the gateway closed the terminal{}", frame.map(|f| format!(": {}", f.reason)).unwrap_or_default()), offset);
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => return closed(format!("the terminal connection broke: {error}"), offset),
                None => return closed("the terminal connection ended".into(), offset),
            },
            typed = keyboard.next(), if keyboard.open => {
                let Some(bytes) = typed else { continue };
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

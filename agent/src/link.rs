//! The agent's link to its coordinator: QUIC (ALPN `fogshell/2`), mutual TLS with the node
//! certificate from enrollment, one control stream carrying the hello and then heartbeats.
//! A broken link is re-dialled with jittered exponential backoff; the sessions keep running
//! meanwhile and are reported in the next hello.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fogshell_shared::SessionId;
use fogshell_shared::frame::TermSize;
use fogshell_shared::wire::stream::{FramedReader, ReadError, write_message};
use fogshell_shared::wire::{
    ALPN, AgentMessage, Command, CommandError, CommandOutput, CoordinatorMessage, Heartbeat, Hello,
    NodeEvent, PtyMessage, PtyStreamHeader, Renewed, Response, pty_stream_code,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::mpsc;
use tracing::Instrument as _;

use crate::enroll::IdentityPaths;
use crate::renew::Renewal;
use crate::runtime::PtyStreams;
use crate::shim::protocol::{ShimEvent, ShimRequest};

/// The longest wait between two dial attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The node as the link sees it: what to report, and how to carry out the coordinator's
/// commands and terminals.
pub trait LocalNode: Send + Sync + 'static {
    /// The hello for a new connection (with what runs now).
    fn hello(&self) -> impl Future<Output = Hello> + Send;
    /// The heartbeat numbered `seq`.
    fn heartbeat(&self, seq: u64) -> impl Future<Output = Heartbeat> + Send;
    /// News since the last call (shells that exited by themselves), sent with each heartbeat.
    fn events(&self) -> impl Future<Output = Vec<NodeEvent>> + Send;
    /// The coordinator welcomed this connection: take its admission policy.
    fn welcomed(&self, welcome: &fogshell_shared::wire::Welcome);
    /// Carries out one command.
    fn execute(
        &self,
        command: Command,
    ) -> impl Future<Output = Result<CommandOutput, CommandError>> + Send;
    /// The edge gateway's state, when the node runs one: its audit records go up the link.
    fn edge(&self) -> Option<Arc<crate::edge::EdgeState>> {
        None
    }
    /// The sessions being started now and the starts that failed lately, watched by the
    /// gateway for viewers that arrive before their shell.
    fn starts(&self) -> tokio::sync::watch::Receiver<crate::starts::Board> {
        tokio::sync::watch::channel(crate::starts::Board::default()).1
    }
    /// Attaches a terminal to a session this node runs, its output from `from_offset` (what
    /// the node still holds of it).
    fn attach(
        &self,
        session_id: SessionId,
        size: TermSize,
        from_offset: u64,
    ) -> impl Future<Output = Result<PtyStreams, CommandError>> + Send;
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
    /// Rebuilt when the node certificate is renewed; each connection takes the current one.
    client: Arc<std::sync::Mutex<quinn::ClientConfig>>,
    /// The coordinator's CA, the only one trusted.
    ca: CertificateDer<'static>,
    /// The identity files, when the certificate is renewed over this link.
    renewal: Option<Arc<Renewal>>,
    /// How many terminal streams the coordinator may have open on one connection.
    max_terminals: u32,
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
        let mut link = Self::from_identity(certificate, key, ca, coordinator, server_name)?;
        link.renewal = Some(Arc::new(Renewal::load(identity)?));
        Ok(link)
    }

    /// A link authenticating with this certificate and key, trusting only this CA (the load
    /// generator's simulated nodes keep theirs in memory).
    pub fn from_identity(
        certificate: CertificateDer<'static>,
        key: PrivateKeyDer<'static>,
        ca: CertificateDer<'static>,
        coordinator: SocketAddr,
        server_name: &str,
    ) -> Result<Self, String> {
        Ok(Self {
            coordinator,
            server_name: server_name.to_owned(),
            client: Arc::new(std::sync::Mutex::new(client_config(
                certificate,
                key,
                ca.clone(),
                DEFAULT_MAX_TERMINALS,
            )?)),
            ca,
            renewal: None,
            max_terminals: DEFAULT_MAX_TERMINALS,
        })
    }

    /// Lets the coordinator open up to `max_terminals` terminal streams at once (`[node]
    /// max_terminals`); past them its next one waits, so the figure is the node's, not a
    /// transport default's.
    pub fn with_max_terminals(mut self, max_terminals: u32) -> Self {
        self.max_terminals = max_terminals;
        fogshell_shared::sync::lock(&self.client)
            .transport_config(Arc::new(transport(max_terminals)));
        self
    }

    fn client(&self) -> quinn::ClientConfig {
        fogshell_shared::sync::lock(&self.client).clone()
    }

    /// Asks for the next certificate when the current one is due.
    async fn maybe_renew(&self, send: &mut quinn::SendStream) -> Result<(), LinkError> {
        let Some(renewal) = &self.renewal else {
            return Ok(());
        };
        match renewal.request_if_due(std::time::Instant::now()) {
            None => Ok(()),
            Some(Err(error)) => {
                tracing::warn!(%error, "cannot ask for a new certificate");
                Ok(())
            }
            Some(Ok(csr_der)) => {
                tracing::info!("the node certificate is due for renewal; asking");
                write_message(send, &AgentMessage::Renew { csr_der })
                    .await
                    .map_err(|e| LinkError::Broken(e.to_string()))
            }
        }
    }

    /// Stores a renewed certificate and uses it from the next connection on.
    fn renewed(&self, answer: Renewed) {
        let Some(renewal) = &self.renewal else {
            tracing::warn!("a certificate nobody asked for; ignored");
            return;
        };
        let certificate_der = match answer {
            Renewed::Issued { certificate_der } => certificate_der,
            Renewed::Refused { message } => {
                tracing::warn!(%message, "the coordinator refused to renew the certificate");
                renewal.refused(std::time::Instant::now());
                return;
            }
        };
        let stored = renewal.store(&certificate_der).and_then(|not_after| {
            let (certificate, key) = renewal.identity()?;
            let client = client_config(certificate, key, self.ca.clone(), self.max_terminals)?;
            *fogshell_shared::sync::lock(&self.client) = client;
            Ok(not_after)
        });
        match stored {
            Ok(not_after) => tracing::info!(not_after, "node certificate renewed"),
            Err(error) => {
                tracing::warn!(%error, "the renewed certificate was not taken");
                renewal.refused(std::time::Instant::now());
            }
        }
    }
}

/// The QUIC client side: TLS 1.3 with the node certificate, trusting only `ca`.
fn client_config(
    certificate: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    ca: CertificateDer<'static>,
    max_terminals: u32,
) -> Result<quinn::ClientConfig, String> {
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
    client.transport_config(Arc::new(transport(max_terminals)));
    Ok(client)
}

/// Terminal streams the coordinator may open at once unless `[node] max_terminals` says.
pub const DEFAULT_MAX_TERMINALS: u32 = 1024;

/// The link's QUIC settings: the shared timeouts, and room for `max_terminals` terminal
/// streams (each one the coordinator opens; commands use the control stream).
fn transport(max_terminals: u32) -> quinn::TransportConfig {
    use fogshell_shared::wire::transport::{IDLE_TIMEOUT, KEEP_ALIVE_INTERVAL};
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(quinn::IdleTimeout::try_from(IDLE_TIMEOUT).ok());
    transport.keep_alive_interval(Some(KEEP_ALIVE_INTERVAL));
    transport.max_concurrent_bidi_streams(quinn::VarInt::from_u32(max_terminals));
    transport
}

impl Link {
    /// Keeps the link up forever: dial, hello, heartbeats; on failure wait (jittered,
    /// doubling up to 5 s) and dial again. Returns only when the coordinator refuses the node.
    pub async fn run<N: LocalNode>(&self, node: &Arc<N>) -> LinkError {
        let mut failures = 0u32;
        loop {
            match self.once(node, &mut || failures = 0).await {
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
    pub async fn once<N: LocalNode>(
        &self,
        node: &Arc<N>,
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
        let result = self.once_on(&endpoint, node, on_welcome).await;
        endpoint.wait_idle().await;
        result
    }

    /// One connection from an endpoint the caller owns (a load generator shares one UDP
    /// socket and its buffers — about 2 MiB — among many simulated nodes).
    pub async fn once_on<N: LocalNode>(
        &self,
        endpoint: &quinn::Endpoint,
        node: &Arc<N>,
        on_welcome: &mut impl FnMut(),
    ) -> Result<(), LinkError> {
        let connection = endpoint
            .connect_with(self.client(), self.coordinator, &self.server_name)
            .map_err(|e| LinkError::Connect(e.to_string()))?
            .await
            .map_err(|e| LinkError::Connect(e.to_string()))?;
        let result = self.converse(&connection, node, on_welcome).await;
        connection.close(0u32.into(), b"bye");
        result
    }

    async fn converse<N: LocalNode>(
        &self,
        connection: &quinn::Connection,
        node: &Arc<N>,
        on_welcome: &mut impl FnMut(),
    ) -> Result<(), LinkError> {
        let broken = |e: &dyn std::fmt::Display| LinkError::Broken(e.to_string());
        let (mut send, recv) = connection.open_bi().await.map_err(|e| broken(&e))?;
        let mut recv = FramedReader::new(recv);
        let hello = node.hello().await;
        let node_id = hello.node_id.clone();
        // The node's lease counts from when each message that the coordinator grants left:
        // the hello (0), then each heartbeat.
        let edge = node.edge();
        if let Some(edge) = &edge {
            edge.lease_new_connection();
            edge.lease_sent(0);
        }
        write_message(&mut send, &AgentMessage::Hello(hello))
            .await
            .map_err(|e| broken(&e))?;
        let welcome = match next(&mut recv).await? {
            Some(CoordinatorMessage::Welcome(welcome)) => welcome,
            Some(CoordinatorMessage::Refusal(refusal)) => {
                return Err(LinkError::Refused(refusal.message));
            }
            other => {
                return Err(LinkError::Broken(format!(
                    "expected a welcome, got {other:?}"
                )));
            }
        };
        tracing::info!(%node_id, version = welcome.version, "linked to the coordinator");
        if let Some(edge) = &edge {
            edge.welcomed(&welcome);
        }
        node.welcomed(&welcome);
        on_welcome();
        // Fencing: sessions the coordinator ended or moved while this node was away.
        for session_id in welcome.fence {
            tracing::info!(%session_id, "fenced by the coordinator; terminating");
            if let Err(error) = node.execute(Command::Terminate { session_id }).await {
                tracing::warn!(%session_id, message = %error.message, "fencing failed");
            }
        }
        let interval = Duration::from_millis(u64::from(welcome.heartbeat_interval_ms.max(50)));

        // Terminals arrive as streams the coordinator opens; each is served on its own task.
        let terminals = tokio::spawn(accept_terminals(connection.clone(), Arc::clone(node)));
        let _abort_terminals = tokio_util::task::AbortOnDropHandle::new(terminals);
        // Commands run concurrently (an image pull must not hold up a terminate); their
        // answers come back here to be written on the control stream.
        let (answers, mut answered) = mpsc::channel::<AgentMessage>(64);
        let mut tick = tokio::time::interval(interval);
        let mut seq = 0u64;
        // The edge gateway's audit records: all that are not acknowledged go up on every
        // connection, then each new one as it is made.
        let mut edge_sent = 0u64;
        if let Some(edge) = &edge {
            send_edge_audit(&mut send, edge, &mut edge_sent).await?;
        }
        loop {
            tokio::select! {
                () = edge_recorded(edge.as_deref()) => {
                    if let Some(edge) = &edge {
                        send_edge_audit(&mut send, edge, &mut edge_sent).await?;
                    }
                }
                _ = tick.tick() => {
                    seq += 1;
                    for event in node.events().await {
                        write_message(&mut send, &AgentMessage::Event(event)).await.map_err(|e| broken(&e))?;
                    }
                    let heartbeat = AgentMessage::Heartbeat(node.heartbeat(seq).await);
                    if let Some(edge) = &edge {
                        edge.lease_sent(seq);
                    }
                    write_message(&mut send, &heartbeat).await.map_err(|e| broken(&e))?;
                    self.maybe_renew(&mut send).await?;
                }
                Some(answer) = answered.recv() => {
                    write_message(&mut send, &answer).await.map_err(|e| broken(&e))?;
                }
                message = next(&mut recv) => match message? {
                    None => return Ok(()),
                    Some(CoordinatorMessage::Request(request)) => {
                        let node = Arc::clone(node);
                        let answers = answers.clone();
                        let span = tracing::info_span!("command", id = request.id, command = command_name(&request.command));
                        tokio::spawn(async move {
                            let result = node.execute(request.command).await;
                            if let Err(error) = &result {
                                tracing::info!(code = %error.code.as_str(), message = %error.message, "command failed");
                            }
                            let _ = answers.send(AgentMessage::Response(Response { id: request.id, result })).await;
                        }.instrument(span));
                    }
                    Some(CoordinatorMessage::Renewed(answer)) => self.renewed(answer),
                    Some(CoordinatorMessage::AttachKeys(keys)) => {
                        if let Some(edge) = &edge {
                            edge.set_keys(keys);
                        }
                    }
                    Some(CoordinatorMessage::LeaseGrant { seq }) => {
                        if let Some(edge) = &edge {
                            edge.lease_granted(seq);
                        }
                    }
                    Some(CoordinatorMessage::EdgeAuditAck { through }) => {
                        if let Some(edge) = &edge {
                            edge.acknowledged(through);
                            // Anything recorded past what was sent goes now.
                            send_edge_audit(&mut send, edge, &mut edge_sent).await?;
                        }
                    }
                    Some(other) => {
                        return Err(LinkError::Broken(format!("unexpected message: {other:?}")));
                    }
                },
            }
        }
    }
}

/// Resolves when the edge gateway made a record (never without a gateway).
async fn edge_recorded(edge: Option<&crate::edge::EdgeState>) {
    match edge {
        Some(edge) => edge.recorded().await,
        None => std::future::pending().await,
    }
}

/// Sends the edge audit records after `sent` (as many as one message carries) and moves
/// `sent` past them; the rest follow with the acknowledgement.
async fn send_edge_audit(
    send: &mut quinn::SendStream,
    edge: &crate::edge::EdgeState,
    sent: &mut u64,
) -> Result<(), LinkError> {
    let records = edge.pending_after(*sent);
    let Some(last) = records.last().map(|r| r.seq) else {
        return Ok(());
    };
    write_message(send, &AgentMessage::EdgeAudit(records))
        .await
        .map_err(|e| LinkError::Broken(e.to_string()))?;
    *sent = last;
    Ok(())
}

/// The command's name, for spans.
fn command_name(command: &Command) -> &'static str {
    match command {
        Command::Allocate(_) => "allocate",
        Command::Terminate { .. } => "terminate",
        Command::EnforceLimits { .. } => "enforce_limits",
        Command::List => "list",
        Command::ActivateCredential(_) => "activate_credential",
        Command::Quote { .. } => "quote",
    }
}

async fn next(
    recv: &mut FramedReader<quinn::RecvStream>,
) -> Result<Option<CoordinatorMessage>, LinkError> {
    recv.next()
        .await
        .map_err(|e| LinkError::Broken(e.to_string()))
}

/// Terminal output merged into one message while more is already waiting.
const COALESCE_BYTES: usize = 32 * 1024;

/// How long the coordinator has to send a terminal stream's header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves every terminal stream the coordinator opens on this connection.
async fn accept_terminals<N: LocalNode>(connection: quinn::Connection, node: Arc<N>) {
    while let Ok((send, recv)) = connection.accept_bi().await {
        let node = Arc::clone(&node);
        tokio::spawn(async move {
            if let Err(error) = serve_terminal(node.as_ref(), send, recv).await {
                tracing::info!(%error, "terminal stream ended");
            }
        });
    }
}

/// Serves one terminal stream the coordinator opened: reads its header, attaches to the
/// session and relays until either end stops.
async fn serve_terminal<N: LocalNode>(
    node: &N,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
) -> Result<(), String> {
    let mut recv = FramedReader::new(recv);
    let header: PtyStreamHeader = match tokio::time::timeout(HEADER_TIMEOUT, recv.next()).await {
        Ok(Ok(Some(header))) => header,
        Ok(Ok(None)) => return Ok(()),
        Ok(Err(error)) => {
            let _ = recv.get_mut().stop(pty_stream_code::MALFORMED.into());
            return Err(format!("bad header: {error}"));
        }
        Err(_) => return Err("no header".into()),
    };
    let session_id = header.session_id;
    let span = tracing::info_span!("terminal", %session_id);
    async move {
        let streams = match node
            .attach(session_id, header.size, header.from_offset)
            .await
        {
            Ok(streams) => streams,
            Err(error) => {
                let _ = send.reset(pty_stream_code::REFUSED.into());
                return Err(format!("attach refused: {}", error.message));
            }
        };
        match relay_terminal(streams, &mut send, &mut recv).await {
            Err(TerminalError::Malformed(error)) => {
                let _ = recv.get_mut().stop(pty_stream_code::MALFORMED.into());
                Err(error)
            }
            Err(TerminalError::Other(error)) => Err(error),
            Ok(()) => Ok(()),
        }
    }
    .instrument(span)
    .await
}

/// Why a terminal relay stopped early.
#[derive(Debug)]
pub(crate) enum TerminalError {
    /// The viewer's side sent something that is not a terminal message.
    Malformed(String),
    /// A stream failed.
    Other(String),
}

/// Relays one attached terminal: shim output up `send`, input and resizes from `recv` down to
/// the shim — over a QUIC stream to the coordinator's relay, or in memory to this node's own
/// gateway. Each direction waits for the other end to take what it sent (QUIC flow control or
/// the gateway's socket above, the shim socket below), so a flooding shell fills bounded
/// buffers and then waits, while the input direction — Ctrl-C — keeps moving.
pub(crate) async fn relay_terminal<W, R>(
    streams: PtyStreams,
    send: &mut W,
    recv: &mut FramedReader<R>,
) -> Result<(), TerminalError>
where
    W: tokio::io::AsyncWrite + Unpin,
    R: tokio::io::AsyncRead + Unpin,
{
    let PtyStreams {
        mut input,
        mut output,
        from_offset,
    } = streams;
    tracing::debug!(from_offset, "terminal attached");
    let other = |e: &dyn std::fmt::Display| TerminalError::Other(e.to_string());
    let upward = async {
        write_message(send, &PtyMessage::Start { from_offset })
            .await
            .map_err(|e| other(&e))?;
        let mut waiting: Option<ShimEvent> = None;
        loop {
            let event = match waiting.take() {
                Some(event) => event,
                None => match output.next_event().await.map_err(|e| other(&e))? {
                    Some(event) => event,
                    None => return Err(other(&"the shim closed the terminal")),
                },
            };
            match event {
                ShimEvent::Output { mut data, .. } => {
                    // Output that is already here goes in the same message; the first byte of
                    // a burst is never held back for more.
                    while data.len() < COALESCE_BYTES {
                        match output.next_buffered().map_err(|e| other(&e))? {
                            Some(ShimEvent::Output { data: more, .. }) => data.extend(more),
                            Some(other) => {
                                waiting = Some(other);
                                break;
                            }
                            None => break,
                        }
                    }
                    write_message(send, &PtyMessage::Data(data))
                        .await
                        .map_err(|e| other(&e))?;
                }
                ShimEvent::Exited { code } => {
                    write_message(send, &PtyMessage::Exit { code })
                        .await
                        .map_err(|e| other(&e))?;
                    let _ = tokio::io::AsyncWriteExt::shutdown(send).await;
                    return Ok(());
                }
                ShimEvent::Interrupted { before, discard } => {
                    write_message(send, &PtyMessage::Interrupted { before, discard })
                        .await
                        .map_err(|e| other(&e))?;
                }
                ShimEvent::Attached { .. } | ShimEvent::Status(_) | ShimEvent::Released => {}
            }
        }
    };
    let downward = async {
        loop {
            let request = match recv.next::<PtyMessage>().await {
                Ok(Some(PtyMessage::Data(bytes))) => ShimRequest::Input(bytes),
                Ok(Some(PtyMessage::Resize(size))) => ShimRequest::Resize(size),
                Ok(Some(PtyMessage::Ack { offset })) => ShimRequest::Ack { offset },
                Ok(Some(
                    PtyMessage::Exit { .. }
                    | PtyMessage::Start { .. }
                    | PtyMessage::Interrupted { .. },
                )) => {
                    return Err(TerminalError::Malformed(
                        "an output message sent down a terminal".to_string(),
                    ));
                }
                // The viewer detached; the shell keeps running.
                Ok(None) => return Ok(()),
                Err(ReadError::Malformed(error)) => {
                    return Err(TerminalError::Malformed(format!(
                        "malformed terminal message: {error}"
                    )));
                }
                Err(ReadError::Io(error)) => return Err(other(&error)),
            };
            input.send(&request).await.map_err(|e| other(&e))?;
        }
    };
    // Whichever ends first ends the relay: the shell exited, or the viewer went away.
    tokio::select! {
        result = upward => result,
        result = downward => result,
    }
}

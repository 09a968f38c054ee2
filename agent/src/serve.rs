//! `fogshell-agent serve`: the node agent as a service. It reaps sessions whose shim died,
//! then keeps the link to its coordinator up: reporting what the node is and runs, carrying
//! out the coordinator's commands through the runtime connector, and relaying terminals.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use fogshell_shared::frame::TermSize;
use fogshell_shared::node::{Arch, Health};
use fogshell_shared::wire::{
    Command, CommandError, CommandOutput, Heartbeat, Hello, NodeEvent, SUPPORTED_VERSIONS,
};
use fogshell_shared::{ErrorCode, NodeId, Resources, RuntimeDriver, SessionId, TrustTier};

use crate::config::NodeSection;
use crate::enroll::IdentityPaths;
use crate::link::{Link, LocalNode};
use crate::node_facts;
use crate::runtime::{PtyStreams, Runtime, RuntimeError, SessionRequest};
use crate::starts::Starts;
use crate::tpm::Tpm;
use fogshell_shared::admission::AdmissionPolicy;

/// The node id a node certificate (PEM) names.
pub fn node_id_from_certificate(path: &Path) -> Result<NodeId, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "{}: {e} (has this node joined? see `fogshell-agent join`)",
            path.display()
        )
    })?;
    let der = pem::parse(text)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .into_contents();
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let san = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .ok_or_else(|| format!("{} names no node", path.display()))?;
    san.value
        .general_names
        .iter()
        .find_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(name) => NodeId::new(*name).ok(),
            _ => None,
        })
        .ok_or_else(|| format!("{} names no node", path.display()))
}

/// What this agent reports: fixed facts from its configuration, live ones from the runtime
/// and `/proc`.
#[derive(Debug)]
pub struct AgentReport<R> {
    node_id: NodeId,
    node: NodeSection,
    arch: Arch,
    capacity: Resources,
    state_dir: PathBuf,
    runtime: R,
    /// The node's TPM, when it has one.
    tpm: Option<Tpm>,
    /// The coordinator's admission policy, from the last welcome; until one arrives no image
    /// runs (an image is checked against it before it starts).
    admission: Mutex<Option<AdmissionPolicy>>,
    /// Where image signatures and attestations are read.
    artifacts: fogshell_supply::registry::Registry,
    /// Sessions whose exit was already reported, so each is reported once.
    exits_reported: Mutex<BTreeSet<SessionId>>,
    /// When the node is under pressure.
    pressure: node_facts::Pressure,
    /// The pressure last reported, so a change is logged once.
    last_health: Mutex<Health>,
    /// The node's own edge gateway, as configured (off unless it listens).
    gateway: crate::config::GatewaySection,
    /// The gateway's keys and audit records, when it is on.
    edge: Option<Arc<crate::edge::EdgeState>>,
    /// Sessions being started, for viewers that reach the gateway first.
    starts: Starts,
}

impl<R: Runtime> AgentReport<R> {
    /// A report for `runtime` on this machine; opens the TPM the configuration names.
    pub fn new(
        node_id: NodeId,
        config: &crate::config::AgentConfig,
        state_dir: &Path,
        runtime: R,
    ) -> Result<Self, String> {
        let node = config.node.clone();
        let tpm = match &node.tpm {
            Some(tcti) => {
                let tpm = Tpm::open(tcti, state_dir)?;
                tracing::info!(
                    tcti,
                    ek_certificate = tpm.identity().ek_certificate.is_some(),
                    "TPM ready"
                );
                Some(tpm)
            }
            None => None,
        };
        let arch = Arch::from_rust_arch(std::env::consts::ARCH)
            .ok_or_else(|| format!("fogshell does not run on {}", std::env::consts::ARCH))?;
        Ok(Self {
            node_id,
            capacity: node_facts::capacity(node.session_slots),
            node,
            arch,
            state_dir: state_dir.to_path_buf(),
            runtime,
            tpm,
            admission: Mutex::new(None),
            artifacts: fogshell_supply::registry::Registry::new(config.registries.insecure.clone())
                .with_credentials(config.registries.credentials.clone()),
            exits_reported: Mutex::new(BTreeSet::new()),
            pressure: config.pressure,
            last_health: Mutex::new(Health::default()),
            edge: match config.gateway.listen {
                Some(_) => Some(Arc::new(crate::edge::EdgeState::open(state_dir)?)),
                None => None,
            },
            gateway: config.gateway.clone(),
            starts: Starts::default(),
        })
    }

    /// Pressure now; a change is logged with the figures behind it, since it decides whether
    /// the node gets new sessions.
    fn health_now(&self) -> Health {
        let room = node_facts::room(&self.state_dir);
        let health = self.pressure.judge(&room);
        let before =
            std::mem::replace(&mut *fogshell_shared::sync::lock(&self.last_health), health);
        if health != before {
            let (disk_size, disk_free) = room.disk.unwrap_or_default();
            let (memory_total, memory_available) = room.memory.unwrap_or_default();
            if health.is_healthy() {
                tracing::info!(
                    disk_free,
                    memory_available,
                    "no pressure: taking new sessions"
                );
            } else {
                tracing::warn!(
                    disk_pressure = health.disk_pressure,
                    disk_free,
                    disk_floor = self.pressure.disk_floor(disk_size),
                    memory_pressure = health.memory_pressure,
                    memory_available,
                    memory_floor = self.pressure.memory_floor(memory_total),
                    "under pressure: taking no new sessions (see [pressure] in the config)"
                );
            }
        }
        health
    }

    fn claimed_tier(&self) -> TrustTier {
        match self.runtime.driver() {
            // A host shell isolates nothing: whatever the configuration says.
            RuntimeDriver::Process => TrustTier::Dev,
            // A TPM is a claim to prove, not a grant: the coordinator decides.
            RuntimeDriver::Libcontainer if self.tpm.is_some() => TrustTier::Attested,
            RuntimeDriver::Libcontainer => self.node.trust_tier,
        }
    }
}

impl<R: Runtime + 'static> LocalNode for AgentReport<R> {
    async fn hello(&self) -> Hello {
        let running = self.runtime.list().await.unwrap_or_else(|error| {
            tracing::warn!(%error, "could not list sessions for the hello");
            Vec::new()
        });
        Hello {
            versions: SUPPORTED_VERSIONS,
            node_id: self.node_id.clone(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            arch: self.arch,
            region: self.node.region.clone(),
            labels: self.node.labels.clone(),
            claimed_tier: self.claimed_tier(),
            runtime_drivers: vec![self.runtime.driver()],
            capacity: self.capacity,
            running,
            tpm: self.tpm.as_ref().map(|t| t.identity().clone()),
            gateway_url: self.gateway.url(),
        }
    }

    fn welcomed(&self, welcome: &fogshell_shared::wire::Welcome) {
        *fogshell_shared::sync::lock(&self.admission) = Some(welcome.admission.clone());
    }

    fn edge(&self) -> Option<Arc<crate::edge::EdgeState>> {
        self.edge.clone()
    }

    fn starts(&self) -> tokio::sync::watch::Receiver<crate::starts::Board> {
        self.starts.watch()
    }

    async fn heartbeat(&self, seq: u64) -> Heartbeat {
        let records = self.runtime.host().records().unwrap_or_default();
        let running = self.runtime.list().await.unwrap_or_default();
        let limits: Vec<_> = records
            .iter()
            .filter(|r| running.iter().any(|s| s.session_id == r.session_id))
            .map(|r| r.limits)
            .collect();
        Heartbeat {
            seq,
            health: self.health_now(),
            free: node_facts::free(self.capacity, &limits),
            load: node_facts::load(),
            running: running.iter().map(|s| s.session_id).collect(),
        }
    }

    async fn events(&self) -> Vec<NodeEvent> {
        let mut events = Vec::new();
        let Ok(records) = self.runtime.host().records() else {
            return events;
        };
        let known: Vec<SessionId> = {
            let mut reported = fogshell_shared::sync::lock(&self.exits_reported);
            // Forget sessions that are gone, so the set stays as small as the node's sessions.
            reported.retain(|id| records.iter().any(|r| r.session_id == *id));
            reported.iter().copied().collect()
        };
        for record in records.iter().filter(|r| !known.contains(&r.session_id)) {
            if let Ok(status) = self.runtime.host().status(record.session_id).await
                && let Some(code) = status.exited
            {
                events.push(NodeEvent::SessionExited {
                    session_id: record.session_id,
                    code,
                });
            }
        }
        let mut reported = fogshell_shared::sync::lock(&self.exits_reported);
        reported.extend(
            events
                .iter()
                .map(|NodeEvent::SessionExited { session_id, .. }| *session_id),
        );
        events
    }

    async fn execute(&self, command: Command) -> Result<CommandOutput, CommandError> {
        match command {
            Command::Allocate(spec) => {
                let start = self.starts.begin(spec.session_id);
                let started = async {
                    self.admit(&spec.image_ref).await?;
                    let request = SessionRequest::from(&*spec);
                    self.runtime.allocate(&request).await.map_err(command_error)
                }
                .await;
                let runtime_ref = started.inspect_err(|e| start.failed(e.message.clone()))?;
                let image_digest = match self.runtime.driver() {
                    RuntimeDriver::Libcontainer => spec.image_ref.digest(),
                    RuntimeDriver::Process => None,
                };
                Ok(CommandOutput::Allocated {
                    runtime_ref,
                    image_digest,
                })
            }
            Command::Terminate { session_id } => {
                // A start in progress settles first: removing a session half made races its
                // shim, and the start would fail for a reason that is not one.
                let _ = self
                    .starts
                    .watch()
                    .wait_for(|board| !board.is_starting(session_id))
                    .await;
                self.runtime
                    .terminate(session_id)
                    .await
                    .map_err(command_error)?;
                self.starts.ended(session_id);
                Ok(CommandOutput::Terminated)
            }
            Command::EnforceLimits { session_id } => self
                .runtime
                .enforce_limits(session_id)
                .await
                .map(CommandOutput::Limits)
                .map_err(command_error),
            Command::List => self
                .runtime
                .list()
                .await
                .map(CommandOutput::Sessions)
                .map_err(command_error),
            Command::ActivateCredential(challenge) => {
                let secret = self.tpm()?.activate(challenge).await.map_err(tpm_error)?;
                Ok(CommandOutput::CredentialActivated { secret })
            }
            Command::Quote { nonce, pcrs } => self
                .tpm()?
                .quote(nonce, pcrs)
                .await
                .map(CommandOutput::Quote)
                .map_err(tpm_error),
        }
    }

    async fn attach(
        &self,
        session_id: SessionId,
        size: TermSize,
        from_offset: u64,
    ) -> Result<PtyStreams, CommandError> {
        self.runtime
            .attach_pty(session_id, size, from_offset)
            .await
            .map_err(command_error)
    }
}

impl<R> AgentReport<R> {
    /// Checks an image against the coordinator's policy again, here, from this node's
    /// registry view: an image the coordinator admitted but the registry now serves
    /// differently, or re-signed, is refused before it runs.
    async fn admit(&self, image: &fogshell_shared::ImageRef) -> Result<(), CommandError> {
        let policy = fogshell_shared::sync::lock(&self.admission)
            .clone()
            .ok_or_else(|| CommandError {
                code: ErrorCode::PolicyDenied,
                message: "no admission policy from the coordinator yet".into(),
            })?;
        match fogshell_supply::admit(&self.artifacts, &policy, image).await {
            Ok(verified) => {
                tracing::info!(%image, verified = %verified.summary(), "image admitted on the node");
                Ok(())
            }
            Err(denied) => {
                tracing::warn!(%image, rule_id = denied.refusal.rule_id(), reason = %denied.reason, "image refused on the node");
                Err(CommandError {
                    code: ErrorCode::PolicyDenied,
                    message: format!("{}: {}", denied.refusal.rule_id(), denied.reason),
                })
            }
        }
    }

    fn tpm(&self) -> Result<&Tpm, CommandError> {
        self.tpm.as_ref().ok_or_else(|| CommandError {
            code: ErrorCode::NotFound,
            message: "this node has no TPM".into(),
        })
    }
}

/// A TPM failure as the wire protocol reports it.
fn tpm_error(message: String) -> CommandError {
    CommandError {
        code: ErrorCode::Internal,
        message,
    }
}

/// A runtime failure as the wire protocol reports it.
fn command_error(error: RuntimeError) -> CommandError {
    let code = match &error {
        RuntimeError::NoSuchSession(_) => ErrorCode::NotFound,
        RuntimeError::AlreadyRunning(_) => ErrorCode::Conflict,
        RuntimeError::Refused(_) => ErrorCode::PolicyDenied,
        RuntimeError::Shim(_) | RuntimeError::Io { .. } => ErrorCode::Internal,
    };
    CommandError {
        code,
        message: error.to_string(),
    }
}

/// Runs the agent until the coordinator refuses it.
pub async fn serve<R: Runtime + 'static>(
    report: Arc<AgentReport<R>>,
    identity: &IdentityPaths,
    coordinator: &str,
) -> Result<(), String> {
    let (host, _) = coordinator
        .rsplit_once(':')
        .ok_or("the coordinator must be host:port")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let address: SocketAddr = tokio::net::lookup_host(coordinator)
        .await
        .map_err(|e| format!("resolving {coordinator}: {e}"))?
        .next()
        .ok_or_else(|| format!("{coordinator} resolves to no address"))?;
    let reaped = report
        .runtime
        .host()
        .reap_dead()
        .await
        .map_err(|e| e.to_string())?;
    if !reaped.is_empty() {
        tracing::info!(count = reaped.len(), "removed sessions whose shim was gone");
    }
    report.runtime.host().prepare_zygote();
    let _gateway = match &report.edge {
        Some(edge) => {
            let placement = fogshell_shared::Placement {
                node_id: report.node_id.clone(),
                region: report.node.region.clone(),
                trust_tier: report.claimed_tier(),
                reasons: vec![fogshell_shared::ReasonCode::UserPathDirect],
            };
            let running = crate::gateway::start(
                &report.gateway,
                Arc::clone(&report),
                Arc::clone(edge),
                placement,
            )
            .await?;
            Some(tokio_util::task::AbortOnDropHandle::new(running.task))
        }
        None => None,
    };
    let link = Link::new(identity, address, host)?.with_max_terminals(report.node.max_terminals);
    tracing::info!(node_id = %report.node_id, %coordinator, "agent serving");
    Err(link.run(&report).await.to_string())
}

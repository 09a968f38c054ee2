//! The control plane: sessions from creation to their end, and what the fabric reports about
//! nodes. The HTTP layer ([`crate::api`]) authenticates and translates; every decision is
//! made and recorded here.
//!
//! Each state change is committed together with its audit event before anyone is told of it.
//! Transitions follow [`SessionStatus::can_become`]; a change that lost a race (the session
//! ended meanwhile) is dropped, never forced.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fogshell_shared::api::{AttachInfo, CreateSessionRequest, CreateSessionResponse};
use fogshell_shared::audit::{Actor, AuditEntry, AuditEvent, Outcome, TerminationCause};
use fogshell_shared::frame::TermSize;
use fogshell_shared::ids::LabelValue;
use fogshell_shared::placement::{
    LatencyTable, NoPlacement, PlacementHint, PlacementRequest, place,
};
use fogshell_shared::profile::{Profile, Profiles, TrustLoss};
use fogshell_shared::wire::edge::{EdgeEvent, EdgeRecord};
use fogshell_shared::wire::{
    AllocateSpec, Command, CommandOutput, Hello, LimitKind, NodeEvent, RunningSession,
};
use fogshell_shared::{
    ErrorCode, ImageRef, NodeId, Placement, Secret, SessionId, SessionStatus, TenantId, Timestamp,
    TrustTier,
};
use futures_util::FutureExt as _;
use tokio::sync::broadcast;
use tracing::Instrument as _;

use fogshell_gateway::viewers::{Full, ViewerSlot};

use crate::auth::Principal;
use crate::auth::attach::AttachTokens;
use crate::clock::now;
use crate::error::{ApiError, evidence_path};
use crate::fabric::FabricHooks;
use crate::fabric::nodes::{Links, Terminal};
use crate::fleet::Fleet;
use crate::store::{Batch, EdgeCursor, SessionRecord, Store};

/// How long a node may take to start a session (an image pull included).
pub const ALLOCATE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node may take to end one.
pub const TERMINATE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long after a shell exits by itself its shim is released: viewers get to read the
/// last output and the exit status first.
const RELEASE_AFTER_EXIT: Duration = Duration::from_secs(1);
/// How often the TTL reaper looks for expired sessions.
pub const REAP_INTERVAL: Duration = Duration::from_secs(1);
/// How often every running session's limits are read back from its node, unless configured
/// otherwise (`serve --limits-check-interval`).
pub const LIMITS_CHECK_INTERVAL: Duration = Duration::from_secs(60);
/// How long a node may take to read a session's limits back.
const LIMITS_TIMEOUT: Duration = Duration::from_secs(10);

/// When `POST /v1/sessions` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Respond {
    /// Once the node runs the session; a failed start is the `POST`'s error. The default.
    WhenRunning,
    /// Once the session is placed and recorded (`Prefer: respond-async`, RFC 7240): the node
    /// starts it meanwhile and the gateways hold its terminal until it runs, so the client's
    /// round trip and the node's start overlap. A failed start is the session's `failed`
    /// status, told to its terminal.
    WhenPlaced,
}

/// Which images sessions may run.
#[derive(Debug, Clone)]
pub struct ImagePolicy {
    /// The image a session gets when it names none; pinned by digest.
    pub default_image: ImageRef,
    /// Development mode: a request may name the default image by tag, which resolves to its
    /// pinned digest. Every other tag is refused in every mode.
    pub dev_mode: bool,
}

/// What placement is configured with, beyond the fleet's own view.
#[derive(Debug, Clone, Default)]
pub struct PlacementPolicy {
    /// Region-to-region round trips for clients that measured none.
    pub latency: LatencyTable,
    /// Each tenant's jurisdictions (node label `jurisdiction`); a tenant not listed may run
    /// anywhere.
    pub jurisdictions: BTreeMap<TenantId, Vec<LabelValue>>,
}

impl PlacementPolicy {
    /// From the command line's `--region-latency A/B=MS` and `--tenant-jurisdiction T=J`.
    pub fn from_flags(latencies: &[String], jurisdictions: &[String]) -> Result<Self, String> {
        let mut policy = Self::default();
        for entry in latencies {
            policy
                .latency
                .add_entry(entry)
                .map_err(|e| format!("--region-latency {e}"))?;
        }
        for entry in jurisdictions {
            let bad = |why: String| {
                format!("--tenant-jurisdiction {entry:?}: {why} (want TENANT=JURISDICTION)")
            };
            let (tenant, jurisdiction) =
                entry.split_once('=').ok_or_else(|| bad("no `=`".into()))?;
            let tenant: TenantId = tenant.parse().map_err(|e| bad(format!("{e}")))?;
            let jurisdiction: LabelValue = jurisdiction.parse().map_err(|e| bad(format!("{e}")))?;
            policy
                .jurisdictions
                .entry(tenant)
                .or_default()
                .push(jurisdiction);
        }
        Ok(policy)
    }
}

/// A session's lifecycle change, as the gateway hears of it: committed first, told after.
#[derive(Debug, Clone)]
pub struct SessionChange {
    /// The session.
    pub session_id: SessionId,
    /// Its new status.
    pub status: SessionStatus,
    /// Where it runs now.
    pub placement: Placement,
    /// Why, when the change is not the usual course (a lost node, a failed failover).
    pub reason: Option<String>,
}

/// How many lifecycle changes a slow gateway may fall behind before it must re-read the
/// store.
const CHANGE_BACKLOG: usize = 1024;

/// The control plane's state.
pub struct ControlPlane {
    store: Arc<dyn Store>,
    fleet: Arc<Fleet>,
    links: Arc<Links>,
    attach: Arc<AttachTokens>,
    profiles: Profiles,
    images: ImagePolicy,
    admission: Arc<crate::admission::Admission>,
    placement: PlacementPolicy,
    /// `ws://host:port` or `wss://host:port`: where clients reach the gateway.
    public_ws: String,
    /// Where browser pages may open terminals from.
    console_origins: Vec<String>,
    /// Lifecycle changes, for attached terminals.
    changes: broadcast::Sender<SessionChange>,
    /// Serialises read-check-write of session rows (held only around store calls).
    transitions: Mutex<()>,
    /// Starts (creates and failovers) this process is waiting for: a node's hello settles
    /// every other `pending` or `resuming` session on it.
    in_flight: Arc<Mutex<BTreeSet<SessionId>>>,
    /// The relay's viewers, per session and tenant.
    viewers: Arc<fogshell_gateway::viewers::Viewers>,
    /// How long a relay viewer may stay silent.
    viewer_silence: Duration,
}

/// A start this process is waiting for, until dropped.
#[derive(Debug)]
struct InFlight {
    set: Arc<Mutex<BTreeSet<SessionId>>>,
    session_id: SessionId,
}

impl InFlight {
    fn new(set: &Arc<Mutex<BTreeSet<SessionId>>>, session_id: SessionId) -> Self {
        fogshell_shared::sync::lock(set).insert(session_id);
        Self {
            set: Arc::clone(set),
            session_id,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        fogshell_shared::sync::lock(&self.set).remove(&self.session_id);
    }
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("public_ws", &self.public_ws)
            .finish_non_exhaustive()
    }
}

fn random_session_id() -> Result<SessionId, ApiError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(ApiError::internal)?;
    Ok(SessionId::from_random_bytes(bytes))
}

/// `placement.decided` for `session_id`, with its reason codes.
fn placement_decided(
    tenant: Option<&TenantId>,
    session_id: SessionId,
    placement: &Placement,
) -> AuditEntry {
    entry(
        tenant,
        Actor::System,
        Outcome::Success,
        AuditEvent::PlacementDecided {
            session_id,
            node_id: placement.node_id.clone(),
            region: placement.region.clone(),
            trust_tier: placement.trust_tier,
            reasons: placement.reasons.clone(),
        },
    )
}

/// A node as the actor of an audit event.
fn node_actor(node_id: &NodeId) -> Actor {
    Actor::Node {
        node_id: node_id.clone(),
    }
}

fn user(principal: &Principal) -> Actor {
    Actor::User {
        subject: principal.subject.clone(),
    }
}

fn entry(
    tenant: Option<&TenantId>,
    actor: Actor,
    outcome: Outcome,
    event: AuditEvent,
) -> AuditEntry {
    AuditEntry {
        at: now(),
        tenant: tenant.cloned(),
        actor,
        outcome,
        event,
    }
}

/// What the control plane is configured with.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// The profiles sessions may ask for.
    pub profiles: Profiles,
    /// Which images sessions run.
    pub images: ImagePolicy,
    /// How placement ranks nodes.
    pub placement: PlacementPolicy,
    /// `ws://host:port` or `wss://host:port`: where clients reach the relay.
    pub public_ws: String,
    /// How long an attach token opens a terminal.
    pub attach_token_ttl: Duration,
    /// The origins of the consoles whose pages may open terminals (the coordinator's own
    /// first); nodes' gateways get them in the welcome.
    pub console_origins: Vec<String>,
    /// How many viewers a session, and a tenant, may have at the relay at once.
    pub viewer_limits: fogshell_gateway::viewers::ViewerLimits,
    /// How long a viewer at the relay may stay silent (pongs included) before it is dropped.
    pub viewer_silence: Duration,
}

impl ControlPlane {
    /// A control plane over `store`, placing on `fleet`, commanding through `links`, checking
    /// images with `admission`.
    pub fn new(
        store: Arc<dyn Store>,
        fleet: Arc<Fleet>,
        links: Arc<Links>,
        admission: Arc<crate::admission::Admission>,
        config: ControlConfig,
    ) -> Result<Self, String> {
        let ControlConfig {
            profiles,
            images,
            placement,
            public_ws,
            attach_token_ttl,
            console_origins,
            viewer_limits,
            viewer_silence,
        } = config;
        if !images.default_image.is_pinned() {
            return Err(format!(
                "the default image {} is not pinned by digest",
                images.default_image
            ));
        }
        Ok(Self {
            store,
            fleet,
            links,
            attach: Arc::new(AttachTokens::new(attach_token_ttl, now())?),
            profiles,
            images,
            admission,
            placement,
            public_ws,
            console_origins,
            changes: broadcast::channel(CHANGE_BACKLOG).0,
            transitions: Mutex::new(()),
            in_flight: Arc::default(),
            viewers: fogshell_gateway::viewers::Viewers::new(viewer_limits),
            viewer_silence,
        })
    }

    /// How long a viewer at the relay may stay silent (pongs included) before it is dropped.
    pub fn viewer_silence(&self) -> Duration {
        self.viewer_silence
    }

    /// The attach-token keys (the fabric publishes them to nodes).
    pub fn attach_tokens(&self) -> &Arc<AttachTokens> {
        &self.attach
    }

    /// The origins browser pages may open terminals from.
    pub fn console_origins(&self) -> &[String] {
        &self.console_origins
    }

    /// The coordinator's relay as a base WebSocket URL (`wss://host:port`).
    pub fn relay_ws_url(&self) -> &str {
        &self.public_ws
    }

    /// The store (for the API's reads).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The fleet (for the API's reads).
    pub fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }

    /// The session profiles.
    pub fn profiles(&self) -> &Profiles {
        &self.profiles
    }

    /// Every session's lifecycle changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<SessionChange> {
        self.changes.subscribe()
    }

    /// Runs placement for `session` of `tenant`; the chosen node holds the profile's share for
    /// it until the node reports it or it ends.
    fn decide(
        &self,
        session: SessionId,
        tenant: &TenantId,
        profile: &Profile,
        hint: Option<&PlacementHint>,
        failover_from: Option<&NodeId>,
    ) -> Result<Placement, NoPlacement> {
        let request = PlacementRequest {
            profile,
            hint,
            jurisdictions: self
                .placement
                .jurisdictions
                .get(tenant)
                .map_or(&[], Vec::as_slice),
            latency: &self.placement.latency,
            failover_from,
        };
        self.fleet
            .place(session, profile.limits(), Instant::now(), |nodes| {
                place(&request, nodes)
            })
    }

    /// Records a refusal as `policy.denied` and returns the error that points at it.
    pub fn deny(
        &self,
        tenant: Option<&TenantId>,
        actor: Actor,
        code: ErrorCode,
        rule_id: &str,
        message: String,
        subject: Option<String>,
    ) -> ApiError {
        tracing::info!(rule_id, %message, "policy.denied");
        let event = AuditEvent::PolicyDenied {
            rule_id: rule_id.into(),
            reason: message.clone(),
            subject,
        };
        match self.store.commit(Batch::events([entry(
            tenant,
            actor,
            Outcome::Denied,
            event,
        )])) {
            Ok(records) => {
                let mut error = ApiError::new(code, message);
                if let Some(record) = records.first() {
                    error.0 = error.0.with_evidence(evidence_path(&record.id));
                }
                error
            }
            Err(error) => ApiError::internal(error),
        }
    }

    fn resolve_image(
        &self,
        principal: &Principal,
        asked: Option<&ImageRef>,
    ) -> Result<ImageRef, ApiError> {
        let Some(asked) = asked else {
            return Ok(self.images.default_image.clone());
        };
        if asked.is_pinned() {
            return Ok(asked.clone());
        }
        let default = &self.images.default_image;
        let names_default =
            asked.registry() == default.registry() && asked.repository() == default.repository();
        if self.images.dev_mode && names_default {
            return Ok(default.clone());
        }
        Err(self.deny(
            Some(&principal.tenant),
            user(principal),
            ErrorCode::ImageNotPinned,
            "image.unpinned",
            format!("{asked} is not pinned by digest (name it as repository@sha256:…)"),
            Some(asked.to_string()),
        ))
    }

    /// `POST /v1/sessions`: place, record, allocate on the node, hand out an attach token.
    /// `respond` says whether the answer waits for the node to run the session.
    pub async fn create_session(
        self: &Arc<Self>,
        principal: &Principal,
        request: CreateSessionRequest,
        respond: Respond,
    ) -> Result<CreateSessionResponse, ApiError> {
        request
            .validate()
            .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e))?;
        let Some(profile) = self.profiles.get(&request.profile).cloned() else {
            return Err(self.deny(
                Some(&principal.tenant),
                user(principal),
                ErrorCode::UnknownProfile,
                "profile.unknown",
                format!("there is no profile {:?}", request.profile.as_str()),
                Some(request.profile.to_string()),
            ));
        };
        let image_ref = self.resolve_image(principal, request.image_ref.as_ref())?;
        let (verified, cached) = self.admission.check(&image_ref).await.map_err(|denied| {
            self.deny(
                Some(&principal.tenant),
                user(principal),
                ErrorCode::PolicyDenied,
                denied.refusal.rule_id(),
                format!("{image_ref}: {}", denied.reason),
                Some(image_ref.to_string()),
            )
        })?;
        let session_id = random_session_id()?;
        let placement = self
            .decide(
                session_id,
                &principal.tenant,
                &profile,
                request.placement_hint.as_ref(),
                None,
            )
            .map_err(|none| {
                self.deny(
                    Some(&principal.tenant),
                    user(principal),
                    ErrorCode::NoCapacity,
                    "placement.no_node",
                    none.to_string(),
                    Some(request.profile.to_string()),
                )
            })?;
        let span = tracing::info_span!("session.create", %session_id, tenant = %principal.tenant, node_id = %placement.node_id, ?respond);
        async move {
            // Before the row exists: a node's hello must not settle a start still under way.
            let in_flight = InFlight::new(&self.in_flight, session_id);
            let created_at = now();
            let session = SessionRecord {
                session_id,
                tenant: principal.tenant.clone(),
                owner: principal.subject.clone(),
                status: SessionStatus::Pending,
                profile: request.profile.clone(),
                image_ref: image_ref.clone(),
                placement: placement.clone(),
                created_at,
                expires_at: created_at
                    .plus_seconds(request.ttl_seconds)
                    .ok_or_else(|| {
                        ApiError::new(ErrorCode::InvalidRequest, "ttl_seconds too large")
                    })?,
                runtime_ref: None,
                exit_code: None,
                placement_hint: request.placement_hint.clone(),
            };
            let tenant = Some(&principal.tenant);
            self.store
                .commit(Batch {
                    edge_cursor: None,
                    sessions: vec![session.clone()],
                    events: vec![
                        entry(
                            tenant,
                            user(principal),
                            Outcome::Success,
                            AuditEvent::SessionCreated {
                                session_id,
                                profile: request.profile.clone(),
                                ttl_seconds: request.ttl_seconds,
                                image_ref: image_ref.clone(),
                            },
                        ),
                        placement_decided(tenant, session_id, &placement),
                        entry(
                            tenant,
                            Actor::System,
                            Outcome::Success,
                            AuditEvent::ImageAdmitted {
                                session_id,
                                image_ref: image_ref.clone(),
                                verified: verified.summary(),
                                cached,
                            },
                        ),
                    ],
                })
                // Never recorded: nothing else will give the node's share back.
                .inspect_err(|_| self.fleet.ended(&placement.node_id, session_id, None))?;
            let spec = AllocateSpec {
                session_id,
                tenant: principal.tenant.clone(),
                profile: request.profile.clone(),
                limits: profile.limits(),
                network: profile.network,
                placement: placement.clone(),
                image_ref: image_ref.clone(),
            };
            let attach = self.attach_info(&session)?;
            let start = Arc::clone(self).start_on_node(session, spec, in_flight);
            match respond {
                Respond::WhenRunning => start.await?,
                Respond::WhenPlaced => {
                    // Whatever happens now is the session's status (and its evidence).
                    tokio::spawn(start.map(|_| ()).in_current_span());
                }
            }
            tracing::info!(ws_url = %attach.ws_url, "session answered");
            Ok(CreateSessionResponse {
                session_id,
                attach,
                placement,
            })
        }
        .instrument(span)
        .await
    }

    /// Has the session's node start it, and records how that went: `running`, or `failed`
    /// (the error the `POST` answers when it waited). A session that moved on meanwhile (a
    /// `DELETE`, or its node lost and the session placed elsewhere) keeps its new state, and
    /// what the node started late is removed there.
    async fn start_on_node(
        self: Arc<Self>,
        mut session: SessionRecord,
        spec: AllocateSpec,
        _in_flight: InFlight,
    ) -> Result<(), ApiError> {
        let session_id = session.session_id;
        let node_id = session.node_id().clone();
        let result = self.allocate_on(&node_id, spec).await;
        // Only the start this call made may settle the session.
        let still_starting_here = |stored: &SessionRecord| {
            stored.status == SessionStatus::Pending && stored.node_id() == &node_id
        };
        let tenant = session.tenant.clone();
        let image_ref = session.image_ref.clone();
        match result {
            Ok(CommandOutput::Allocated {
                runtime_ref,
                image_digest,
            }) => {
                let event = entry(
                    Some(&tenant),
                    node_actor(&node_id),
                    Outcome::Success,
                    AuditEvent::RuntimeAllocated {
                        session_id,
                        node_id: node_id.clone(),
                        image_digest,
                    },
                );
                session.runtime_ref = Some(runtime_ref);
                if self.transition_if(
                    &mut session,
                    still_starting_here,
                    SessionStatus::Running,
                    vec![event],
                    None,
                )? {
                    // The contract's enforce_limits, off the answer's path.
                    let control = Arc::clone(&self);
                    tokio::spawn(
                        async move { control.check_limits(session, true).await }.in_current_span(),
                    );
                } else {
                    tracing::info!(status = %session.status, "the session moved on while it started: removing what the node started");
                    self.release_on_node(&node_id, session_id).await;
                }
                Ok(())
            }
            Ok(other) => {
                self.fail_start(
                    &mut session,
                    still_starting_here,
                    format!("unexpected answer to allocate: {other:?}"),
                )?;
                Err(ApiError::internal(
                    "a node answered allocate with something else",
                ))
            }
            Err(error) => {
                tracing::warn!(code = error.code.as_str(), message = %error.message, "allocation failed");
                self.fail_start(&mut session, still_starting_here, error.message.clone())?;
                if error.code == ErrorCode::Timeout {
                    // The node may still finish starting it: remove what it makes.
                    self.release_on_node(&node_id, session_id).await;
                }
                if error.code == ErrorCode::PolicyDenied {
                    // The node's own admission check refused the image (its registry now
                    // serves something the policy does not admit): evidence, as any refusal.
                    let (rule_id, reason) = error
                        .message
                        .split_once(": ")
                        .filter(|(rule, _)| {
                            rule.starts_with("admission.") || rule.starts_with("image.")
                        })
                        .unwrap_or(("node.refused", error.message.as_str()));
                    return Err(self.deny(
                        Some(&tenant),
                        node_actor(&node_id),
                        ErrorCode::PolicyDenied,
                        rule_id,
                        format!("node {node_id} refused {image_ref}: {reason}"),
                        Some(image_ref.to_string()),
                    ));
                }
                let code = match error.code {
                    ErrorCode::Timeout | ErrorCode::NodeUnavailable => error.code,
                    _ => ErrorCode::NoCapacity,
                };
                Err(ApiError::new(
                    code,
                    format!("the node could not start the session: {}", error.message),
                ))
            }
        }
    }

    /// The runtime contract's `allocate` on `node_id`, over its link.
    async fn allocate_on(
        &self,
        node_id: &NodeId,
        spec: AllocateSpec,
    ) -> Result<CommandOutput, fogshell_shared::wire::CommandError> {
        match self.links.get(node_id) {
            Some(link) => {
                link.request(Command::Allocate(Box::new(spec)), ALLOCATE_TIMEOUT)
                    .await
            }
            None => Err(fogshell_shared::wire::CommandError {
                code: ErrorCode::NodeUnavailable,
                message: format!("node {node_id} is not connected"),
            }),
        }
    }

    /// Moves a session whose start failed to `failed`, if `allowed` by its stored row.
    fn fail_start(
        &self,
        session: &mut SessionRecord,
        allowed: impl Fn(&SessionRecord) -> bool,
        reason: String,
    ) -> Result<(), ApiError> {
        let event = entry(
            Some(&session.tenant),
            Actor::System,
            Outcome::Failure,
            AuditEvent::RuntimeAllocated {
                session_id: session.session_id,
                node_id: session.node_id().clone(),
                image_digest: None,
            },
        );
        tracing::info!(session_id = %session.session_id, %reason, "session failed to start");
        self.transition_if(
            session,
            allowed,
            SessionStatus::Failed,
            vec![event],
            Some(reason),
        )?;
        Ok(())
    }

    /// Moves `session` to `next` with `events`, if the stored row still allows it. `session`
    /// is refreshed from the store first; returns whether the change was made.
    fn transition(
        &self,
        session: &mut SessionRecord,
        next: SessionStatus,
        events: Vec<AuditEntry>,
    ) -> Result<bool, ApiError> {
        self.transition_because(session, next, events, None)
    }

    /// [`Self::transition`], telling attached terminals `reason`. Moving to `resuming` also
    /// stores the caller's (new) placement.
    fn transition_because(
        &self,
        session: &mut SessionRecord,
        next: SessionStatus,
        events: Vec<AuditEntry>,
        reason: Option<String>,
    ) -> Result<bool, ApiError> {
        self.transition_if(session, |_| true, next, events, reason)
    }

    /// [`Self::transition_because`], only if the stored row is `allowed` too.
    fn transition_if(
        &self,
        session: &mut SessionRecord,
        allowed: impl Fn(&SessionRecord) -> bool,
        next: SessionStatus,
        events: Vec<AuditEntry>,
        reason: Option<String>,
    ) -> Result<bool, ApiError> {
        let _guard = fogshell_shared::sync::lock(&self.transitions);
        let stored = self
            .store
            .session(session.session_id)?
            .ok_or_else(|| ApiError::internal("a session vanished from the store"))?;
        if !stored.status.can_become(next) || !allowed(&stored) {
            *session = stored;
            return Ok(false);
        }
        let mut updated = stored;
        updated.status = next;
        if session.runtime_ref.is_some() {
            updated.runtime_ref = session.runtime_ref.clone();
        }
        if session.exit_code.is_some() {
            updated.exit_code = session.exit_code;
        }
        if next == SessionStatus::Resuming {
            // A failover's new placement; nothing else moves a session.
            updated.placement = session.placement.clone();
        }
        self.store.commit(Batch {
            edge_cursor: None,
            sessions: vec![updated.clone()],
            events,
        })?;
        if next.is_final() {
            let limits = self.profiles.get(&updated.profile).map(Profile::limits);
            self.fleet
                .ended(updated.node_id(), updated.session_id, limits);
        }
        // Nobody listening is fine.
        let _ = self.changes.send(SessionChange {
            session_id: updated.session_id,
            status: next,
            placement: updated.placement.clone(),
            reason,
        });
        *session = updated;
        Ok(true)
    }

    /// A fresh attach token for `session` and the user's best path to its terminal: the
    /// node's own gateway when it has one the client can reach (the relay is then the
    /// fallback), else the coordinator's relay.
    fn attach_info(&self, session: &SessionRecord) -> Result<AttachInfo, ApiError> {
        let session_id = session.session_id;
        let (token, expires_at) = self
            .attach
            .mint(session_id, session.node_id(), now())
            .map_err(ApiError::internal)?;
        let pty = |base: &str| format!("{base}/v1/sessions/{session_id}/pty");
        let relay = pty(&self.public_ws);
        let direct = self.fleet.view(session.node_id()).and_then(|node| {
            let path =
                fogshell_shared::placement::user_path(&node, session.placement_hint.as_ref());
            match (path, node.gateway_url) {
                (fogshell_shared::placement::UserPath::Direct { .. }, Some(url)) => Some(pty(&url)),
                _ => None,
            }
        });
        let (ws_url, fallback_ws_url) = match direct {
            Some(direct) => (direct, Some(relay)),
            None => (relay, None),
        };
        Ok(AttachInfo {
            ws_url,
            fallback_ws_url,
            token: Secret::new(token),
            expires_at,
        })
    }

    /// A session of the caller's tenant; another tenant's is "not found", never "forbidden".
    pub fn session_of(
        &self,
        principal: &Principal,
        session_id: SessionId,
    ) -> Result<SessionRecord, ApiError> {
        match self.store.session(session_id)? {
            Some(session) if session.tenant == principal.tenant => Ok(session),
            _ => Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no session {session_id}"),
            )),
        }
    }

    /// `POST /v1/sessions/{id}/attach`: a fresh attach token for a running session.
    pub fn reattach(
        &self,
        principal: &Principal,
        session_id: SessionId,
    ) -> Result<AttachInfo, ApiError> {
        let session = self.session_of(principal, session_id)?;
        if session.status.is_final() {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("session {session_id} is {}", session.status),
            ));
        }
        self.attach_info(&session)
    }

    /// `DELETE /v1/sessions/{id}`: ends the session on its node and records it. Ending an
    /// ended session succeeds (the client's retry after a lost answer must not fail).
    pub async fn terminate(
        &self,
        principal: &Principal,
        session_id: SessionId,
    ) -> Result<(), ApiError> {
        let session = self.session_of(principal, session_id)?;
        self.end(session, TerminationCause::UserRequest, user(principal))
            .await
    }

    async fn end(
        &self,
        session: SessionRecord,
        cause: TerminationCause,
        actor: Actor,
    ) -> Result<(), ApiError> {
        self.end_because(session, cause, actor, None).await
    }

    /// [`Self::end`], telling attached terminals `reason`.
    async fn end_because(
        &self,
        mut session: SessionRecord,
        cause: TerminationCause,
        actor: Actor,
        reason: Option<String>,
    ) -> Result<(), ApiError> {
        if session.status.is_final() {
            return Ok(());
        }
        let span = tracing::info_span!("session.terminate", session_id = %session.session_id, tenant = %session.tenant, node_id = %session.node_id(), ?cause);
        async move {
            let event = entry(
                Some(&session.tenant),
                actor,
                Outcome::Success,
                AuditEvent::SessionTerminated {
                    session_id: session.session_id,
                    cause,
                },
            );
            if !self.transition_because(
                &mut session,
                SessionStatus::Terminated,
                vec![event],
                reason,
            )? {
                return Ok(());
            }
            self.release_on_node(session.node_id(), session.session_id)
                .await;
            tracing::info!("session terminated");
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Tells the node to remove an ended session. A node that cannot be reached is fenced
    /// when it reconnects (its hello lists the session, the store says it ended).
    async fn release_on_node(&self, node_id: &NodeId, session_id: SessionId) {
        let Some(link) = self.links.get(node_id) else {
            tracing::info!(%node_id, "node not connected; the session is fenced when it returns");
            return;
        };
        match link
            .request(Command::Terminate { session_id }, TERMINATE_TIMEOUT)
            .await
        {
            Ok(_) => {}
            Err(error) if error.code == ErrorCode::NotFound => {}
            Err(error) => {
                tracing::warn!(%node_id, message = %error.message, "the node could not remove the session")
            }
        }
    }

    /// Commits what `node_id`'s edge gateway decided (direct attaches, refusals) to the
    /// chain, each record exactly once, and returns how far the node's records are in. The
    /// tenant comes from the session as stored, never from the node.
    pub fn edge_audit(&self, node_id: &NodeId, records: Vec<EdgeRecord>) -> Result<u64, ApiError> {
        let through = self.store.edge_audit_through(node_id)?;
        let fresh: Vec<EdgeRecord> = records.into_iter().filter(|r| r.seq > through).collect();
        let (Some(first), Some(last)) = (fresh.first(), fresh.last()) else {
            return Ok(through);
        };
        let cursor = EdgeCursor {
            node_id: node_id.clone(),
            first: first.seq,
            last: last.seq,
        };
        let actor = || node_actor(node_id);
        let tenant_of = |session_id: Option<SessionId>| {
            session_id
                .and_then(|id| self.store.session(id).ok().flatten())
                .map(|session| session.tenant)
        };
        let events = fresh
            .into_iter()
            .map(|record| {
                let (tenant, outcome, event) = match record.event {
                    EdgeEvent::Attached { session_id } => (
                        tenant_of(Some(session_id)),
                        Outcome::Success,
                        AuditEvent::SessionAttached {
                            session_id,
                            node_id: node_id.clone(),
                        },
                    ),
                    EdgeEvent::Refused {
                        rule_id,
                        reason,
                        session_id,
                    } => (
                        tenant_of(session_id),
                        Outcome::Denied,
                        AuditEvent::PolicyDenied {
                            rule_id,
                            reason: format!("{reason} (edge record {node_id}/{})", record.seq),
                            subject: session_id.map(|id| id.to_string()),
                        },
                    ),
                };
                AuditEntry {
                    at: record.at,
                    tenant,
                    actor: actor(),
                    outcome,
                    event,
                }
            })
            .collect();
        self.store.commit(Batch {
            sessions: Vec::new(),
            events,
            edge_cursor: Some(cursor),
        })?;
        // Read back: a concurrent link of the same node may have committed further.
        Ok(self.store.edge_audit_through(node_id)?)
    }

    /// Checks an attach token for `session_id`: the refusal's rule id and words, for the
    /// gateway to answer (and record within its address's budget).
    pub fn check_attach_token(
        &self,
        token: &str,
        session_id: SessionId,
    ) -> Result<(), (&'static str, String)> {
        self.attach
            .verify(token, session_id, now())
            .map(|_| ())
            .map_err(|refused| (refused.rule_id(), refused.to_string()))
    }

    /// A place for one more viewer of `session_id` at the relay, held as long as the viewer
    /// is; `Ok(Err(…))` names the session's tenant and the limit reached when there is none.
    pub fn admit_viewer(
        &self,
        session_id: SessionId,
    ) -> Result<Result<ViewerSlot, (TenantId, Full)>, ApiError> {
        let tenant = self
            .store
            .session(session_id)?
            .map(|session| session.tenant)
            .ok_or_else(|| {
                ApiError::new(ErrorCode::NotFound, format!("no session {session_id}"))
            })?;
        Ok(self
            .viewers
            .admit(session_id, Some(&tenant))
            .map_err(|full| (tenant, full)))
    }

    /// Opens a terminal on the node the session runs on now, output from `from_offset`: for
    /// a viewer whose token was checked, and again for it after a failover or the node's
    /// return.
    pub async fn connect_terminal(
        &self,
        session_id: SessionId,
        size: TermSize,
        from_offset: u64,
    ) -> Result<(SessionRecord, Terminal), ApiError> {
        let session = self.started(session_id).await?;
        if session.status != SessionStatus::Running {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("session {session_id} is {}", session.status),
            ));
        }
        let link = self.links.get(session.node_id()).ok_or_else(|| {
            ApiError::new(
                ErrorCode::NodeUnavailable,
                format!("node {} is not connected", session.node_id()),
            )
        })?;
        let terminal = link
            .open_terminal(session_id, size, from_offset)
            .await
            .map_err(|e| ApiError::new(e.code, e.message))?;
        self.store.commit(Batch::events([entry(
            Some(&session.tenant),
            Actor::System,
            Outcome::Success,
            AuditEvent::SessionAttached {
                session_id,
                node_id: session.node_id().clone(),
            },
        )]))?;
        Ok((session, terminal))
    }

    /// The session as stored, once it is no longer `pending`: a client told of it before its
    /// node ran it (`Prefer: respond-async`) attaches while the node is starting it.
    async fn started(&self, session_id: SessionId) -> Result<SessionRecord, ApiError> {
        let missing = || ApiError::new(ErrorCode::NotFound, format!("no session {session_id}"));
        // Listening before reading: a change between the two is not missed.
        let mut changes = self.changes.subscribe();
        let mut session = self.store.session(session_id)?.ok_or_else(missing)?;
        let deadline = tokio::time::Instant::now() + ALLOCATE_TIMEOUT;
        while session.status == SessionStatus::Pending {
            match tokio::time::timeout_at(deadline, changes.recv()).await {
                Ok(Ok(change)) if change.session_id != session_id => continue,
                // Its change, or changes missed: the store says where it is.
                Ok(Ok(_) | Err(broadcast::error::RecvError::Lagged(_))) => {
                    session = self.store.session(session_id)?.ok_or_else(missing)?;
                }
                Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => break,
            }
        }
        Ok(session)
    }

    /// Ends every session whose TTL ran out; returns how many.
    pub async fn reap_expired(&self, at: Timestamp) -> Result<usize, ApiError> {
        let expired: Vec<_> = self
            .store
            .live_sessions()?
            .into_iter()
            .filter(|s| s.expires_at <= at)
            .collect();
        let count = expired.len();
        for session in expired {
            self.end(session, TerminationCause::Expired, Actor::System)
                .await?;
        }
        Ok(count)
    }

    /// `enforce_limits` (interfaces-v1 §1.4) for `session`: its node reads the limits back
    /// from the session's cgroup. A session whose limits do not hold is ended (cause
    /// `limits_not_enforced`) — except on a `process`-driver node, a development host shell
    /// that enforces none and says so. `record_success`: audit a check that passed too (the
    /// first one, after the start); later ones that pass are only logged, so a fleet's
    /// periodic checks do not flood the chain.
    pub async fn check_limits(
        &self,
        session: SessionRecord,
        record_success: bool,
    ) -> Result<(), ApiError> {
        let session_id = session.session_id;
        let node_id = session.node_id().clone();
        let Some(link) = self.links.get(&node_id) else {
            return Ok(());
        };
        let report = match link
            .request(Command::EnforceLimits { session_id }, LIMITS_TIMEOUT)
            .await
        {
            Ok(CommandOutput::Limits(report)) => report,
            Ok(other) => {
                tracing::warn!(%session_id, ?other, "the node answered enforce_limits with something else");
                return Ok(());
            }
            // Gone, or the node cannot say now: nothing to judge (reconciliation and loss
            // detection deal with the node).
            Err(error) => {
                tracing::info!(%session_id, %node_id, message = %error.message, "limits not checked");
                return Ok(());
            }
        };
        let mismatches: Vec<String> = report
            .mismatches
            .iter()
            .map(|m| {
                // "No limit" is the type's largest value: u64 for memory, u32 for the others.
                let unlimited = m.found == u64::MAX
                    || (m.limit != LimitKind::Memory && m.found == u64::from(u32::MAX));
                let found = if unlimited {
                    "unlimited".to_owned()
                } else {
                    m.found.to_string()
                };
                format!("{:?}: wanted {}, found {found}", m.limit, m.wanted).to_lowercase()
            })
            .collect();
        let held = mismatches.is_empty();
        tracing::info!(%session_id, %node_id, held, ?mismatches, "limits checked");
        let host_shell = session
            .runtime_ref
            .as_ref()
            .is_some_and(|r| r.driver == fogshell_shared::RuntimeDriver::Process);
        // After the first check, only limits that stopped holding are news for the chain.
        if !record_success && (held || host_shell) {
            return Ok(());
        }
        let event = entry(
            Some(&session.tenant),
            node_actor(&node_id),
            if held {
                Outcome::Success
            } else {
                Outcome::Failure
            },
            AuditEvent::LimitsChecked {
                session_id,
                node_id: node_id.clone(),
                mismatches: mismatches.clone(),
            },
        );
        self.store.commit(Batch::events([event]))?;
        if held || host_shell {
            return Ok(());
        }
        let reason = format!(
            "node {node_id} does not hold the session's limits ({}); the session is ended",
            mismatches.join("; ")
        );
        tracing::warn!(%session_id, %reason, "limits not enforced");
        self.end_because(
            session,
            TerminationCause::LimitsNotEnforced,
            Actor::System,
            Some(reason),
        )
        .await
    }

    /// Reads back every running session's limits each `interval`, until the task is aborted.
    pub async fn check_limits_forever(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let running: Vec<SessionRecord> = match self.store.live_sessions() {
                Ok(sessions) => sessions
                    .into_iter()
                    .filter(|s| s.status == SessionStatus::Running)
                    .collect(),
                Err(error) => {
                    tracing::warn!(%error, "limits check");
                    continue;
                }
            };
            for session in running {
                if let Err(error) = self.check_limits(session, false).await {
                    tracing::warn!(%error, "limits check");
                }
            }
        }
    }

    /// Runs the TTL reaper until the task is aborted.
    pub async fn reap_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(REAP_INTERVAL);
        loop {
            tick.tick().await;
            if let Err(error) = self.reap_expired(now()).await {
                tracing::warn!(%error, "TTL reaper");
            }
        }
    }

    fn shell_exited(
        self: &Arc<Self>,
        node_id: &NodeId,
        session_id: SessionId,
        code: i32,
    ) -> Result<(), ApiError> {
        let Some(mut session) = self.store.session(session_id)? else {
            return Ok(());
        };
        // A node speaks only for the sessions placed on it.
        if session.node_id() != node_id {
            tracing::warn!(%node_id, %session_id, "a node reported a session it does not hold");
            return Ok(());
        }
        session.exit_code = Some(code);
        let event = entry(
            Some(&session.tenant),
            node_actor(node_id),
            Outcome::Success,
            AuditEvent::SessionTerminated {
                session_id,
                cause: TerminationCause::ShellExited,
            },
        );
        self.transition(&mut session, SessionStatus::Terminated, vec![event])?;
        let this = Arc::clone(self);
        let node_id = node_id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(RELEASE_AFTER_EXIT).await;
            this.release_on_node(&node_id, session_id).await;
        });
        Ok(())
    }

    fn reconcile(&self, hello: &Hello) -> Result<Vec<SessionId>, ApiError> {
        let node_id = &hello.node_id;
        let mut fence = Vec::new();
        for running in &hello.running {
            match self.store.session(running.session_id)? {
                Some(mut session) if session.node_id() == node_id && !session.status.is_final() => {
                    if self.start_orphaned(&session) {
                        self.adopt(&mut session, running)?;
                    } else if session.status == SessionStatus::Interrupted {
                        let reason = format!("node {node_id} is back");
                        self.transition_because(
                            &mut session,
                            SessionStatus::Running,
                            Vec::new(),
                            Some(reason),
                        )?;
                        tracing::info!(session_id = %session.session_id, "session back with its node");
                    }
                }
                // Ended, moved elsewhere, or never heard of: it must not run here.
                _ => fence.push(running.session_id),
            }
        }
        // Sessions the node should run but does not report died while it was away.
        for mut session in self.store.live_sessions()? {
            let reported = hello
                .running
                .iter()
                .any(|r| r.session_id == session.session_id);
            let here = session.node_id() == node_id;
            if here && !reported && self.start_orphaned(&session) {
                // Its start was cut off (the coordinator that asked for it stopped): the
                // node may still be making it, so it is fenced there too.
                tracing::info!(session_id = %session.session_id, %node_id, "a start cut off: failed, and removed from the node");
                let reason = format!(
                    "its start on node {node_id} was cut off (the coordinator restarted) and the node does not run it"
                );
                self.fail_start(
                    &mut session,
                    |stored| {
                        stored.status == SessionStatus::Pending
                            || stored.status == SessionStatus::Resuming
                    },
                    reason,
                )?;
                fence.push(session.session_id);
                continue;
            }
            if here
                && !reported
                && matches!(
                    session.status,
                    SessionStatus::Running | SessionStatus::Interrupted
                )
            {
                let event = entry(
                    Some(&session.tenant),
                    node_actor(node_id),
                    Outcome::Failure,
                    AuditEvent::FailoverFailed {
                        session_id: session.session_id,
                        from_node: node_id.clone(),
                        reason: "the node came back without the session".into(),
                    },
                );
                self.transition(&mut session, SessionStatus::Failed, vec![event])?;
            }
        }
        Ok(fence)
    }

    /// Whether `session` is starting (`pending`, or `resuming` after a failover) with no one
    /// here waiting for the start: the coordinator that asked for it stopped before the
    /// node's answer. The node's hello settles it.
    fn start_orphaned(&self, session: &SessionRecord) -> bool {
        matches!(
            session.status,
            SessionStatus::Pending | SessionStatus::Resuming
        ) && !fogshell_shared::sync::lock(&self.in_flight).contains(&session.session_id)
    }

    /// Takes over a session whose start outlived the coordinator that asked for it: its node
    /// runs it, so it is `running`, with the `runtime.allocated` it never got.
    fn adopt(&self, session: &mut SessionRecord, running: &RunningSession) -> Result<(), ApiError> {
        let node_id = session.node_id().clone();
        let image_digest = match running.runtime_ref.driver {
            fogshell_shared::RuntimeDriver::Libcontainer => session.image_ref.digest(),
            fogshell_shared::RuntimeDriver::Process => None,
        };
        let event = entry(
            Some(&session.tenant),
            node_actor(&node_id),
            Outcome::Success,
            AuditEvent::RuntimeAllocated {
                session_id: session.session_id,
                node_id: node_id.clone(),
                image_digest,
            },
        );
        let status = session.status;
        session.runtime_ref = Some(running.runtime_ref.clone());
        let reason = format!(
            "node {node_id} runs it (its start outlived the coordinator that asked for it)"
        );
        if self.transition_if(
            session,
            |stored| stored.status == status && stored.node_id() == &node_id,
            SessionStatus::Running,
            vec![event],
            Some(reason),
        )? {
            tracing::info!(session_id = %session.session_id, %node_id, "adopted a start cut off");
        }
        Ok(())
    }

    /// A node was lost: its sessions are interrupted, then each is moved to the nearest
    /// trusted cloud node (in the background, all at once).
    fn lost(self: &Arc<Self>, node_id: &NodeId) -> Result<(), ApiError> {
        let mut interrupted = Vec::new();
        for mut session in self.store.live_sessions()? {
            let was_running = session.status == SessionStatus::Running;
            if session.node_id() == node_id
                && matches!(
                    session.status,
                    SessionStatus::Running | SessionStatus::Pending
                )
                && self.transition_because(
                    &mut session,
                    SessionStatus::Interrupted,
                    Vec::new(),
                    Some(format!("node {node_id} was lost")),
                )?
            {
                interrupted.push((session, was_running));
            }
        }
        self.store.commit(Batch::events([entry(
            None,
            Actor::System,
            Outcome::Success,
            AuditEvent::NodeLost {
                node_id: node_id.clone(),
                sessions: u32::try_from(interrupted.len()).unwrap_or(u32::MAX),
            },
        )]))?;
        // A session still starting has nothing to resume: its creation fails and the client
        // may try again; only running ones move.
        for (session, _) in interrupted
            .into_iter()
            .filter(|(_, was_running)| *was_running)
        {
            let this = Arc::clone(self);
            let span = tracing::info_span!("session.failover", session_id = %session.session_id, tenant = %session.tenant, from_node = %node_id);
            tokio::spawn(
                async move {
                    if let Err(error) = this.fail_over(session).await {
                        tracing::error!(%error, "failover");
                    }
                }
                .instrument(span),
            );
        }
        Ok(())
    }

    /// A node lost `attested`: ends its sessions whose profile demands `attested` and does
    /// not say `keep`, telling their terminals why.
    async fn trust_lost(&self, node_id: &NodeId, reason: &str) -> Result<(), ApiError> {
        for session in self.store.live_sessions()? {
            let profile = self.profiles.get(&session.profile);
            let demands_attested = profile.is_some_and(|p| {
                p.min_trust_tier == TrustTier::Attested && p.on_trust_loss == TrustLoss::Terminate
            });
            if session.node_id() != node_id || !demands_attested || session.status.is_final() {
                continue;
            }
            let why = format!(
                "node {node_id} is no longer attested ({reason}); profile {} requires it",
                session.profile
            );
            tracing::warn!(session_id = %session.session_id, %why, "ending a session");
            self.end_because(
                session,
                TerminationCause::TrustLost,
                Actor::System,
                Some(why),
            )
            .await?;
        }
        Ok(())
    }

    /// Moves an interrupted session to a cloud node: same image, same profile, a fresh shell.
    /// With nowhere to go it stays interrupted, so the node's return can still bring it back;
    /// a failed start on the new node fails it.
    async fn fail_over(&self, mut session: SessionRecord) -> Result<(), ApiError> {
        let from = session.node_id().clone();
        let session_id = session.session_id;
        let tenant_id = session.tenant.clone();
        let tenant = Some(&tenant_id);
        let record_failure = |reason: &str| {
            entry(
                tenant,
                Actor::System,
                Outcome::Failure,
                AuditEvent::FailoverFailed {
                    session_id,
                    from_node: from.clone(),
                    reason: reason.to_owned(),
                },
            )
        };
        let fail = |session: &mut SessionRecord, reason: String| {
            self.transition_because(
                session,
                SessionStatus::Failed,
                vec![record_failure(&reason)],
                Some(reason),
            )
        };
        let Some(profile) = self.profiles.get(&session.profile).cloned() else {
            let reason = format!("its profile {} no longer exists", session.profile);
            fail(&mut session, reason)?;
            return Ok(());
        };
        let placement = match self.decide(
            session_id,
            &session.tenant,
            &profile,
            session.placement_hint.as_ref(),
            Some(&from),
        ) {
            Ok(placement) => placement,
            Err(none) => {
                let reason = format!("{none}; waiting for node {from} to return");
                tracing::warn!(%reason, "no failover target");
                self.store
                    .commit(Batch::events([record_failure(&reason)]))?;
                let _ = self.changes.send(SessionChange {
                    session_id,
                    status: SessionStatus::Interrupted,
                    placement: session.placement.clone(),
                    reason: Some(reason),
                });
                return Ok(());
            }
        };
        let to = placement.node_id.clone();
        session.placement = placement.clone();
        let _in_flight = InFlight::new(&self.in_flight, session_id);
        let started = vec![
            entry(
                tenant,
                Actor::System,
                Outcome::Success,
                AuditEvent::FailoverStarted {
                    session_id,
                    from_node: from.clone(),
                },
            ),
            placement_decided(tenant, session_id, &placement),
        ];
        if !self.transition_because(
            &mut session,
            SessionStatus::Resuming,
            started,
            Some(format!(
                "node {from} was lost; starting the session on {to}"
            )),
        )? {
            // It ended, or its node came back first: the new node's share is not needed.
            self.fleet.ended(&to, session_id, None);
            return Ok(());
        }
        tracing::info!(to_node = %to, "failing over");
        let spec = AllocateSpec {
            session_id,
            tenant: session.tenant.clone(),
            profile: session.profile.clone(),
            limits: profile.limits(),
            network: profile.network,
            placement: placement.clone(),
            image_ref: session.image_ref.clone(),
        };
        let result = self.allocate_on(&to, spec).await;
        match result {
            Ok(CommandOutput::Allocated {
                runtime_ref,
                image_digest,
            }) => {
                session.runtime_ref = Some(runtime_ref);
                let events = vec![
                    entry(
                        tenant,
                        node_actor(&to),
                        Outcome::Success,
                        AuditEvent::RuntimeAllocated {
                            session_id,
                            node_id: to.clone(),
                            image_digest,
                        },
                    ),
                    entry(
                        tenant,
                        Actor::System,
                        Outcome::Success,
                        AuditEvent::FailoverCompleted {
                            session_id,
                            from_node: from.clone(),
                            to_node: to.clone(),
                        },
                    ),
                ];
                let reason = format!("node {from} was lost; a new shell runs on {to}");
                if self.transition_because(
                    &mut session,
                    SessionStatus::Running,
                    events,
                    Some(reason),
                )? {
                    tracing::info!(to_node = %to, "failed over");
                    self.check_limits(session.clone(), true).await?;
                } else {
                    // Ended meanwhile (DELETE, TTL): remove what was just started.
                    self.release_on_node(&to, session_id).await;
                }
            }
            other => {
                let reason = match other {
                    Ok(answer) => format!("node {to} answered allocate with {answer:?}"),
                    Err(error) => format!("node {to} could not start it: {}", error.message),
                };
                tracing::warn!(%reason, "failover failed");
                fail(&mut session, reason)?;
                self.release_on_node(&to, session_id).await;
            }
        }
        Ok(())
    }
}

/// The fabric's reports, handled by the control plane.
#[derive(Debug, Clone)]
pub struct Hooks(pub Arc<ControlPlane>);

impl FabricHooks for Hooks {
    fn node_connected(&self, hello: &Hello) -> Vec<SessionId> {
        self.0.reconcile(hello).unwrap_or_else(|error| {
            tracing::error!(%error, "reconciling a node");
            Vec::new()
        })
    }

    fn node_event(&self, node_id: &NodeId, event: NodeEvent) {
        match event {
            NodeEvent::SessionExited { session_id, code } => {
                if let Err(error) = self.0.shell_exited(node_id, session_id, code) {
                    tracing::error!(%error, "recording a shell's exit");
                }
            }
        }
    }

    fn node_lost(&self, node_id: &NodeId) {
        if let Err(error) = self.0.lost(node_id) {
            tracing::error!(%error, "recording a lost node");
        }
    }

    fn trust_lost(&self, node_id: &NodeId, reason: &str) {
        let control = Arc::clone(&self.0);
        let node_id = node_id.clone();
        let reason = reason.to_owned();
        tokio::spawn(async move {
            if let Err(error) = control.trust_lost(&node_id, &reason).await {
                tracing::error!(%error, "ending sessions of a node that lost attested");
            }
        });
    }

    fn edge_audit(&self, node_id: &NodeId, records: Vec<EdgeRecord>) -> Option<u64> {
        self.0
            .edge_audit(node_id, records)
            .inspect_err(|error| tracing::error!(%error, "recording a node's edge audit"))
            .ok()
    }

    fn record(&self, outcome: Outcome, event: AuditEvent) {
        let actor = match &event {
            AuditEvent::NodeEnrolled { node_id } | AuditEvent::NodeConnected { node_id, .. } => {
                node_actor(node_id)
            }
            _ => Actor::System,
        };
        if let Err(error) = self
            .0
            .store
            .commit(Batch::events([entry(None, actor, outcome, event)]))
        {
            tracing::error!(%error, "recording an audit event");
        }
    }
}

//! The runtime connector (interfaces-v1.md §1.4): `allocate`, `attach_pty`, `enforce_limits`,
//! `terminate` — one trait, two drivers.
//!
//! Both drivers run each session's shell under its own shim ([`crate::shim`]); they differ in
//! what the shim starts (a host process or a libcontainer container) and in how limits are
//! enforced. [`ShimHost`] is the part they share: session directories, starting shims,
//! finding them again after an agent restart.

pub mod bundle;
pub mod cgroup;
pub mod container;
pub mod process;
mod shim_host;

use std::future::Future;

use fogshell_shared::frame::TermSize;
use fogshell_shared::wire::{AllocateSpec, LimitsReport, RunningSession};
use fogshell_shared::{
    ImageRef, ProfileName, ResourceLimits, RuntimeDriver, RuntimeRef, SessionId, TenantId,
    TrustTier,
};

pub use shim_host::ShimHost;

use crate::shim::client::{ShimReader, ShimWriter};

/// Why a runtime operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No session with that id runs on this node.
    #[error("session {0} does not run on this node")]
    NoSuchSession(SessionId),
    /// The session already runs here.
    #[error("session {0} already runs on this node")]
    AlreadyRunning(SessionId),
    /// The request cannot be served by this driver or node (wrong driver, bad image…).
    #[error("{0}")]
    Refused(String),
    /// The shim did not start or stopped answering.
    #[error("shim: {0}")]
    Shim(String),
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl RuntimeError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

/// What a driver needs to start a session: the wire protocol's `Allocate` command, or an
/// operator's `fogshell-agent run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRequest {
    /// The session.
    pub session_id: SessionId,
    /// Whose.
    pub tenant: TenantId,
    /// The profile's name (for logs and labels).
    pub profile: ProfileName,
    /// The profile's limits.
    pub limits: ResourceLimits,
    /// Whether the container gets a network.
    pub network: bool,
    /// The trust tier placement chose this node for.
    pub trust_tier: TrustTier,
    /// The image, pinned by digest; the `process` driver runs the host's shell and needs none.
    pub image_ref: Option<ImageRef>,
    /// A command to run instead of the image's (or the host's) shell.
    pub command: Option<Vec<String>>,
}

impl From<&AllocateSpec> for SessionRequest {
    fn from(spec: &AllocateSpec) -> Self {
        Self {
            session_id: spec.session_id,
            tenant: spec.tenant.clone(),
            profile: spec.profile.clone(),
            limits: spec.limits,
            network: spec.network,
            trust_tier: spec.placement.trust_tier,
            image_ref: Some(spec.image_ref.clone()),
            command: None,
        }
    }
}

/// A live terminal: input and resizes go through `input`, output and the exit come from
/// `output` (as [`crate::shim::protocol::ShimEvent`]s).
#[derive(Debug)]
pub struct PtyStreams {
    /// Where the output starts (later than asked when the ring no longer holds it).
    pub from_offset: u64,
    /// Typing and resizing.
    pub input: ShimWriter,
    /// Output and the exit status.
    pub output: ShimReader,
}

/// The runtime connector contract.
pub trait Runtime: Send + Sync {
    /// Which driver this is.
    fn driver(&self) -> RuntimeDriver;

    /// `allocate(session_id, profile, placement, image_ref) -> runtime_ref`: starts the
    /// session's shell.
    fn allocate(
        &self,
        request: &SessionRequest,
    ) -> impl Future<Output = Result<RuntimeRef, RuntimeError>> + Send;

    /// The session directories and shims the driver runs its sessions under.
    fn host(&self) -> &ShimHost;

    /// `attach_pty(runtime_ref) -> streams`: connects a viewer to the shell's terminal,
    /// replaying output from `from_offset`. The same for every driver: the shim holds it.
    fn attach_pty(
        &self,
        session_id: SessionId,
        size: TermSize,
        from_offset: u64,
    ) -> impl Future<Output = Result<PtyStreams, RuntimeError>> + Send {
        self.host().attach(session_id, size, from_offset)
    }

    /// `enforce_limits(runtime_ref) -> ok/fail`: the limits in force, read back, against those
    /// asked for.
    fn enforce_limits(
        &self,
        session_id: SessionId,
    ) -> impl Future<Output = Result<LimitsReport, RuntimeError>> + Send;

    /// `terminate(runtime_ref)`: kills the shell and removes everything of the session (the
    /// shim deletes the container; a dead shim's leftovers are cleaned up instead).
    fn terminate(
        &self,
        session_id: SessionId,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        self.host().release(session_id)
    }

    /// The sessions this node runs (after a restart too).
    fn list(&self) -> impl Future<Output = Result<Vec<RunningSession>, RuntimeError>> + Send {
        self.host().running()
    }
}

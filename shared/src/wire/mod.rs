//! The agent ↔ coordinator protocol, spoken over one QUIC connection with mutual TLS.
//!
//! - The **control stream** (the first bidirectional stream, opened by the agent) carries
//!   [`AgentMessage`]s up and [`CoordinatorMessage`]s down: the agent's [`Hello`] first, the
//!   coordinator's [`Welcome`] (or [`Refusal`]) next, then heartbeats from the agent and
//!   commands from the coordinator, each answered by a [`Response`] with the same id.
//! - Each attached terminal gets a **PTY stream** (bidirectional, opened by the coordinator):
//!   a [`PtyStreamHeader`] first, then [`PtyMessage`]s both ways.
//!
//! Every message is postcard, length-prefixed ([`codec`]). Types validate themselves while they
//! decode (node ids, terminal sizes, image references), so a decoded message is well formed.

pub mod attest;
pub mod codec;
pub mod edge;
pub mod join;
pub mod samples;
#[cfg(feature = "io")]
pub mod stream;
pub mod transport;
pub mod version;

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::frame::TermSize;
use crate::ids::{NodeId, ProfileName, Region, RuntimeRef, SessionId, TenantId};
use crate::image::{Digest, ImageRef};
use crate::node::{
    Arch, Health, Labels, Load, ResourceLimits, Resources, RuntimeDriver, TrustTier,
};
use crate::placement::Placement;
use crate::timestamp::Timestamp;

pub use codec::{Decoder, MAX_MESSAGE_BYTES, WireError, decode_body, encode};
pub use version::{ALPN, BuildInfo, PROTOCOL_VERSION, SUPPORTED_VERSIONS, VersionRange, negotiate};

/// What an agent sends on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum AgentMessage {
    /// First message on every connection.
    Hello(Hello),
    /// Periodic state report.
    Heartbeat(Heartbeat),
    /// The answer to a [`Request`].
    Response(Response),
    /// Something happened on the node that the coordinator did not ask about.
    Event(NodeEvent),
    /// The node certificate nears its end: a PKCS#10 request (DER) for the next one, for the
    /// node's key. Answered with [`CoordinatorMessage::Renewed`].
    Renew {
        /// The certificate signing request.
        #[serde(with = "serde_bytes")]
        csr_der: Vec<u8>,
    },
    /// What the node's edge gateway decided that the coordinator has not acknowledged yet
    /// ([`edge`]), oldest first. Answered with [`CoordinatorMessage::EdgeAuditAck`].
    EdgeAudit(Vec<edge::EdgeRecord>),
}

/// What a coordinator sends on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum CoordinatorMessage {
    /// The hello was accepted.
    Welcome(Welcome),
    /// The hello was refused; the coordinator closes the connection after sending this.
    Refusal(Refusal),
    /// A command for the agent.
    Request(Request),
    /// The answer to [`AgentMessage::Renew`].
    Renewed(Renewed),
    /// The attach-token keys changed (a rotation): the node's gateway takes tokens signed by
    /// these from now on.
    AttachKeys(Vec<crate::attach_token::AttachKey>),
    /// Heartbeat `seq` (0: the hello) was accepted: the node's lease runs `lease_ms` from
    /// when it sent it ([`crate::lease`]).
    LeaseGrant {
        /// The heartbeat's sequence number.
        seq: u64,
    },
    /// The node's edge audit records up to and including `through` are in the chain.
    EdgeAuditAck {
        /// The highest sequence number committed.
        through: u64,
    },
}

/// A renewal's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Renewed {
    /// The next node certificate (DER): the same node id, a fresh validity.
    Issued {
        /// The certificate.
        #[serde(with = "serde_bytes")]
        certificate_der: Vec<u8>,
    },
    /// Not renewed; the current certificate stays until it expires.
    Refused {
        /// Why.
        message: String,
    },
}

/// An agent introducing itself. Sent on every (re)connection, so it also carries what runs on
/// the node, for the coordinator to reconcile against what it believes runs there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Hello {
    /// Protocol versions the agent speaks.
    pub versions: VersionRange,
    /// The node's id; must equal the one in its TLS certificate.
    pub node_id: NodeId,
    /// The agent's release (`0.1.0`), for the operator's eyes.
    pub agent_version: String,
    /// CPU architecture.
    pub arch: Arch,
    /// Where the node stands.
    pub region: Region,
    /// Labels for locality filters.
    pub labels: Labels,
    /// The tier the agent's configuration claims. The coordinator decides the tier it
    /// believes: `attested` only after a quote verifies, never because a hello says so.
    pub claimed_tier: TrustTier,
    /// How the node can run sessions.
    pub runtime_drivers: Vec<RuntimeDriver>,
    /// Total resources offered to sessions.
    pub capacity: Resources,
    /// Sessions running on the node now (after a restart or a lost link).
    pub running: Vec<RunningSession>,
    /// The node's TPM keys, when it has a TPM: the coordinator binds the AK to the EK and
    /// asks for quotes, and grants `attested` only while they verify.
    pub tpm: Option<attest::TpmIdentity>,
    /// The node's own edge gateway, when it runs one: the base URL users reach it by
    /// (`wss://host:port`, [`edge::validate_gateway_url`]).
    pub gateway_url: Option<String>,
}

impl Hello {
    /// The longest `agent_version` accepted.
    pub const MAX_VERSION_TEXT: usize = 64;
    /// The most labels a node may carry.
    pub const MAX_LABELS: usize = 64;

    /// Checks bounds serde cannot express. The receiver calls this before acting on a hello.
    pub fn validate(&self) -> Result<(), WireError> {
        if self.agent_version.len() > Self::MAX_VERSION_TEXT {
            return Err(WireError::Malformed("agent_version too long".into()));
        }
        if self.labels.len() > Self::MAX_LABELS {
            return Err(WireError::Malformed("too many labels".into()));
        }
        if self.runtime_drivers.is_empty() {
            return Err(WireError::Malformed(
                "a node needs at least one runtime driver".into(),
            ));
        }
        if let Some(url) = &self.gateway_url {
            edge::validate_gateway_url(url)?;
        }
        self.tpm
            .as_ref()
            .map_or(Ok(()), attest::TpmIdentity::validate)
    }
}

/// A session an agent reports as running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct RunningSession {
    /// The session.
    pub session_id: SessionId,
    /// The agent's handle for it.
    pub runtime_ref: RuntimeRef,
    /// When it started on this node.
    pub started_at: Timestamp,
}

/// The coordinator's acceptance of a hello.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Welcome {
    /// The version both sides now speak.
    pub version: u16,
    /// How often the agent should send heartbeats, in milliseconds.
    pub heartbeat_interval_ms: u32,
    /// Sessions the agent reported that the coordinator has moved or ended elsewhere: the
    /// agent terminates them (fencing: never two live copies of one session).
    pub fence: Vec<SessionId>,
    /// The image admission policy: the agent checks every image against it again before it
    /// runs it (defense in depth against a registry that serves the node something else).
    pub admission: crate::admission::AdmissionPolicy,
    /// The public keys attach tokens are signed with (previous, current and next), so the
    /// node's edge gateway checks tokens itself, even while the link is down.
    pub attach_keys: Vec<crate::attach_token::AttachKey>,
    /// How long each grant lets the node serve users on its own, in milliseconds
    /// ([`crate::lease`]); the welcome grants the hello.
    pub lease_ms: u32,
    /// The origins (`https://host[:port]`) of the consoles whose pages may open terminals at
    /// the node's gateway; a browser's `Origin` must be one of them.
    pub console_origins: Vec<String>,
}

/// The coordinator's refusal of a hello.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Refusal {
    /// Why (`ECS_UNSUPPORTED_VERSION`, `ECS_POLICY_DENIED`, …).
    pub code: ErrorCode,
    /// In words, for the agent's log.
    pub message: String,
}

/// An agent's periodic report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Heartbeat {
    /// Increases by one each heartbeat on a connection; gaps show lost reports.
    pub seq: u64,
    /// Pressure on the node.
    pub health: Health,
    /// Resources still free for new sessions.
    pub free: Resources,
    /// Load average.
    pub load: Load,
    /// Sessions running now.
    pub running: Vec<SessionId>,
}

/// A command's correlation id, unique per connection.
pub type RequestId = u64;

/// A command from the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Request {
    /// Echoed in the response.
    pub id: RequestId,
    /// How long the coordinator waits for the answer, in milliseconds; the agent may give up
    /// on work it cannot finish by then.
    pub timeout_ms: u32,
    /// What to do.
    pub command: Command,
}

/// The runtime connector contract (interfaces-v1.md §1.4), as commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Command {
    /// `allocate(session_id, profile, placement, image_ref) -> runtime_ref`.
    Allocate(Box<AllocateSpec>),
    /// `terminate(runtime_ref)`: kill and delete the session's container and everything of it.
    Terminate {
        /// The session to end.
        session_id: SessionId,
    },
    /// `enforce_limits(runtime_ref) -> ok/fail`: read limits back from the cgroup and compare.
    EnforceLimits {
        /// The session to check.
        session_id: SessionId,
    },
    /// Which sessions run on the node.
    List,
    /// `TPM2_ActivateCredential` with the node's AK and EK: proves both keys live in one TPM.
    ActivateCredential(attest::CredentialChallenge),
    /// A `TPM2_Quote` by the AK over `pcrs`, qualified by `nonce` (freshness), with the PCR
    /// values.
    Quote {
        /// Fresh random bytes from the coordinator, at most [`attest::MAX_NONCE`].
        #[serde(with = "serde_bytes")]
        nonce: Vec<u8>,
        /// Which PCRs of the SHA-256 bank.
        pcrs: attest::PcrSet,
    },
}

/// Everything an agent needs to start a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct AllocateSpec {
    /// The session.
    pub session_id: SessionId,
    /// Whose it is (for labels, logs and audit on the node).
    pub tenant: TenantId,
    /// The profile's name.
    pub profile: ProfileName,
    /// The profile's limits, resolved by the coordinator so both sides enforce the same.
    pub limits: ResourceLimits,
    /// Whether the container gets a network (off unless the profile allows it).
    pub network: bool,
    /// Where placement put it (this node), with its reasons.
    pub placement: Placement,
    /// The image, pinned by digest.
    pub image_ref: ImageRef,
}

/// An agent's answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Response {
    /// The request's id.
    pub id: RequestId,
    /// What came of it.
    pub result: Result<CommandOutput, CommandError>,
}

/// A command's successful result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum CommandOutput {
    /// The session runs.
    Allocated {
        /// The agent's handle for it.
        runtime_ref: RuntimeRef,
        /// The digest of the image it runs (for `runtime.allocated`); `None` for the
        /// `process` driver, which runs a host shell.
        image_digest: Option<Digest>,
    },
    /// The session and all its traces are gone.
    Terminated,
    /// What the cgroup says about the session's limits and use.
    Limits(LimitsReport),
    /// The sessions the node runs.
    Sessions(Vec<RunningSession>),
    /// The secret `ActivateCredential` recovered.
    CredentialActivated {
        /// The credential's plaintext.
        #[serde(with = "serde_bytes")]
        secret: Vec<u8>,
    },
    /// A quote and the PCR values it covers.
    Quote(attest::QuoteEvidence),
}

/// A failed command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct CommandError {
    /// Why, as a code (`ECS_NOT_FOUND` for a session the node does not hold, …).
    pub code: ErrorCode,
    /// In words.
    pub message: String,
}

/// The result of `enforce_limits`: the limits read back from the cgroup, and current use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct LimitsReport {
    /// The limits as the cgroup holds them.
    pub applied: ResourceLimits,
    /// Limits that differ from those requested (empty means ok).
    pub mismatches: Vec<LimitMismatch>,
    /// What the session uses now; `None` when the driver cannot measure it (the `process`
    /// driver has no cgroup).
    pub usage: Option<Usage>,
}

impl LimitsReport {
    /// `ok` in the contract's `ok/fail`.
    pub fn is_ok(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// One limit that differs from what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct LimitMismatch {
    /// Which limit.
    pub limit: LimitKind,
    /// The value asked for.
    pub wanted: u64,
    /// The value found (`u64::MAX` for "unlimited").
    pub found: u64,
}

/// The limits a profile sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum LimitKind {
    /// CPU quota, thousandths of a core.
    Cpu,
    /// Memory, bytes.
    Memory,
    /// Processes.
    Pids,
}

/// A session's resource use, from its cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Usage {
    /// Memory in use, bytes.
    pub memory_bytes: u64,
    /// CPU time used since start, microseconds.
    pub cpu_usec: u64,
    /// Processes now.
    pub pids: u32,
    /// Processes the kernel killed for exceeding the memory limit, since start.
    pub oom_kills: u64,
}

/// Unsolicited news from a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum NodeEvent {
    /// A session's shell exited by itself.
    SessionExited {
        /// The session.
        session_id: SessionId,
        /// Its exit status.
        code: i32,
    },
}

/// Why a PTY stream was reset or stopped (QUIC application error codes on that stream).
pub mod pty_stream_code {
    /// A message on the stream did not decode.
    pub const MALFORMED: u32 = 1;
    /// The node does not hold the session, or could not attach to it.
    pub const REFUSED: u32 = 2;
}

/// The first message on a PTY stream, from the coordinator: which session to attach to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct PtyStreamHeader {
    /// The session whose terminal this stream carries.
    pub session_id: SessionId,
    /// The terminal's size at attach.
    pub size: TermSize,
    /// The output offset to start from: 0 for everything the node still holds, or where a
    /// gateway that lost its stream stopped, so it misses nothing and repeats nothing.
    pub from_offset: u64,
}

/// What flows on a PTY stream after the header: input and resizes down to the agent, output
/// and the exit status up to the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum PtyMessage {
    /// Terminal bytes: input (coordinator → agent) or output (agent → coordinator).
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The terminal's new size (coordinator → agent).
    Resize(TermSize),
    /// The shell exited (agent → coordinator); the stream ends after it.
    Exit {
        /// Exit status.
        code: i32,
    },
    /// The offset of the first output byte that follows (agent → coordinator, first on the
    /// stream). Above the header's `from_offset` when that much output already fell out of
    /// the node's buffer.
    Start {
        /// Offset in the session's output since the shell started.
        from_offset: u64,
    },
    /// Flow control (coordinator → agent): the viewer has consumed the session's output up to
    /// this offset. A viewer that acknowledges keeps the shell at most a small window ahead
    /// of it; one that never does is not waited for.
    Ack {
        /// Offset in the session's output of the first byte not yet consumed.
        offset: u64,
    },
    /// Input carrying Ctrl-C (0x03) reached the terminal (agent → coordinator), after all
    /// output before `before`. With `discard`, the tty took it as an interrupt and flushed its
    /// output (ISIG set, NOFLSH not): output before `before` that a viewer has not drawn yet
    /// is stale, as the tty's own buffer was.
    Interrupted {
        /// Offset of the first output byte written after the input.
        before: u64,
        /// Whether the terminal flushed its output.
        discard: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T>(message: &T)
    where
        T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let bytes = encode(message).unwrap();
        let mut decoder = Decoder::new();
        decoder.extend(&bytes);
        assert_eq!(decoder.next_message::<T>().unwrap().as_ref(), Some(message));
        decoder.finish().unwrap();
    }

    #[test]
    fn every_message_round_trips() {
        samples::hello().validate().unwrap();
        samples::agent_messages().iter().for_each(round_trip);
        samples::coordinator_messages().iter().for_each(round_trip);
        round_trip(&samples::pty_header());
        samples::pty_messages().iter().for_each(round_trip);
        let (request, responses) = samples::join_messages();
        round_trip(&request);
        responses.iter().for_each(round_trip);
    }

    #[test]
    fn samples_cover_every_variant() {
        // A new variant added without a sample fails to compile here.
        for m in samples::agent_messages() {
            match m {
                AgentMessage::Hello(_)
                | AgentMessage::Heartbeat(_)
                | AgentMessage::Event(_)
                | AgentMessage::Renew { .. }
                | AgentMessage::EdgeAudit(_) => {}
                AgentMessage::Response(r) => match r.result {
                    Ok(CommandOutput::Allocated { .. })
                    | Ok(CommandOutput::Terminated)
                    | Ok(CommandOutput::Limits(_))
                    | Ok(CommandOutput::Sessions(_))
                    | Ok(CommandOutput::CredentialActivated { .. })
                    | Ok(CommandOutput::Quote(_))
                    | Err(_) => {}
                },
            }
        }
        let kinds: std::collections::BTreeSet<_> = samples::coordinator_messages()
            .iter()
            .map(|m| match m {
                CoordinatorMessage::Welcome(_) => "welcome",
                CoordinatorMessage::Refusal(_) => "refusal",
                CoordinatorMessage::Renewed(Renewed::Issued { .. }) => "issued",
                CoordinatorMessage::Renewed(Renewed::Refused { .. }) => "renewal refused",
                CoordinatorMessage::AttachKeys(_) => "attach keys",
                CoordinatorMessage::EdgeAuditAck { .. } => "edge audit ack",
                CoordinatorMessage::LeaseGrant { .. } => "lease grant",
                CoordinatorMessage::Request(r) => match r.command {
                    Command::Allocate(_) => "allocate",
                    Command::Terminate { .. } => "terminate",
                    Command::EnforceLimits { .. } => "enforce_limits",
                    Command::List => "list",
                    Command::ActivateCredential(_) => "activate_credential",
                    Command::Quote { .. } => "quote",
                },
            })
            .collect();
        assert_eq!(kinds.len(), 13);
        assert_eq!(samples::agent_messages().len(), 12);
    }

    #[test]
    fn invalid_values_do_not_decode() {
        // A PTY header with a 0-column terminal: postcard ends it with the two varint u16s.
        let mut body = postcard::to_stdvec(&samples::pty_header()).unwrap();
        let len = body.len();
        body[len - 2] = 0; // cols 80 → 0 (rows 24 is the last byte)
        assert!(matches!(
            decode_body::<PtyStreamHeader>(&body),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn pty_data_is_compact() {
        // One tag byte, a varint length, then the bytes: no per-byte overhead for output.
        let body = postcard::to_stdvec(&PtyMessage::Data(vec![7; 100])).unwrap();
        assert_eq!(body.len(), 1 + 1 + 100);
    }

    #[test]
    fn hello_bounds_are_checked() {
        let mut hello = samples::hello();
        hello.agent_version = "x".repeat(65);
        assert!(hello.validate().is_err());
        hello.agent_version = "0.1.0".into();
        assert!(hello.validate().is_ok());
        hello.runtime_drivers.clear();
        assert!(hello.validate().is_err());
    }
}

//! # fogshell-shared
//!
//! The contract fogshell's agent and coordinator speak, and the pure logic around it. Like
//! `quinn-proto` under `quinn`, this crate does no I/O: no sockets, no files, no clock, no
//! randomness, no async runtime — except what the `io` feature adds for the binaries: the
//! framed stream reader (`wire::stream`) and atomic file writes (`files`). Everything else can be tested and fuzzed on plain bytes.
//!
//! - [`api`]: HTTP API bodies (`/v1/sessions`, `/v1/events`), pagination.
//! - [`error`]: the `ECS_…` error codes and the `{code, message, evidence_pointer}` body.
//! - [`frame`]: the WebSocket PTY frames the browser speaks.
//! - [`wire`]: the agent ↔ coordinator protocol over QUIC (postcard, length-prefixed).
//! - [`audit`]: audit events and the hash chain over them.
//! - [`session`]: the session lifecycle state machine.
//! - [`profile`]: named session profiles and the built-in `default`.
//! - [`placement`], [`node`], [`ids`], [`image`], [`timestamp`], [`secret`]: the vocabulary
//!   the others are written in.

pub mod admission;
pub mod api;
pub mod attach_token;
pub mod audit;
pub mod ctrl_c;
pub mod error;
#[cfg(feature = "io")]
pub mod files;
pub mod frame;
pub mod ids;
pub mod image;
pub mod lease;
pub mod node;
pub mod placement;
pub mod profile;
pub mod secret;
pub mod session;
pub mod sync;
pub mod timestamp;
pub mod wire;

pub use error::{ErrorBody, ErrorCode};
pub use ids::{NodeId, ProfileName, Region, RuntimeRef, SessionId, TenantId};
pub use image::{Digest, ImageRef};
pub use node::{ResourceLimits, Resources, RuntimeDriver, TrustTier};
pub use placement::{Placement, ReasonCode};
pub use secret::Secret;
pub use session::SessionStatus;
pub use timestamp::Timestamp;

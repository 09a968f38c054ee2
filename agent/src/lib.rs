//! `fogshell-agent`, the node agent, as a library: the binary (`main.rs`) is its CLI.
//!
//! - [`runtime`]: the runtime connector (`allocate`, `attach_pty`, `enforce_limits`,
//!   `terminate`) and its drivers.
//! - [`config`]: the agent's configuration file and its defaults.
//! - [`enroll`]: `fogshell-agent join`, enrollment with a pinned coordinator CA.
//! - [`image`]: the image store: blobs by digest, layers unpacked safely, once.
//! - [`serve`]: `fogshell-agent serve`, the agent as a service.
//! - [`shim`]: the per-session supervisor process that holds a shell's terminal.
//! - [`link`]: the QUIC link to the coordinator (hello, heartbeats, reconnects);
//!   [`node_facts`] is what it reports.
//! - [`run`]: `fogshell-agent run`, the operator's smoke test.
//! - [`gateway`]: the node's own edge gateway (the PTY endpoint for its sessions);
//!   [`edge`] keeps its attach keys and audit records.

pub mod clock;
pub mod config;
pub mod edge;
pub mod enroll;
pub mod gateway;
pub mod image;
pub mod link;
pub mod node_facts;
pub mod renew;
pub mod run;
pub mod runtime;
pub mod serve;
pub mod shim;
pub mod starts;
pub mod tpm;

/// Takes a mutex even when a thread panicked holding it ([`fogshell_shared::sync::lock`]).
pub(crate) use fogshell_shared::sync::lock;

//! `fogshell-coordinator`, the control plane, as a library: the binary (`main.rs`) is its CLI.
//!
//! - [`pki`]: the coordinator's certificate authority for node and server certificates.
//! - [`fabric`]: the QUIC endpoint; [`fabric::enroll`] serves enrollment.
//! - [`fleet`]: the node registry and its liveness (connected, disconnected, lost).
//! - [`join_tokens`]: single-use, expiring tokens that let a new node enroll.

pub mod fabric;
pub mod files;
pub mod fleet;
pub mod join_tokens;
pub mod pki;

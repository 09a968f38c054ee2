//! `fogshell-coordinator`, the control plane, as a library: the binary (`main.rs`) is its CLI.
//!
//! - [`api`]: the HTTP API, the WebSocket PTY gateway, the development issuer's routes.
//! - [`auth`]: OIDC access tokens, attach tokens, the development issuer.
//! - [`control`]: sessions from creation to end, and the fabric's reports.
//! - [`store`]: sessions and the hash-chained audit log (SQLite).
//! - [`pki`]: the coordinator's certificate authority for node and server certificates.
//! - [`fabric`]: the QUIC endpoint: enrollment, agent links, commands, terminal streams.
//! - [`fleet`]: the node registry and its liveness (connected, disconnected, lost).
//! - [`join_tokens`]: single-use, expiring tokens that let a new node enroll.

pub mod admission;
pub mod api;
pub mod attestation;
pub mod auth;
pub mod client;
pub mod clock;
pub mod control;
pub mod error;
pub mod fabric;
pub mod fleet;
pub mod image_cli;
pub mod join_tokens;
pub mod pki;
pub mod server;
pub mod store;

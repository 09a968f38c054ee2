//! Helpers for end-to-end tests: find the real binaries that `cargo build --workspace --bins`
//! made, and run them.
//!
//! The binaries belong to other packages, so cargo does not hand their paths to these tests
//! (`CARGO_BIN_EXE_*` covers only a package's own binaries). They sit in the target directory
//! beside the test executable's `deps/` folder; a missing one fails the test loudly.

pub mod api;
pub mod bench;
pub mod issuer;
pub mod netns;
pub mod openapi;
pub mod registry;
pub mod relay;
pub mod stack;
pub mod swtpm;
pub mod tcp_relay;
pub mod ws;

use std::path::PathBuf;
use std::process::{Command, Output};

/// The path of a workspace binary (`fogshell-agent`, `fogshell-coordinator`).
///
/// # Panics
/// When the binary has not been built: tests must fail, not skip, when a prerequisite is
/// missing.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it first with `cargo build --workspace --bins` \
         (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Runs a workspace binary with `args` to completion and returns what it did.
pub fn run(name: &str, args: &[&str]) -> Output {
    Command::new(binary(name))
        .args(args)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap_or_else(|e| panic!("could not start {name}: {e}"))
}

/// What `fogshell-coordinator serve` needs beyond `--listen` and `--data-dir` when a test
/// exercises only the QUIC fabric: the API on a free loopback port with the development
/// issuer, and a placeholder default image (no session is started), in dev mode (no
/// admission policy).
pub const FABRIC_ONLY_SERVE_ARGS: &[&str] = &[
    "--http",
    "127.0.0.1:0",
    "--plain-http",
    "--dev-issuer",
    "--dev",
    "--default-image",
    "local/none@sha256:0000000000000000000000000000000000000000000000000000000000000000",
];

//! What the agent and a session's shim say over the shim's Unix socket: length-prefixed
//! postcard, the same framing as the QUIC wire protocol (`fogshell_shared::wire::codec`).
//!
//! Any number of agent connections may attach at once (several people watching one
//! terminal); each gets the replay it asked for, then the same live output.

use std::path::PathBuf;

use fogshell_shared::SessionId;
use fogshell_shared::frame::TermSize;
use serde::{Deserialize, Serialize};

/// Agent → shim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShimRequest {
    /// Start receiving output from `from_offset` (what the ring still holds of it), then live.
    Attach {
        /// The viewer's terminal size.
        size: TermSize,
        /// The first output byte the viewer wants.
        from_offset: u64,
    },
    /// Bytes typed into the terminal.
    Input(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The viewer's terminal changed size.
    Resize(TermSize),
    /// Kill the shell (and the container): SIGKILL to everything in it.
    Kill,
    /// The agent has recorded the exit: remove the container and its files, and stop. The
    /// shim answers `Released` once nothing of the shell is left, then exits.
    Release,
    /// Ask how the shell is doing.
    Status,
    /// The viewer on this connection has consumed the output up to `offset`: the shim reads
    /// the terminal only while some acknowledging viewer is within the flow window.
    Ack {
        /// The first output offset not yet consumed.
        offset: u64,
    },
}

/// Shim → agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShimEvent {
    /// Attached; output follows from `from_offset`.
    Attached {
        /// Where the replayed output starts (later than asked if the ring lost the rest).
        from_offset: u64,
    },
    /// Terminal output starting at `offset`.
    Output {
        /// Offset of the first byte since the shell started.
        offset: u64,
        /// The bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// The shell exited with this status (128 + signal for a signal).
    Exited {
        /// Exit status.
        code: i32,
    },
    /// The answer to `Status`.
    Status(ShimStatus),
    /// Input carrying Ctrl-C (0x03) was written to the terminal after all output before
    /// `before`; with `discard`, the tty took it as an interrupt and flushed its output
    /// (`PtyMessage::Interrupted`).
    Interrupted {
        /// Offset of the first output byte read after the input was written.
        before: u64,
        /// Whether the terminal flushed its output.
        discard: bool,
    },
    /// The answer to `Release`: the shell and its container are gone, the socket is removed,
    /// and the shim is exiting. (A shim that dies first just closes the connection.)
    Released,
}

/// How a shim's shell is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimStatus {
    /// The shell's (or container init's) pid, as the host sees it.
    pub pid: i32,
    /// Its exit status once it has exited.
    pub exited: Option<i32>,
    /// Output bytes produced so far.
    pub output_end: u64,
}

/// What the shim runs, written by the agent as `spec.json` in the session's directory before
/// it starts the shim.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimSpec {
    /// The session.
    pub session_id: SessionId,
    /// The terminal size to start with.
    pub size: TermSize,
    /// What to start.
    pub child: ChildSpec,
}

/// The two ways a session's shell is started.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ChildSpec {
    /// A host process on a PTY (the `process` driver, development only).
    Process {
        /// Program and arguments.
        argv: Vec<String>,
        /// Working directory.
        cwd: PathBuf,
        /// Environment variables to set (on top of a minimal base).
        env: Vec<(String, String)>,
    },
    /// An OCI container through libcontainer (the production driver).
    Container {
        /// The bundle directory holding `config.json` and the root filesystem.
        bundle: PathBuf,
        /// The container id.
        container_id: String,
        /// libcontainer's state root.
        state_root: PathBuf,
    },
}

//! Writing the agent's own files so that a crash never leaves half of one.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Whether a write must reach the disk before it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync before the rename: for what must survive a power loss (the node's identity).
    Synced,
    /// No fsync: for files about running processes, which a power loss ends anyway.
    ProcessCrashOnly,
}

/// Writes `bytes` to `path`, created with `mode`: a temporary file beside it, then a rename,
/// so readers see the old file or the new one, never a part.
pub fn write_atomically(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    durability: Durability,
) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(bytes)?;
    if durability == Durability::Synced {
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

//! Writing the binaries' own files (the agent's identity and session records, the
//! coordinator's CA and join tokens) so that a crash never leaves half of one. Behind the `io`
//! feature, with `wire::stream`.

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn the_new_content_replaces_the_old_whole_with_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomically(&path, b"old", 0o600, Durability::Synced).unwrap();
        write_atomically(&path, b"new", 0o640, Durability::ProcessCrashOnly).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert!(!path.with_extension("tmp").exists());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }
}

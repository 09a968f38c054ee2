//! Applying OCI layers (tar, optionally gzip or zstd) onto a root filesystem folder.
//!
//! Layers come from registries: any entry may be hostile. Every entry is checked before
//! anything is written, and a bad one refuses the whole layer with the entry's name:
//! - paths must be relative and may not contain `..` (after dropping a leading `./`);
//! - hard links must point at a path inside the root by the same rule;
//! - a relative symlink may not climb out of the root from where it stands (absolute targets
//!   are fine: inside the container they resolve within its root);
//! - device nodes are refused (a container gets its devices from the runtime, not the image);
//! - nothing is written through a symlink: every parent of an entry must be a real directory.
//!
//! OCI whiteouts are applied: `.wh.NAME` deletes `NAME` from lower layers, `.wh..wh..opq`
//! empties its directory of lower-layer content.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// `+gzip`.
    Gzip,
    /// `+zstd`.
    Zstd,
}

impl Compression {
    /// From an OCI or Docker layer media type; `None` for a media type that is not a layer.
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Some(Self::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Some(Self::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Some(Self::Zstd),
            _ => None,
        }
    }
}

/// Why a layer was refused or could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// An entry's path is absolute or climbs out with `..`.
    #[error("layer entry {0:?} escapes the root filesystem")]
    PathEscape(String),
    /// A link points out of the root filesystem.
    #[error("layer entry {entry:?} links to {target:?}, outside the root filesystem")]
    LinkEscape {
        /// The link.
        entry: String,
        /// Where it points.
        target: String,
    },
    /// A device node.
    #[error("layer entry {0:?} is a device node; images may not carry devices")]
    DeviceNode(String),
    /// An entry would be written through a symlink.
    #[error("layer entry {0:?} lies under a symlink")]
    ThroughSymlink(String),
    /// The tar or its compression is corrupt, or writing failed.
    #[error("unpacking the layer: {0}")]
    Io(#[from] std::io::Error),
}

/// An entry's path made relative and checked: no root, no `..`, `.` components dropped.
fn safe_relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Whether a relative symlink at `entry` pointing at `target` stays inside the root when
/// resolved lexically from the link's directory.
fn relative_link_stays_inside(entry: &Path, target: &Path) -> bool {
    let mut depth = entry.components().count().saturating_sub(1) as isize;
    for component in target.components() {
        match component {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

/// Every existing parent of `rel` under `root` must be a directory, not a symlink.
fn parents_are_directories(root: &Path, rel: &Path) -> std::io::Result<bool> {
    let mut at = root.to_path_buf();
    let parents: Vec<_> = rel
        .parent()
        .map(|p| p.components().collect())
        .unwrap_or_default();
    for part in parents {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => return Ok(false),
            Ok(meta) if !meta.is_dir() => return Ok(false),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Removes a file, link or directory tree; missing is fine.
fn remove_any(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Applies one layer onto `root`. `layer` is the blob as stored (compressed or not).
pub fn apply_layer(
    layer: impl Read,
    compression: Compression,
    root: &Path,
) -> Result<(), UnpackError> {
    let reader: Box<dyn Read> = match compression {
        Compression::None => Box::new(layer),
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(layer)),
        Compression::Zstd => Box::new(
            ruzstd::decoding::StreamingDecoder::new(layer)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?,
        ),
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);

    // What this layer wrote so far: an opaque marker empties its directory of lower-layer
    // content only, whatever order the entries come in.
    let mut written: Vec<PathBuf> = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw_path = entry.path()?.into_owned();
        let shown = raw_path.display().to_string();
        let rel = safe_relative(&raw_path).ok_or_else(|| UnpackError::PathEscape(shown.clone()))?;
        if !parents_are_directories(root, &rel)? {
            return Err(UnpackError::ThroughSymlink(shown));
        }
        let file_name = rel.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let parent = rel.parent().unwrap_or(Path::new(""));

        if file_name == ".wh..wh..opq" {
            let dir = root.join(parent);
            if dir.is_dir() {
                for child in std::fs::read_dir(&dir)? {
                    let child_rel = parent.join(child?.file_name());
                    if !written.iter().any(|w| w.starts_with(&child_rel)) {
                        remove_any(&root.join(&child_rel))?;
                    }
                }
            }
            continue;
        }
        if let Some(hidden) = file_name.strip_prefix(".wh.") {
            remove_any(&root.join(parent).join(hidden))?;
            continue;
        }

        match entry.header().entry_type() {
            EntryType::Block | EntryType::Char => return Err(UnpackError::DeviceNode(shown)),
            EntryType::Link => {
                let target = entry.link_name()?.unwrap_or_default().into_owned();
                if safe_relative(&target).is_none() {
                    return Err(UnpackError::LinkEscape {
                        entry: shown,
                        target: target.display().to_string(),
                    });
                }
            }
            EntryType::Symlink => {
                let target = entry.link_name()?.unwrap_or_default().into_owned();
                if target.is_relative() && !relative_link_stays_inside(&rel, &target) {
                    return Err(UnpackError::LinkEscape {
                        entry: shown,
                        target: target.display().to_string(),
                    });
                }
            }
            _ => {}
        }

        let dest = root.join(&rel);
        // A layer replaces what lower layers had at this path (a directory stays, to merge).
        if let Ok(meta) = std::fs::symlink_metadata(&dest)
            && !(meta.is_dir() && entry.header().entry_type().is_dir())
        {
            remove_any(&dest)?;
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // `unpack_in` re-checks the path against `root` (it refuses `..` and writes through
        // no symlinked parent), a second line of defence behind the checks above.
        if !entry.unpack_in(root)? {
            return Err(UnpackError::PathEscape(shown));
        }
        written.push(rel);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar built entry by entry; `name` is written raw, so hostile names are possible.
    struct Layer(tar::Builder<Vec<u8>>);

    impl Layer {
        fn new() -> Self {
            Self(tar::Builder::new(Vec::new()))
        }
        fn header(kind: EntryType, name: &str, size: u64) -> tar::Header {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_size(size);
            h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            // Raw bytes, bypassing the builder's own path checks.
            let bytes = name.as_bytes();
            h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            h.set_cksum();
            h
        }
        fn file(mut self, name: &str, body: &str) -> Self {
            let h = Self::header(EntryType::Regular, name, body.len() as u64);
            self.0.append(&h, body.as_bytes()).unwrap();
            self
        }
        fn dir(mut self, name: &str) -> Self {
            let h = Self::header(EntryType::Directory, name, 0);
            self.0.append(&h, std::io::empty()).unwrap();
            self
        }
        fn link(mut self, kind: EntryType, name: &str, target: &str) -> Self {
            let mut h = Self::header(kind, name, 0);
            h.set_link_name(target).unwrap();
            h.set_cksum();
            self.0.append(&h, std::io::empty()).unwrap();
            self
        }
        fn device(mut self, name: &str) -> Self {
            let h = Self::header(EntryType::Char, name, 0);
            self.0.append(&h, std::io::empty()).unwrap();
            self
        }
        fn bytes(self) -> Vec<u8> {
            self.0.into_inner().unwrap()
        }
        fn apply(self, root: &Path) -> Result<(), UnpackError> {
            apply_layer(&self.bytes()[..], Compression::None, root)
        }
    }

    fn read(root: &Path, rel: &str) -> Option<String> {
        std::fs::read_to_string(root.join(rel)).ok()
    }

    #[test]
    fn files_dirs_and_links_land() {
        let root = tempfile::tempdir().unwrap();
        Layer::new()
            .dir("./etc/")
            .file("./etc/motd", "hello")
            .link(EntryType::Symlink, "etc/motd-link", "motd")
            .link(EntryType::Symlink, "etc/abs", "/etc/motd")
            .link(EntryType::Link, "etc/motd-hard", "etc/motd")
            .apply(root.path())
            .unwrap();
        assert_eq!(read(root.path(), "etc/motd").as_deref(), Some("hello"));
        assert_eq!(read(root.path(), "etc/motd-link").as_deref(), Some("hello"));
        assert_eq!(read(root.path(), "etc/motd-hard").as_deref(), Some("hello"));
        assert_eq!(
            std::fs::read_link(root.path().join("etc/abs")).unwrap(),
            Path::new("/etc/motd")
        );
    }

    #[test]
    fn escapes_and_devices_are_refused() {
        let cases: Vec<(Layer, &str)> = vec![
            (Layer::new().file("../evil", "x"), "escapes"),
            (Layer::new().file("a/../../evil", "x"), "escapes"),
            (Layer::new().file("/etc/evil", "x"), "escapes"),
            (
                Layer::new().link(EntryType::Symlink, "a/up", "../../../etc"),
                "outside",
            ),
            (
                Layer::new().link(EntryType::Link, "hard", "../../etc/shadow"),
                "outside",
            ),
            (
                Layer::new().link(EntryType::Link, "hard", "/etc/shadow"),
                "outside",
            ),
            (Layer::new().device("dev/sda"), "device"),
            (
                // An absolute symlink is fine by itself, but nothing may be written through it.
                Layer::new()
                    .link(EntryType::Symlink, "etc", "/etc")
                    .file("etc/evil", "x"),
                "under a symlink",
            ),
        ];
        for (layer, want) in cases {
            let root = tempfile::tempdir().unwrap();
            let err = layer.apply(root.path()).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should say {want:?}");
        }
        // The host's files were never touched: the test root's parent holds no `evil`.
        assert!(!std::env::temp_dir().join("evil").exists());
    }

    #[test]
    fn whiteouts_delete_lower_layer_content() {
        let root = tempfile::tempdir().unwrap();
        Layer::new()
            .file("a/keep", "1")
            .file("a/gone", "2")
            .file("b/old", "3")
            .apply(root.path())
            .unwrap();
        Layer::new()
            .file("a/.wh.gone", "")
            .file("b/new", "4")
            .file("b/.wh..wh..opq", "")
            .apply(root.path())
            .unwrap();
        assert_eq!(read(root.path(), "a/keep").as_deref(), Some("1"));
        assert!(!root.path().join("a/gone").exists());
        assert!(
            !root.path().join("b/old").exists(),
            "opaque dir keeps no lower content"
        );
        assert_eq!(
            read(root.path(), "b/new").as_deref(),
            Some("4"),
            "this layer's content stays"
        );
    }

    #[test]
    fn upper_layers_replace_lower_files_and_kinds() {
        let root = tempfile::tempdir().unwrap();
        Layer::new().file("x", "file").apply(root.path()).unwrap();
        Layer::new()
            .link(EntryType::Symlink, "x", "y")
            .apply(root.path())
            .unwrap();
        assert!(
            std::fs::symlink_metadata(root.path().join("x"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn compressed_layers_unpack() {
        use std::io::Write;
        let tar = Layer::new().file("z", "zipped").bytes();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let root = tempfile::tempdir().unwrap();
        apply_layer(&gz.finish().unwrap()[..], Compression::Gzip, root.path()).unwrap();
        assert_eq!(read(root.path(), "z").as_deref(), Some("zipped"));

        let zst = ruzstd::encoding::compress_to_vec(
            &tar[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        let root = tempfile::tempdir().unwrap();
        apply_layer(&zst[..], Compression::Zstd, root.path()).unwrap();
        assert_eq!(read(root.path(), "z").as_deref(), Some("zipped"));

        let root = tempfile::tempdir().unwrap();
        assert!(apply_layer(&b"not gzip"[..], Compression::Gzip, root.path()).is_err());
        assert!(apply_layer(&b"not zstd"[..], Compression::Zstd, root.path()).is_err());
    }

    #[test]
    fn lexical_link_check() {
        assert!(relative_link_stays_inside(
            Path::new("a/b/link"),
            Path::new("../c")
        ));
        assert!(relative_link_stays_inside(
            Path::new("a/b/link"),
            Path::new("../../c")
        ));
        assert!(!relative_link_stays_inside(
            Path::new("a/b/link"),
            Path::new("../../../c")
        ));
        assert!(!relative_link_stays_inside(
            Path::new("link"),
            Path::new("..")
        ));
        assert!(relative_link_stays_inside(
            Path::new("link"),
            Path::new("./x/../y")
        ));
    }
}

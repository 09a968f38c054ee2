//! The image store: OCI images addressed by digest, their blobs verified on the way in, each
//! image unpacked once into a read-only root filesystem that every session of it shares.
//!
//! ```text
//! <state dir>/images/blobs/sha256/<hex>   verified blobs (manifests, configs, layers)
//! <state dir>/images/rootfs/<hex>/        unpacked images, by manifest digest
//! ```
//!
//! Images come in from an OCI image-layout directory (air-gapped nodes, the default image)
//! or from a registry; either way a blob is stored only if its content has its digest, and an
//! image is unpacked into a temporary folder renamed into place when complete, so a crash
//! never leaves a half-unpacked image that looks whole.

pub mod registry;
pub mod unpack;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fogshell_shared::{Digest, ImageRef};
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use sha2::{Digest as _, Sha256};

use self::unpack::{Compression, UnpackError};

/// Why an image cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The reference names a tag, not a digest.
    #[error(
        "image {0} is named by tag; fogshell runs only images pinned by digest (repository@sha256:…)"
    )]
    NotPinned(ImageRef),
    /// The store has no such image.
    #[error("image {0} is not in the store")]
    NotFound(Digest),
    /// A blob's content does not have its digest.
    #[error("blob {expected} has content with digest {actual}")]
    DigestMismatch {
        /// The digest it should have.
        expected: Digest,
        /// The digest it has.
        actual: Digest,
    },
    /// A manifest, index or config is malformed or unsupported.
    #[error("{0}")]
    BadImage(String),
    /// A layer was refused or could not be unpacked.
    #[error("layer {layer}: {source}")]
    Unpack {
        /// The layer's digest.
        layer: Digest,
        /// What went wrong.
        #[source]
        source: UnpackError,
    },
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
    let context = context.into();
    move |source| ImageError::Io { context, source }
}

/// What a container needs from an image's config.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunConfig {
    /// `User` (`uid`, `uid:gid`, `name`…), if the image sets one.
    pub user: Option<String>,
    /// `Env`, as `KEY=value`.
    pub env: Vec<String>,
    /// `Entrypoint` followed by `Cmd`.
    pub argv: Vec<String>,
    /// `WorkingDir`, if set.
    pub cwd: Option<String>,
}

/// An image ready to run: its unpacked root filesystem and its run config.
#[derive(Debug, Clone)]
pub struct PreparedImage {
    /// The manifest's digest.
    pub digest: Digest,
    /// The shared, unpacked root filesystem (mount it read-only).
    pub rootfs: PathBuf,
    /// From the image config.
    pub config: RunConfig,
}

/// The store.
#[derive(Debug)]
pub struct ImageStore {
    root: PathBuf,
    /// One lock per image being unpacked: two sessions wanting one image unpack it once.
    unpacking: Mutex<HashMap<Digest, Arc<Mutex<()>>>>,
}

pub(crate) fn digest_of(d: &oci_spec::image::Digest) -> Result<Digest, ImageError> {
    d.to_string()
        .parse()
        .map_err(|e| ImageError::BadImage(format!("digest {d}: {e}")))
}

impl ImageStore {
    /// Opens (and creates) the store under `root`.
    pub fn new(root: &Path) -> Result<Self, ImageError> {
        for sub in ["blobs/sha256", "rootfs"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        }
        Ok(Self {
            root: root.to_path_buf(),
            unpacking: Mutex::new(HashMap::new()),
        })
    }

    /// Where a blob is stored (it may not be there).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// Whether the store holds this blob.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Stores a blob if its content has the expected digest; a blob already held is kept.
    pub fn put_blob(&self, expected: &Digest, mut content: impl Read) -> Result<(), ImageError> {
        if self.has_blob(expected) {
            return Ok(());
        }
        let tmp = self.download_path(expected);
        let mut file =
            std::fs::File::create(&tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = content.read(&mut buf).map_err(io_err("reading a blob"))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n])
                .map_err(io_err("writing a blob"))?;
        }
        file.sync_all().map_err(io_err("syncing a blob"))?;
        self.commit_blob(expected, Digest::from_bytes(hasher.finalize().into()), &tmp)
    }

    /// Where a blob is written while it downloads; [`Self::adopt_blob`] moves it into place.
    pub fn download_path(&self, digest: &Digest) -> PathBuf {
        self.blob_path(digest)
            .with_extension(format!("partial-{}", std::process::id()))
    }

    /// Stores a downloaded file as a blob if its content has the expected digest.
    pub fn adopt_blob(&self, expected: &Digest, file: &Path) -> Result<(), ImageError> {
        let mut reader =
            std::fs::File::open(file).map_err(io_err(format!("opening {}", file.display())))?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut reader, &mut hasher).map_err(io_err("hashing a blob"))?;
        self.commit_blob(expected, Digest::from_bytes(hasher.finalize().into()), file)
    }

    fn commit_blob(&self, expected: &Digest, actual: Digest, tmp: &Path) -> Result<(), ImageError> {
        if actual != *expected {
            let _ = std::fs::remove_file(tmp);
            return Err(ImageError::DigestMismatch {
                expected: *expected,
                actual,
            });
        }
        let path = self.blob_path(expected);
        std::fs::rename(tmp, &path).map_err(io_err(format!("storing {}", path.display())))
    }

    fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, ImageError> {
        std::fs::read(self.blob_path(digest)).map_err(|_| ImageError::NotFound(*digest))
    }

    /// Copies the image named `name` (the `org.opencontainers.image.ref.name` annotation; the
    /// only image when `None`) out of an OCI image-layout directory, verifying every blob.
    /// Returns its manifest digest.
    pub fn import_layout(&self, layout: &Path, name: Option<&str>) -> Result<Digest, ImageError> {
        let index = ImageIndex::from_file(layout.join("index.json")).map_err(|e| {
            ImageError::BadImage(format!("{}: {e}", layout.join("index.json").display()))
        })?;
        let candidates: Vec<_> = index
            .manifests()
            .iter()
            .filter(|m| match name {
                None => true,
                Some(name) => m
                    .annotations()
                    .as_ref()
                    .and_then(|a| a.get("org.opencontainers.image.ref.name"))
                    .is_some_and(|n| n == name),
            })
            .collect();
        let chosen = match candidates.as_slice() {
            [one] => *one,
            [] => {
                return Err(ImageError::BadImage(format!(
                    "{} holds no image named {name:?}",
                    layout.display()
                )));
            }
            _ => {
                return Err(ImageError::BadImage(format!(
                    "{} holds several images; name one",
                    layout.display()
                )));
            }
        };
        let digest = digest_of(chosen.digest())?;
        let copy = |d: &Digest| -> Result<(), ImageError> {
            let path = layout.join("blobs/sha256").join(d.hex());
            let file = std::fs::File::open(&path)
                .map_err(io_err(format!("opening {}", path.display())))?;
            self.put_blob(d, file)
        };
        copy(&digest)?;
        let manifest = self.manifest(&digest)?;
        copy(&digest_of(manifest.config().digest())?)?;
        for layer in manifest.layers() {
            copy(&digest_of(layer.digest())?)?;
        }
        Ok(digest)
    }

    /// The manifest stored under `digest`; an index is resolved to this machine's platform.
    pub fn manifest(&self, digest: &Digest) -> Result<ImageManifest, ImageError> {
        let bytes = self.read_blob(digest)?;
        if let Some(platform) = platform_manifest(&bytes)? {
            return self.manifest(&platform);
        }
        ImageManifest::from_reader(&bytes[..])
            .map_err(|e| ImageError::BadImage(format!("manifest {digest}: {e}")))
    }

    /// The digest a pinned reference names; a tag is refused.
    pub fn resolve(reference: &ImageRef) -> Result<Digest, ImageError> {
        reference
            .digest()
            .ok_or_else(|| ImageError::NotPinned(reference.clone()))
    }

    /// Unpacks the image (once; later calls and concurrent callers get the same folder) and
    /// returns its root filesystem and run config.
    pub fn prepare(&self, digest: &Digest) -> Result<PreparedImage, ImageError> {
        let lock = {
            let mut map = fogshell_shared::sync::lock(&self.unpacking);
            Arc::clone(map.entry(*digest).or_default())
        };
        let _held = fogshell_shared::sync::lock(&lock);

        let manifest = self.manifest(digest)?;
        let config = self.run_config(&manifest)?;
        let rootfs = self.root.join("rootfs").join(digest.hex());
        if !rootfs.is_dir() {
            let span = tracing::info_span!("unpack", image = %digest);
            let _entered = span.enter();
            let partial = self.root.join("rootfs").join(format!(
                "{}.partial-{}",
                digest.hex(),
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&partial);
            std::fs::create_dir(&partial)
                .map_err(io_err(format!("creating {}", partial.display())))?;
            let unpacked = self.unpack_layers(&manifest, &partial);
            if let Err(error) = unpacked {
                let _ = std::fs::remove_dir_all(&partial);
                return Err(error);
            }
            std::fs::rename(&partial, &rootfs)
                .map_err(io_err(format!("moving {} into place", rootfs.display())))?;
            tracing::info!(layers = manifest.layers().len(), "image unpacked");
        }
        Ok(PreparedImage {
            digest: *digest,
            rootfs,
            config,
        })
    }

    fn unpack_layers(&self, manifest: &ImageManifest, into: &Path) -> Result<(), ImageError> {
        // Layers apply in manifest order, bottom first.
        for layer in manifest.layers() {
            let digest = digest_of(layer.digest())?;
            let compression = Compression::from_media_type(layer.media_type().as_ref())
                .ok_or_else(|| {
                    ImageError::BadImage(format!(
                        "layer {digest} has unsupported media type {}",
                        layer.media_type()
                    ))
                })?;
            let file = std::fs::File::open(self.blob_path(&digest))
                .map_err(|_| ImageError::NotFound(digest))?;
            unpack::apply_layer(std::io::BufReader::new(file), compression, into).map_err(
                |source| ImageError::Unpack {
                    layer: digest,
                    source,
                },
            )?;
        }
        Ok(())
    }

    fn run_config(&self, manifest: &ImageManifest) -> Result<RunConfig, ImageError> {
        let digest = digest_of(manifest.config().digest())?;
        if *manifest.config().media_type() != MediaType::ImageConfig
            && manifest.config().media_type().to_string()
                != "application/vnd.docker.container.image.v1+json"
        {
            return Err(ImageError::BadImage(format!(
                "config {digest} has media type {}",
                manifest.config().media_type()
            )));
        }
        let bytes = self.read_blob(&digest)?;
        let image = ImageConfiguration::from_reader(&bytes[..])
            .map_err(|e| ImageError::BadImage(format!("config {digest}: {e}")))?;
        let Some(config) = image.config() else {
            return Ok(RunConfig::default());
        };
        let mut argv = config.entrypoint().clone().unwrap_or_default();
        argv.extend(config.cmd().clone().unwrap_or_default());
        Ok(RunConfig {
            user: config.user().clone().filter(|u| !u.is_empty()),
            env: config.env().clone().unwrap_or_default(),
            argv,
            cwd: config.working_dir().clone().filter(|d| !d.is_empty()),
        })
    }
}

/// The media types of manifests and indexes fogshell reads.
pub const MANIFEST_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// The digest of the manifest for this machine's platform in an index, or `None` when the
/// document is not an index.
pub fn platform_manifest(document: &[u8]) -> Result<Option<Digest>, ImageError> {
    let value: serde_json::Value = serde_json::from_slice(document)
        .map_err(|e| ImageError::BadImage(format!("manifest: {e}")))?;
    let media_type = value["mediaType"].as_str().unwrap_or_default();
    let is_index = media_type == "application/vnd.oci.image.index.v1+json"
        || media_type == "application/vnd.docker.distribution.manifest.list.v2+json"
        || (media_type.is_empty() && value.get("manifests").is_some());
    if !is_index {
        return Ok(None);
    }
    let index = ImageIndex::from_reader(document)
        .map_err(|e| ImageError::BadImage(format!("index: {e}")))?;
    let arch = oci_arch();
    let entry = index
        .manifests()
        .iter()
        .find(|m| {
            m.platform().as_ref().is_some_and(|p| {
                p.architecture().to_string() == arch && p.os().to_string() == "linux"
            })
        })
        .ok_or_else(|| ImageError::BadImage(format!("the index has no linux/{arch} image")))?;
    digest_of(entry.digest()).map(Some)
}

/// This machine's architecture as OCI names it.
fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

//! Pulling images from an OCI registry by digest (`oci-client`), into the [`ImageStore`].
//!
//! Only pinned references are pulled. Every document and blob is hashed before it is stored
//! (the store refuses content whose digest differs), whatever the registry claims. Layers
//! are pulled in manifest order, one at a time, each streamed to a file.

use std::sync::Arc;
use tracing::Instrument as _;

use fogshell_shared::{Digest, ImageRef};
use fogshell_supply::credentials::{Credentials, explain};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::{Client, Reference};
use sha2::Digest as _;

use super::{ImageError, ImageStore, MANIFEST_MEDIA_TYPES, platform_manifest};

/// Where images come from.
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// Registries (`host:port`) spoken to over plain HTTP: only for registries on the node's
    /// own network (a local mirror, tests on loopback).
    pub insecure: Vec<String>,
    /// Logins for private registries (from `[registries] auth_file`).
    pub credentials: Credentials,
}

/// A registry client.
#[derive(Clone)]
pub struct RegistryClient {
    client: Client,
    credentials: Credentials,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient").finish_non_exhaustive()
    }
}

fn pull_error(what: String) -> impl FnOnce(oci_client::errors::OciDistributionError) -> ImageError {
    move |e| ImageError::BadImage(format!("pulling {what}: {}", explain(&e)))
}

impl RegistryClient {
    /// A client for `config`.
    pub fn new(config: &RegistryConfig) -> Self {
        // One crypto provider for the process (ring); installing it twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(config.insecure.clone()),
            ..Default::default()
        });
        Self {
            client,
            credentials: config.credentials.clone(),
        }
    }

    /// Pulls `image` (pinned) into `store` unless the store already has it whole.
    pub async fn pull(
        &self,
        store: &Arc<ImageStore>,
        image: &ImageRef,
    ) -> Result<Digest, ImageError> {
        let digest = ImageStore::resolve(image)?;
        let span = tracing::info_span!("pull", image = %image);
        async move {
            let registry = image.registry().unwrap_or("docker.io");
            let reference = |digest: &Digest| -> Result<Reference, ImageError> {
                format!("{registry}/{}@{digest}", image.repository())
                    .parse()
                    .map_err(|e| ImageError::BadImage(format!("image reference {image}: {e}")))
            };
            let auth = self.credentials.auth_for(registry);

            // The manifest (or index, then this platform's manifest), hashed before it is kept.
            let mut manifest_digest = digest;
            loop {
                if !store.has_blob(&manifest_digest) {
                    let (bytes, _) = self
                        .client
                        .pull_manifest_raw(
                            &reference(&manifest_digest)?,
                            &auth,
                            MANIFEST_MEDIA_TYPES,
                        )
                        .await
                        .map_err(pull_error(format!("manifest {manifest_digest}")))?;
                    let actual = Digest::from_bytes(sha2::Sha256::digest(&bytes).into());
                    if actual != manifest_digest {
                        return Err(ImageError::DigestMismatch {
                            expected: manifest_digest,
                            actual,
                        });
                    }
                    store.put_blob(&manifest_digest, &bytes[..])?;
                }
                let bytes = std::fs::read(store.blob_path(&manifest_digest))
                    .map_err(|_| ImageError::NotFound(manifest_digest))?;
                match platform_manifest(&bytes)? {
                    Some(platform) => manifest_digest = platform,
                    None => break,
                }
            }
            let manifest = store.manifest(&manifest_digest)?;
            let mut blobs = vec![super::digest_of(manifest.config().digest())?];
            for layer in manifest.layers() {
                blobs.push(super::digest_of(layer.digest())?);
            }
            let blob_ref = reference(&manifest_digest)?;
            for blob in blobs {
                if store.has_blob(&blob) {
                    continue;
                }
                let tmp = store.download_path(&blob);
                let file = tokio::fs::File::create(&tmp)
                    .await
                    .map_err(|e| ImageError::Io {
                        context: format!("creating {}", tmp.display()),
                        source: e,
                    })?;
                let pulled = self
                    .client
                    .pull_blob(&blob_ref, blob.to_string().as_str(), file)
                    .await
                    .map_err(pull_error(format!("blob {blob}")));
                if let Err(error) = pulled {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(error);
                }
                let store = Arc::clone(store);
                tokio::task::spawn_blocking(move || store.adopt_blob(&blob, &tmp))
                    .await
                    .map_err(|e| ImageError::BadImage(format!("hashing task: {e}")))??;
            }
            tracing::info!("image pulled");
            Ok(digest)
        }
        .instrument(span)
        .await
    }
}

//! Reading and writing an image's cosign artifacts in an OCI registry (`oci-client`): the
//! `.sig` and `.att` manifests and their layers. Every blob is hashed before it is believed,
//! and sizes are bounded: the registry is not trusted, only the signatures are.

use fogshell_shared::{Digest, ImageRef};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::credentials::{Credentials, explain};
use crate::formats::{
    DSSE_MEDIA_TYPE, PREDICATE_ANNOTATION, SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE,
    attestation_tag, signature_tag,
};
use crate::verify::{Artifacts, AttestationLayer, SignatureLayer};

const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// The most layers read from one artifact manifest.
pub const MAX_LAYERS: usize = 32;
/// The largest artifact blob read (an SBOM of a big image is a few MiB).
pub const MAX_BLOB_BYTES: i64 = 16 << 20;

/// A registry client for artifacts.
#[derive(Clone)]
pub struct Registry {
    client: Client,
    credentials: Credentials,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

fn is_absent(error: &OciDistributionError) -> bool {
    match error {
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::ServerError { code: 404, .. } => true,
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
            matches!(
                e.code,
                OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown
            )
        }),
        _ => false,
    }
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl Registry {
    /// A client speaking plain HTTP to the `insecure` registries (`host:port`), HTTPS to others.
    pub fn new(insecure: Vec<String>) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            client: Client::new(ClientConfig {
                protocol: ClientProtocol::HttpsExcept(insecure),
                ..Default::default()
            }),
            credentials: Credentials::none(),
        }
    }

    /// The same, logging in to the registries `credentials` name.
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    fn auth(&self, reference: &Reference) -> RegistryAuth {
        self.credentials.auth_for(reference.resolve_registry())
    }

    fn reference(image: &ImageRef, tag: &str) -> Result<Reference, String> {
        let registry = image.registry().unwrap_or("docker.io");
        format!("{registry}/{}:{tag}", image.repository())
            .parse()
            .map_err(|e| format!("{image}: {e}"))
    }

    /// The manifest digest `image` names: its pinned digest, or what its tag points at now.
    pub async fn resolve(&self, image: &ImageRef) -> Result<Digest, String> {
        if let Some(digest) = image.digest() {
            return Ok(digest);
        }
        let reference: Reference = image
            .to_string()
            .parse()
            .map_err(|e| format!("{image}: {e}"))?;
        let (bytes, _) = self
            .client
            .pull_manifest_raw(
                &reference,
                &self.auth(&reference),
                &[
                    MANIFEST_MEDIA_TYPE,
                    "application/vnd.oci.image.index.v1+json",
                    "application/vnd.docker.distribution.manifest.v2+json",
                    "application/vnd.docker.distribution.manifest.list.v2+json",
                ],
            )
            .await
            .map_err(|e| format!("{image}: {}", explain(&e)))?;
        sha256_digest(&bytes)
            .parse()
            .map_err(|e| format!("{image}: {e:?}"))
    }

    /// The manifest under `tag` of the image's repository, `None` if there is none.
    async fn manifest(
        &self,
        image: &ImageRef,
        tag: &str,
    ) -> Result<Option<(Reference, OciImageManifest)>, String> {
        let reference = Self::reference(image, tag)?;
        match self
            .client
            .pull_manifest_raw(&reference, &self.auth(&reference), &[MANIFEST_MEDIA_TYPE])
            .await
        {
            Ok((bytes, _)) => {
                let manifest: OciImageManifest = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("{tag}: not an OCI manifest: {e}"))?;
                Ok(Some((reference, manifest)))
            }
            Err(error) if is_absent(&error) => Ok(None),
            Err(error) => Err(format!("{tag}: {}", explain(&error))),
        }
    }

    async fn blob(&self, reference: &Reference, layer: &OciDescriptor) -> Result<Vec<u8>, String> {
        if layer.size > MAX_BLOB_BYTES || layer.size < 0 {
            return Err(format!(
                "{}: {} bytes is too large",
                layer.digest, layer.size
            ));
        }
        let mut bytes = Vec::new();
        self.client
            .pull_blob(reference, layer, &mut bytes)
            .await
            .map_err(|e| format!("{}: {}", layer.digest, explain(&e)))?;
        if sha256_digest(&bytes) != layer.digest {
            return Err(format!("{}: the registry sent other bytes", layer.digest));
        }
        Ok(bytes)
    }

    /// The `.sig` and `.att` artifacts of the image with manifest digest `digest`.
    pub async fn artifacts(&self, image: &ImageRef, digest: &Digest) -> Result<Artifacts, String> {
        let mut artifacts = Artifacts::default();
        if let Some((reference, manifest)) = self.manifest(image, &signature_tag(digest)).await? {
            for layer in manifest.layers.iter().take(MAX_LAYERS) {
                if layer.media_type != SIMPLE_SIGNING_MEDIA_TYPE {
                    continue;
                }
                artifacts.signatures.push(SignatureLayer {
                    payload: self.blob(&reference, layer).await?,
                    signature: annotation(layer, SIGNATURE_ANNOTATION),
                });
            }
        }
        if let Some((reference, manifest)) = self.manifest(image, &attestation_tag(digest)).await? {
            for layer in manifest.layers.iter().take(MAX_LAYERS) {
                if layer.media_type != DSSE_MEDIA_TYPE {
                    continue;
                }
                artifacts.attestations.push(AttestationLayer {
                    annotated_type: annotation(layer, PREDICATE_ANNOTATION),
                    envelope: self.blob(&reference, layer).await?,
                });
            }
        }
        Ok(artifacts)
    }

    /// Adds a layer (`blob`, `media_type`, `annotations`) to the artifact manifest under
    /// `tag`, making it if needed, as cosign does.
    pub async fn append(
        &self,
        image: &ImageRef,
        tag: &str,
        blob: Vec<u8>,
        media_type: &str,
        annotations: Vec<(String, String)>,
    ) -> Result<(), String> {
        let existing = self.manifest(image, tag).await?;
        let reference = Self::reference(image, tag)?;
        // Pushing takes its own login (pulling logs in as it goes).
        self.client
            .auth(&reference, &self.auth(&reference), RegistryOperation::Push)
            .await
            .map_err(|e| format!("logging in to push {tag}: {}", explain(&e)))?;
        let mut layers = existing.map(|(_, m)| m.layers).unwrap_or_default();
        let digest = sha256_digest(&blob);
        self.client
            .push_blob(&reference, blob.clone(), &digest)
            .await
            .map_err(|e| format!("pushing {digest}: {}", explain(&e)))?;
        layers.retain(|l| l.digest != digest);
        layers.push(OciDescriptor {
            media_type: media_type.into(),
            digest,
            size: blob.len() as i64,
            urls: None,
            annotations: Some(annotations.into_iter().collect()),
            artifact_type: None,
        });
        // cosign's artifact config: an empty image whose layers are the artifacts.
        let config = serde_json::to_vec(&json!({
            "architecture": "", "os": "", "config": {},
            "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"}],
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| &l.digest).collect::<Vec<_>>()},
        }))
        .map_err(|e| e.to_string())?;
        let config_digest = sha256_digest(&config);
        self.client
            .push_blob(&reference, config.clone(), &config_digest)
            .await
            .map_err(|e| format!("pushing the config: {}", explain(&e)))?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config.len()},
            "layers": layers,
        });
        let body = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
        self.client
            .push_manifest_raw(
                &reference,
                body,
                http::HeaderValue::from_static(MANIFEST_MEDIA_TYPE),
            )
            .await
            .map_err(|e| format!("pushing {tag}: {}", explain(&e)))?;
        Ok(())
    }
}

fn annotation(layer: &OciDescriptor, key: &str) -> Option<String> {
    layer.annotations.as_ref()?.get(key).cloned()
}

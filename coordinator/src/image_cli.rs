//! `fogshell-coordinator image …`: the signing side of admission, for image pipelines — no
//! cosign binary is packaged for Debian 12, so fogshell ships these, cosign-compatible (its
//! key files, its `.sig` and `.att` layouts; keys via `COSIGN_PASSWORD` as cosign reads them).

use std::path::{Path, PathBuf};

use fogshell_shared::ImageRef;
use fogshell_supply::credentials::Credentials;
use fogshell_supply::formats;
use fogshell_supply::keys::PrivateKey;
use fogshell_supply::registry::Registry;

/// The image commands.
#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Make a key pair: PREFIX.key (encrypted with $COSIGN_PASSWORD, mode 0600) and
    /// PREFIX.pub.
    Keygen {
        /// Where the two files go, without the extension.
        #[arg(long, default_value = "cosign")]
        output_prefix: PathBuf,
    },
    /// Sign an image's manifest digest and add the signature to its `sha256-<hex>.sig` tag.
    Sign {
        #[command(flatten)]
        target: Target,
        /// The private key file (cosign's format).
        #[arg(long)]
        key: PathBuf,
    },
    /// Sign an in-toto statement about the image (a provenance, an SBOM…) and add it to its
    /// `sha256-<hex>.att` tag as a DSSE envelope.
    Attest {
        #[command(flatten)]
        target: Target,
        /// The private key file (cosign's format).
        #[arg(long)]
        key: PathBuf,
        /// The predicate type (`https://slsa.dev/provenance/v0.2`, `https://cyclonedx.org/bom`…).
        #[arg(long = "type")]
        predicate_type: String,
        /// The predicate, a JSON file.
        #[arg(long)]
        predicate: PathBuf,
    },
    /// Check an image against an admission policy file as the coordinator does, and print
    /// what was verified.
    Verify {
        #[command(flatten)]
        target: Target,
        /// The policy (`serve --admission-policy`'s format).
        #[arg(long)]
        policy: PathBuf,
    },
}

/// The image and how to reach its registry.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// The image, `registry/repository@sha256:…` (a tag is resolved to its digest now).
    #[arg(long)]
    image: ImageRef,
    /// A registry (`host:port`) spoken to over plain HTTP; repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    insecure_registries: Vec<String>,
    /// Logins for private registries: an auth file as `skopeo login --authfile` writes.
    #[arg(long, value_name = "FILE", env = "REGISTRY_AUTH_FILE")]
    registry_auth_file: Option<PathBuf>,
}

fn password() -> Result<Vec<u8>, String> {
    std::env::var("COSIGN_PASSWORD")
        .map(String::into_bytes)
        .map_err(|_| "set COSIGN_PASSWORD to the key's password (it may be empty)".into())
}

fn read_key(path: &Path) -> Result<PrivateKey, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    PrivateKey::from_encrypted_pem(&text, &password()?)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Runs one command.
pub fn run(command: ImageCommand) -> Result<(), String> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("tokio: {e}"))?;
    runtime.block_on(run_async(command))
}

async fn pinned(target: &Target) -> Result<(Registry, ImageRef), String> {
    let credentials = Credentials::load_optional(target.registry_auth_file.as_deref())?;
    let registry = Registry::new(target.insecure_registries.clone()).with_credentials(credentials);
    let digest = registry.resolve(&target.image).await?;
    let image = ImageRef::pinned(target.image.registry(), target.image.repository(), digest)
        .map_err(|e| e.to_string())?;
    Ok((registry, image))
}

async fn run_async(command: ImageCommand) -> Result<(), String> {
    match command {
        ImageCommand::Keygen { output_prefix } => {
            let key = PrivateKey::generate();
            let private = output_prefix.with_extension("key");
            let public = output_prefix.with_extension("pub");
            for path in [&private, &public] {
                if path.exists() {
                    return Err(format!("{} exists; not overwriting a key", path.display()));
                }
            }
            let pem = key
                .to_encrypted_pem(&password()?)
                .map_err(|e| e.to_string())?;
            fogshell_shared::files::write_atomically(
                &private,
                pem.as_bytes(),
                0o600,
                fogshell_shared::files::Durability::Synced,
            )
            .map_err(|e| format!("{}: {e}", private.display()))?;
            std::fs::write(&public, key.public().to_pem())
                .map_err(|e| format!("{}: {e}", public.display()))?;
            println!(
                "private key: {}\npublic key: {}",
                private.display(),
                public.display()
            );
        }
        ImageCommand::Sign { target, key } => {
            let key = read_key(&key)?;
            let (registry, image) = pinned(&target).await?;
            let digest = image.digest().ok_or("unpinned")?;
            let repository = fogshell_shared::admission::repository_of(&image);
            let payload = formats::simple_signing_payload(&repository, &digest);
            let signature = key.sign(&payload);
            use base64::Engine as _;
            registry
                .append(
                    &image,
                    &formats::signature_tag(&digest),
                    payload,
                    formats::SIMPLE_SIGNING_MEDIA_TYPE,
                    vec![(
                        formats::SIGNATURE_ANNOTATION.into(),
                        base64::engine::general_purpose::STANDARD.encode(signature),
                    )],
                )
                .await?;
            println!("signed {image}");
        }
        ImageCommand::Attest {
            target,
            key,
            predicate_type,
            predicate,
        } => {
            let key = read_key(&key)?;
            let text =
                std::fs::read(&predicate).map_err(|e| format!("{}: {e}", predicate.display()))?;
            let predicate: serde_json::Value = serde_json::from_slice(&text)
                .map_err(|e| format!("{}: not JSON: {e}", target.image))?;
            let (registry, image) = pinned(&target).await?;
            let digest = image.digest().ok_or("unpinned")?;
            let repository = fogshell_shared::admission::repository_of(&image);
            let envelope = formats::attest(&key, &repository, &digest, &predicate_type, predicate);
            let blob = serde_json::to_vec(&envelope).map_err(|e| e.to_string())?;
            registry
                .append(
                    &image,
                    &formats::attestation_tag(&digest),
                    blob,
                    formats::DSSE_MEDIA_TYPE,
                    vec![
                        (formats::PREDICATE_ANNOTATION.into(), predicate_type.clone()),
                        (formats::SIGNATURE_ANNOTATION.into(), String::new()),
                    ],
                )
                .await?;
            println!("attested {predicate_type} for {image}");
        }
        ImageCommand::Verify { target, policy } => {
            let (registry, image) = pinned(&target).await?;
            // Production: the default image (the argument dev mode would exempt) plays no part.
            let policy = crate::admission::load_policy(Some(&policy), false, &image)?;
            match fogshell_supply::admit(&registry, &policy, &image).await {
                Ok(verified) => println!("admitted {image}: {}", verified.summary()),
                Err(denied) => {
                    return Err(format!(
                        "refused {image}: {} ({})",
                        denied.reason,
                        denied.refusal.rule_id()
                    ));
                }
            }
        }
    }
    Ok(())
}

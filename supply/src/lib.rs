//! fogshell's supply chain: images signed and attested the way cosign and Tekton Chains do it,
//! verified offline against public keys (keyless signing with Fulcio and Rekor is a future
//! option, not faked here).
//!
//! - [`keys`]: cosign-compatible key files;
//! - [`formats`]: simple-signing payloads, DSSE envelopes, in-toto statements;
//! - [`verify`]: the pure judgement of an image's artifacts under a policy rule;
//! - [`registry`]: fetching and pushing the artifacts, logged in with [`credentials`] where
//!   an auth file names the registry;
//! - [`admit`] ties them together, as the coordinator and the agent both call it.
//!
//! Why not the `sigstore` crate: offline and key-based, a signature is ECDSA over a small
//! JSON document, which p256 checks; the crate would add ~350 crates to a 2-core build and
//! still leave attestations (`.att`) to be written here.

pub mod credentials;
pub mod formats;
pub mod keys;
pub mod registry;
pub mod verify;

use fogshell_shared::ImageRef;
use fogshell_shared::admission::{AdmissionPolicy, Refusal};

pub use verify::{Denied, Verified, denied};

/// Checks `image` under `policy`, fetching its artifacts from `registry`.
pub async fn admit(
    registry: &registry::Registry,
    policy: &AdmissionPolicy,
    image: &ImageRef,
) -> Result<Verified, Denied> {
    let Some(digest) = image.digest() else {
        return Err(denied(
            Refusal::Unpinned,
            format!("{image} is not pinned by digest"),
        ));
    };
    if policy.exempt(image) {
        return Ok(Verified::unverified_dev_image());
    }
    let rule = policy.rule_for(image).ok_or_else(|| {
        denied(
            Refusal::NoRule,
            format!(
                "no admission rule covers {}",
                fogshell_shared::admission::repository_of(image)
            ),
        )
    })?;
    let keys = verify::rule_keys(rule)?;
    let artifacts = registry
        .artifacts(image, &digest)
        .await
        .map_err(|e| denied(Refusal::Unreachable, format!("reading the signatures: {e}")))?;
    verify::verify(&digest, rule, &keys, &artifacts)
}

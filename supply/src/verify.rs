//! Admission's judgement over an image's fetched signatures and attestations: pure, so the
//! coordinator and the agent judge alike and tests can hand it any artifacts.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use fogshell_shared::Digest;
use fogshell_shared::admission::{Refusal, Rule, is_provenance, is_sbom};

use crate::formats::{self, EnvelopeError};
use crate::keys::PublicKey;

/// One layer of the `.sig` manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureLayer {
    /// The simple-signing payload (the layer's blob).
    pub payload: Vec<u8>,
    /// The `dev.cosignproject.cosign/signature` annotation.
    pub signature: Option<String>,
}

/// One layer of the `.att` manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationLayer {
    /// The unsigned `predicateType` annotation.
    pub annotated_type: Option<String>,
    /// The DSSE envelope (the layer's blob).
    pub envelope: Vec<u8>,
}

/// What the registry holds next to an image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Artifacts {
    /// From `sha256-<hex>.sig`.
    pub signatures: Vec<SignatureLayer>,
    /// From `sha256-<hex>.att`.
    pub attestations: Vec<AttestationLayer>,
}

/// An admitted image and what was verified about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The rule that applied (`None`: the dev-mode default image, not verified).
    pub rule: Option<String>,
    /// Predicate types of the verified attestations.
    pub predicates: Vec<String>,
    /// Builder ids of the verified provenances.
    pub builders: Vec<String>,
}

impl Verified {
    /// The record for an image dev mode lets through unverified.
    pub fn unverified_dev_image() -> Self {
        Self {
            rule: None,
            predicates: Vec::new(),
            builders: Vec::new(),
        }
    }

    /// In words, for the audit record (`what was verified`).
    pub fn summary(&self) -> String {
        match &self.rule {
            None => "nothing: dev mode runs the default image unverified".into(),
            Some(rule) => {
                let mut parts = vec![format!("rule {rule}"), "cosign signature".into()];
                parts.extend(self.predicates.iter().map(|p| format!("attestation {p}")));
                parts.extend(self.builders.iter().map(|b| format!("builder {b}")));
                parts.join(", ")
            }
        }
    }
}

/// A refused image: the rule id and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Denied {
    /// Which check refused.
    pub refusal: Refusal,
    /// In words.
    pub reason: String,
}

/// A refusal of `kind` because of `reason`.
pub fn denied(refusal: Refusal, reason: impl Into<String>) -> Denied {
    Denied {
        refusal,
        reason: reason.into(),
    }
}

/// Parses a rule's keys.
pub fn rule_keys(rule: &Rule) -> Result<Vec<PublicKey>, Denied> {
    rule.keys
        .iter()
        .map(|pem| PublicKey::from_pem(pem))
        .collect::<Result<_, _>>()
        .map_err(|e| denied(Refusal::Malformed, format!("rule {}: {e}", rule.name)))
}

/// Judges `artifacts` of the image with manifest digest `digest` under `rule`.
pub fn verify(
    digest: &Digest,
    rule: &Rule,
    keys: &[PublicKey],
    artifacts: &Artifacts,
) -> Result<Verified, Denied> {
    check_signature(digest, keys, &artifacts.signatures)?;

    // Attestations: only those signed by a trusted key count; one whose unsigned annotation
    // contradicts its signed statement is an attempt to mislead and refuses the image.
    let mut verified = Vec::new();
    let mut for_other_images = Vec::new();
    for layer in &artifacts.attestations {
        let statement = match formats::open_envelope(&layer.envelope, keys) {
            Ok(statement) => statement,
            Err(EnvelopeError::Untrusted) => continue,
            Err(EnvelopeError::Malformed(why)) => {
                tracing::info!(%why, "skipping a malformed attestation");
                continue;
            }
        };
        if let Some(annotated) = &layer.annotated_type
            && *annotated != statement.predicate_type
        {
            return Err(denied(
                Refusal::PredicateTypeMismatch,
                format!(
                    "an attestation's annotation says {annotated} but its signed statement is {}",
                    statement.predicate_type
                ),
            ));
        }
        if statement.subject_digests.contains(&digest.hex()) {
            verified.push(statement);
        } else {
            for_other_images.push(statement.predicate_type);
        }
    }
    let has = |test: &dyn Fn(&str) -> bool| verified.iter().any(|s| test(&s.predicate_type));
    let copied = |test: &dyn Fn(&str) -> bool| for_other_images.iter().any(|t| test(t));
    let missing = |test: &dyn Fn(&str) -> bool, kind: Refusal, what: &str| {
        if copied(test) {
            denied(
                Refusal::AttestationForAnotherImage,
                format!("the {what} attestation is signed for another image"),
            )
        } else {
            denied(kind, format!("no verified {what} attestation for {digest}"))
        }
    };

    for required in &rule.require_predicates {
        if !has(&|t| t == required) {
            return Err(missing(
                &|t| t == required,
                Refusal::MissingAttestation,
                required,
            ));
        }
    }
    let builders: Vec<String> = verified
        .iter()
        .filter(|s| is_provenance(&s.predicate_type))
        .map(|s| {
            formats::builder_id(&s.predicate)
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    if !rule.builder_ids.is_empty() {
        if builders.is_empty() {
            return Err(missing(
                &is_provenance,
                Refusal::ProvenanceMissing,
                "provenance",
            ));
        }
        if let Some(stranger) = builders.iter().find(|b| !rule.builder_ids.contains(b)) {
            return Err(denied(
                Refusal::BuilderNotAllowed,
                format!(
                    "built by {stranger:?}, which rule {} does not allow",
                    rule.name
                ),
            ));
        }
    }
    if rule.require_sbom && !has(&is_sbom) {
        return Err(missing(&is_sbom, Refusal::SbomMissing, "SBOM"));
    }
    let mut predicates: Vec<String> = verified.into_iter().map(|s| s.predicate_type).collect();
    predicates.sort();
    predicates.dedup();
    Ok(Verified {
        rule: Some(rule.name.clone()),
        predicates,
        builders,
    })
}

/// A trusted signature for this very digest must exist.
fn check_signature(
    digest: &Digest,
    keys: &[PublicKey],
    layers: &[SignatureLayer],
) -> Result<(), Denied> {
    if layers.iter().all(|l| l.signature.is_none()) {
        return Err(denied(
            Refusal::Unsigned,
            format!("{digest} has no cosign signature"),
        ));
    }
    let trusted: Vec<&SignatureLayer> = layers
        .iter()
        .filter(|layer| {
            layer.signature.as_deref().is_some_and(|sig| {
                STANDARD
                    .decode(sig)
                    .is_ok_and(|sig| keys.iter().any(|k| k.verifies(&layer.payload, &sig)))
            })
        })
        .collect();
    if trusted.is_empty() {
        return Err(denied(
            Refusal::UntrustedSignature,
            format!("no signature on {digest} is by a trusted key"),
        ));
    }
    let wanted = digest.to_string();
    if !trusted
        .iter()
        .any(|layer| formats::signed_digest(&layer.payload).as_deref() == Some(wanted.as_str()))
    {
        return Err(denied(
            Refusal::SignatureForAnotherImage,
            "the trusted signature is for another image (copied from it)",
        ));
    }
    Ok(())
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PrivateKey;
    use fogshell_shared::admission::{CYCLONEDX, PROVENANCE_V1, PROVENANCE_V02};
    use serde_json::json;

    const TEKTON: &str = "https://tekton.dev/chains/v2";

    fn rule(key: &PrivateKey) -> Rule {
        Rule {
            name: "r".into(),
            repositories: vec!["r.io/*".into()],
            keys: vec![key.public().to_pem()],
            require_predicates: vec![PROVENANCE_V02.into()],
            builder_ids: vec![TEKTON.into()],
            require_sbom: true,
        }
    }

    fn signature(key: &PrivateKey, digest: &Digest) -> SignatureLayer {
        let payload = formats::simple_signing_payload("r.io/shell", digest);
        SignatureLayer {
            signature: Some(STANDARD.encode(key.sign(&payload))),
            payload,
        }
    }

    fn attestation(
        key: &PrivateKey,
        digest: &Digest,
        kind: &str,
        predicate: serde_json::Value,
    ) -> AttestationLayer {
        let envelope = formats::attest(key, "r.io/shell", digest, kind, predicate);
        AttestationLayer {
            annotated_type: Some(kind.into()),
            envelope: serde_json::to_vec(&envelope).unwrap(),
        }
    }

    fn complete(key: &PrivateKey, digest: &Digest) -> Artifacts {
        Artifacts {
            signatures: vec![signature(key, digest)],
            attestations: vec![
                attestation(
                    key,
                    digest,
                    PROVENANCE_V02,
                    json!({"builder": {"id": TEKTON}}),
                ),
                attestation(
                    key,
                    digest,
                    PROVENANCE_V1,
                    json!({"runDetails": {"builder": {"id": TEKTON}}}),
                ),
                attestation(key, digest, CYCLONEDX, json!({"components": []})),
            ],
        }
    }

    #[test]
    fn each_shortfall_has_its_own_refusal() {
        let key = PrivateKey::generate();
        let rogue = PrivateKey::generate();
        let digest = Digest::from_bytes([1; 32]);
        let other = Digest::from_bytes([2; 32]);
        let rule = rule(&key);
        let keys = rule_keys(&rule).unwrap();
        let judge = |artifacts: &Artifacts| verify(&digest, &rule, &keys, artifacts);

        let verified = judge(&complete(&key, &digest)).unwrap();
        assert_eq!(verified.builders, vec![TEKTON, TEKTON]);
        assert_eq!(verified.predicates.len(), 3);

        let refusal = |artifacts: Artifacts| judge(&artifacts).unwrap_err().refusal;
        let mut a = complete(&key, &digest);
        a.signatures.clear();
        assert_eq!(refusal(a), Refusal::Unsigned);
        let mut a = complete(&key, &digest);
        a.signatures = vec![signature(&rogue, &digest)];
        assert_eq!(refusal(a), Refusal::UntrustedSignature);
        let mut a = complete(&key, &digest);
        a.signatures = vec![signature(&key, &other)];
        assert_eq!(refusal(a), Refusal::SignatureForAnotherImage);
        let mut a = complete(&key, &digest);
        a.attestations = complete(&key, &other).attestations;
        assert_eq!(refusal(a), Refusal::AttestationForAnotherImage);
        let mut a = complete(&key, &digest);
        a.attestations
            .retain(|l| l.annotated_type.as_deref() == Some(CYCLONEDX));
        assert_eq!(refusal(a), Refusal::MissingAttestation);
        let mut a = complete(&key, &digest);
        a.attestations[0] = attestation(
            &key,
            &digest,
            PROVENANCE_V02,
            json!({"builder": {"id": "evil"}}),
        );
        assert_eq!(refusal(a), Refusal::BuilderNotAllowed);
        let mut a = complete(&key, &digest);
        a.attestations.pop();
        assert_eq!(refusal(a), Refusal::SbomMissing);
        let mut a = complete(&key, &digest);
        a.attestations[0].annotated_type = Some(CYCLONEDX.into());
        assert_eq!(refusal(a), Refusal::PredicateTypeMismatch);
        // Attestations by an untrusted key count for nothing.
        let mut a = complete(&key, &digest);
        a.attestations = complete(&rogue, &digest).attestations;
        assert_eq!(refusal(a), Refusal::MissingAttestation);
    }

    proptest::proptest! {
        #[test]
        fn any_artifacts_are_judged_without_panicking(
            payload in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            envelope in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            signature in proptest::option::of("[A-Za-z0-9+/=]{0,100}"),
            annotated in proptest::option::of(".{0,40}"),
        ) {
            let key = PrivateKey::generate();
            let digest = Digest::from_bytes([1; 32]);
            let artifacts = Artifacts {
                signatures: vec![SignatureLayer { payload, signature }],
                attestations: vec![AttestationLayer { annotated_type: annotated, envelope }],
            };
            let rule = rule(&key);
            proptest::prop_assert!(verify(&digest, &rule, &rule_keys(&rule).unwrap(), &artifacts).is_err());
        }
    }
}

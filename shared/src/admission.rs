//! The image admission policy (interfaces-v1 §2: pinned digests, cosign signatures,
//! provenance, SBOM), as the coordinator loads it and pushes it to its agents, and the refusal
//! kinds both sides report. The checks themselves are in `fogshell-supply`.
//!
//! A policy is a list of rules, each for a set of repositories (`registry/path` patterns with
//! a trailing `*`): the public keys whose signatures count, the attestation predicate types
//! that must be present, the provenance builders allowed, and whether an SBOM is required.
//! The first rule whose pattern matches an image applies; an image no rule matches is refused.

use serde::{Deserialize, Serialize};

use crate::image::{Digest, ImageRef};

/// SLSA provenance, the shape Tekton Chains writes with its `in-toto` format.
pub const PROVENANCE_V02: &str = "https://slsa.dev/provenance/v0.2";
/// SLSA provenance v1.
pub const PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";
/// A CycloneDX SBOM.
pub const CYCLONEDX: &str = "https://cyclonedx.org/bom";
/// An SPDX SBOM.
pub const SPDX: &str = "https://spdx.dev/Document";

/// Whether a predicate type is a provenance.
pub fn is_provenance(predicate_type: &str) -> bool {
    predicate_type == PROVENANCE_V02 || predicate_type == PROVENANCE_V1
}

/// Whether a predicate type is an SBOM.
pub fn is_sbom(predicate_type: &str) -> bool {
    predicate_type == CYCLONEDX || predicate_type == SPDX
}

/// Production or development.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Every image is verified.
    #[default]
    Production,
    /// The coordinator's default image may run unverified (and the logs and the audit record
    /// say so); every other image is verified.
    Dev,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The rule's name, for logs and audit records.
    pub name: String,
    /// Repository patterns (`registry.example.org/fogshell/*`, `127.0.0.1:5000/shell`).
    pub repositories: Vec<String>,
    /// Trusted public keys (PEM, ECDSA P-256, as `cosign generate-key-pair` writes them).
    pub keys: Vec<String>,
    /// Predicate types that must each have a verified attestation.
    #[serde(default)]
    pub require_predicates: Vec<String>,
    /// Provenance builder ids allowed (`https://tekton.dev/chains/v2`); when not empty a
    /// provenance is required and every provenance must name one of them.
    #[serde(default)]
    pub builder_ids: Vec<String>,
    /// Whether a verified SBOM attestation (CycloneDX or SPDX) is required.
    #[serde(default)]
    pub require_sbom: bool,
}

/// The policy.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(deny_unknown_fields)]
pub struct AdmissionPolicy {
    /// Production (default) or dev.
    #[serde(default)]
    pub mode: Mode,
    /// In dev mode, the one image that may run unverified (the coordinator's default image).
    #[serde(default)]
    pub dev_exempt: Option<Digest>,
    /// The rules, first match wins.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// Whether `repository` (`registry/path`) matches `pattern` (exact, or a prefix ending in
/// `*`).
pub fn repository_matches(pattern: &str, repository: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => repository.starts_with(prefix),
        None => pattern == repository,
    }
}

/// An image's `registry/repository`, as policies name it.
pub fn repository_of(image: &ImageRef) -> String {
    match image.registry() {
        Some(registry) => format!("{registry}/{}", image.repository()),
        None => image.repository().to_owned(),
    }
}

impl Rule {
    /// What interfaces-v1 §2 requires that this rule does not ask for: a cosign signature (a
    /// trusted key), a provenance attestation (allowed builders, or a required SLSA
    /// provenance predicate) and an SBOM. Empty when the rule holds images to all three.
    pub fn missing_requirements(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if self.keys.is_empty() {
            missing.push("a signature (keys)");
        }
        let provenance = !self.builder_ids.is_empty()
            || self.require_predicates.iter().any(|p| is_provenance(p));
        if !provenance {
            missing.push("provenance (builder_ids, or a provenance in require_predicates)");
        }
        let sbom = self.require_sbom || self.require_predicates.iter().any(|p| is_sbom(p));
        if !sbom {
            missing.push("an SBOM (require_sbom = true)");
        }
        missing
    }
}

impl AdmissionPolicy {
    /// The rule for `image`, if any.
    pub fn rule_for(&self, image: &ImageRef) -> Option<&Rule> {
        let repository = repository_of(image);
        self.rules.iter().find(|rule| {
            rule.repositories
                .iter()
                .any(|pattern| repository_matches(pattern, &repository))
        })
    }

    /// Whether `image` may run without verification: dev mode and the exempt digest.
    pub fn exempt(&self, image: &ImageRef) -> bool {
        self.mode == Mode::Dev && image.digest().is_some() && image.digest() == self.dev_exempt
    }
}

/// Why an image was refused: the rule id in `policy.denied`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Refusal {
    /// Not pinned by digest.
    Unpinned,
    /// No rule covers the repository.
    NoRule,
    /// No signature at all.
    Unsigned,
    /// Signatures, but none by a trusted key.
    UntrustedSignature,
    /// A trusted signature, for another image (copied).
    SignatureForAnotherImage,
    /// A trusted attestation, for another image (copied).
    AttestationForAnotherImage,
    /// An attestation's unsigned annotation names another predicate type than its signed
    /// statement.
    PredicateTypeMismatch,
    /// A required predicate type has no verified attestation.
    MissingAttestation,
    /// No provenance, while builders are restricted.
    ProvenanceMissing,
    /// A provenance from a builder the rule does not allow.
    BuilderNotAllowed,
    /// No SBOM, while one is required.
    SbomMissing,
    /// The registry could not be asked.
    Unreachable,
    /// Something in the artifacts does not parse.
    Malformed,
}

impl Refusal {
    /// The rule id, as `policy.denied` records it.
    pub fn rule_id(self) -> &'static str {
        match self {
            Self::Unpinned => "image.unpinned",
            Self::NoRule => "admission.no_rule",
            Self::Unsigned => "admission.unsigned",
            Self::UntrustedSignature => "admission.untrusted_signature",
            Self::SignatureForAnotherImage => "admission.signature_for_another_image",
            Self::AttestationForAnotherImage => "admission.attestation_for_another_image",
            Self::PredicateTypeMismatch => "admission.predicate_type_mismatch",
            Self::MissingAttestation => "admission.missing_attestation",
            Self::ProvenanceMissing => "admission.provenance_missing",
            Self::BuilderNotAllowed => "admission.builder_not_allowed",
            Self::SbomMissing => "admission.sbom_missing",
            Self::Unreachable => "admission.registry_unreachable",
            Self::Malformed => "admission.malformed",
        }
    }
}

#[cfg(test)]
mod tests {

    fn rule(keys: &[&str], builders: &[&str], predicates: &[&str], sbom: bool) -> Rule {
        let strings = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect();
        Rule {
            name: "r".into(),
            repositories: vec!["registry.example.org/*".into()],
            keys: strings(keys),
            require_predicates: strings(predicates),
            builder_ids: strings(builders),
            require_sbom: sbom,
        }
    }

    #[test]
    fn a_rule_must_ask_for_a_signature_provenance_and_an_sbom() {
        let tekton = "https://tekton.dev/chains/v2";
        assert!(
            rule(&["k"], &[tekton], &[], true)
                .missing_requirements()
                .is_empty()
        );
        assert!(
            rule(&["k"], &[], &[PROVENANCE_V1, CYCLONEDX], false)
                .missing_requirements()
                .is_empty()
        );
        assert_eq!(
            rule(&["k"], &[], &[], false).missing_requirements(),
            vec![
                "provenance (builder_ids, or a provenance in require_predicates)",
                "an SBOM (require_sbom = true)"
            ]
        );
        assert_eq!(
            rule(&[], &[tekton], &[], true).missing_requirements(),
            vec!["a signature (keys)"]
        );
        assert_eq!(
            rule(&["k"], &[], &[SPDX], false).missing_requirements(),
            vec!["provenance (builder_ids, or a provenance in require_predicates)"]
        );
    }

    use super::*;

    #[test]
    fn patterns_match_exactly_or_by_prefix() {
        assert!(repository_matches("r.io/a/*", "r.io/a/b"));
        assert!(!repository_matches("r.io/a/*", "r.io/ab"));
        assert!(repository_matches("r.io/a", "r.io/a"));
        assert!(!repository_matches("r.io/a", "r.io/a/b"));
    }

    #[test]
    fn the_first_matching_rule_applies_and_dev_exempts_one_digest() {
        let rule = |name: &str, pattern: &str| Rule {
            name: name.into(),
            repositories: vec![pattern.into()],
            keys: vec![],
            require_predicates: vec![],
            builder_ids: vec![],
            require_sbom: false,
        };
        let digest = Digest::from_bytes([1; 32]);
        let mut policy = AdmissionPolicy {
            mode: Mode::Production,
            dev_exempt: Some(digest),
            rules: vec![rule("a", "r.io/team/*"), rule("b", "r.io/*")],
        };
        let image: ImageRef = format!("r.io/team/shell@{digest}").parse().unwrap();
        assert_eq!(policy.rule_for(&image).unwrap().name, "a");
        let other: ImageRef = format!("q.io/x@{digest}").parse().unwrap();
        assert!(policy.rule_for(&other).is_none());
        assert!(!policy.exempt(&image));
        policy.mode = Mode::Dev;
        assert!(policy.exempt(&image));
        let tagged: ImageRef = "r.io/team/shell:1".parse().unwrap();
        assert!(!policy.exempt(&tagged));
    }
}

//! The documents cosign and Tekton Chains put next to an image, built and read here:
//!
//! - a **signature** (`sha256-<hex>.sig` tag): one layer per signature, media type
//!   `application/vnd.dev.cosign.simplesigning.v1+json`, whose blob is the "simple signing"
//!   payload naming the image's manifest digest, and whose annotation
//!   `dev.cosignproject.cosign/signature` is the base64 ECDSA signature over that blob;
//! - **attestations** (`sha256-<hex>.att` tag): one layer per attestation, media type
//!   `application/vnd.dsse.envelope.v1+json`, annotation `predicateType`, whose blob is a DSSE
//!   envelope around an in-toto statement (subject = the image digest), signed over DSSE's
//!   pre-authentication encoding.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use fogshell_shared::Digest;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::keys::{PrivateKey, PublicKey};

/// The signature layer's media type.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The attestation layer's media type.
pub const DSSE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
/// The annotation holding a signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The annotation naming an attestation's predicate type (unsigned: informative only).
pub const PREDICATE_ANNOTATION: &str = "predicateType";
/// DSSE's payload type for in-toto statements.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// in-toto statement types accepted (cosign writes v0.1).
pub const STATEMENT_TYPES: [&str; 2] = [
    "https://in-toto.io/Statement/v0.1",
    "https://in-toto.io/Statement/v1",
];

/// The tag cosign stores an image's signatures under.
pub fn signature_tag(digest: &Digest) -> String {
    format!("sha256-{}.sig", digest.hex())
}

/// The tag cosign stores an image's attestations under.
pub fn attestation_tag(digest: &Digest) -> String {
    format!("sha256-{}.att", digest.hex())
}

/// The simple-signing payload for `digest` of `repository` (as cosign writes it).
pub fn simple_signing_payload(repository: &str, digest: &Digest) -> Vec<u8> {
    let payload = json!({
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": digest.to_string()},
            "type": "cosign container image signature",
        },
        "optional": null,
    });
    serde_json::to_vec(&payload).unwrap_or_else(|e| unreachable!("JSON values encode: {e}"))
}

/// The manifest digest a simple-signing payload names, if it is one.
pub fn signed_digest(payload: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(payload).ok()?;
    let critical = value.get("critical")?;
    if critical.get("type")?.as_str()? != "cosign container image signature" {
        return None;
    }
    Some(
        critical
            .get("image")?
            .get("docker-manifest-digest")?
            .as_str()?
            .to_owned(),
    )
}

/// DSSE's pre-authentication encoding: what the signature covers.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// A DSSE envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// What the payload is.
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// The payload, base64.
    pub payload: String,
    /// Signatures over the PAE.
    pub signatures: Vec<EnvelopeSignature>,
}

/// One DSSE signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    /// Which key (cosign leaves it empty).
    #[serde(default)]
    pub keyid: String,
    /// The signature, base64.
    pub sig: String,
}

/// An in-toto statement about `digest` with `predicate`, signed into a DSSE envelope.
pub fn attest(
    key: &PrivateKey,
    repository: &str,
    digest: &Digest,
    predicate_type: &str,
    predicate: Value,
) -> Envelope {
    let statement = json!({
        "_type": STATEMENT_TYPES[0],
        "predicateType": predicate_type,
        "subject": [{"name": repository, "digest": {"sha256": digest.hex()}}],
        "predicate": predicate,
    });
    let payload =
        serde_json::to_vec(&statement).unwrap_or_else(|e| unreachable!("JSON values encode: {e}"));
    let signature = key.sign(&pae(IN_TOTO_PAYLOAD_TYPE, &payload));
    Envelope {
        payload_type: IN_TOTO_PAYLOAD_TYPE.into(),
        payload: STANDARD.encode(payload),
        signatures: vec![EnvelopeSignature {
            keyid: String::new(),
            sig: STANDARD.encode(signature),
        }],
    }
}

/// A verified statement's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Its predicate type, from the signed statement.
    pub predicate_type: String,
    /// The sha256 digests (hex) of its subjects.
    pub subject_digests: Vec<String>,
    /// The predicate.
    pub predicate: Value,
}

/// Why an envelope was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeError {
    /// It does not parse as a DSSE envelope around an in-toto statement.
    Malformed(String),
    /// No signature by any of the keys.
    Untrusted,
}

/// Opens an envelope: a signature by one of `keys` over its PAE, then the statement inside.
pub fn open_envelope(bytes: &[u8], keys: &[PublicKey]) -> Result<Statement, EnvelopeError> {
    let malformed = |what: &str| EnvelopeError::Malformed(what.to_owned());
    let envelope: Envelope =
        serde_json::from_slice(bytes).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(malformed(
            "the envelope does not carry an in-toto statement",
        ));
    }
    let payload = STANDARD
        .decode(&envelope.payload)
        .map_err(|_| malformed("the envelope's payload is not base64"))?;
    let signed = pae(&envelope.payload_type, &payload);
    let trusted = envelope.signatures.iter().any(|s| {
        STANDARD
            .decode(&s.sig)
            .is_ok_and(|sig| keys.iter().any(|k| k.verifies(&signed, &sig)))
    });
    if !trusted {
        return Err(EnvelopeError::Untrusted);
    }
    let statement: Value =
        serde_json::from_slice(&payload).map_err(|_| malformed("the statement is not JSON"))?;
    let kind = statement
        .get("_type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !STATEMENT_TYPES.contains(&kind) {
        return Err(malformed("not an in-toto statement"));
    }
    let predicate_type = statement
        .get("predicateType")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("the statement has no predicate type"))?
        .to_owned();
    let subject_digests = statement
        .get("subject")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed("the statement has no subject"))?
        .iter()
        .filter_map(|s| s.get("digest")?.get("sha256")?.as_str().map(str::to_owned))
        .collect();
    Ok(Statement {
        predicate_type,
        subject_digests,
        predicate: statement.get("predicate").cloned().unwrap_or(Value::Null),
    })
}

/// A provenance's builder id: SLSA v0.2 `builder.id`, v1 `runDetails.builder.id`.
pub fn builder_id(predicate: &Value) -> Option<&str> {
    predicate
        .pointer("/builder/id")
        .or_else(|| predicate.pointer("/runDetails/builder/id"))
        .and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_is_as_the_dsse_spec_shows() {
        // The example from the DSSE specification (protocol.md).
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn payloads_and_envelopes_round_trip_and_check_their_signer() {
        let digest = Digest::from_bytes([9; 32]);
        let payload = simple_signing_payload("r.io/shell", &digest);
        assert_eq!(signed_digest(&payload), Some(digest.to_string()));
        assert_eq!(signed_digest(b"{}"), None);

        let key = PrivateKey::generate();
        let envelope = attest(
            &key,
            "r.io/shell",
            &digest,
            fogshell_shared::admission::PROVENANCE_V02,
            json!({"builder": {"id": "https://tekton.dev/chains/v2"}}),
        );
        let bytes = serde_json::to_vec(&envelope).unwrap();
        let statement = open_envelope(&bytes, &[key.public()]).unwrap();
        assert_eq!(statement.subject_digests, vec![digest.hex()]);
        assert_eq!(
            builder_id(&statement.predicate),
            Some("https://tekton.dev/chains/v2")
        );
        let stranger = PrivateKey::generate().public();
        assert_eq!(
            open_envelope(&bytes, &[stranger]),
            Err(EnvelopeError::Untrusted)
        );
        // A payload swapped under the signature.
        let mut swapped = envelope.clone();
        swapped.payload = STANDARD.encode(b"{\"_type\":\"https://in-toto.io/Statement/v0.1\"}");
        let bytes = serde_json::to_vec(&swapped).unwrap();
        assert_eq!(
            open_envelope(&bytes, &[key.public()]),
            Err(EnvelopeError::Untrusted)
        );
        assert!(matches!(
            open_envelope(b"[]", &[key.public()]),
            Err(EnvelopeError::Malformed(_))
        ));
        assert_eq!(
            builder_id(&json!({"runDetails": {"builder": {"id": "b"}}})),
            Some("b")
        );
    }
}

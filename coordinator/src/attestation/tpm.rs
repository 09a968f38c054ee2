//! Reading and checking what a TPM produced, without a TPM: the EK and AK public areas, the
//! AK's name, and quotes. Pure functions over bytes; tpm2-protocol parses the TCG encodings,
//! ring checks the ECDSA signature.

use fogshell_shared::wire::attest::{PcrSet, PcrValue, QuoteEvidence};
use sha2::{Digest as _, Sha256};
use tpm2_protocol::TpmUnmarshal;
use tpm2_protocol::data::{
    TpmAlgId, TpmEccCurve, TpmSt, TpmaObject, TpmsAttest, TpmtPublic, TpmtSignature, TpmuAttest,
    TpmuPublicId, TpmuPublicParms, TpmuSignature, TpmuSymKeyBits,
};

/// Why TPM evidence was not accepted. The text goes into `node.attestation_failed`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EvidenceError(pub String);

fn bad(message: impl Into<String>) -> EvidenceError {
    EvidenceError(message.into())
}

/// Parses a whole TPM structure: trailing bytes are an error.
fn parse_whole<T: TpmUnmarshal>(bytes: &[u8], what: &str) -> Result<T, EvidenceError> {
    let (value, rest) = T::unmarshal(bytes).map_err(|e| bad(format!("{what}: {e:?}")))?;
    if !rest.is_empty() {
        return Err(bad(format!("{what}: {} trailing bytes", rest.len())));
    }
    Ok(value)
}

/// A TPM object's name: its name algorithm (SHA-256, `0x000B`) then the digest of its
/// public area. This is what credential activation binds and what identifies the AK.
pub fn object_name(public_area: &[u8]) -> Vec<u8> {
    let mut name = vec![0x00, 0x0B];
    name.extend_from_slice(&Sha256::digest(public_area));
    name
}

fn require(attributes: TpmaObject, flag: TpmaObject, name: &str) -> Result<(), EvidenceError> {
    if attributes.contains(flag) {
        Ok(())
    } else {
        Err(bad(format!("the key is not {name}")))
    }
}

/// Attributes every key bound to this TPM must have: it never leaves the TPM, nor its
/// parent, and the TPM made its secret.
fn require_tpm_bound(attributes: TpmaObject) -> Result<(), EvidenceError> {
    require(attributes, TpmaObject::FIXED_TPM, "fixedTPM")?;
    require(attributes, TpmaObject::FIXED_PARENT, "fixedParent")?;
    require(
        attributes,
        TpmaObject::SENSITIVE_DATA_ORIGIN,
        "sensitiveDataOrigin",
    )
}

/// The endorsement key: an RSA-2048 storage key of the TCG default template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndorsementKey {
    /// The RSA modulus, big-endian.
    pub modulus: Vec<u8>,
    /// The public exponent.
    pub exponent: u32,
}

/// Parses and checks an EK public area: RSA-2048, SHA-256 names, a restricted decryption
/// key that cannot sign, bound to the TPM, with the AES-128 symmetric protection that
/// MakeCredential assumes.
pub fn endorsement_key(public_area: &[u8]) -> Result<EndorsementKey, EvidenceError> {
    let public: TpmtPublic = parse_whole(public_area, "EK public area")?;
    let attributes = public.object_attributes;
    if public.name_alg != TpmAlgId::Sha256 {
        return Err(bad("the EK's name algorithm is not SHA-256"));
    }
    require_tpm_bound(attributes)?;
    require(attributes, TpmaObject::RESTRICTED, "restricted")?;
    require(attributes, TpmaObject::DECRYPT, "a decryption key")?;
    if attributes.contains(TpmaObject::SIGN_ENCRYPT) {
        return Err(bad("the EK can sign"));
    }
    let (TpmuPublicParms::Rsa(params), TpmuPublicId::Rsa(modulus)) =
        (&public.parameters, &public.unique)
    else {
        return Err(bad("the EK is not an RSA key"));
    };
    if params.key_bits.value() != 2048 || modulus.len() != 256 {
        return Err(bad("the EK is not RSA-2048"));
    }
    let aes_128 =
        matches!(params.symmetric.key_bits, TpmuSymKeyBits::Aes(bits) if bits.value() == 128);
    if params.symmetric.algorithm != TpmAlgId::Aes || !aes_128 {
        return Err(bad("the EK does not protect with AES-128"));
    }
    let exponent = match params.exponent.value() {
        0 => 65_537, // the TPM's way of saying "the default"
        other => other,
    };
    Ok(EndorsementKey {
        modulus: modulus.to_vec(),
        exponent,
    })
}

/// The attestation key: ECDSA P-256 with SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationKey {
    /// Its name ([`object_name`]), which is what gets pinned.
    pub name: Vec<u8>,
    /// The public point, uncompressed (`04 ‖ x ‖ y`), as ring takes it.
    pub point: Vec<u8>,
}

/// Parses and checks an AK public area: a restricted signing key (so it signs only what the
/// TPM itself produced, such as quotes), not a decryption key, bound to the TPM, ECDSA P-256
/// with SHA-256.
pub fn attestation_key(public_area: &[u8]) -> Result<AttestationKey, EvidenceError> {
    let public: TpmtPublic = parse_whole(public_area, "AK public area")?;
    let attributes = public.object_attributes;
    if public.name_alg != TpmAlgId::Sha256 {
        return Err(bad("the AK's name algorithm is not SHA-256"));
    }
    require_tpm_bound(attributes)?;
    require(attributes, TpmaObject::RESTRICTED, "restricted")?;
    require(attributes, TpmaObject::SIGN_ENCRYPT, "a signing key")?;
    if attributes.contains(TpmaObject::DECRYPT) {
        return Err(bad("the AK can decrypt"));
    }
    let (TpmuPublicParms::Ecc(params), TpmuPublicId::Ecc(point)) =
        (&public.parameters, &public.unique)
    else {
        return Err(bad("the AK is not an ECC key"));
    };
    if params.curve_id != TpmEccCurve::NistP256 {
        return Err(bad("the AK is not on P-256"));
    }
    if params.scheme.scheme != TpmAlgId::Ecdsa {
        return Err(bad("the AK's scheme is not ECDSA"));
    }
    let mut uncompressed = vec![0x04];
    uncompressed.extend(fixed_32(&point.x, "the AK's x")?);
    uncompressed.extend(fixed_32(&point.y, "the AK's y")?);
    Ok(AttestationKey {
        name: object_name(public_area),
        point: uncompressed,
    })
}

/// A P-256 field element or scalar as exactly 32 bytes (the TPM may drop leading zeros).
fn fixed_32(value: &[u8], what: &str) -> Result<[u8; 32], EvidenceError> {
    let value = value
        .strip_prefix(&[0][..])
        .filter(|_| value.len() == 33)
        .unwrap_or(value);
    if value.len() > 32 {
        return Err(bad(format!("{what} is longer than 32 bytes")));
    }
    let mut out = [0u8; 32];
    out[32 - value.len()..].copy_from_slice(value);
    Ok(out)
}

/// The PCR selection bitmap a TPM reports for `pcrs` (bit `i % 8` of byte `i / 8`).
fn selection_bitmap(pcrs: PcrSet) -> [u8; 3] {
    let mut bitmap = [0u8; 3];
    for index in pcrs.indices() {
        bitmap[usize::from(index / 8)] |= 1 << (index % 8);
    }
    bitmap
}

/// The digest a quote carries for these PCR values: SHA-256 over the values in index order.
pub fn pcr_digest(values: &[PcrValue]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for value in values {
        hasher.update(value.digest);
    }
    hasher.finalize().into()
}

/// Checks a quote against the pinned AK, the nonce sent and the PCRs asked for: the AK's
/// signature over the attest structure, that it is a quote, that it carries this nonce,
/// that it covers exactly these PCRs, and that the reported values hash to its digest.
/// Returns the (now vouched-for) PCR values.
pub fn verify_quote(
    ak: &AttestationKey,
    evidence: &QuoteEvidence,
    nonce: &[u8],
    pcrs: PcrSet,
) -> Result<Vec<PcrValue>, EvidenceError> {
    evidence.validate().map_err(|e| bad(e.to_string()))?;
    let signature: TpmtSignature = parse_whole(&evidence.signature, "quote signature")?;
    let TpmuSignature::Ecdsa(ecdsa) = &signature.signature else {
        return Err(bad("the quote is not signed with ECDSA"));
    };
    if ecdsa.hash != TpmAlgId::Sha256 {
        return Err(bad("the quote's signature hash is not SHA-256"));
    }
    let mut fixed = Vec::with_capacity(64);
    fixed.extend(fixed_32(&ecdsa.signature_r, "the signature's r")?);
    fixed.extend(fixed_32(&ecdsa.signature_s, "the signature's s")?);
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &ak.point)
        .verify(&evidence.attest, &fixed)
        .map_err(|_| bad("the quote's signature does not verify with the node's AK"))?;

    // Signed by the AK, so made by the TPM (a restricted key signs only TPM-made
    // structures): what it says can be believed.
    let attest: TpmsAttest = parse_whole(&evidence.attest, "quote")?;
    if attest.attest_type != TpmSt::AttestQuote {
        return Err(bad("the signed structure is not a quote"));
    }
    if &*attest.extra_data != nonce {
        return Err(bad("the quote answers another nonce (a replay?)"));
    }
    let TpmuAttest::Quote(info) = &attest.attested else {
        return Err(bad("the signed structure is not a quote"));
    };
    let wanted = selection_bitmap(pcrs);
    let selections: &[_] = &info.pcr_select;
    let [selection] = selections else {
        return Err(bad("the quote covers more than one PCR bank"));
    };
    let bitmap: &[u8] = &selection.pcr_select;
    let covers_wanted =
        bitmap.len() >= 3 && bitmap[..3] == wanted && bitmap[3..].iter().all(|b| *b == 0);
    if selection.hash != TpmAlgId::Sha256 || !covers_wanted {
        return Err(bad(format!("the quote does not cover {pcrs}")));
    }
    let indices: Vec<u8> = evidence.pcr_values.iter().map(|v| v.index).collect();
    if indices != pcrs.indices().collect::<Vec<_>>() {
        return Err(bad(format!(
            "the reported PCR values are not those of {pcrs}"
        )));
    }
    if *info.pcr_digest != pcr_digest(&evidence.pcr_values) {
        return Err(bad(
            "the reported PCR values do not match the quoted digest",
        ));
    }
    Ok(evidence.pcr_values.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sha256_tagged() {
        let name = object_name(b"public");
        assert_eq!(&name[..2], &[0x00, 0x0B]);
        assert_eq!(name.len(), 34);
    }

    #[test]
    fn scalars_are_padded_or_refused() {
        assert_eq!(fixed_32(&[1], "x").unwrap()[31], 1);
        let mut long = vec![0];
        long.extend([0xff; 32]);
        assert_eq!(fixed_32(&long, "x").unwrap(), [0xff; 32]);
        assert!(fixed_32(&[1; 33], "x").is_err());
    }

    #[test]
    fn the_bitmap_follows_the_tpm_layout() {
        assert_eq!(
            selection_bitmap(PcrSet::new([0, 7, 16]).unwrap()),
            [0b1000_0001, 0, 1]
        );
    }

    /// The fixture: a real swtpm's AK, EK and a quote (see the file's header).
    struct Fixture {
        ak: Vec<u8>,
        ek: Vec<u8>,
        evidence: QuoteEvidence,
    }

    const NONCE: [u8; 32] = [7; 32];

    fn pcrs() -> PcrSet {
        PcrSet::new([0, 7, 16]).unwrap()
    }

    fn fixture() -> Fixture {
        let text = include_str!("testdata/swtpm-quote.txt");
        let field = |name: &str| {
            let line = text
                .lines()
                .find_map(|l| l.strip_prefix(name).and_then(|l| l.strip_prefix(' ')))
                .unwrap();
            hex::decode(line).unwrap()
        };
        Fixture {
            ak: field("AK"),
            ek: field("EK"),
            evidence: QuoteEvidence {
                attest: field("ATTEST"),
                signature: field("SIG"),
                pcr_values: pcrs()
                    .indices()
                    .map(|index| PcrValue {
                        index,
                        digest: [0; 32],
                    })
                    .collect(),
            },
        }
    }

    #[test]
    fn a_real_quote_verifies_and_its_keys_pass_the_checks() {
        let fixture = fixture();
        let ak = attestation_key(&fixture.ak).unwrap();
        let ek = endorsement_key(&fixture.ek).unwrap();
        assert_eq!(ek.modulus.len(), 256);
        assert_eq!(ek.exponent, 65_537);
        let values = verify_quote(&ak, &fixture.evidence, &NONCE, pcrs()).unwrap();
        assert_eq!(values.len(), 3);
        // The EK is no AK (it decrypts, it cannot sign), and the AK is no EK.
        assert!(attestation_key(&fixture.ek).is_err());
        assert!(endorsement_key(&fixture.ak).is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_changed_byte_of_a_quote_is_refused(
            in_signature: bool,
            position: proptest::sample::Index,
            flip in 1u8..,
        ) {
            let fixture = fixture();
            let ak = attestation_key(&fixture.ak).unwrap();
            let mut evidence = fixture.evidence;
            let bytes = if in_signature { &mut evidence.signature } else { &mut evidence.attest };
            let at = position.index(bytes.len());
            bytes[at] ^= flip;
            proptest::prop_assert!(verify_quote(&ak, &evidence, &NONCE, pcrs()).is_err());
        }

        #[test]
        fn any_bytes_are_refused_or_parsed_without_panicking(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..700),
            cut: proptest::sample::Index,
        ) {
            let _ = attestation_key(&bytes);
            let _ = endorsement_key(&bytes);
            // Truncated real structures reach deeper into the parsers than random bytes.
            let fixture = fixture();
            let _ = attestation_key(&fixture.ak[..cut.index(fixture.ak.len())]);
            let _ = endorsement_key(&fixture.ek[..cut.index(fixture.ek.len())]);
            let ak = attestation_key(&fixture.ak).unwrap();
            let mut evidence = fixture.evidence;
            evidence.attest.truncate(cut.index(evidence.attest.len()));
            proptest::prop_assert!(verify_quote(&ak, &evidence, &NONCE, pcrs()).is_err());
            evidence.attest = bytes;
            proptest::prop_assert!(verify_quote(&ak, &evidence, &NONCE, pcrs()).is_err());
        }
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        for bytes in [&[][..], &[0xff; 3], &[0x00, 0x23, 0x00, 0x0b, 0, 0, 0]] {
            assert!(attestation_key(bytes).is_err());
            assert!(endorsement_key(bytes).is_err());
        }
    }
}

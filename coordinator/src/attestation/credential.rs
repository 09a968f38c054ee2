//! `TPM2_MakeCredential` in software (TPM 2.0 Part 1, §24 "Credential Protection"): a secret
//! wrapped so that only the TPM holding the EK *and* an object with the given name (the AK)
//! can unwrap it with `TPM2_ActivateCredential`.
//!
//! No maintained crate does this without a TPM, and it is a few lines over RustCrypto's
//! RSA-OAEP and AES-CFB and ring's HMAC; each step names the spec's term.

use aes::Aes128;
use cfb_mode::cipher::{AsyncStreamCipher, KeyIvInit};
use fogshell_shared::wire::attest::CredentialChallenge;
use ring::hmac;
use rsa::{BigUint, Oaep, RsaPublicKey};

use super::tpm::{EndorsementKey, EvidenceError};

/// `KDFa` with SHA-256 (Part 1, §11.4.10.2): counter-mode HMAC over
/// `counter ‖ label ‖ 0 ‖ context_u ‖ context_v ‖ bits`.
fn kdfa(key: &[u8], label: &str, context_u: &[u8], context_v: &[u8], bits: u32) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let bytes = (bits / 8) as usize;
    let mut out = Vec::with_capacity(bytes + 32);
    let mut counter = 1u32;
    while out.len() < bytes {
        let mut context = hmac::Context::with_key(&key);
        context.update(&counter.to_be_bytes());
        context.update(label.as_bytes());
        context.update(&[0]);
        context.update(context_u);
        context.update(context_v);
        context.update(&bits.to_be_bytes());
        out.extend_from_slice(context.sign().as_ref());
        counter += 1;
    }
    out.truncate(bytes);
    out
}

/// Wraps `secret` (at most 32 bytes: a TPM2B_DIGEST) for the TPM whose EK is `ek` and the
/// object named `name`.
pub fn make_credential(
    ek: &EndorsementKey,
    name: &[u8],
    secret: &[u8],
) -> Result<CredentialChallenge, EvidenceError> {
    if secret.len() > 32 {
        return Err(EvidenceError("a credential holds at most 32 bytes".into()));
    }
    let public = RsaPublicKey::new(
        BigUint::from_bytes_be(&ek.modulus),
        BigUint::from(ek.exponent),
    )
    .map_err(|e| EvidenceError(format!("the EK: {e}")))?;
    // The seed, as large as the name algorithm's digest, encrypted to the EK with the label
    // the spec gives identity objects.
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| EvidenceError(format!("randomness: {e}")))?;
    let encrypted_secret = public
        .encrypt(
            &mut rsa::rand_core::OsRng,
            Oaep::new_with_label::<sha2::Sha256, _>("IDENTITY\0"),
            &seed,
        )
        .map_err(|e| EvidenceError(format!("encrypting to the EK: {e}")))?;

    // The credential value, as a TPM2B, encrypted with a key bound to the object's name.
    let storage_key = kdfa(&seed, "STORAGE", name, &[], 128);
    let mut enc_identity = Vec::with_capacity(2 + secret.len());
    enc_identity.extend_from_slice(&(secret.len() as u16).to_be_bytes());
    enc_identity.extend_from_slice(secret);
    cfb_mode::Encryptor::<Aes128>::new_from_slices(&storage_key, &[0u8; 16])
        .map_err(|e| EvidenceError(format!("AES: {e}")))?
        .encrypt(&mut enc_identity);

    // The outer HMAC over the encrypted value and the name: a credential made for another
    // object's name fails the TPM's integrity check.
    let integrity_key = kdfa(&seed, "INTEGRITY", &[], &[], 256);
    let mut context = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, &integrity_key));
    context.update(&enc_identity);
    context.update(name);
    let outer_hmac = context.sign();

    let mut id_object = Vec::with_capacity(2 + 32 + enc_identity.len());
    id_object.extend_from_slice(&(outer_hmac.as_ref().len() as u16).to_be_bytes());
    id_object.extend_from_slice(outer_hmac.as_ref());
    id_object.extend_from_slice(&enc_identity);
    Ok(CredentialChallenge {
        id_object,
        encrypted_secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdfa_gives_the_asked_length_and_depends_on_every_input() {
        let base = kdfa(b"seed", "STORAGE", b"name", &[], 128);
        assert_eq!(base.len(), 16);
        assert_eq!(kdfa(b"seed", "INTEGRITY", &[], &[], 256).len(), 32);
        assert_eq!(kdfa(b"seed", "X", &[], &[], 520).len(), 65);
        assert_ne!(base, kdfa(b"seeD", "STORAGE", b"name", &[], 128));
        assert_ne!(base, kdfa(b"seed", "STORAGF", b"name", &[], 128));
        assert_ne!(base, kdfa(b"seed", "STORAGE", b"namf", &[], 128));
        // The bit count is hashed too: a shorter key is not a prefix of a longer one.
        assert_ne!(base[..], kdfa(b"seed", "STORAGE", b"name", &[], 256)[..16]);
    }
}

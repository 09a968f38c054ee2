//! Signing keys in cosign's file formats, so keys made by `cosign generate-key-pair` work here
//! and ours work with cosign: an ECDSA P-256 key, the private half as PKCS#8 encrypted with
//! scrypt + NaCl secretbox in go-securesystemslib's JSON envelope (PEM `ENCRYPTED SIGSTORE
//! PRIVATE KEY`, or cosign 1.x's `ENCRYPTED COSIGN PRIVATE KEY`), the public half as PKIX PEM.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::{Nonce, XSalsa20Poly1305};
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};

/// The PEM label cosign 2.x writes.
const PRIVATE_PEM: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
/// The PEM label cosign 1.x wrote; still read.
const PRIVATE_PEM_V1: &str = "ENCRYPTED COSIGN PRIVATE KEY";

/// scrypt's cost as cosign sets it (N = 2^15, r = 8, p = 1).
const SCRYPT_LOG_N: u8 = 15;
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 1;

/// A key problem, in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

fn key_error(what: &str) -> impl Fn(String) -> KeyError + '_ {
    move |e| KeyError(format!("{what}: {e}"))
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(Serialize, Deserialize)]
struct Kdf {
    name: String,
    params: KdfParams,
    salt: String,
}

#[derive(Serialize, Deserialize)]
struct KdfParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Serialize, Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

fn derive_key(password: &[u8], salt: &[u8], params: &KdfParams) -> Result<[u8; 32], KeyError> {
    if !params.n.is_power_of_two() || params.n < 2 || params.n > 1 << 20 {
        return Err(KeyError(format!("scrypt N={} is not allowed", params.n)));
    }
    let log_n = params.n.trailing_zeros() as u8;
    let params = scrypt::Params::new(log_n, params.r, params.p, 32)
        .map_err(|e| key_error("scrypt parameters")(e.to_string()))?;
    let mut key = [0u8; 32];
    scrypt::scrypt(password, salt, &params, &mut key)
        .map_err(|e| key_error("scrypt")(e.to_string()))?;
    Ok(key)
}

/// A signing key.
#[derive(Clone)]
pub struct PrivateKey(SigningKey);

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey(…)")
    }
}

impl PrivateKey {
    /// A new random key.
    pub fn generate() -> Self {
        Self(SigningKey::random(&mut OsRng))
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(*self.0.verifying_key())
    }

    /// ECDSA P-256 with SHA-256 over `message`, ASN.1 DER (what cosign writes).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let signature: Signature = self.0.sign(message);
        signature.to_der().as_bytes().to_vec()
    }

    /// The key file cosign reads, encrypted with `password`.
    pub fn to_encrypted_pem(&self, password: &[u8]) -> Result<String, KeyError> {
        let der = self
            .0
            .to_pkcs8_der()
            .map_err(|e| key_error("PKCS#8")(e.to_string()))?;
        let mut salt = [0u8; 32];
        let mut nonce = [0u8; 24];
        OsRng.fill_bytes(&mut salt);
        OsRng.fill_bytes(&mut nonce);
        let params = KdfParams {
            n: 1 << SCRYPT_LOG_N,
            r: SCRYPT_R,
            p: SCRYPT_P,
        };
        let key = derive_key(password, &salt, &params)?;
        let ciphertext = XSalsa20Poly1305::new(&key.into())
            .encrypt(Nonce::from_slice(&nonce), der.as_bytes())
            .map_err(|_| KeyError("encrypting the key".into()))?;
        let envelope = Envelope {
            kdf: Kdf {
                name: "scrypt".into(),
                params,
                salt: STANDARD.encode(salt),
            },
            cipher: Cipher {
                name: "nacl/secretbox".into(),
                nonce: STANDARD.encode(nonce),
            },
            ciphertext: STANDARD.encode(ciphertext),
        };
        let json =
            serde_json::to_vec(&envelope).map_err(|e| key_error("key file")(e.to_string()))?;
        Ok(pem::encode(&pem::Pem::new(PRIVATE_PEM, json)))
    }

    /// Reads a cosign key file encrypted with `password`.
    pub fn from_encrypted_pem(text: &str, password: &[u8]) -> Result<Self, KeyError> {
        let block = pem::parse(text).map_err(|e| key_error("key file")(e.to_string()))?;
        if block.tag() != PRIVATE_PEM && block.tag() != PRIVATE_PEM_V1 {
            return Err(KeyError(format!(
                "a {} is not an encrypted cosign private key",
                block.tag()
            )));
        }
        let envelope: Envelope = serde_json::from_slice(block.contents())
            .map_err(|e| key_error("key file")(e.to_string()))?;
        if envelope.kdf.name != "scrypt" || envelope.cipher.name != "nacl/secretbox" {
            return Err(KeyError(format!(
                "key file encrypted with {} + {}, not scrypt + nacl/secretbox",
                envelope.kdf.name, envelope.cipher.name
            )));
        }
        let decode = |what: &str, text: &str| {
            STANDARD
                .decode(text)
                .map_err(|e| KeyError(format!("key file {what}: {e}")))
        };
        let salt = decode("salt", &envelope.kdf.salt)?;
        let nonce = decode("nonce", &envelope.cipher.nonce)?;
        let ciphertext = decode("ciphertext", &envelope.ciphertext)?;
        if nonce.len() != 24 {
            return Err(KeyError("key file nonce is not 24 bytes".into()));
        }
        let key = derive_key(password, &salt, &envelope.kdf.params)?;
        let der = XSalsa20Poly1305::new(&key.into())
            .decrypt(Nonce::from_slice(&nonce), ciphertext.as_slice())
            .map_err(|_| KeyError("wrong password, or a damaged key file".into()))?;
        SigningKey::from_pkcs8_der(&der)
            .map(Self)
            .map_err(|e| KeyError(format!("the key is not an ECDSA P-256 key: {e}")))
    }
}

/// A verifying key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Reads a PKIX PEM public key (`cosign.pub`).
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        VerifyingKey::from_public_key_pem(text.trim())
            .map(Self)
            .map_err(|e| KeyError(format!("not an ECDSA P-256 public key: {e}")))
    }

    /// As `cosign.pub`.
    pub fn to_pem(&self) -> String {
        self.0
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_else(|e| unreachable!("a P-256 key always encodes: {e}"))
    }

    /// Whether `signature` (ASN.1 DER) is this key's over `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        Signature::from_der(signature).is_ok_and(|s| self.0.verify(message, &s).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_cosign_files_and_sign() {
        let key = PrivateKey::generate();
        let file = key.to_encrypted_pem(b"hunter2").unwrap();
        assert!(file.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"));
        let again = PrivateKey::from_encrypted_pem(&file, b"hunter2").unwrap();
        let public = PublicKey::from_pem(&key.public().to_pem()).unwrap();
        assert_eq!(public, again.public());
        let signature = again.sign(b"payload");
        assert!(public.verifies(b"payload", &signature));
        assert!(!public.verifies(b"payloaD", &signature));
        assert!(!public.verifies(b"payload", &signature[1..]));
        let err = PrivateKey::from_encrypted_pem(&file, b"wrong").unwrap_err();
        assert!(err.0.contains("wrong password"), "{err}");
    }

    #[test]
    fn foreign_files_are_refused_with_a_reason() {
        assert!(PrivateKey::from_encrypted_pem("not pem", b"").is_err());
        let public = PrivateKey::generate().public().to_pem();
        let err = PrivateKey::from_encrypted_pem(&public, b"").unwrap_err();
        assert!(err.0.contains("PUBLIC KEY"), "{err}");
        assert!(
            PublicKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
                .is_err()
        );
    }
}

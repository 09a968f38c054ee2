//! TPM attestation on the link: what an agent with a TPM says in its hello, and the two
//! commands with which the coordinator binds its attestation key to its endorsement key and
//! asks for quotes.
//!
//! TPM structures travel as the TPM marshals them (big-endian TCG encodings), untouched, so
//! the coordinator verifies exactly the bytes the TPM signed. Their bounds are checked here;
//! their meaning is checked by the coordinator's verifier.

use serde::{Deserialize, Serialize};

use super::WireError;

/// The largest marshalled TPM structure accepted (a TPMT_PUBLIC of an RSA-4096 key with a
/// policy is under 700 bytes; an EK certificate is a few KiB).
pub const MAX_TPM_BLOB: usize = 8 * 1024;

/// The longest quote nonce (TPM2B_DATA holds at most a SHA-512 digest).
pub const MAX_NONCE: usize = 64;

/// PCRs a TPM 2.0 has in a bank (PC client platform).
pub const PCR_COUNT: u8 = 24;

/// A node's TPM identity, sent in every hello of an agent that has a TPM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct TpmIdentity {
    /// The endorsement key's public area (TPMT_PUBLIC), from the TCG default template.
    #[serde(with = "serde_bytes")]
    pub ek_public: Vec<u8>,
    /// The EK certificate (DER) the manufacturer put in the TPM's NV, when there is one.
    #[serde(with = "serde_bytes")]
    pub ek_certificate: Option<Vec<u8>>,
    /// The attestation key's public area (TPMT_PUBLIC): a restricted signing key made in the
    /// endorsement hierarchy, kept across restarts.
    #[serde(with = "serde_bytes")]
    pub ak_public: Vec<u8>,
}

impl TpmIdentity {
    /// Checks sizes; the receiver calls this before parsing the structures.
    pub fn validate(&self) -> Result<(), WireError> {
        let cert = self.ek_certificate.as_deref().unwrap_or_default();
        for (name, blob) in [
            ("ek_public", self.ek_public.as_slice()),
            ("ak_public", self.ak_public.as_slice()),
            ("ek_certificate", cert),
        ] {
            if blob.len() > MAX_TPM_BLOB {
                return Err(WireError::Malformed(format!("{name} too large")));
            }
        }
        if self.ek_public.is_empty() || self.ak_public.is_empty() {
            return Err(WireError::Malformed("an empty TPM public area".into()));
        }
        Ok(())
    }
}

/// A set of PCRs of the SHA-256 bank, as a bit set (bit `i` = PCR `i`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct PcrSet(u32);

impl PcrSet {
    /// The PCRs in `indices`; an index past [`PCR_COUNT`] is an error.
    pub fn new(indices: impl IntoIterator<Item = u8>) -> Result<Self, WireError> {
        let mut bits = 0u32;
        for index in indices {
            if index >= PCR_COUNT {
                return Err(WireError::Malformed(format!("no PCR {index}")));
            }
            bits |= 1 << index;
        }
        Ok(Self(bits))
    }

    /// The indices, ascending: the order the TPM hashes them in a quote.
    pub fn indices(self) -> impl Iterator<Item = u8> {
        (0..PCR_COUNT).filter(move |i| self.0 & (1 << i) != 0)
    }

    /// Whether no PCR is selected.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Checks that only real PCRs are selected (decoding accepts any bits).
    pub fn validate(self) -> Result<(), WireError> {
        if self.0 >> PCR_COUNT != 0 {
            return Err(WireError::Malformed("a PCR index past 23".into()));
        }
        Ok(())
    }
}

impl std::fmt::Display for PcrSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list: Vec<String> = self.indices().map(|i| i.to_string()).collect();
        write!(f, "sha256:{}", list.join(","))
    }
}

/// `TPM2_ActivateCredential`'s inputs, made by the coordinator with `TPM2_MakeCredential`
/// for the node's EK and AK name. Only the TPM holding both keys recovers the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct CredentialChallenge {
    /// The TPM2B_ID_OBJECT's contents: the integrity HMAC (a TPM2B) and the encrypted secret.
    #[serde(with = "serde_bytes")]
    pub id_object: Vec<u8>,
    /// The TPM2B_ENCRYPTED_SECRET's contents: the seed, encrypted to the EK.
    #[serde(with = "serde_bytes")]
    pub encrypted_secret: Vec<u8>,
}

/// A quote request's answer: what the TPM signed, its signature, and the PCR values the
/// digest in it covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct QuoteEvidence {
    /// TPMS_ATTEST as the TPM produced it (its extraData is the nonce).
    #[serde(with = "serde_bytes")]
    pub attest: Vec<u8>,
    /// TPMT_SIGNATURE by the AK over `attest`.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
    /// The SHA-256 values of the quoted PCRs, in ascending index order.
    pub pcr_values: Vec<PcrValue>,
}

/// One PCR's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct PcrValue {
    /// The PCR's index.
    pub index: u8,
    /// Its SHA-256 value.
    #[serde(with = "serde_bytes")]
    pub digest: [u8; 32],
}

impl QuoteEvidence {
    /// Checks sizes; the receiver calls this before parsing.
    pub fn validate(&self) -> Result<(), WireError> {
        if self.attest.len() > MAX_TPM_BLOB || self.signature.len() > MAX_TPM_BLOB {
            return Err(WireError::Malformed("quote too large".into()));
        }
        if self.pcr_values.len() > usize::from(PCR_COUNT) {
            return Err(WireError::Malformed("too many PCR values".into()));
        }
        Ok(())
    }
}

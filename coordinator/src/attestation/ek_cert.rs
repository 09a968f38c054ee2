//! The EK certificate: issued by a TPM manufacturer's CA, it vouches that the EK lives in a
//! genuine TPM. Checked against the operator's set of manufacturer CA certificates (issuing
//! intermediates included: TPM NV holds only the leaf).

use std::path::Path;

use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

use super::tpm::{EndorsementKey, EvidenceError};

/// Manufacturer CA certificates (DER), from PEM files.
#[derive(Debug, Clone, Default)]
pub struct ManufacturerCas {
    certificates: Vec<Vec<u8>>,
}

impl ManufacturerCas {
    /// Reads every certificate in each PEM file.
    pub fn load(paths: &[impl AsRef<Path>]) -> Result<Self, String> {
        let mut certificates = Vec::new();
        for path in paths {
            let path = path.as_ref();
            let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let blocks = pem::parse_many(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            let before = certificates.len();
            for block in blocks.into_iter().filter(|b| b.tag() == "CERTIFICATE") {
                X509Certificate::from_der(block.contents())
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                certificates.push(block.into_contents());
            }
            if certificates.len() == before {
                return Err(format!("{}: no certificate in it", path.display()));
            }
        }
        Ok(Self { certificates })
    }

    /// Whether no CA is configured (then no EK can be vouched for).
    pub fn is_empty(&self) -> bool {
        self.certificates.is_empty()
    }

    /// Checks that `certificate` (DER) was issued by one of the CAs, is valid now, and
    /// certifies exactly `ek`.
    pub fn verify(
        &self,
        certificate: &[u8],
        ek: &EndorsementKey,
        now: time::OffsetDateTime,
    ) -> Result<(), EvidenceError> {
        let (_, cert) = X509Certificate::from_der(certificate)
            .map_err(|e| EvidenceError(format!("the EK certificate does not parse: {e}")))?;
        let issued_by_known_ca = self.certificates.iter().any(|der| {
            X509Certificate::from_der(der).is_ok_and(|(_, ca)| {
                ca.subject() == cert.issuer()
                    && cert.verify_signature(Some(ca.public_key())).is_ok()
            })
        });
        if !issued_by_known_ca {
            return Err(EvidenceError(format!(
                "the EK certificate (issuer {}) does not chain to a configured manufacturer CA",
                cert.issuer()
            )));
        }
        let now = x509_parser::time::ASN1Time::from(now);
        if !cert.validity().is_valid_at(now) {
            return Err(EvidenceError("the EK certificate is not valid now".into()));
        }
        let key = cert
            .public_key()
            .parsed()
            .map_err(|e| EvidenceError(format!("the EK certificate's key: {e}")))?;
        let PublicKey::RSA(rsa) = key else {
            return Err(EvidenceError(
                "the EK certificate is not for an RSA key".into(),
            ));
        };
        let modulus = strip_leading_zeros(rsa.modulus);
        let exponent = rsa.try_exponent().ok();
        if modulus != strip_leading_zeros(&ek.modulus) || exponent != Some(u64::from(ek.exponent)) {
            return Err(EvidenceError(
                "the EK certificate is for another key than the TPM's EK".into(),
            ));
        }
        Ok(())
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

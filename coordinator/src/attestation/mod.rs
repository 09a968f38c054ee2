//! TPM attestation: what makes a node `attested`.
//!
//! On each connection of a node whose agent has a TPM (its hello carries the EK and AK public
//! areas and the EK certificate):
//!
//! 1. **Enrollment**, the first time: the EK certificate must chain to a configured
//!    manufacturer CA and certify exactly the EK; the AK must be a restricted signing key
//!    bound to the TPM; then the coordinator makes a credential for the EK and the AK's name
//!    and the node must activate it — only the TPM that holds both keys can. The AK is then
//!    pinned. Later connections must present the same EK and AK.
//! 2. **Quotes**, at once and every interval: a fresh nonce, a quote over the configured
//!    PCRs signed by the pinned AK, the PCR values checked against the reference (the
//!    operator's for the node, else for its group, else the values at enrollment).
//!
//! Pass → `attested`. Anything else → `unattested`, recorded as `node.attestation_failed`
//! and `policy.denied` with the rule id. Verification needs no TPM: [`tpm`] parses and
//! checks, [`credential`] makes credentials in software.

pub mod credential;
pub mod ek_cert;
pub mod state;
pub mod tpm;
pub mod watch;

use std::time::Duration;

use fogshell_shared::NodeId;
use fogshell_shared::node::Labels;
use fogshell_shared::wire::attest::{PcrSet, PcrValue, TpmIdentity};
use sha2::{Digest as _, Sha256};

use ek_cert::ManufacturerCas;
use state::{AttestationState, NodeRecord, PcrMap, pcr_map};
use tpm::{AttestationKey, EndorsementKey, EvidenceError};

/// The node label that names a node's reference group.
pub const GROUP_LABEL: &str = "attestation-group";

/// The PCRs quoted unless configured: the firmware and boot chain (PC client PCRs 0–7).
pub const DEFAULT_PCRS: [u8; 8] = [0, 1, 2, 3, 4, 5, 6, 7];

/// How often a node is quoted unless configured.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

/// How a coordinator attests nodes (`serve --tpm-ca`, `--attestation-pcrs`,
/// `--attestation-interval`).
#[derive(Debug, Clone)]
pub struct AttestationConfig {
    /// PEM files with the TPM manufacturers' CA certificates EK certificates must chain to.
    pub manufacturer_cas: Vec<std::path::PathBuf>,
    /// The PCRs quoted.
    pub pcrs: PcrSet,
    /// How often each node is quoted.
    pub interval: Duration,
}

impl Default for AttestationConfig {
    fn default() -> Self {
        Self {
            manufacturer_cas: Vec::new(),
            pcrs: PcrSet::new(DEFAULT_PCRS).unwrap_or_default(),
            interval: DEFAULT_INTERVAL,
        }
    }
}

impl AttestationConfig {
    /// The attestor for a data directory.
    pub fn attestor(&self, data_dir: &std::path::Path) -> Result<Attestor, String> {
        if self.pcrs.is_empty() {
            return Err("attestation needs at least one PCR to quote".into());
        }
        Ok(Attestor::new(
            ManufacturerCas::load(&self.manufacturer_cas)?,
            self.pcrs,
            self.interval,
            AttestationState::open(data_dir)?,
        ))
    }
}

/// Parses a PCR list (`0,1,2,7` or `0-7,16`).
pub fn parse_pcrs(text: &str) -> Result<PcrSet, String> {
    let mut indices = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let number = |s: &str| {
            s.trim()
                .parse::<u8>()
                .map_err(|_| format!("{s:?} is no PCR index"))
        };
        match part.split_once('-') {
            Some((from, to)) => indices.extend(number(from)?..=number(to)?),
            None => indices.push(number(part)?),
        }
    }
    let set = PcrSet::new(indices).map_err(|e| e.to_string())?;
    if set.is_empty() {
        return Err("no PCR given".into());
    }
    Ok(set)
}

/// A refusal: the rule that refused (for `policy.denied`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `attestation.…`
    pub rule_id: &'static str,
    /// In words.
    pub reason: String,
}

impl Refusal {
    fn new(rule_id: &'static str, error: impl std::fmt::Display) -> Self {
        Self {
            rule_id,
            reason: error.to_string(),
        }
    }
}

/// The coordinator's attestation settings and memory.
#[derive(Debug)]
pub struct Attestor {
    cas: ManufacturerCas,
    pcrs: PcrSet,
    interval: Duration,
    state: AttestationState,
}

/// A node's keys, checked and ready for enrollment or comparison with its pin.
#[derive(Debug, Clone)]
pub struct CheckedKeys {
    /// The EK.
    pub ek: EndorsementKey,
    /// SHA-256 of the EK's public area (hex).
    pub ek_hash: String,
    /// The AK.
    pub ak: AttestationKey,
}

impl Attestor {
    /// Attestation with these manufacturer CAs, quoting `pcrs` every `interval`, remembering
    /// in `state`.
    pub fn new(
        cas: ManufacturerCas,
        pcrs: PcrSet,
        interval: Duration,
        state: AttestationState,
    ) -> Self {
        Self {
            cas,
            pcrs,
            interval,
            state,
        }
    }

    /// Which PCRs are quoted.
    pub fn pcrs(&self) -> PcrSet {
        self.pcrs
    }

    /// How often.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The pins and references.
    pub fn state(&self) -> &AttestationState {
        &self.state
    }

    /// Parses a node's keys and, if it was enrolled before, checks they are the pinned ones.
    /// Returns the keys and whether they still need enrolling (credential activation).
    pub fn check_identity(
        &self,
        node: &NodeId,
        identity: &TpmIdentity,
        now: time::OffsetDateTime,
    ) -> Result<(CheckedKeys, bool), Refusal> {
        identity
            .validate()
            .map_err(|e| Refusal::new("attestation.malformed", e))?;
        let ek = tpm::endorsement_key(&identity.ek_public)
            .map_err(|e| Refusal::new("attestation.ek", e))?;
        let ak = tpm::attestation_key(&identity.ak_public)
            .map_err(|e| Refusal::new("attestation.ak", e))?;
        let keys = CheckedKeys {
            ek_hash: hex::encode(Sha256::digest(&identity.ek_public)),
            ek,
            ak,
        };
        if let Some(pinned) = self.state.node(node) {
            if pinned.ek_hash != keys.ek_hash {
                return Err(Refusal::new(
                    "attestation.ek_changed",
                    "the node presents another TPM's EK than the one it enrolled with",
                ));
            }
            if pinned.ak_name != hex::encode(&keys.ak.name) {
                return Err(Refusal::new(
                    "attestation.ak_mismatch",
                    "the node presents another AK than the one bound to its EK",
                ));
            }
            return Ok((keys, false));
        }
        if self.cas.is_empty() {
            return Err(Refusal::new(
                "attestation.no_manufacturer_ca",
                "no TPM manufacturer CA is configured (serve --tpm-ca), so no EK can be vouched for",
            ));
        }
        let certificate = identity.ek_certificate.as_deref().ok_or_else(|| {
            Refusal::new(
                "attestation.no_ek_certificate",
                "the TPM has no EK certificate",
            )
        })?;
        self.cas
            .verify(certificate, &keys.ek, now)
            .map_err(|e| Refusal::new("attestation.ek_certificate", e))?;
        Ok((keys, true))
    }

    /// Pins a node's keys after credential activation, with the PCR values of its first
    /// verified quote.
    pub fn enroll(
        &self,
        node: &NodeId,
        keys: &CheckedKeys,
        pcrs: &[PcrValue],
        now: fogshell_shared::Timestamp,
    ) -> Result<(), String> {
        let values = pcr_map(pcrs);
        self.state.put_node(
            node,
            NodeRecord {
                ek_hash: keys.ek_hash.clone(),
                ak_name: hex::encode(&keys.ak.name),
                enrolled_at: now.to_string(),
                enrollment_pcrs: values.clone(),
                last_pcrs: values,
            },
        )
    }

    /// Compares verified PCR values with the node's reference and remembers them as the
    /// last ones seen.
    pub fn judge(
        &self,
        node: &NodeId,
        labels: &Labels,
        values: &[PcrValue],
    ) -> Result<(), Refusal> {
        let quoted = pcr_map(values);
        let record = self.state.node(node);
        if let Some(mut record) = record.clone()
            && record.last_pcrs != quoted
        {
            record.last_pcrs = quoted.clone();
            if let Err(error) = self.state.put_node(node, record) {
                tracing::warn!(%node, %error, "could not remember the last PCR values");
            }
        }
        let references = self
            .state
            .references()
            .map_err(|e| Refusal::new("attestation.reference_unreadable", e))?;
        let group = labels
            .iter()
            .find(|(key, _)| key.as_str() == GROUP_LABEL)
            .map(|(_, value)| value.as_str().to_owned());
        let reference = references
            .nodes
            .get(node)
            .or_else(|| group.as_ref().and_then(|g| references.groups.get(g)))
            .cloned()
            .or_else(|| record.map(|r| r.enrollment_pcrs))
            .ok_or_else(|| {
                Refusal::new(
                    "attestation.no_reference",
                    "no reference PCR values for the node",
                )
            })?;
        pcr_mismatches(&reference, &quoted).map_err(|e| Refusal::new("attestation.pcr_mismatch", e))
    }
}

/// Every reference PCR must be quoted with its reference value.
pub fn pcr_mismatches(reference: &PcrMap, quoted: &PcrMap) -> Result<(), String> {
    let differing: Vec<String> = reference
        .iter()
        .filter(|(index, value)| quoted.get(index) != Some(value))
        .map(|(index, _)| index.to_string())
        .collect();
    if differing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "PCR {} differ from the reference",
            differing.join(", ")
        ))
    }
}

/// An `EvidenceError` during a quote, as a refusal.
pub fn quote_refusal(error: EvidenceError) -> Refusal {
    Refusal::new("attestation.quote", error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcr_lists_parse_with_ranges() {
        let set = parse_pcrs("0-3, 7,16").unwrap();
        assert_eq!(set.indices().collect::<Vec<_>>(), [0, 1, 2, 3, 7, 16]);
        assert!(parse_pcrs("24").is_err());
        assert!(parse_pcrs("").is_err());
        assert!(parse_pcrs("a").is_err());
    }

    #[test]
    fn every_reference_pcr_must_match() {
        let reference: PcrMap = [(0, "aa".into()), (7, "bb".into())].into();
        let mut quoted = reference.clone();
        quoted.insert(16, "cc".into());
        assert!(pcr_mismatches(&reference, &quoted).is_ok());
        quoted.insert(7, "bc".into());
        assert_eq!(
            pcr_mismatches(&reference, &quoted).unwrap_err(),
            "PCR 7 differ from the reference"
        );
        quoted.remove(&0);
        assert!(
            pcr_mismatches(&reference, &quoted)
                .unwrap_err()
                .contains("0, 7")
        );
    }
}

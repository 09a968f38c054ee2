//! The coordinator's certificate authority: it signs the node certificates agents present on
//! the QUIC link (mutual TLS), and the coordinator's own server certificate.
//!
//! Made on first start in `<data dir>/pki/` (`ca.crt`, and `ca.key` readable by the
//! coordinator's user only); loaded on every later start. Agents pin it by the SHA-256 of its
//! public key (`sha256:<hex>` of the SubjectPublicKeyInfo, as kubeadm's
//! `--discovery-token-ca-cert-hash` does), so joining needs no trust on first use.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use fogshell_shared::NodeId;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType,
};
use sha2::{Digest as _, Sha256};

/// How long the CA is valid.
const CA_VALIDITY: time::Duration = time::Duration::days(3650);

/// Why a PKI operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading or writing the CA's files.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The stored CA is unreadable, or a certificate could not be made.
    #[error("{0}")]
    Certificate(String),
    /// A certificate signing request was malformed or its signature did not verify.
    #[error("bad certificate signing request: {0}")]
    BadCsr(String),
}

fn cert_err(context: &str) -> impl FnOnce(rcgen::Error) -> PkiError + '_ {
    move |e| PkiError::Certificate(format!("{context}: {e}"))
}

/// A certificate issued to a node.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    /// DER.
    pub der: Vec<u8>,
    /// PEM.
    pub pem: String,
    /// When it stops being valid.
    pub not_after: time::OffsetDateTime,
}

/// The coordinator's CA.
pub struct CertificateAuthority {
    cert_der: Vec<u8>,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("ca_hash", &self.ca_hash())
            .finish_non_exhaustive()
    }
}

/// Files of the CA under the data directory.
fn paths(data_dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let dir = data_dir.join("pki");
    (dir.join("ca.crt"), dir.join("ca.key"), dir)
}

fn write_private(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    fogshell_shared::files::write_atomically(
        path,
        bytes,
        mode,
        fogshell_shared::files::Durability::Synced,
    )
    .map_err(|source| PkiError::Io {
        context: format!("writing {}", path.display()),
        source,
    })
}

impl CertificateAuthority {
    /// Loads the CA from `<data_dir>/pki/`, making it first if there is none.
    pub fn load_or_create(data_dir: &Path, now: time::OffsetDateTime) -> Result<Self, PkiError> {
        let (cert_path, key_path, dir) = paths(data_dir);
        if cert_path.exists() || key_path.exists() {
            return Self::load(&cert_path, &key_path);
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| PkiError::Io {
                context: format!("creating {}", dir.display()),
                source,
            })?;
        let key = KeyPair::generate().map_err(cert_err("generating the CA key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "fogshell coordinator CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + CA_VALIDITY;
        let cert = params
            .self_signed(&key)
            .map_err(cert_err("signing the CA certificate"))?;
        // The key first: a CA certificate without its key would be unusable.
        write_private(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_private(&cert_path, cert.pem().as_bytes(), 0o644)?;
        tracing::info!(ca_hash = %spki_hash_of_key(&key), "created the coordinator CA");
        Ok(Self {
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    fn load(cert_path: &Path, key_path: &Path) -> Result<Self, PkiError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| PkiError::Io {
                context: format!("reading {}", path.display()),
                source,
            })
        };
        let (cert_pem, key_pem) = (read(cert_path)?, read(key_path)?);
        let key = KeyPair::from_pem(&key_pem).map_err(cert_err("reading the CA key"))?;
        let der = pem::parse(&cert_pem)
            .map_err(|e| PkiError::Certificate(format!("reading the CA certificate: {e}")))?
            .into_contents();
        let issuer = Issuer::from_ca_cert_der(&der.as_slice().into(), key)
            .map_err(cert_err("reading the CA certificate"))?;
        if spki_hash(&der)? != spki_hash_of_key(issuer.key()) {
            return Err(PkiError::Certificate(format!(
                "{} does not belong to {}",
                key_path.display(),
                cert_path.display()
            )));
        }
        Ok(Self {
            cert_der: der,
            cert_pem,
            issuer,
        })
    }

    /// `sha256:<hex>` of the CA's public key: what `fogshell-agent join --ca-hash` pins.
    pub fn ca_hash(&self) -> String {
        spki_hash_of_key(self.issuer.key())
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Signs a node's CSR. Only the CSR's public key is used: the subject, the SAN (the node
    /// id, which the link reads back as the node's identity), the usages and the validity are
    /// the CA's choice, whatever the request asked for.
    pub fn issue_node_certificate(
        &self,
        node_id: &NodeId,
        csr_der: &[u8],
        validity: time::Duration,
        now: time::OffsetDateTime,
    ) -> Result<IssuedCertificate, PkiError> {
        let mut csr = CertificateSigningRequestParams::from_der(&csr_der.into())
            .map_err(|e| PkiError::BadCsr(e.to_string()))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, node_id.as_str());
        params.subject_alt_names = vec![SanType::DnsName(
            node_id
                .as_str()
                .try_into()
                .map_err(cert_err("the node id as a DNS name"))?,
        )];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        // A little slack for clocks behind ours; a tenth of a short validity at most, so a
        // short-lived certificate is not mostly slack.
        params.not_before = now - std::cmp::min(validity / 10_i32, time::Duration::minutes(5));
        params.not_after = now + validity;
        csr.params = params;
        let cert = csr
            .signed_by(&self.issuer)
            .map_err(cert_err("signing the node certificate"))?;
        Ok(IssuedCertificate {
            der: cert.der().to_vec(),
            pem: cert.pem(),
            not_after: now + validity,
        })
    }

    /// A server certificate for the coordinator's own endpoints, for `names` (DNS names or IP
    /// addresses), with a fresh key. Returns (certificate DER, private key DER).
    pub fn issue_server_certificate(
        &self,
        names: &[String],
        validity: time::Duration,
        now: time::OffsetDateTime,
    ) -> Result<(Vec<u8>, Vec<u8>), PkiError> {
        self.issue_tls_server("fogshell coordinator", names, validity, now)
    }

    /// A certificate for a node's edge gateway (`fogshell-coordinator gateway-cert`), for the
    /// `names` users reach it by, with a fresh key. Returns (certificate DER, private key DER).
    pub fn issue_gateway_certificate(
        &self,
        node: &NodeId,
        names: &[String],
        validity: time::Duration,
        now: time::OffsetDateTime,
    ) -> Result<(Vec<u8>, Vec<u8>), PkiError> {
        self.issue_tls_server(&format!("fogshell gateway {node}"), names, validity, now)
    }

    fn issue_tls_server(
        &self,
        common_name: &str,
        names: &[String],
        validity: time::Duration,
        now: time::OffsetDateTime,
    ) -> Result<(Vec<u8>, Vec<u8>), PkiError> {
        let key = KeyPair::generate().map_err(cert_err("generating a server key"))?;
        let mut params =
            CertificateParams::new(names.to_vec()).map_err(cert_err("the server's names"))?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + validity;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(cert_err("signing the server certificate"))?;
        Ok((cert.der().to_vec(), key.serialize_der()))
    }
}

fn spki_hash_of_key(key: &KeyPair) -> String {
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(key.subject_public_key_info()))
    )
}

/// `sha256:<hex>` of a certificate's SubjectPublicKeyInfo.
pub fn spki_hash(cert_der: &[u8]) -> Result<String, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| PkiError::Certificate(format!("parsing a certificate: {e}")))?;
    Ok(format!(
        "sha256:{}",
        hex::encode(Sha256::digest(cert.tbs_certificate.subject_pki.raw))
    ))
}

/// The node id a node certificate names: its one DNS SAN.
pub fn node_id_of(cert_der: &[u8]) -> Result<NodeId, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| PkiError::Certificate(format!("parsing a certificate: {e}")))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| PkiError::Certificate(format!("reading the SAN: {e}")))?
        .ok_or_else(|| PkiError::Certificate("the certificate has no SAN".into()))?;
    let names: Vec<_> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(name) => Some(*name),
            _ => None,
        })
        .collect();
    match names.as_slice() {
        [one] => NodeId::new(*one).map_err(|e| PkiError::Certificate(e.to_string())),
        _ => Err(PkiError::Certificate(
            "a node certificate names exactly one node".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn now() -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp(1_795_000_000).unwrap()
    }

    fn csr(names: Vec<String>, ca: bool) -> (Vec<u8>, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        if ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        let request = params.serialize_request(&key).unwrap();
        (request.der().to_vec(), key)
    }

    #[test]
    fn the_ca_is_made_once_and_its_key_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path(), now()).unwrap();
        let again = CertificateAuthority::load_or_create(dir.path(), now()).unwrap();
        assert_eq!(ca.ca_hash(), again.ca_hash());
        assert_eq!(ca.ca_hash(), spki_hash(ca.cert_der()).unwrap());
        assert!(ca.ca_hash().starts_with("sha256:") && ca.ca_hash().len() == 7 + 64);
        let (_, key_path, pki_dir) = paths(dir.path());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key_path), 0o600);
        assert_eq!(mode(&pki_dir), 0o700);
        assert!(
            !format!("{ca:?}").contains("PRIVATE"),
            "Debug must not show the key"
        );
    }

    #[test]
    fn a_mismatched_key_is_refused() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        CertificateAuthority::load_or_create(a.path(), now()).unwrap();
        CertificateAuthority::load_or_create(b.path(), now()).unwrap();
        let (_, key_a, _) = paths(a.path());
        let (_, key_b, _) = paths(b.path());
        std::fs::copy(key_b, key_a).unwrap();
        let err = CertificateAuthority::load_or_create(a.path(), now()).unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");
    }

    #[test]
    fn node_certificates_name_only_the_node_whatever_the_csr_asks() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path(), now()).unwrap();
        let node: NodeId = "fog-a".parse().unwrap();
        // A greedy CSR: another name, and CA powers.
        let (request, key) = csr(vec!["coordinator.example".into(), "fog-b".into()], true);
        let issued = ca
            .issue_node_certificate(&node, &request, time::Duration::days(30), now())
            .unwrap();
        assert_eq!(node_id_of(&issued.der).unwrap(), node);
        let (_, cert) = x509_parser::parse_x509_certificate(&issued.der).unwrap();
        assert!(!cert.is_ca(), "a node certificate must not be a CA");
        assert_eq!(
            cert.tbs_certificate.subject_pki.raw,
            &key.subject_public_key_info()[..],
            "the certificate carries the CSR's key"
        );
        assert!(
            cert.verify_signature(Some(
                &x509_parser::parse_x509_certificate(ca.cert_der())
                    .unwrap()
                    .1
                    .tbs_certificate
                    .subject_pki
            ))
            .is_ok()
        );
        assert_eq!(issued.not_after, now() + time::Duration::days(30));
    }

    #[test]
    fn bad_csrs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path(), now()).unwrap();
        let node: NodeId = "fog-a".parse().unwrap();
        let day = time::Duration::days(1);
        assert!(matches!(
            ca.issue_node_certificate(&node, b"junk", day, now()),
            Err(PkiError::BadCsr(_))
        ));
        let (mut request, _) = csr(vec!["fog-a".into()], false);
        let last = request.len() - 1;
        request[last] ^= 0x55; // breaks the signature
        assert!(matches!(
            ca.issue_node_certificate(&node, &request, day, now()),
            Err(PkiError::BadCsr(_))
        ));
    }

    #[test]
    fn server_certificates_chain_to_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path(), now()).unwrap();
        let (der, key) = ca
            .issue_server_certificate(
                &["127.0.0.1".into(), "coordinator.local".into()],
                time::Duration::days(1),
                now(),
            )
            .unwrap();
        assert!(!key.is_empty());
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let ca_cert = x509_parser::parse_x509_certificate(ca.cert_der())
            .unwrap()
            .1;
        assert!(
            cert.verify_signature(Some(&ca_cert.tbs_certificate.subject_pki))
                .is_ok()
        );
    }
}

//! `fogshell-agent join`: enrollment, as operators know it from kubeadm and k3s.
//!
//! The agent makes its key, connects to the coordinator's QUIC endpoint (ALPN
//! `fogshell-join/1`) and accepts the server only if its certificate chains to a CA whose
//! public key has the SHA-256 the operator pinned (`--ca-hash sha256:…`): no trust on first
//! use, and the token is never sent to an impostor. It then sends the token and a CSR, and
//! stores the certificate it gets, its key and the CA certificate in `<state dir>/identity/`
//! (key 0600).

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::Instrument as _;

use fogshell_shared::wire::join::{JOIN_ALPN, JoinRequest, JoinResponse};
use fogshell_shared::wire::{MAX_MESSAGE_BYTES, SUPPORTED_VERSIONS, decode_body, encode};
use fogshell_shared::{NodeId, Secret};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest as _, Sha256};

/// Why joining failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The `--ca-hash` is not `sha256:` and 64 hex digits.
    #[error("--ca-hash must be sha256: followed by 64 hex digits")]
    BadCaHash,
    /// The node already has an identity.
    #[error("this node already has an identity in {0}; remove it to join again")]
    AlreadyJoined(PathBuf),
    /// Connecting or the TLS handshake failed (a CA that does not match the pin lands here).
    #[error("connecting to the coordinator: {0}")]
    Connect(String),
    /// The coordinator refused.
    #[error("the coordinator refused: {0}")]
    Refused(String),
    /// The exchange broke.
    #[error("enrollment exchange: {0}")]
    Protocol(String),
    /// Storing the identity failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Where a node's identity lives.
#[derive(Debug, Clone)]
pub struct IdentityPaths {
    /// The folder.
    pub dir: PathBuf,
    /// The node's private key (PEM, 0600).
    pub key: PathBuf,
    /// The node's certificate (PEM).
    pub certificate: PathBuf,
    /// The coordinator CA's certificate (PEM).
    pub ca: PathBuf,
}

impl IdentityPaths {
    /// The identity under a state directory.
    pub fn under(state_dir: &Path) -> Self {
        let dir = state_dir.join("identity");
        Self {
            key: dir.join("node.key"),
            certificate: dir.join("node.crt"),
            ca: dir.join("ca.crt"),
            dir,
        }
    }
}

/// `sha256:<hex>` of a certificate's SubjectPublicKeyInfo.
fn spki_hash(cert: &[u8]) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    Some(format!(
        "sha256:{}",
        hex::encode(Sha256::digest(parsed.tbs_certificate.subject_pki.raw))
    ))
}

/// Accepts a server whose chain holds a CA with the pinned key hash and whose certificate
/// that CA signed for the name dialled.
#[derive(Debug)]
struct PinnedCa {
    hash: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| spki_hash(c).as_deref() == Some(self.hash.as_str()))
            .ok_or_else(|| {
                rustls::Error::General(
                    "the coordinator's CA does not match the pinned --ca-hash".into(),
                )
            })?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&self.provider),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        webpki.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn check_ca_hash(hash: &str) -> Result<String, JoinError> {
    let hex_part = hash.strip_prefix("sha256:").ok_or(JoinError::BadCaHash)?;
    if hex_part.len() == 64 && hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(format!("sha256:{}", hex_part.to_ascii_lowercase()))
    } else {
        Err(JoinError::BadCaHash)
    }
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), JoinError> {
    fogshell_shared::files::write_atomically(
        path,
        bytes,
        mode,
        fogshell_shared::files::Durability::Synced,
    )
    .map_err(|source| JoinError::Io {
        context: format!("writing {}", path.display()),
        source,
    })
}

/// Enrolls this node with the coordinator at `coordinator` (dialled as `server_name`).
pub async fn join(
    coordinator: SocketAddr,
    server_name: &str,
    token: Secret,
    ca_hash: &str,
    node_id: NodeId,
    state_dir: &Path,
) -> Result<IdentityPaths, JoinError> {
    let hash = check_ca_hash(ca_hash)?;
    let paths = IdentityPaths::under(state_dir);
    if paths.certificate.exists() {
        return Err(JoinError::AlreadyJoined(paths.dir));
    }
    let span = tracing::info_span!("join", %node_id, %coordinator);
    async move {
        let key = rcgen::KeyPair::generate().map_err(|e| JoinError::Protocol(e.to_string()))?;
        let csr = rcgen::CertificateParams::new(vec![node_id.to_string()])
            .and_then(|p| p.serialize_request(&key))
            .map_err(|e| JoinError::Protocol(format!("making the CSR: {e}")))?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| JoinError::Connect(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCa { hash, provider }))
            .with_no_client_auth();
        tls.alpn_protocols = vec![JOIN_ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| JoinError::Connect(e.to_string()))?;
        let bind: SocketAddr = if coordinator.is_ipv4() {
            "0.0.0.0:0".parse().expect("valid address")
        } else {
            "[::]:0".parse().expect("valid address")
        };
        let mut endpoint =
            quinn::Endpoint::client(bind).map_err(|e| JoinError::Connect(e.to_string()))?;
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        let connection = endpoint
            .connect(coordinator, server_name)
            .map_err(|e| JoinError::Connect(e.to_string()))?
            .await
            .map_err(|e| JoinError::Connect(e.to_string()))?;

        let request = JoinRequest {
            versions: SUPPORTED_VERSIONS,
            node_id: node_id.clone(),
            token,
            csr_der: csr.der().to_vec(),
        };
        let (mut send, mut recv) = connection
            .open_bi()
            .await
            .map_err(|e| JoinError::Protocol(e.to_string()))?;
        let bytes = encode(&request).map_err(|e| JoinError::Protocol(e.to_string()))?;
        send.write_all(&bytes)
            .await
            .map_err(|e| JoinError::Protocol(e.to_string()))?;
        send.finish()
            .map_err(|e| JoinError::Protocol(e.to_string()))?;
        let answer = recv
            .read_to_end(MAX_MESSAGE_BYTES + 4)
            .await
            .map_err(|e| JoinError::Protocol(e.to_string()))?;
        connection.close(0u32.into(), b"done");
        let body = answer
            .get(4..)
            .ok_or_else(|| JoinError::Protocol("truncated answer".into()))?;
        let (certificate_der, ca_der) = match decode_body::<JoinResponse>(body)
            .map_err(|e| JoinError::Protocol(e.to_string()))?
        {
            JoinResponse::Accepted {
                certificate_der,
                ca_der,
            } => (certificate_der, ca_der),
            JoinResponse::Refused(refusal) => return Err(JoinError::Refused(refusal.message)),
        };
        // The CA it hands over must be the one pinned.
        if spki_hash(&ca_der).as_deref() != Some(check_ca_hash(ca_hash)?.as_str()) {
            return Err(JoinError::Protocol(
                "the CA certificate sent does not match the pin".into(),
            ));
        }

        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&paths.dir)
            .map_err(|source| JoinError::Io {
                context: format!("creating {}", paths.dir.display()),
                source,
            })?;
        let pem = |tag: &str, der: Vec<u8>| pem::encode(&pem::Pem::new(tag, der));
        write_file(&paths.key, key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&paths.ca, pem("CERTIFICATE", ca_der).as_bytes(), 0o644)?;
        // The certificate last: its presence is what says the node has joined.
        write_file(
            &paths.certificate,
            pem("CERTIFICATE", certificate_der).as_bytes(),
            0o644,
        )?;
        tracing::info!("joined");
        Ok(paths)
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_hashes_are_checked_and_normalised() {
        let good = format!("sha256:{}", "AB".repeat(32));
        assert_eq!(
            check_ca_hash(&good).unwrap(),
            format!("sha256:{}", "ab".repeat(32))
        );
        for bad in [
            "",
            "sha256:",
            "md5:abcd",
            &format!("sha256:{}", "g".repeat(64)),
        ] {
            assert!(check_ca_hash(bad).is_err(), "{bad:?}");
        }
    }
}

//! Renewing the node certificate over the link, before it expires, as kubelet does: in the
//! last third of its life the agent sends a certificate request for its own key on the
//! control stream, checks what comes back (this node, this key) and swaps the certificate
//! file in one atomic rename. The connection it asked on carries on — sessions never notice —
//! and the next connection presents the new certificate.
//!
//! The key stays: one file changes, so a crash leaves the old pair or the new one, never a
//! certificate without its key.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::enroll::IdentityPaths;

/// How long after a refused or unanswered request the agent asks again.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// Whether a certificate valid from `not_before` to `not_after` (Unix seconds) is due for
/// renewal at `now`: in the last third of its life, or past it.
pub fn renewal_due(not_before: i64, not_after: i64, now: i64) -> bool {
    let lifetime = not_after.saturating_sub(not_before).max(0);
    now >= not_after.saturating_sub(lifetime / 3)
}

/// A certificate's validity and the SHA-256 of its public key.
struct Validity {
    not_before: i64,
    not_after: i64,
    public_key: Vec<u8>,
}

fn read_validity(der: &[u8]) -> Result<Validity, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("parsing the node certificate: {e}"))?;
    Ok(Validity {
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        public_key: cert.public_key().raw.to_vec(),
    })
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The node's identity files and where their certificate stands.
#[derive(Debug)]
pub struct Renewal {
    paths: IdentityPaths,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    not_before: i64,
    not_after: i64,
    public_key: Vec<u8>,
    /// No request before this (one is out, or the last was refused).
    quiet_until: Option<Instant>,
}

impl Renewal {
    /// Reads the stored certificate's validity.
    pub fn load(paths: &IdentityPaths) -> Result<Self, String> {
        let der = CertificateDer::from_pem_file(&paths.certificate)
            .map_err(|e| format!("{}: {e}", paths.certificate.display()))?;
        let validity = read_validity(&der)?;
        Ok(Self {
            paths: paths.clone(),
            state: Mutex::new(State {
                not_before: validity.not_before,
                not_after: validity.not_after,
                public_key: validity.public_key,
                quiet_until: None,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        fogshell_shared::sync::lock(&self.state)
    }

    /// A certificate request (DER) for the node's key when renewal is due and none is out.
    pub fn request_if_due(&self, now: Instant) -> Option<Result<Vec<u8>, String>> {
        let mut state = self.lock();
        if !renewal_due(state.not_before, state.not_after, unix_now())
            || state.quiet_until.is_some_and(|t| now < t)
        {
            return None;
        }
        state.quiet_until = Some(now + RETRY_AFTER);
        Some(self.csr())
    }

    fn csr(&self) -> Result<Vec<u8>, String> {
        let key_pem = std::fs::read_to_string(&self.paths.key)
            .map_err(|e| format!("{}: {e}", self.paths.key.display()))?;
        let key = rcgen::KeyPair::from_pem(&key_pem).map_err(|e| format!("the node key: {e}"))?;
        // The coordinator names the node from the link's certificate, not from this.
        let csr = rcgen::CertificateParams::new(Vec::<String>::new())
            .and_then(|p| p.serialize_request(&key))
            .map_err(|e| format!("making the request: {e}"))?;
        Ok(csr.der().to_vec())
    }

    /// Checks an issued certificate — for this node's key, newer than the one it replaces —
    /// and stores it. Returns its expiry (Unix seconds).
    pub fn store(&self, certificate_der: &[u8]) -> Result<i64, String> {
        let issued = read_validity(certificate_der)?;
        let mut state = self.lock();
        if issued.public_key != state.public_key {
            return Err("the renewed certificate is for another key".into());
        }
        if issued.not_after <= state.not_after {
            return Err("the renewed certificate ends no later than the current one".into());
        }
        let pem = pem::encode(&pem::Pem::new("CERTIFICATE", certificate_der.to_vec()));
        fogshell_shared::files::write_atomically(
            &self.paths.certificate,
            pem.as_bytes(),
            0o600,
            fogshell_shared::files::Durability::Synced,
        )
        .map_err(|e| format!("writing {}: {e}", self.paths.certificate.display()))?;
        state.not_before = issued.not_before;
        state.not_after = issued.not_after;
        state.quiet_until = None;
        Ok(issued.not_after)
    }

    /// The coordinator refused; ask again after [`RETRY_AFTER`].
    pub fn refused(&self, now: Instant) {
        self.lock().quiet_until = Some(now + RETRY_AFTER);
    }

    /// The stored certificate and key, for the next connection.
    pub fn identity(&self) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), String> {
        let certificate = CertificateDer::from_pem_file(&self.paths.certificate)
            .map_err(|e| format!("{}: {e}", self.paths.certificate.display()))?;
        let key = PrivateKeyDer::from_pem_file(&self.paths.key)
            .map_err(|e| format!("{}: {e}", self.paths.key.display()))?;
        Ok((certificate, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_in_the_last_third() {
        // 30 days from 0.
        let (start, end) = (0, 30 * 86_400);
        assert!(!renewal_due(start, end, 0));
        assert!(!renewal_due(start, end, 19 * 86_400));
        assert!(renewal_due(start, end, 20 * 86_400));
        assert!(renewal_due(start, end, 40 * 86_400));
        // Nonsense validity (ends before it starts) renews at once rather than never.
        assert!(renewal_due(end, start, 0));
    }

    fn identity(dir: &std::path::Path, validity_days: i64) -> (IdentityPaths, rcgen::KeyPair) {
        let paths = IdentityPaths::under(dir);
        std::fs::create_dir_all(&paths.dir).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&paths.key, key.serialize_pem()).unwrap();
        write_cert(&paths, &key, validity_days);
        (paths, key)
    }

    fn cert(key: &rcgen::KeyPair, validity_days: i64) -> rcgen::Certificate {
        let mut params = rcgen::CertificateParams::new(vec!["fog-a".into()]).unwrap();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(validity_days);
        params.self_signed(key).unwrap()
    }

    fn write_cert(paths: &IdentityPaths, key: &rcgen::KeyPair, validity_days: i64) {
        std::fs::write(&paths.certificate, cert(key, validity_days).pem()).unwrap();
    }

    #[test]
    fn a_fresh_certificate_asks_nothing_a_worn_one_asks_once() {
        let dir = tempfile::tempdir().unwrap();
        let (paths, _) = identity(dir.path(), 30);
        let now = Instant::now();
        assert!(Renewal::load(&paths).unwrap().request_if_due(now).is_none());

        let dir = tempfile::tempdir().unwrap();
        let (paths, key) = identity(dir.path(), 0);
        let renewal = Renewal::load(&paths).unwrap();
        let csr = renewal.request_if_due(now).unwrap().unwrap();
        let parsed = rcgen::CertificateSigningRequestParams::from_der(&csr.into()).unwrap();
        use rcgen::PublicKeyData as _;
        assert_eq!(parsed.public_key.der_bytes(), key.der_bytes());
        // One out at a time; again once the quiet period passed.
        assert!(renewal.request_if_due(now).is_none());
        assert!(renewal.request_if_due(now + RETRY_AFTER).is_some());
    }

    #[test]
    fn only_a_later_certificate_for_this_key_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let (paths, key) = identity(dir.path(), 1);
        let renewal = Renewal::load(&paths).unwrap();
        let other_key = rcgen::KeyPair::generate().unwrap();
        let error = renewal.store(cert(&other_key, 30).der()).unwrap_err();
        assert!(error.contains("another key"), "{error}");
        let error = renewal.store(cert(&key, 1).der()).unwrap_err();
        assert!(error.contains("no later"), "{error}");
        let before = std::fs::read(&paths.certificate).unwrap();
        renewal.store(cert(&key, 30).der()).unwrap();
        assert_ne!(std::fs::read(&paths.certificate).unwrap(), before);
        assert!(renewal.identity().is_ok());
        assert!(
            Renewal::load(&paths)
                .unwrap()
                .request_if_due(Instant::now())
                .is_none()
        );
    }
}

//! Join tokens: what an operator hands to a new node so it may enroll, as kubeadm and k3s
//! do. A token is `<id>.<secret>` (6 and 24 characters of `[a-z0-9]`); it is single-use and
//! expires. The coordinator keeps only the SHA-256 of the secret, so its data directory does not
//! hold usable tokens.
//!
//! Tokens live in `<data dir>/join-tokens.json`, rewritten atomically (temporary file, fsync,
//! rename) on every change, so a token redeemed is never redeemable again after a crash.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fogshell_shared::{Secret, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

const ID_LEN: usize = 6;
const SECRET_LEN: usize = 24;
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Why a token was not accepted. Each is recorded as `policy.denied` with its rule id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not `<id>.<secret>` of the right lengths and alphabet.
    #[error("malformed join token")]
    Malformed,
    /// No token with that id.
    #[error("unknown join token")]
    Unknown,
    /// The id exists but the secret is wrong.
    #[error("join token secret does not match")]
    Forged,
    /// Past its expiry.
    #[error("join token expired")]
    Expired,
    /// Already redeemed.
    #[error("join token already used")]
    Used,
}

impl TokenError {
    /// The `policy.denied` rule id for this refusal.
    pub fn rule_id(&self) -> &'static str {
        match self {
            Self::Malformed => "join.token_malformed",
            Self::Unknown => "join.token_unknown",
            Self::Forged => "join.token_forged",
            Self::Expired => "join.token_expired",
            Self::Used => "join.token_reused",
        }
    }
}

/// What is stored of a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it stops being accepted.
    pub expires_at: Timestamp,
    /// When it was redeemed, if it was.
    pub used_at: Option<Timestamp>,
    /// What it is for, in the operator's words.
    pub description: String,
}

/// The token store. The file is the truth: `join-token create` (one process) and a running
/// coordinator (another) both use it, so every operation reads it under an exclusive lock on
/// `join-tokens.lock`, changes it, and writes it back before letting go.
#[derive(Debug)]
pub struct TokenStore {
    path: PathBuf,
    lock_path: PathBuf,
    /// Orders this process's own callers (the file lock is per open file, not per thread).
    local: Mutex<()>,
}

/// The token map, held under both locks until dropped.
struct Locked<'a> {
    tokens: BTreeMap<String, TokenRecord>,
    _file: std::fs::File,
    _local: std::sync::MutexGuard<'a, ()>,
}

fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Equal-time comparison, so the time to refuse a forged secret says nothing about it.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Splits `<id>.<secret>` and checks its shape.
fn parse(token: &str) -> Result<(&str, &str), TokenError> {
    let (id, secret) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let ok = |s: &str, len| s.len() == len && s.bytes().all(|b| ALPHABET.contains(&b));
    if ok(id, ID_LEN) && ok(secret, SECRET_LEN) {
        Ok((id, secret))
    } else {
        Err(TokenError::Malformed)
    }
}

impl TokenStore {
    /// Uses `<data_dir>/join-tokens.json` (empty if absent); checks that it reads.
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        let store = Self {
            path: data_dir.join("join-tokens.json"),
            lock_path: data_dir.join("join-tokens.lock"),
            local: Mutex::new(()),
        };
        drop(store.lock()?);
        Ok(store)
    }

    fn read(&self) -> std::io::Result<BTreeMap<String, TokenRecord>> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", self.path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(e),
        }
    }

    fn save(&self, tokens: &BTreeMap<String, TokenRecord>) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(tokens).map_err(std::io::Error::other)?;
        fogshell_shared::files::write_atomically(
            &self.path,
            &bytes,
            0o600,
            fogshell_shared::files::Durability::Synced,
        )
    }

    fn lock(&self) -> std::io::Result<Locked<'_>> {
        let local = fogshell_shared::sync::lock(&self.local);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)?;
        file.lock()?;
        Ok(Locked {
            tokens: self.read()?,
            _file: file,
            _local: local,
        })
    }

    /// Makes a token valid from `now` for `ttl_seconds`, from 30 random bytes the caller
    /// brings. Returns the token (shown to the operator once) and its id.
    pub fn mint(
        &self,
        random: [u8; ID_LEN + SECRET_LEN],
        now: Timestamp,
        ttl_seconds: u32,
        description: &str,
    ) -> std::io::Result<(Secret, String)> {
        let chars: String = random
            .iter()
            .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
            .collect();
        let (id, secret) = chars.split_at(ID_LEN);
        let expires_at = now
            .plus_seconds(ttl_seconds)
            .ok_or_else(|| std::io::Error::other("token lifetime out of range"))?;
        let mut locked = self.lock()?;
        if locked.tokens.contains_key(id) {
            return Err(std::io::Error::other("token id collision; mint again"));
        }
        let mut next = locked.tokens.clone();
        next.insert(
            id.to_owned(),
            TokenRecord {
                secret_sha256: hash_secret(secret),
                created_at: now,
                expires_at,
                used_at: None,
                description: description.to_owned(),
            },
        );
        self.save(&next)?;
        locked.tokens = next;
        Ok((Secret::new(format!("{id}.{secret}")), id.to_owned()))
    }

    /// Checks a token and, if it is good, marks it used (durably) before saying so. Returns
    /// its id.
    pub fn redeem(&self, token: &Secret, now: Timestamp) -> Result<String, RedeemError> {
        let (id, secret) = parse(token.expose()).map_err(RedeemError::Refused)?;
        let locked = self.lock().map_err(RedeemError::Io)?;
        let record = locked
            .tokens
            .get(id)
            .ok_or(RedeemError::Refused(TokenError::Unknown))?;
        if !same(&record.secret_sha256, &hash_secret(secret)) {
            return Err(RedeemError::Refused(TokenError::Forged));
        }
        if record.used_at.is_some() {
            return Err(RedeemError::Refused(TokenError::Used));
        }
        if now >= record.expires_at {
            return Err(RedeemError::Refused(TokenError::Expired));
        }
        let mut next = locked.tokens.clone();
        if let Some(r) = next.get_mut(id) {
            r.used_at = Some(now);
        }
        self.save(&next).map_err(RedeemError::Io)?;
        Ok(id.to_owned())
    }

    /// Every token's id and record.
    pub fn list(&self) -> std::io::Result<Vec<(String, TokenRecord)>> {
        Ok(self.lock()?.tokens.into_iter().collect())
    }
}

/// Why `redeem` failed.
#[derive(Debug, thiserror::Error)]
pub enum RedeemError {
    /// The token is not acceptable.
    #[error(transparent)]
    Refused(TokenError),
    /// The store could not be written; the token was not consumed.
    #[error("saving the token store: {0}")]
    Io(std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_unix_millis(s * 1000).unwrap()
    }

    fn refused(r: Result<String, RedeemError>) -> TokenError {
        match r {
            Err(RedeemError::Refused(e)) => e,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_token_works_once_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::open(dir.path()).unwrap();
        let (token, id) = store.mint([7; 30], at(100), 3600, "fog-a").unwrap();
        assert!(token.expose().starts_with(&format!("{id}.")));
        assert_eq!(token.expose().len(), 6 + 1 + 24);
        // Nothing in the store's file could be used as the token.
        let file = std::fs::read_to_string(dir.path().join("join-tokens.json")).unwrap();
        assert!(!file.contains(&token.expose()[7..]));

        let reopened = TokenStore::open(dir.path()).unwrap();
        assert_eq!(reopened.redeem(&token, at(200)).unwrap(), id);
        let again = TokenStore::open(dir.path()).unwrap();
        assert_eq!(refused(again.redeem(&token, at(201))), TokenError::Used);
    }

    #[test]
    fn every_kind_of_bad_token_has_its_own_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::open(dir.path()).unwrap();
        let (token, id) = store.mint([1; 30], at(0), 60, "").unwrap();
        assert_eq!(
            refused(store.redeem(&Secret::new("nope"), at(1))),
            TokenError::Malformed
        );
        assert_eq!(
            refused(store.redeem(&Secret::new("ABCDEF.abcdefghijklmnopqrstuvwx"), at(1))),
            TokenError::Malformed
        );
        assert_eq!(
            refused(store.redeem(&Secret::new("zzzzzz.abcdefghijklmnopqrstuvwx"), at(1))),
            TokenError::Unknown
        );
        let forged = Secret::new(format!("{id}.{}", "a".repeat(24)));
        assert_eq!(refused(store.redeem(&forged, at(1))), TokenError::Forged);
        assert_eq!(refused(store.redeem(&token, at(60))), TokenError::Expired);
        assert_eq!(TokenError::Used.rule_id(), "join.token_reused");
    }

    #[test]
    fn the_store_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::open(dir.path()).unwrap();
        store.mint([2; 30], at(0), 60, "").unwrap();
        let mode = std::fs::metadata(dir.path().join("join-tokens.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(store.list().unwrap().len(), 1);
    }
}

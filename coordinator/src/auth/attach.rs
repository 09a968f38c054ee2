//! Attach tokens, the minting side: what `POST /v1/sessions` hands out for the terminal's
//! WebSocket URL. The format and the check are in [`fogshell_shared::attach_token`], shared
//! with the nodes' edge gateways.
//!
//! Short-lived (60 s by default), bound to one session, the node it runs on and the PTY
//! endpoint, and signed with Ed25519 keys that exist only in this coordinator's memory. Keys
//! rotate every [`ROTATE_EVERY`]; the published set is the previous, the current and the
//! next key, so a node always knows a key a full period before any token is signed with it,
//! and tokens minted just before a rotation still verify. A restart makes new keys (tokens
//! outstanding then cost a client one `POST /v1/sessions/{id}/attach`); nodes get the new set
//! in the welcome of their next link.

use std::sync::Mutex;
use std::time::Duration;

use fogshell_shared::attach_token::{self, AttachClaims, AttachKey, AttachRefusal};
use fogshell_shared::{NodeId, SessionId, Timestamp};
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use tokio::sync::watch;

/// How long an attach token is valid by default.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// How often the signing key is replaced.
pub const ROTATE_EVERY: Duration = Duration::from_secs(600);

struct SigningKey {
    kid: u64,
    pair: Ed25519KeyPair,
}

impl SigningKey {
    fn fresh() -> Result<Self, String> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| format!("randomness: {e}"))?;
        let mut kid = [0u8; 8];
        getrandom::fill(&mut kid).map_err(|e| format!("randomness: {e}"))?;
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
            .map_err(|e| format!("an attach key: {e}"))?;
        Ok(Self {
            kid: u64::from_le_bytes(kid),
            pair,
        })
    }

    fn public(&self) -> AttachKey {
        let mut public_key = [0u8; 32];
        public_key.copy_from_slice(self.pair.public_key().as_ref());
        AttachKey {
            kid: self.kid,
            public_key,
        }
    }
}

struct KeyRing {
    previous: Option<SigningKey>,
    current: SigningKey,
    next: SigningKey,
    rotated_at: Timestamp,
}

impl KeyRing {
    fn published(&self) -> Vec<AttachKey> {
        self.previous
            .iter()
            .chain([&self.current, &self.next])
            .map(SigningKey::public)
            .collect()
    }
}

/// Mints attach tokens and publishes the keys that check them.
pub struct AttachTokens {
    ring: Mutex<KeyRing>,
    ttl: Duration,
    published: watch::Sender<Vec<AttachKey>>,
}

impl std::fmt::Debug for AttachTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachTokens")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl AttachTokens {
    /// A key ring with fresh keys; tokens live `ttl`.
    pub fn new(ttl: Duration, now: Timestamp) -> Result<Self, String> {
        let ring = KeyRing {
            previous: None,
            current: SigningKey::fresh()?,
            next: SigningKey::fresh()?,
            rotated_at: now,
        };
        let published = watch::Sender::new(ring.published());
        Ok(Self {
            ring: Mutex::new(ring),
            ttl,
            published,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeyRing> {
        fogshell_shared::sync::lock(&self.ring)
    }

    /// The public keys nodes check tokens with now.
    pub fn keys(&self) -> Vec<AttachKey> {
        self.published.borrow().clone()
    }

    /// Follows the published keys (each link sends a new set to its node).
    pub fn subscribe(&self) -> watch::Receiver<Vec<AttachKey>> {
        self.published.subscribe()
    }

    /// Mints a token for `session_id` on `node`; returns it with its expiry.
    pub fn mint(
        &self,
        session_id: SessionId,
        node: &NodeId,
        now: Timestamp,
    ) -> Result<(String, Timestamp), String> {
        let mut ring = self.lock();
        let due = now.unix_millis() - ring.rotated_at.unix_millis();
        if due >= ROTATE_EVERY.as_millis() as i64 {
            // One step per mint, so the key that signs next was always published before.
            let next = std::mem::replace(&mut ring.next, SigningKey::fresh()?);
            ring.previous = Some(std::mem::replace(&mut ring.current, next));
            ring.rotated_at = now;
            self.published.send_replace(ring.published());
            tracing::info!(kid = ring.current.kid, "attach keys rotated");
        }
        let expires_at =
            Timestamp::from_unix_millis(now.unix_millis() + self.ttl.as_millis() as i64)
                .map_err(|e| e.to_string())?;
        let claims = AttachClaims {
            sid: session_id,
            node: node.clone(),
            aud: attach_token::AUDIENCE.into(),
            exp: expires_at.unix_millis(),
            kid: ring.current.kid,
        };
        let payload = attach_token::encode_claims(&claims);
        let signature = ring.current.pair.sign(payload.as_bytes());
        Ok((
            attach_token::assemble(&payload, signature.as_ref()),
            expires_at,
        ))
    }

    /// Checks `token` for `session_id` at `now`, for the coordinator's relay: any node, since
    /// the relay follows the session wherever it moved.
    pub fn verify(
        &self,
        token: &str,
        session_id: SessionId,
        now: Timestamp,
    ) -> Result<AttachClaims, AttachRefusal> {
        attach_token::verify(token, &self.keys(), session_id, None, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_unix_millis(ms).unwrap()
    }

    fn fog_a() -> NodeId {
        "fog-a".parse().unwrap()
    }

    #[test]
    fn a_token_opens_its_session_until_it_expires() {
        let tokens = AttachTokens::new(DEFAULT_TTL, at(0)).unwrap();
        let (a, b) = (
            SessionId::from_random_bytes([1; 16]),
            SessionId::from_random_bytes([2; 16]),
        );
        let (token, expires) = tokens.mint(a, &fog_a(), at(1000)).unwrap();
        assert_eq!(expires, at(61_000));
        let claims = tokens.verify(&token, a, at(60_999)).unwrap();
        assert_eq!(claims.node, fog_a());
        assert_eq!(
            tokens.verify(&token, a, at(61_000)),
            Err(AttachRefusal::Expired)
        );
        assert_eq!(
            tokens.verify(&token, b, at(2000)),
            Err(AttachRefusal::WrongSession)
        );
        // Another coordinator's keys sign nothing this one accepts.
        let other = AttachTokens::new(DEFAULT_TTL, at(0)).unwrap();
        let (foreign, _) = other.mint(a, &fog_a(), at(0)).unwrap();
        assert_eq!(
            tokens.verify(&foreign, a, at(1)),
            Err(AttachRefusal::Invalid)
        );
    }

    #[test]
    fn keys_rotate_published_a_period_ahead() {
        let tokens = AttachTokens::new(Duration::from_secs(3600), at(0)).unwrap();
        let published = tokens.subscribe();
        let before = tokens.keys();
        assert_eq!(before.len(), 2, "current and next");
        let a = SessionId::from_random_bytes([1; 16]);
        let (old, _) = tokens.mint(a, &fog_a(), at(0)).unwrap();
        let period = ROTATE_EVERY.as_millis() as i64;
        let (newer, _) = tokens.mint(a, &fog_a(), at(period)).unwrap();
        assert!(published.has_changed().unwrap(), "a rotation is published");
        // A node that still holds the set from before the rotation checks the new token:
        // its key was published as "next".
        attach_token::verify(&newer, &before, a, Some(&fog_a()), at(period + 1)).unwrap();
        tokens.verify(&old, a, at(period + 1)).unwrap();
        tokens.mint(a, &fog_a(), at(2 * period)).unwrap();
        tokens.verify(&newer, a, at(2 * period + 1)).unwrap();
        assert_eq!(
            tokens.verify(&old, a, at(2 * period + 1)),
            Err(AttachRefusal::Invalid),
            "two rotations retire a key"
        );
        assert_eq!(tokens.keys().len(), 3);
    }
}

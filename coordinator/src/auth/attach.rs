//! Attach tokens: what `POST /v1/sessions` hands out for the terminal's WebSocket URL.
//!
//! Short-lived (60 s by default), bound to one session and to the attach endpoint, and
//! signed (HMAC-SHA-256) with a key that exists only in this coordinator's memory and is
//! replaced every [`ROTATE_EVERY`]; the previous key is kept for one more period so tokens
//! minted just before a rotation still work. A restart invalidates every outstanding token,
//! which costs a client one `POST /v1/sessions/{id}/attach`.
//!
//! The format is ours (`fsa1.<payload>.<mac>`, base64url): a JWT library would add algorithm
//! negotiation we do not want, and the distinct prefix lets the API recognise — and refuse —
//! an attach token presented as a bearer token.

use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use fogshell_shared::{SessionId, Timestamp};
use ring::hmac;
use serde::{Deserialize, Serialize};

use super::AuthError;

/// How long an attach token is valid by default.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// How often the signing key is replaced.
pub const ROTATE_EVERY: Duration = Duration::from_secs(600);

/// The prefix every attach token starts with.
pub const PREFIX: &str = "fsa1.";

/// What a token asserts.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// The one session it opens.
    sid: SessionId,
    /// The one endpoint it is for.
    aud: String,
    /// Expiry, Unix milliseconds.
    exp: i64,
    /// Which key generation signed it.
    generation: u64,
}

const AUDIENCE: &str = "fogshell-pty";

struct KeyRing {
    generation: u64,
    current: hmac::Key,
    previous: Option<hmac::Key>,
    rotated_at: Timestamp,
}

/// Mints and checks attach tokens.
pub struct AttachTokens {
    ring: Mutex<KeyRing>,
    ttl: Duration,
}

impl std::fmt::Debug for AttachTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachTokens")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

fn fresh_key() -> Result<hmac::Key, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("randomness: {e}"))?;
    Ok(hmac::Key::new(hmac::HMAC_SHA256, &bytes))
}

impl AttachTokens {
    /// A key ring with a fresh key; tokens live `ttl`.
    pub fn new(ttl: Duration, now: Timestamp) -> Result<Self, String> {
        Ok(Self {
            ring: Mutex::new(KeyRing {
                generation: 1,
                current: fresh_key()?,
                previous: None,
                rotated_at: now,
            }),
            ttl,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeyRing> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Mints a token for `session_id`; returns it with its expiry.
    pub fn mint(
        &self,
        session_id: SessionId,
        now: Timestamp,
    ) -> Result<(String, Timestamp), String> {
        let mut ring = self.lock();
        let due = now.unix_millis() - ring.rotated_at.unix_millis();
        if due >= ROTATE_EVERY.as_millis() as i64 {
            let next = fresh_key()?;
            ring.previous = Some(std::mem::replace(&mut ring.current, next));
            ring.generation += 1;
            ring.rotated_at = now;
        }
        let expires_at =
            Timestamp::from_unix_millis(now.unix_millis() + self.ttl.as_millis() as i64)
                .map_err(|e| e.to_string())?;
        let claims = Claims {
            sid: session_id,
            aud: AUDIENCE.into(),
            exp: expires_at.unix_millis(),
            generation: ring.generation,
        };
        let payload = B64.encode(serde_json::to_vec(&claims).map_err(|e| e.to_string())?);
        let mac = hmac::sign(&ring.current, payload.as_bytes());
        Ok((
            format!("{PREFIX}{payload}.{}", B64.encode(mac.as_ref())),
            expires_at,
        ))
    }

    /// Checks `token` for `session_id` at `now`.
    pub fn verify(
        &self,
        token: &str,
        session_id: SessionId,
        now: Timestamp,
    ) -> Result<(), AuthError> {
        let invalid =
            || AuthError::new("auth.attach_token_invalid", "the attach token is not valid");
        let rest = token.strip_prefix(PREFIX).ok_or_else(invalid)?;
        let (payload, mac) = rest.split_once('.').ok_or_else(invalid)?;
        let mac = B64.decode(mac).map_err(|_| invalid())?;
        let claims: Claims = B64
            .decode(payload)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(invalid)?;
        {
            let ring = self.lock();
            let key = if claims.generation == ring.generation {
                &ring.current
            } else if claims.generation + 1 == ring.generation {
                ring.previous.as_ref().ok_or_else(invalid)?
            } else {
                return Err(invalid());
            };
            hmac::verify(key, payload.as_bytes(), &mac).map_err(|_| invalid())?;
        }
        if claims.aud != AUDIENCE {
            return Err(invalid());
        }
        if claims.sid != session_id {
            return Err(AuthError::new(
                "auth.attach_token_wrong_session",
                "the attach token is for another session",
            ));
        }
        if now.unix_millis() >= claims.exp {
            return Err(AuthError::new(
                "auth.attach_token_expired",
                "the attach token has expired; ask for a new one",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_unix_millis(ms).unwrap()
    }

    #[test]
    fn a_token_opens_its_session_until_it_expires() {
        let tokens = AttachTokens::new(DEFAULT_TTL, at(0)).unwrap();
        let (a, b) = (
            SessionId::from_random_bytes([1; 16]),
            SessionId::from_random_bytes([2; 16]),
        );
        let (token, expires) = tokens.mint(a, at(1000)).unwrap();
        assert_eq!(expires, at(61_000));
        tokens.verify(&token, a, at(60_999)).unwrap();
        assert_eq!(
            tokens.verify(&token, a, at(61_000)).unwrap_err().rule_id,
            "auth.attach_token_expired"
        );
        assert_eq!(
            tokens.verify(&token, b, at(2000)).unwrap_err().rule_id,
            "auth.attach_token_wrong_session"
        );
    }

    #[test]
    fn tampering_and_foreign_keys_are_refused() {
        let tokens = AttachTokens::new(DEFAULT_TTL, at(0)).unwrap();
        let other = AttachTokens::new(DEFAULT_TTL, at(0)).unwrap();
        let a = SessionId::from_random_bytes([1; 16]);
        let (token, _) = other.mint(a, at(0)).unwrap();
        assert_eq!(
            tokens.verify(&token, a, at(1)).unwrap_err().rule_id,
            "auth.attach_token_invalid"
        );
        let (token, _) = tokens.mint(a, at(0)).unwrap();
        let (payload, mac) = token.strip_prefix(PREFIX).unwrap().split_once('.').unwrap();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap();
        claims["exp"] = serde_json::json!(i64::MAX);
        let forged = format!("{PREFIX}{}.{mac}", B64.encode(claims.to_string()));
        assert_eq!(
            tokens.verify(&forged, a, at(1)).unwrap_err().rule_id,
            "auth.attach_token_invalid"
        );
        for junk in ["", "fsa1.", "fsa1.x.y", "eyJhbGciOi.x.y"] {
            assert!(tokens.verify(junk, a, at(1)).is_err());
        }
    }

    #[test]
    fn keys_rotate_and_the_previous_one_still_verifies() {
        let tokens = AttachTokens::new(Duration::from_secs(3600), at(0)).unwrap();
        let a = SessionId::from_random_bytes([1; 16]);
        let (old, _) = tokens.mint(a, at(0)).unwrap();
        let period = ROTATE_EVERY.as_millis() as i64;
        let (newer, _) = tokens.mint(a, at(period)).unwrap();
        tokens.verify(&old, a, at(period + 1)).unwrap();
        tokens.mint(a, at(2 * period)).unwrap();
        tokens.verify(&newer, a, at(2 * period + 1)).unwrap();
        assert!(
            tokens.verify(&old, a, at(2 * period + 1)).is_err(),
            "two rotations retire a key"
        );
    }
}

//! Attach tokens: what opens a terminal's WebSocket, at the coordinator's relay or at a node's
//! own edge gateway.
//!
//! A token is `fsa2.<claims>.<signature>` (base64url): compact JSON claims signed with
//! Ed25519 by the coordinator. The coordinator keeps the private keys; nodes get the public
//! keys in the link's welcome (and again whenever they rotate), so a node checks a token
//! offline — also while its link to the coordinator is down. The claims bind the token to one
//! session, the node it runs on, the PTY endpoint (`aud`) and a short expiry.
//!
//! The format is ours rather than a JWT: a JWT library would bring algorithm negotiation we
//! do not want, and the distinct prefix lets the API recognise — and refuse — an attach token
//! presented as an API bearer token. Verification lives here, once, for both sides; signing
//! needs the private key and lives in the coordinator.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};

use crate::ids::{NodeId, SessionId};
use crate::timestamp::Timestamp;

/// Every attach token starts with this, whatever its version (the API refuses any of them as
/// a bearer token).
pub const FAMILY_PREFIX: &str = "fsa";
/// The prefix of this version's tokens.
pub const PREFIX: &str = "fsa2.";
/// The audience every attach token names: the PTY endpoint, nothing else.
pub const AUDIENCE: &str = "fogshell-pty";
/// The most public keys a node keeps (the coordinator publishes previous, current and next).
pub const MAX_KEYS: usize = 8;
/// The longest token accepted; anything longer is not ours.
pub const MAX_TOKEN_BYTES: usize = 1024;

/// A public key that signs attach tokens, as the coordinator publishes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct AttachKey {
    /// The key's id, named in the tokens it signs.
    pub kid: u64,
    /// The Ed25519 public key.
    pub public_key: [u8; 32],
}

/// What a token asserts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachClaims {
    /// The one session it opens.
    pub sid: SessionId,
    /// The node the session ran on when the token was minted: the only edge gateway that
    /// takes it.
    pub node: NodeId,
    /// The one endpoint it is for ([`AUDIENCE`]).
    pub aud: String,
    /// Expiry, Unix milliseconds.
    pub exp: i64,
    /// Which key signed it.
    pub kid: u64,
}

impl AttachClaims {
    /// When the token stops being accepted.
    pub fn expires_at(&self) -> Option<Timestamp> {
        Timestamp::from_unix_millis(self.exp).ok()
    }
}

/// Why a token was refused. Each has a stable rule id for `policy.denied`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AttachRefusal {
    /// Not a token, not signed by a known key, or not for the PTY endpoint.
    #[error("the attach token is not valid")]
    Invalid,
    /// Signed, but for another session.
    #[error("the attach token is for another session")]
    WrongSession,
    /// Signed, but for a session on another node.
    #[error("the attach token is for a session on another node")]
    WrongNode,
    /// Expired.
    #[error("the attach token has expired; ask for a new one")]
    Expired,
}

impl AttachRefusal {
    /// The rule id recorded in `policy.denied`.
    pub fn rule_id(self) -> &'static str {
        match self {
            Self::Invalid => "auth.attach_token_invalid",
            Self::WrongSession => "auth.attach_token_wrong_session",
            Self::WrongNode => "auth.attach_token_wrong_node",
            Self::Expired => "auth.attach_token_expired",
        }
    }
}

/// Whether `token` is an attach token of any version (`fsa<N>.…`), so the API can refuse one
/// presented as a bearer token by name.
pub fn looks_like(token: &str) -> bool {
    token
        .strip_prefix(FAMILY_PREFIX)
        .and_then(|rest| rest.split_once('.'))
        .is_some_and(|(version, _)| {
            !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit())
        })
}

/// The bytes a token's signature covers: the base64url claims, as they stand in the token.
pub fn encode_claims(claims: &AttachClaims) -> String {
    // Serializing these plain fields cannot fail.
    B64.encode(serde_json::to_vec(claims).unwrap_or_default())
}

/// A token from its encoded claims and their signature.
pub fn assemble(encoded_claims: &str, signature: &[u8]) -> String {
    format!("{PREFIX}{encoded_claims}.{}", B64.encode(signature))
}

/// Checks `token` for `session_id` at `now` against `keys`. With `node`, the token must also
/// name that node (an edge gateway serves only its own sessions); the coordinator's relay
/// follows a session wherever it moved and passes `None`.
pub fn verify(
    token: &str,
    keys: &[AttachKey],
    session_id: SessionId,
    node: Option<&NodeId>,
    now: Timestamp,
) -> Result<AttachClaims, AttachRefusal> {
    use AttachRefusal::Invalid;
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Invalid);
    }
    let rest = token.strip_prefix(PREFIX).ok_or(Invalid)?;
    let (payload, signature) = rest.split_once('.').ok_or(Invalid)?;
    let signature = B64.decode(signature).map_err(|_| Invalid)?;
    let claims: AttachClaims = B64
        .decode(payload)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(Invalid)?;
    let key = keys.iter().find(|k| k.kid == claims.kid).ok_or(Invalid)?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key.public_key)
        .verify(payload.as_bytes(), &signature)
        .map_err(|_| Invalid)?;
    if claims.aud != AUDIENCE {
        return Err(Invalid);
    }
    if claims.sid != session_id {
        return Err(AttachRefusal::WrongSession);
    }
    if node.is_some_and(|node| *node != claims.node) {
        return Err(AttachRefusal::WrongNode);
    }
    if now.unix_millis() >= claims.exp {
        return Err(AttachRefusal::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair as _};

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_unix_millis(ms).unwrap()
    }

    fn key_pair(seed: u8) -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap()
    }

    fn public(pair: &Ed25519KeyPair, kid: u64) -> AttachKey {
        AttachKey {
            kid,
            public_key: pair.public_key().as_ref().try_into().unwrap(),
        }
    }

    fn mint(pair: &Ed25519KeyPair, claims: &AttachClaims) -> String {
        let payload = encode_claims(claims);
        assemble(&payload, pair.sign(payload.as_bytes()).as_ref())
    }

    fn claims(sid: SessionId, node: &str, exp: i64, kid: u64) -> AttachClaims {
        AttachClaims {
            sid,
            node: node.parse().unwrap(),
            aud: AUDIENCE.into(),
            exp,
            kid,
        }
    }

    #[test]
    fn a_token_opens_its_session_on_its_node_until_it_expires() {
        let pair = key_pair(1);
        let keys = [public(&pair, 7)];
        let a = SessionId::from_random_bytes([1; 16]);
        let b = SessionId::from_random_bytes([2; 16]);
        let fog_a: NodeId = "fog-a".parse().unwrap();
        let fog_b: NodeId = "fog-b".parse().unwrap();
        let token = mint(&pair, &claims(a, "fog-a", 1000, 7));
        let ok = verify(&token, &keys, a, Some(&fog_a), at(999)).unwrap();
        assert_eq!(ok.node, fog_a);
        // The relay follows the session and checks no node.
        verify(&token, &keys, a, None, at(999)).unwrap();
        let refused = |session, node, now| verify(&token, &keys, session, node, at(now));
        assert_eq!(refused(a, Some(&fog_a), 1000), Err(AttachRefusal::Expired));
        assert_eq!(
            refused(b, Some(&fog_a), 0),
            Err(AttachRefusal::WrongSession)
        );
        assert_eq!(refused(a, Some(&fog_b), 0), Err(AttachRefusal::WrongNode));
    }

    #[test]
    fn forged_tampered_and_unknown_keys_are_refused() {
        let pair = key_pair(1);
        let stranger = key_pair(2);
        let keys = [public(&pair, 1)];
        let a = SessionId::from_random_bytes([1; 16]);
        // Signed by a key nobody published, under a published kid.
        let forged = mint(&stranger, &claims(a, "fog-a", i64::MAX, 1));
        assert_eq!(
            verify(&forged, &keys, a, None, at(0)),
            Err(AttachRefusal::Invalid)
        );
        // A kid nobody published.
        let unknown = mint(&pair, &claims(a, "fog-a", i64::MAX, 9));
        assert_eq!(
            verify(&unknown, &keys, a, None, at(0)),
            Err(AttachRefusal::Invalid)
        );
        // Claims changed after signing: a later expiry, another node.
        let token = mint(&pair, &claims(a, "fog-a", 10, 1));
        let signature = token.rsplit_once('.').unwrap().1;
        for changed in [claims(a, "fog-a", i64::MAX, 1), claims(a, "fog-b", 10, 1)] {
            let tampered = format!("{PREFIX}{}.{signature}", encode_claims(&changed));
            assert_eq!(
                verify(&tampered, &keys, a, None, at(0)),
                Err(AttachRefusal::Invalid)
            );
        }
        // Another audience.
        let mut other = claims(a, "fog-a", i64::MAX, 1);
        other.aud = "fogshell-api".into();
        assert_eq!(
            verify(&mint(&pair, &other), &keys, a, None, at(0)),
            Err(AttachRefusal::Invalid)
        );
        for junk in ["", "fsa2.", "fsa2.x.y", "fsa1.x.y", "eyJhbGciOi.x.y"] {
            assert_eq!(
                verify(junk, &keys, a, None, at(0)),
                Err(AttachRefusal::Invalid)
            );
        }
        assert_eq!(
            verify(&"a".repeat(5000), &keys, a, None, at(0)),
            Err(AttachRefusal::Invalid)
        );
    }

    #[test]
    fn attach_tokens_of_any_version_are_recognised() {
        assert!(looks_like("fsa1.abc.def"));
        assert!(looks_like("fsa2.abc.def"));
        assert!(!looks_like("fsa.abc"));
        assert!(!looks_like("fsax.abc"));
        assert!(!looks_like("eyJhbGciOi.x.y"));
    }

    #[test]
    fn any_published_key_verifies_its_own_tokens() {
        let (old, new) = (key_pair(1), key_pair(2));
        let keys = [public(&old, 1), public(&new, 2)];
        let a = SessionId::from_random_bytes([1; 16]);
        verify(&mint(&old, &claims(a, "n", 9, 1)), &keys, a, None, at(0)).unwrap();
        verify(&mint(&new, &claims(a, "n", 9, 2)), &keys, a, None, at(0)).unwrap();
        // A key signs only under its own kid.
        assert!(verify(&mint(&old, &claims(a, "n", 9, 2)), &keys, a, None, at(0)).is_err());
    }
}

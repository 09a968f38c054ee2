//! OIDC access-token verification, the production path: the issuer is configured by URL; its
//! discovery document and JWKS are fetched and cached, and fetched again (at most every
//! [`REFETCH_INTERVAL`]) when a token names a key id the cache lacks, so the issuer can rotate
//! keys without a coordinator restart.
//!
//! Only RS256, ES256 and EdDSA are accepted, and only with a key of the matching type: a
//! token's `alg` is checked against the key it names, which rules out `none` and HMAC keyed
//! with a public key. `iss`, `aud`, `exp` (required) and `nbf` are checked with a small leeway.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};

use super::{AuthError, Principal, Scope};

/// The shortest time between two JWKS fetches caused by unknown key ids: a flood of tokens
/// with made-up `kid`s cannot turn the coordinator into a load generator against the issuer.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// Clock skew tolerated on `exp`, `nbf` and `iat`.
pub const LEEWAY: Duration = Duration::from_secs(30);

/// The longest an access token may be valid in all, unless configured otherwise: a day.
/// Providers issue minutes to hours; a token valid for years is a standing key to whoever
/// copies it.
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Where tokens come from and how to read them.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The issuer URL, exactly as tokens' `iss` and the discovery document name it.
    pub issuer: String,
    /// The audience tokens must be for.
    pub audience: String,
    /// The claim naming the tenant.
    pub tenant_claim: String,
    /// The claim holding space-separated scopes.
    pub scope_claim: String,
    /// The longest a token may be valid, from `iat` (or from now, without one) to `exp`.
    pub max_lifetime: Duration,
}

impl OidcConfig {
    /// The defaults for the claim names: `tenant` and `scope`.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            tenant_claim: "tenant".into(),
            scope_claim: "scope".into(),
            max_lifetime: MAX_LIFETIME,
        }
    }
}

#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

/// A verifying key and the one algorithm it may be used with.
struct Key {
    key: DecodingKey,
    algorithm: Algorithm,
}

#[derive(Default)]
struct Keys {
    by_kid: BTreeMap<String, Key>,
    fetched_at: Option<Instant>,
}

/// Verifies access tokens from one issuer.
pub struct OidcVerifier {
    config: OidcConfig,
    http: reqwest::Client,
    keys: RwLock<Keys>,
    /// Held while fetching, so concurrent misses fetch once.
    fetching: Mutex<()>,
}

impl std::fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcVerifier")
            .field("issuer", &self.config.issuer)
            .field("audience", &self.config.audience)
            .finish_non_exhaustive()
    }
}

/// The algorithm a JWK may verify, from its declared `alg` or else its key type; `None` for
/// keys outside the allow-list (HMAC `oct` keys, RSA-PSS, P-384…).
fn key_algorithm(jwk: &Jwk) -> Option<Algorithm> {
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(by_type),
        Some(KeyAlgorithm::RS256) if by_type == Algorithm::RS256 => Some(by_type),
        Some(KeyAlgorithm::ES256) if by_type == Algorithm::ES256 => Some(by_type),
        Some(KeyAlgorithm::EdDSA) if by_type == Algorithm::EdDSA => Some(by_type),
        Some(_) => None,
    }
}

impl OidcVerifier {
    /// A verifier for `config`, fetching over `http`. Nothing is fetched until the first token
    /// arrives, so the coordinator starts while the issuer is briefly unreachable.
    pub fn new(config: OidcConfig, http: reqwest::Client) -> Self {
        Self {
            config,
            http,
            keys: RwLock::new(Keys::default()),
            fetching: Mutex::new(()),
        }
    }

    /// The configured issuer.
    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// Fetches discovery and the JWKS now (at start-up, to fail early on a wrong URL).
    pub async fn refresh(&self) -> Result<usize, String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let discovery: Discovery = self.get_json(&url).await?;
        if discovery.issuer != self.config.issuer {
            return Err(format!(
                "{url} names issuer {:?}, not the configured {:?}",
                discovery.issuer, self.config.issuer
            ));
        }
        let set: JwkSet = self.get_json(&discovery.jwks_uri).await?;
        let mut by_kid = BTreeMap::new();
        for jwk in &set.keys {
            let (Some(kid), Some(algorithm)) = (jwk.common.key_id.clone(), key_algorithm(jwk))
            else {
                continue;
            };
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                by_kid.insert(kid, Key { key, algorithm });
            }
        }
        let count = by_kid.len();
        *self.keys.write().await = Keys {
            by_kid,
            fetched_at: Some(Instant::now()),
        };
        tracing::info!(issuer = %self.config.issuer, keys = count, "issuer keys fetched");
        Ok(count)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        let response = self
            .http
            .get(url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| format!("fetching {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("fetching {url}: HTTP {}", response.status()));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| format!("fetching {url}: {e}"))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{url}: {e}"))
    }

    /// Refetches the keys when `kid` is unknown, unless a fetch happened recently.
    async fn refetch_for(&self, kid: &str) {
        let _guard = self.fetching.lock().await;
        {
            let keys = self.keys.read().await;
            let recent = keys
                .fetched_at
                .is_some_and(|at| at.elapsed() < REFETCH_INTERVAL);
            if keys.by_kid.contains_key(kid) || recent {
                return;
            }
        }
        if let Err(error) = self.refresh().await {
            tracing::warn!(%error, "could not fetch the issuer's keys");
            // Count the failure as a fetch, so a down issuer is not hammered either.
            self.keys.write().await.fetched_at = Some(Instant::now());
        }
    }

    /// Verifies `token` and maps its claims to a caller.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            // `alg: none` and HMAC-less oddities fail here: the header does not parse.
            AuthError::new("auth.malformed_token", format!("not a usable JWT: {e}"))
        })?;
        if !matches!(
            header.alg,
            Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA
        ) {
            return Err(AuthError::new(
                "auth.algorithm_not_allowed",
                format!("algorithm {:?} is not accepted", header.alg),
            ));
        }
        let kid = header
            .kid
            .ok_or_else(|| AuthError::new("auth.unknown_key", "the token names no key id"))?;
        if !self.keys.read().await.by_kid.contains_key(&kid) {
            self.refetch_for(&kid).await;
        }
        let keys = self.keys.read().await;
        let key = keys.by_kid.get(&kid).ok_or_else(|| {
            AuthError::new("auth.unknown_key", format!("the issuer has no key {kid:?}"))
        })?;
        if key.algorithm != header.alg {
            return Err(AuthError::new(
                "auth.algorithm_not_allowed",
                format!(
                    "key {kid:?} is for {:?}, the token says {:?}",
                    key.algorithm, header.alg
                ),
            ));
        }
        let mut validation = Validation::new(key.algorithm);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY.as_secs();
        let claims = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key.key,
            &validation,
        )
        .map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            let rule = match e.kind() {
                K::ExpiredSignature => "auth.token_expired",
                K::ImmatureSignature => "auth.token_not_yet_valid",
                K::InvalidIssuer => "auth.wrong_issuer",
                K::InvalidAudience => "auth.wrong_audience",
                K::InvalidSignature => "auth.bad_signature",
                K::InvalidAlgorithm => "auth.algorithm_not_allowed",
                K::MissingRequiredClaim(_) => "auth.missing_claim",
                _ => "auth.malformed_token",
            };
            AuthError::new(rule, format!("token refused: {e}"))
        })?
        .claims;
        drop(keys);
        check_lifetime(&claims, unix_now(), self.config.max_lifetime)?;
        self.principal(&claims)
    }

    fn principal(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Principal, AuthError> {
        let subject = claims
            .get("sub")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty() && s.len() <= 256)
            .ok_or_else(|| AuthError::new("auth.missing_claim", "the token has no usable sub"))?
            .to_owned();
        let tenant = claims
            .get(&self.config.tenant_claim)
            .and_then(|v| v.as_str())
            .ok_or_else(|| {
                AuthError::new(
                    "auth.missing_tenant",
                    format!("the token has no {:?} claim", self.config.tenant_claim),
                )
            })?
            .parse()
            .map_err(|e| AuthError::new("auth.missing_tenant", format!("tenant: {e}")))?;
        let scopes: BTreeSet<Scope> = claims
            .get(&self.config.scope_claim)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .split_ascii_whitespace()
            .filter_map(Scope::parse)
            .collect();
        Ok(Principal {
            subject,
            tenant,
            scopes,
        })
    }
}

/// Seconds since the Unix epoch now.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Refuses a token issued in the future (`iat` past `now` by more than [`LEEWAY`]) or valid
/// for longer than `max_lifetime` in all (`exp` − `iat`; without `iat`, what is left of it
/// from `now`). `exp` was checked to be there and not past by then.
pub fn check_lifetime(
    claims: &serde_json::Map<String, serde_json::Value>,
    now: u64,
    max_lifetime: Duration,
) -> Result<(), AuthError> {
    // NumericDate: seconds, possibly with a fraction (RFC 7519 §2).
    let seconds = |name: &str| -> Result<Option<u64>, AuthError> {
        match claims.get(name) {
            None => Ok(None),
            Some(value) => value
                .as_f64()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| Some(s as u64))
                .ok_or_else(|| {
                    AuthError::new("auth.malformed_token", format!("{name} is not a time"))
                }),
        }
    };
    let leeway = LEEWAY.as_secs();
    let exp = seconds("exp")?
        .ok_or_else(|| AuthError::new("auth.missing_claim", "the token has no exp"))?;
    let issued = seconds("iat")?;
    if let Some(iat) = issued
        && iat > now.saturating_add(leeway)
    {
        return Err(AuthError::new(
            "auth.token_issued_in_future",
            format!("the token says it was issued {}s from now", iat - now),
        ));
    }
    let (from, allowed) = match issued {
        Some(iat) => (iat, max_lifetime.as_secs()),
        None => (now, max_lifetime.as_secs().saturating_add(leeway)),
    };
    let lifetime = exp.saturating_sub(from);
    if lifetime > allowed {
        return Err(AuthError::new(
            "auth.token_lifetime_too_long",
            format!(
                "the token is valid for {lifetime}s; at most {}s are accepted",
                max_lifetime.as_secs()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn claims(pairs: &[(&str, Value)]) -> Map<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    fn rule(result: Result<(), AuthError>) -> Option<&'static str> {
        result.err().map(|e| e.rule_id)
    }

    #[test]
    fn ordinary_tokens_pass() {
        for pairs in [
            vec![("iat", json!(NOW)), ("exp", json!(NOW + 300))],
            vec![("iat", json!(NOW - 3600)), ("exp", json!(NOW + 60))],
            // A clock a little ahead of ours.
            vec![("iat", json!(NOW + 20)), ("exp", json!(NOW + 3620))],
            vec![("iat", json!(NOW as f64 + 0.5)), ("exp", json!(NOW + 60))],
            vec![("exp", json!(NOW + 3600))],
            vec![
                ("iat", json!(NOW)),
                ("exp", json!(NOW + MAX_LIFETIME.as_secs())),
            ],
        ] {
            assert_eq!(
                rule(check_lifetime(&claims(&pairs), NOW, MAX_LIFETIME)),
                None,
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn future_issue_dates_and_long_lives_are_refused() {
        let ten_years = 10 * 365 * 24 * 3600;
        for (pairs, expected) in [
            (
                vec![("iat", json!(NOW + 600)), ("exp", json!(NOW + 1200))],
                "auth.token_issued_in_future",
            ),
            (
                vec![("iat", json!(NOW)), ("exp", json!(NOW + ten_years))],
                "auth.token_lifetime_too_long",
            ),
            (
                vec![("exp", json!(NOW + ten_years))],
                "auth.token_lifetime_too_long",
            ),
            (
                vec![
                    ("iat", json!(NOW)),
                    ("exp", json!(NOW + MAX_LIFETIME.as_secs() + 1)),
                ],
                "auth.token_lifetime_too_long",
            ),
            (
                vec![("iat", json!("yesterday")), ("exp", json!(NOW + 60))],
                "auth.malformed_token",
            ),
            (
                vec![("iat", json!(-5)), ("exp", json!(NOW + 60))],
                "auth.malformed_token",
            ),
            (vec![("iat", json!(NOW))], "auth.missing_claim"),
        ] {
            assert_eq!(
                rule(check_lifetime(&claims(&pairs), NOW, MAX_LIFETIME)),
                Some(expected),
                "{pairs:?}"
            );
        }
    }

    fn any_time() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            ".{0,12}".prop_map(Value::from),
            Just(Value::Null),
        ]
    }

    proptest! {
        /// Whatever a token's times say, the check answers (never panics), and what it
        /// accepts was issued by now (within the leeway) and lives at most the limit.
        #[test]
        fn accepted_tokens_are_issued_by_now_and_short_lived(
            iat in proptest::option::of(any_time()),
            exp in any_time(),
            max_hours in 1u64..100,
        ) {
            let mut map = Map::new();
            map.insert("exp".into(), exp.clone());
            if let Some(iat) = &iat {
                map.insert("iat".into(), iat.clone());
            }
            let max = Duration::from_secs(max_hours * 3600);
            if check_lifetime(&map, NOW, max).is_ok() {
                let exp = exp.as_f64().unwrap() as u64;
                match iat.as_ref().and_then(Value::as_f64) {
                    Some(iat) => {
                        prop_assert!(iat as u64 <= NOW + LEEWAY.as_secs());
                        prop_assert!(exp.saturating_sub(iat as u64) <= max.as_secs());
                    }
                    None => {
                        prop_assert!(exp.saturating_sub(NOW) <= max.as_secs() + LEEWAY.as_secs());
                    }
                }
            }
        }
    }
}

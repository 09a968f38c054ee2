//! The development OIDC issuer of the all-in-one stack: **dev only, loopback only.**
//!
//! It speaks the standard authorization-code flow with PKCE (S256), so the console and
//! `fogshell-coordinator shell` log in exactly as they would against a real provider — only
//! there is no login form: every authorization is granted to one fixed development user. It
//! signs with an Ed25519 key made at start and held in memory.
//!
//! Endpoints, under `/dev/oidc`: discovery, `jwks`, `authorize`, `token`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::signature::KeyPair as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Where the issuer is mounted on the coordinator's HTTP listener.
pub const PATH: &str = "/dev/oidc";

/// The development user every login becomes.
pub const DEV_SUBJECT: &str = "dev";
/// Its tenant.
pub const DEV_TENANT: &str = "dev";
/// Its scopes: everything.
pub const DEV_SCOPES: &str = "fogshell.sessions fogshell.admin fogshell.audit";

/// How long an access token lives.
const TOKEN_TTL: Duration = Duration::from_secs(3600);
/// How long an authorization code may wait to be redeemed.
const CODE_TTL: Duration = Duration::from_secs(60);

struct PendingCode {
    challenge: String,
    redirect_uri: String,
    client_id: String,
    issued: Instant,
}

/// The issuer's state.
pub struct DevIssuer {
    issuer: String,
    audience: String,
    kid: String,
    encoding: jsonwebtoken::EncodingKey,
    public_x: String,
    codes: Mutex<BTreeMap<String, PendingCode>>,
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

fn random_text(bytes: usize) -> Result<String, String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| format!("randomness: {e}"))?;
    Ok(B64.encode(buf))
}

/// Whether `uri` is an `http` URL on a loopback host (where a CLI listens for the code) or a
/// path on the coordinator itself (the console).
fn acceptable_redirect(uri: &str, issuer: &str) -> bool {
    let origin = issuer.trim_end_matches(PATH);
    if uri.starts_with(&format!("{origin}/")) {
        return true;
    }
    let Some(rest) = uri.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}

/// The S256 PKCE transform of a verifier.
pub fn pkce_challenge(verifier: &str) -> String {
    B64.encode(Sha256::digest(verifier.as_bytes()))
}

impl DevIssuer {
    /// An issuer at `issuer` (its full URL, ending in [`PATH`]) minting tokens for `audience`.
    pub fn new(issuer: String, audience: String) -> Result<Self, String> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| "generating the dev issuer's key".to_string())?;
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .map_err(|_| "loading the dev issuer's key".to_string())?;
        Ok(Self {
            issuer,
            audience,
            kid: format!("dev-{}", random_text(6)?),
            encoding: jsonwebtoken::EncodingKey::from_ed_der(pkcs8.as_ref()),
            public_x: B64.encode(pair.public_key().as_ref()),
            codes: Mutex::new(BTreeMap::new()),
        })
    }

    /// The issuer URL.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// An access token for the development user, straight away (the all-in-one's own
    /// `shell` command uses the code flow; this is for scripts and tests of the dev stack).
    pub fn mint(&self) -> Result<String, String> {
        #[derive(Serialize)]
        struct Claims<'a> {
            iss: &'a str,
            sub: &'a str,
            aud: &'a str,
            exp: u64,
            iat: u64,
            tenant: &'a str,
            scope: &'a str,
        }
        let now = jsonwebtoken::get_current_timestamp();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(
            &header,
            &Claims {
                iss: &self.issuer,
                sub: DEV_SUBJECT,
                aud: &self.audience,
                exp: now + TOKEN_TTL.as_secs(),
                iat: now,
                tenant: DEV_TENANT,
                scope: DEV_SCOPES,
            },
            &self.encoding,
        )
        .map_err(|e| format!("signing: {e}"))
    }

    /// The issuer's routes, to nest under [`PATH`].
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .with_state(self)
    }
}

async fn discovery(State(issuer): State<Arc<DevIssuer>>) -> Json<serde_json::Value> {
    let base = &issuer.issuer;
    Json(serde_json::json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "jwks_uri": format!("{base}/jwks"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code"],
        "code_challenge_methods_supported": ["S256"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "token_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": ["openid", "fogshell.sessions", "fogshell.admin", "fogshell.audit"],
    }))
}

async fn jwks(State(issuer): State<Arc<DevIssuer>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "keys": [{
            "kty": "OKP",
            "crv": "Ed25519",
            "x": issuer.public_x,
            "kid": issuer.kid,
            "alg": "EdDSA",
            "use": "sig",
        }]
    }))
}

#[derive(Debug, Deserialize)]
struct AuthorizeQuery {
    response_type: String,
    client_id: String,
    redirect_uri: String,
    code_challenge: String,
    code_challenge_method: String,
    state: Option<String>,
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(serde_json::json!({"error": error, "error_description": description})),
    )
        .into_response()
}

async fn authorize(
    State(issuer): State<Arc<DevIssuer>>,
    Query(query): Query<AuthorizeQuery>,
) -> Response {
    if query.response_type != "code" {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_response_type",
            "only `code`",
        );
    }
    if query.code_challenge_method != "S256" || query.code_challenge.len() != 43 {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "PKCE with S256 is required",
        );
    }
    if !acceptable_redirect(&query.redirect_uri, &issuer.issuer) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "redirect_uri must be on loopback or on this coordinator",
        );
    }
    let Ok(code) = random_text(24) else {
        return oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "randomness",
        );
    };
    {
        let mut codes = fogshell_shared::sync::lock(&issuer.codes);
        codes.retain(|_, c| c.issued.elapsed() < CODE_TTL);
        codes.insert(
            code.clone(),
            PendingCode {
                challenge: query.code_challenge,
                redirect_uri: query.redirect_uri.clone(),
                client_id: query.client_id,
                issued: Instant::now(),
            },
        );
    }
    let separator = if query.redirect_uri.contains('?') {
        '&'
    } else {
        '?'
    };
    let mut location = format!("{}{separator}code={code}", query.redirect_uri);
    if let Some(state) = query.state {
        location.push_str("&state=");
        location.push_str(&form_urlencode(&state));
    }
    let mut headers = HeaderMap::new();
    if let Ok(value) = location.parse() {
        headers.insert(header::LOCATION, value);
    }
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    (StatusCode::FOUND, headers).into_response()
}

/// Percent-encodes everything but unreserved characters.
fn form_urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Debug, Deserialize)]
struct TokenForm {
    grant_type: String,
    code: String,
    redirect_uri: String,
    client_id: String,
    code_verifier: String,
}

async fn token(State(issuer): State<Arc<DevIssuer>>, Form(form): Form<TokenForm>) -> Response {
    if form.grant_type != "authorization_code" {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only authorization_code",
        );
    }
    let pending = fogshell_shared::sync::lock(&issuer.codes).remove(&form.code);
    let Some(pending) = pending.filter(|p| p.issued.elapsed() < CODE_TTL) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "unknown or expired code",
        );
    };
    if pending.redirect_uri != form.redirect_uri
        || pending.client_id != form.client_id
        || pkce_challenge(&form.code_verifier) != pending.challenge
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "the code does not match",
        );
    }
    match issuer.mint() {
        Ok(access_token) => (
            [(header::CACHE_CONTROL, "no-store")],
            Json(serde_json::json!({
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": TOKEN_TTL.as_secs(),
                "scope": DEV_SCOPES,
            })),
        )
            .into_response(),
        Err(error) => oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", &error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_stay_on_loopback_or_the_coordinator() {
        let issuer = "http://127.0.0.1:8080/dev/oidc";
        assert!(acceptable_redirect(
            "http://127.0.0.1:5555/callback",
            issuer
        ));
        assert!(acceptable_redirect("http://localhost:1/cb?x=1", issuer));
        assert!(acceptable_redirect(
            "http://127.0.0.1:8080/console/",
            issuer
        ));
        assert!(!acceptable_redirect("http://evil.example/cb", issuer));
        assert!(!acceptable_redirect(
            "http://127.0.0.1.evil.example/cb",
            issuer
        ));
        assert!(!acceptable_redirect("https://127.0.0.1:5555/cb", issuer));
    }

    #[test]
    fn pkce_is_unpadded_base64url_of_sha256() {
        // Computed independently: python3 -c "import hashlib, base64; print(base64.
        // urlsafe_b64encode(hashlib.sha256(b'dBjf…l8').digest()).rstrip(b'='))"
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mJ0OH5FnhYMdAvyRSySBEkfm6TF3l8"),
            "76NSx-0KLKfX_vWr640nJzgfUNjey6PwH3aZMnU2W4k"
        );
    }
}

//! # fogshell-gateway
//!
//! The seed's PTY endpoint (`wss://<gateway>/v1/sessions/{id}/pty`) as both of fogshell's
//! gateways serve it: the coordinator's relay, which carries a terminal over the QUIC link to
//! whichever node runs the session and follows it through failovers, and a node's own edge
//! gateway, which serves the sessions on its node directly so keystrokes stay near the user.
//!
//! - [`relay`]: one viewer's WebSocket ↔ a terminal stream of [`PtyMessage`]s, with flow
//!   control and malformed-frame handling; what happens when the terminal breaks is the
//!   gateway's own ([`relay::Backend`]).
//! - [`serve`]: the HTTP server loop, over TLS or (loopback only) plain.
//! - [`viewers`]: how many viewers each session and tenant may have at once.
//! - [`rate_limit`] and [`refusals`]: token buckets, and the per-address budget of refusals
//!   recorded one by one.
//!
//! [`PtyMessage`]: fogshell_shared::wire::PtyMessage

pub mod rate_limit;
pub mod refusals;
pub mod relay;
pub mod serve;
pub mod viewers;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use fogshell_shared::ErrorBody;

/// An API error as every fogshell endpoint answers it: the status its code fixes, the
/// `{code, message, evidence_pointer}` body, and for 401 the bearer challenge.
pub fn error_response(body: ErrorBody) -> Response {
    let status =
        StatusCode::from_u16(body.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer error="invalid_token""#),
        );
    }
    response
}

/// The answer to a gateway probe (`GET /v1/gateway/probe`): `204`, from any origin, never
/// cached, so a browser can time a round trip to each gateway.
pub fn probe_response() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            (header::CACHE_CONTROL, "no-store"),
        ],
    )
        .into_response()
}

/// The rule id of a terminal refused for its page's origin.
pub const ORIGIN_REFUSED: &str = "pty.origin_refused";

/// The most origins a gateway accepts browsers from.
pub const MAX_ORIGINS: usize = 16;

/// `scheme://host[:port]` of a URL, lower-cased: what a browser sends as `Origin`.
pub fn origin_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    format!("{scheme}://{authority}").to_ascii_lowercase()
}

/// Whether a terminal's WebSocket may be opened from `origin` (the request's `Origin`
/// header): a browser only from one of `allowed` (the console's origins) — the second lock
/// after the token, since a token in a URL can leak through logs and history. A client
/// without an `Origin` (the CLI, an API client) is no browser page and is let through.
pub fn origin_allowed(origin: Option<&str>, allowed: &[String]) -> bool {
    origin.is_none_or(|origin| {
        let origin = origin.trim().to_ascii_lowercase();
        allowed.iter().any(|a| origin_of(a) == origin)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_come_only_from_the_consoles_origins() {
        let allowed = vec!["https://Shell.example.org/console/".to_owned()];
        assert!(origin_allowed(None, &allowed), "no Origin: not a browser");
        assert!(origin_allowed(Some("https://shell.example.org"), &allowed));
        assert!(!origin_allowed(Some("https://evil.example"), &allowed));
        assert!(!origin_allowed(Some("http://shell.example.org"), &allowed));
        assert!(!origin_allowed(
            Some("https://shell.example.org:444"),
            &allowed
        ));
        assert!(!origin_allowed(Some("null"), &allowed));
        assert!(!origin_allowed(Some("https://shell.example.org"), &[]));
        assert_eq!(origin_of("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
    }
}

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
//!
//! [`PtyMessage`]: fogshell_shared::wire::PtyMessage

pub mod relay;
pub mod serve;

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

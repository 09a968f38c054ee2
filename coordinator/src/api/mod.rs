//! The HTTP API (`/v1/…`), the WebSocket PTY gateway and the development issuer, on axum.
//!
//! Every `/v1` route but the OpenAPI document and the PTY endpoint (which takes an attach
//! token instead) sits behind [`authenticate`]: a bearer OIDC access token, verified, mapped
//! to a [`Principal`], then the tenant's rate limit. Handlers check scopes and call the
//! [`ControlPlane`]; errors are `{code, message, evidence_pointer}` with the code's status.

mod console;
mod events;
pub mod extract;
pub mod gateway;
mod gateways;
mod nodes;
pub use fogshell_gateway::{rate_limit, refusals};
mod sessions;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fogshell_shared::ErrorCode;
use fogshell_shared::audit::Actor;
use tracing::Instrument as _;

use crate::auth::dev_issuer::DevIssuer;
use crate::auth::oidc::OidcVerifier;
use crate::auth::{Principal, Scope};
use crate::control::ControlPlane;
use crate::error::ApiError;
use crate::fabric::enroll::Enrollment;
use rate_limit::RateLimiter;

/// The OpenAPI document, served at `/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// What the handlers share.
#[derive(Debug)]
pub struct AppState {
    /// Sessions, nodes, audit.
    pub control: Arc<ControlPlane>,
    /// Access-token verification.
    pub verifier: Arc<OidcVerifier>,
    /// Per-tenant request budget.
    pub rate: RateLimiter,
    /// How many refused authentications each address may have recorded one by one.
    pub refusals: refusals::RefusalBudget,
    /// Join tokens and the CA, for `POST /v1/nodes/join-tokens`.
    pub enrollment: Arc<Enrollment>,
    /// The development issuer, when this is the all-in-one stack.
    pub dev_issuer: Option<Arc<DevIssuer>>,
    /// The scopes fogshell's own clients ask the issuer for.
    pub client_scope: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        fogshell_gateway::error_response(self.0)
    }
}

/// The router for `state`.
pub fn router(state: Arc<AppState>) -> Router {
    let authenticated = Router::new()
        .route("/v1/sessions", post(sessions::create).get(sessions::list))
        .route(
            "/v1/sessions/{id}",
            get(sessions::get_one).delete(sessions::delete),
        )
        .route("/v1/sessions/{id}/attach", post(sessions::reattach))
        .route("/v1/profiles", get(sessions::profiles))
        .route("/v1/events", get(events::list))
        .route("/v1/events/{id}", get(events::get_one))
        .route("/v1/gateways", get(gateways::list))
        .route("/v1/nodes", get(nodes::list))
        .route("/v1/nodes/{id}", get(nodes::get_one))
        .route("/v1/nodes/join-tokens", post(nodes::create_join_token))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            authenticate,
        ));
    let router = Router::new()
        .merge(authenticated)
        .route("/v1/sessions/{id}/pty", get(gateway::attach))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/auth/config", get(auth_config))
        .route(
            fogshell_shared::api::GATEWAY_PROBE_PATH,
            get(|| async { fogshell_gateway::probe_response() }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such endpoint") })
        // Every error in the API's body, a wrong method too (axum keeps its `Allow` header).
        .method_not_allowed_fallback(|method: axum::http::Method| async move {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                format!("this endpoint does not take {method}"),
            )
        });
    let dev_issuer = state.dev_issuer.clone();
    let router = router.merge(console::routes()).with_state(state);
    match dev_issuer {
        Some(issuer) => router.nest(crate::auth::dev_issuer::PATH, issuer.router()),
        None => router,
    }
}

/// The client id fogshell's own clients (CLI, console) use with the issuer.
pub const CLIENT_ID: &str = "fogshell";

/// How clients log in: which issuer, with which client id and scopes. Public, like OIDC
/// discovery.
async fn auth_config(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "issuer": state.verifier.issuer(),
        "client_id": CLIENT_ID,
        "scope": state.client_scope,
    }))
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// What a refusal says, for [`refuse_within_budget`].
pub(super) struct Refusal<'a> {
    pub code: ErrorCode,
    pub tenant: Option<&'a fogshell_shared::TenantId>,
    pub rule_id: &'a str,
    pub message: String,
    pub subject: Option<String>,
}

/// A refusal of someone not known yet, or of a flood: evidence of its own within its
/// address's budget ([`refusals`]), else counted and pointed at the address's last record.
pub(super) fn refuse_within_budget(
    state: &AppState,
    remote: Option<std::net::IpAddr>,
    refusal: Refusal<'_>,
) -> Response {
    let Refusal {
        code,
        tenant,
        rule_id,
        message,
        subject,
    } = refusal;
    let recording = remote.map_or(refusals::Recording::Record { unrecorded: 0 }, |ip| {
        state.refusals.refused(ip, Instant::now())
    });
    match recording {
        refusals::Recording::Record { unrecorded } => {
            let reason = match remote {
                Some(ip) if unrecorded > 0 => format!(
                    "{message} (and {unrecorded} more refusals from {ip} since the last record)"
                ),
                _ => message,
            };
            let error = state
                .control
                .deny(tenant, anonymous(), code, rule_id, reason, subject);
            if let Some(ip) = remote {
                state
                    .refusals
                    .recorded(ip, error.0.evidence_pointer.clone());
            }
            error.into_response()
        }
        refusals::Recording::Counted { last_record } => {
            tracing::debug!(rule_id, "refusal counted, not recorded on its own");
            let mut body = fogshell_shared::ErrorBody::new(
                code,
                format!("{message} (too many refusals from this address to record each: counted)"),
            );
            if let Some(pointer) = last_record {
                body = body.with_evidence(pointer);
            }
            fogshell_gateway::error_response(body)
        }
    }
}

fn anonymous() -> Actor {
    Actor::User {
        subject: "<unauthenticated>".into(),
    }
}

/// Verifies the bearer token, applies the tenant's rate limit, and hands the [`Principal`] to
/// the handler; adds the rate-limit headers to whatever it answers.
async fn authenticate(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let principal = match bearer(request.headers()) {
        None => Err((
            "auth.missing_token",
            "an OIDC access token is required (Authorization: Bearer …)".to_owned(),
        )),
        Some(token) if fogshell_shared::attach_token::looks_like(token) => Err((
            "auth.attach_token_as_bearer",
            "an attach token opens one terminal; it is not an API credential".to_owned(),
        )),
        Some(token) => state
            .verifier
            .verify(token)
            .await
            .map_err(|refused| (refused.rule_id, refused.message)),
    };
    let principal = match principal {
        Ok(p) => p,
        Err((rule_id, message)) => {
            let remote = request
                .extensions()
                .get::<fogshell_gateway::serve::RemoteAddr>()
                .map(|r| r.0.ip());
            return refuse_within_budget(
                &state,
                remote,
                Refusal {
                    code: ErrorCode::Unauthenticated,
                    tenant: None,
                    rule_id,
                    message,
                    subject: None,
                },
            );
        }
    };
    let decision = state.rate.check(&principal.tenant, Instant::now());
    let mut response = if decision.allowed {
        let span = tracing::info_span!("api", tenant = %principal.tenant, subject = %principal.subject, method = %request.method(), path = %request.uri().path());
        request.extensions_mut().insert(principal);
        next.run(request).instrument(span).await
    } else {
        let mut response = ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "tenant {} is over its request rate; retry in {} s",
                principal.tenant, decision.retry_after_secs
            ),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, decision.retry_after_secs.into());
        response
    };
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", decision.limit.into());
    headers.insert("x-ratelimit-remaining", decision.remaining.into());
    response
}

/// Refuses a caller without `scope` (recorded as `policy.denied`).
pub(crate) fn require(
    control: &ControlPlane,
    principal: &Principal,
    scope: Scope,
) -> Result<(), ApiError> {
    if principal.has(scope) {
        return Ok(());
    }
    Err(control.deny(
        Some(&principal.tenant),
        Actor::User {
            subject: principal.subject.clone(),
        },
        ErrorCode::Forbidden,
        "auth.missing_scope",
        format!("this needs the {} scope", scope.as_str()),
        None,
    ))
}

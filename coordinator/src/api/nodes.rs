//! `/v1/nodes`: the fleet as the coordinator sees it, and join tokens for new nodes.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use fogshell_shared::api::Page;
use fogshell_shared::{ErrorCode, NodeId, Secret, Timestamp};
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, ApiQuery, WholeList};
use super::{AppState, require};
use crate::auth::{Principal, Scope};
use crate::error::ApiError;
use crate::fleet::NodeView;

pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ApiQuery(WholeList {}): ApiQuery<WholeList>,
) -> Result<Json<Page<NodeView>>, ApiError> {
    require(&state.control, &principal, Scope::Admin)?;
    Ok(Json(Page {
        items: state.control.fleet().views(),
        next_cursor: None,
    }))
}

pub(super) async fn get_one(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<NodeView>, ApiError> {
    require(&state.control, &principal, Scope::Admin)?;
    id.parse::<NodeId>()
        .ok()
        .and_then(|id| state.control.fleet().view(&id))
        .map(Json)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no node {id:?}")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct JoinTokenRequest {
    /// Lifetime in seconds (60 s to 30 days; default one hour).
    #[serde(default = "default_ttl")]
    ttl_seconds: u32,
    /// What it is for.
    #[serde(default)]
    description: String,
}

fn default_ttl() -> u32 {
    3600
}

#[derive(Debug, Serialize)]
pub(super) struct JoinTokenResponse {
    /// The token id (listable; the secret is shown only here).
    id: String,
    token: Secret,
    expires_at: Timestamp,
    /// What `fogshell-agent join --ca-hash` pins.
    ca_hash: String,
}

pub(super) async fn create_join_token(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ApiJson(request): ApiJson<JoinTokenRequest>,
) -> Result<(StatusCode, Json<JoinTokenResponse>), ApiError> {
    require(&state.control, &principal, Scope::Admin)?;
    if !(60..=30 * 24 * 3600).contains(&request.ttl_seconds) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "ttl_seconds must be between 60 and 2592000",
        ));
    }
    if request.description.len() > 256 {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "description is over 256 bytes",
        ));
    }
    let mut random = [0u8; 30];
    getrandom::fill(&mut random).map_err(ApiError::internal)?;
    let issued_at = crate::clock::now();
    let (token, id) = state
        .enrollment
        .tokens
        .mint(random, issued_at, request.ttl_seconds, &request.description)
        .map_err(ApiError::internal)?;
    tracing::info!(token_id = %id, by = %principal.subject, "join token minted");
    Ok((
        StatusCode::CREATED,
        Json(JoinTokenResponse {
            id: id.to_string(),
            token,
            expires_at: issued_at
                .plus_seconds(request.ttl_seconds)
                .unwrap_or(issued_at),
            ca_hash: state.enrollment.ca.ca_hash().to_string(),
        }),
    ))
}

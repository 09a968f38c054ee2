//! `/v1/sessions`: create, read, list, end, and a fresh attach token.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use fogshell_shared::api::{
    AttachInfo, CreateSessionRequest, CreateSessionResponse, Page, SessionView, TerminateResponse,
    page_limit,
};
use fogshell_shared::{ErrorCode, SessionId};
use serde::Deserialize;

use super::extract::{ApiJson, ApiQuery, cursor_position, paginate};
use super::{AppState, require};
use crate::auth::{Principal, Scope};
use crate::error::ApiError;

/// One profile as `GET /v1/profiles` lists it.
#[derive(Debug, serde::Serialize)]
pub(super) struct ProfileView {
    name: fogshell_shared::ProfileName,
    #[serde(flatten)]
    profile: fogshell_shared::profile::Profile,
}

/// `GET /v1/profiles`: what sessions may be created with.
pub(super) async fn profiles(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Page<ProfileView>>, ApiError> {
    require(&state.control, &principal, Scope::Sessions)?;
    let items = state
        .control
        .profiles()
        .iter()
        .map(|(name, profile)| ProfileView {
            name: name.clone(),
            profile: profile.clone(),
        })
        .collect();
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

fn session_id(text: &str) -> Result<SessionId, ApiError> {
    text.parse()
        .map_err(|_| ApiError::new(ErrorCode::NotFound, format!("no session {text:?}")))
}

pub(super) async fn create(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ApiJson(request): ApiJson<CreateSessionRequest>,
) -> Result<(StatusCode, Json<CreateSessionResponse>), ApiError> {
    require(&state.control, &principal, Scope::Sessions)?;
    let created = state.control.create_session(&principal, request).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

pub(super) async fn get_one(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<SessionView>, ApiError> {
    require(&state.control, &principal, Scope::Sessions)?;
    let session = state.control.session_of(&principal, session_id(&id)?)?;
    Ok(Json(session.view()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    cursor: Option<String>,
    limit: Option<u32>,
}

pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Page<SessionView>>, ApiError> {
    require(&state.control, &principal, Scope::Sessions)?;
    let limit = page_limit(query.limit).map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e))?;
    let after = cursor_position(query.cursor.as_deref())?;
    // One more than asked, to know whether another page follows.
    let rows = state
        .control
        .store()
        .sessions_of(&principal.tenant, after, limit + 1)?;
    let (rows, next_cursor) = paginate(rows, limit, |(n, _)| *n);
    Ok(Json(Page {
        items: rows.into_iter().map(|(_, s)| s.view()).collect(),
        next_cursor,
    }))
}

pub(super) async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<TerminateResponse>, ApiError> {
    require(&state.control, &principal, Scope::Sessions)?;
    state
        .control
        .terminate(&principal, session_id(&id)?)
        .await?;
    Ok(Json(TerminateResponse { terminated: true }))
}

pub(super) async fn reattach(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<AttachInfo>, ApiError> {
    require(&state.control, &principal, Scope::Sessions)?;
    Ok(Json(state.control.reattach(&principal, session_id(&id)?)?))
}

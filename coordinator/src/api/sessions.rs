//! `/v1/sessions`: create, read, list, end, and a fresh attach token.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse as _, Response};
use fogshell_shared::api::{
    AttachInfo, CreateSessionRequest, Page, SessionView, TerminateResponse, page_limit,
};
use fogshell_shared::{ErrorCode, SessionId};
use serde::Deserialize;

use super::extract::{ApiJson, ApiQuery, WholeList, cursor_position, paginate};
use super::{AppState, require};
use crate::auth::{Principal, Scope};
use crate::control::Respond;
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
    ApiQuery(WholeList {}): ApiQuery<WholeList>,
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

/// Whether a `Prefer` header (RFC 7240) asks for `respond-async`: then `POST /v1/sessions`
/// answers once the session is placed and recorded, while its node starts it.
fn respond(headers: &HeaderMap) -> Respond {
    let asks_async = headers
        .get_all(PREFER)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|preference| {
            let name = preference.split(';').next().unwrap_or_default().trim();
            name.eq_ignore_ascii_case(RESPOND_ASYNC)
        });
    if asks_async {
        Respond::WhenPlaced
    } else {
        Respond::WhenRunning
    }
}

const RESPOND_ASYNC: &str = "respond-async";
// RFC 7240's headers; `http` names neither.
const PREFER: HeaderName = HeaderName::from_static("prefer");
const PREFERENCE_APPLIED: HeaderName = HeaderName::from_static("preference-applied");

pub(super) async fn create(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<CreateSessionRequest>,
) -> Result<Response, ApiError> {
    require(&state.control, &principal, Scope::Sessions)?;
    let respond = respond(&headers);
    let created = state
        .control
        .create_session(&principal, request, respond)
        .await?;
    let mut response = (StatusCode::CREATED, Json(created)).into_response();
    if respond == Respond::WhenPlaced {
        response
            .headers_mut()
            .insert(PREFERENCE_APPLIED, HeaderValue::from_static(RESPOND_ASYNC));
    }
    Ok(response)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with_prefer(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(PREFER, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn respond_async_is_found_among_preferences_and_parameters() {
        for values in [
            &["respond-async"][..],
            &["Respond-Async"],
            &["wait=10, respond-async"],
            &["return=minimal", "respond-async; foo=bar"],
            &[" respond-async "],
        ] {
            assert_eq!(
                respond(&with_prefer(values)),
                Respond::WhenPlaced,
                "{values:?}"
            );
        }
        for values in [
            &[][..],
            &["return=minimal"],
            &["respond-asynchronously"],
            &["wait=respond-async"],
        ] {
            assert_eq!(
                respond(&with_prefer(values)),
                Respond::WhenRunning,
                "{values:?}"
            );
        }
    }
}

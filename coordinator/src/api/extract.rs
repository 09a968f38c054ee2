//! Request extractors that fail with the API's error body instead of axum's plain text.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use fogshell_shared::ErrorCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The largest JSON body any endpoint accepts.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON body: `application/json` (415 otherwise), at most [`MAX_BODY_BYTES`] (413), and a
/// valid `T` (400 with serde's reason).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "the body must be application/json",
            ));
        }
        let request = request
            .map(|body| axum::body::Body::new(http_body_util::Limited::new(body, MAX_BODY_BYTES)));
        let bytes = Bytes::from_request(request, state).await.map_err(|_| {
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("the body is over {MAX_BODY_BYTES} bytes"),
            )
        })?;
        serde_json::from_slice(&bytes)
            .map(Self)
            .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, format!("the body: {e}")))
    }
}

/// Query parameters as `T`, 400 with the reason when they do not parse.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str(query)
            .map(Self)
            .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, format!("the query: {e}")))
    }
}

/// The query of a list answered whole, in one page (the profiles, the gateways, the fleet's
/// nodes): none at all. `cursor` and `limit` are refused, not ignored, so a client that
/// pages learns it at once.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WholeList {}

/// Where a page starts, from the `cursor` query parameter: 0 for the first page, else the
/// position of the last item of the page before.
pub fn cursor_position(cursor: Option<&str>) -> Result<u64, ApiError> {
    cursor.map_or(Ok(0), |c| {
        c.parse()
            .map_err(|_| ApiError::new(ErrorCode::InvalidRequest, "not a cursor this API gave"))
    })
}

/// Cuts rows fetched with one more than `limit` (to learn whether more follow) to a page;
/// returns it with the cursor of the next page, if there is one.
pub fn paginate<T>(
    mut rows: Vec<T>,
    limit: u32,
    position: impl Fn(&T) -> u64,
) -> (Vec<T>, Option<String>) {
    if rows.len() <= limit as usize {
        return (rows, None);
    }
    rows.truncate(limit as usize);
    let next = rows.last().map(|row| position(row).to_string());
    (rows, next)
}

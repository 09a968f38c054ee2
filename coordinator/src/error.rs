//! The API's error: an `ECS_…` code (which fixes the HTTP status), a message for the caller,
//! and for refusals the audit event that records them.

use fogshell_shared::{ErrorBody, ErrorCode};

/// A request that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}", .0.code.as_str(), .0.message)]
pub struct ApiError(pub ErrorBody);

impl ApiError {
    /// An error without evidence.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self(ErrorBody::new(code, message))
    }

    /// An internal fault: the detail goes to the log, the caller gets a generic message.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::new(ErrorCode::Internal, "the coordinator hit an internal error")
    }

    /// The `ECS_…` code.
    pub fn code(&self) -> ErrorCode {
        self.0.code
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> Self {
        Self::internal(error)
    }
}

/// The URL path of an audit event, for `evidence_pointer`.
pub fn evidence_path(event_id: &str) -> String {
    format!("/v1/events/{event_id}")
}

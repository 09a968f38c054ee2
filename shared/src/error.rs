//! The error model of ws4-spec: `{ "code": "ECS_…", "message": "…", "evidence_pointer": "…" }`
//! with standard HTTP statuses. One enum holds every code and knows its status, so a handler
//! cannot answer a code with the wrong status.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Every error code fogshell answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ErrorCode {
    /// The request body or parameters are malformed (400).
    #[serde(rename = "ECS_INVALID_REQUEST")]
    InvalidRequest,
    /// No valid access token (401).
    #[serde(rename = "ECS_UNAUTHENTICATED")]
    Unauthenticated,
    /// The token lacks the scope the endpoint needs (403).
    #[serde(rename = "ECS_FORBIDDEN")]
    Forbidden,
    /// A policy refused the request; `evidence_pointer` names the `policy.denied` event (403).
    #[serde(rename = "ECS_POLICY_DENIED")]
    PolicyDenied,
    /// No such resource, or not the caller's (404).
    #[serde(rename = "ECS_NOT_FOUND")]
    NotFound,
    /// The resource is in a state that does not allow this (409).
    #[serde(rename = "ECS_CONFLICT")]
    Conflict,
    /// The body is larger than the endpoint accepts (413).
    #[serde(rename = "ECS_PAYLOAD_TOO_LARGE")]
    PayloadTooLarge,
    /// The body is not `application/json` (415).
    #[serde(rename = "ECS_UNSUPPORTED_MEDIA_TYPE")]
    UnsupportedMediaType,
    /// The image is named by tag, not pinned by digest (422).
    #[serde(rename = "ECS_IMAGE_NOT_PINNED")]
    ImageNotPinned,
    /// The profile named does not exist (422).
    #[serde(rename = "ECS_UNKNOWN_PROFILE")]
    UnknownProfile,
    /// Too many requests; see `Retry-After` (429).
    #[serde(rename = "ECS_RATE_LIMITED")]
    RateLimited,
    /// A fault on fogshell's side (500).
    #[serde(rename = "ECS_INTERNAL")]
    Internal,
    /// The agent and coordinator share no protocol version (505-like; answered as 400 on HTTP).
    #[serde(rename = "ECS_UNSUPPORTED_VERSION")]
    UnsupportedVersion,
    /// No node, fog or cloud, can take the session now (503).
    #[serde(rename = "ECS_NO_CAPACITY")]
    NoCapacity,
    /// The node holding the session cannot be reached (503).
    #[serde(rename = "ECS_NODE_UNAVAILABLE")]
    NodeUnavailable,
    /// A node did not answer in time (504).
    #[serde(rename = "ECS_TIMEOUT")]
    Timeout,
    /// The endpoint exists but not with this method (405). Last: codes travel the agent link
    /// by position.
    #[serde(rename = "ECS_METHOD_NOT_ALLOWED")]
    MethodNotAllowed,
}

impl ErrorCode {
    /// Every code, for documentation and exhaustive tests.
    pub const ALL: [ErrorCode; 17] = [
        Self::InvalidRequest,
        Self::Unauthenticated,
        Self::Forbidden,
        Self::PolicyDenied,
        Self::NotFound,
        Self::Conflict,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::ImageNotPinned,
        Self::UnknownProfile,
        Self::RateLimited,
        Self::Internal,
        Self::UnsupportedVersion,
        Self::NoCapacity,
        Self::NodeUnavailable,
        Self::Timeout,
        Self::MethodNotAllowed,
    ];

    /// The HTTP status this code is answered with.
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidRequest | Self::UnsupportedVersion => 400,
            Self::Unauthenticated => 401,
            Self::Forbidden | Self::PolicyDenied => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::Conflict => 409,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::ImageNotPinned | Self::UnknownProfile => 422,
            Self::RateLimited => 429,
            Self::Internal => 500,
            Self::NoCapacity | Self::NodeUnavailable => 503,
            Self::Timeout => 504,
        }
    }

    /// The code as written on the wire (`ECS_NOT_FOUND`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "ECS_INVALID_REQUEST",
            Self::Unauthenticated => "ECS_UNAUTHENTICATED",
            Self::Forbidden => "ECS_FORBIDDEN",
            Self::PolicyDenied => "ECS_POLICY_DENIED",
            Self::NotFound => "ECS_NOT_FOUND",
            Self::Conflict => "ECS_CONFLICT",
            Self::PayloadTooLarge => "ECS_PAYLOAD_TOO_LARGE",
            Self::UnsupportedMediaType => "ECS_UNSUPPORTED_MEDIA_TYPE",
            Self::ImageNotPinned => "ECS_IMAGE_NOT_PINNED",
            Self::UnknownProfile => "ECS_UNKNOWN_PROFILE",
            Self::RateLimited => "ECS_RATE_LIMITED",
            Self::Internal => "ECS_INTERNAL",
            Self::UnsupportedVersion => "ECS_UNSUPPORTED_VERSION",
            Self::NoCapacity => "ECS_NO_CAPACITY",
            Self::NodeUnavailable => "ECS_NODE_UNAVAILABLE",
            Self::Timeout => "ECS_TIMEOUT",
            Self::MethodNotAllowed => "ECS_METHOD_NOT_ALLOWED",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error body every failed API call answers with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct ErrorBody {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// What went wrong, for a person. Never holds a token or a secret.
    pub message: String,
    /// For refusals: the id of the audit event that records them (`null` otherwise).
    pub evidence_pointer: Option<String>,
}

impl ErrorBody {
    /// An error without audit evidence.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            evidence_pointer: None,
        }
    }

    /// Attaches the audit event id that records this refusal.
    pub fn with_evidence(mut self, pointer: impl Into<String>) -> Self {
        self.evidence_pointer = Some(pointer.into());
        self
    }

    /// The HTTP status to answer with.
    pub fn http_status(&self) -> u16 {
        self.code.http_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_own_name_and_an_error_status() {
        let mut names = std::collections::BTreeSet::new();
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert!(code.as_str().starts_with("ECS_"));
            assert!((400..600).contains(&code.http_status()), "{code}");
            assert!(names.insert(code.as_str()), "duplicate {code}");
            let back: ErrorCode = serde_json::from_str(&json).unwrap();
            assert_eq!(back, code);
        }
    }

    #[test]
    fn body_matches_the_seed_shape() {
        let body = ErrorBody::new(ErrorCode::ImageNotPinned, "image must be pinned by digest")
            .with_evidence("ev-42");
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"code":"ECS_IMAGE_NOT_PINNED","message":"image must be pinned by digest","evidence_pointer":"ev-42"}"#
        );
        assert_eq!(body.http_status(), 422);
        let plain = ErrorBody::new(ErrorCode::NotFound, "no such session");
        assert_eq!(
            serde_json::to_string(&plain).unwrap(),
            r#"{"code":"ECS_NOT_FOUND","message":"no such session","evidence_pointer":null}"#
        );
    }
}

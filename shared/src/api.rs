//! HTTP API bodies (`/v1/...`), as interfaces-v1.md §1.2 and ws4-spec.md name them.
//!
//! Request bodies refuse unknown fields, so a misspelt field is an error a client sees rather
//! than a setting silently ignored. Response bodies may grow fields (backward compatible).

use serde::{Deserialize, Serialize};

use crate::audit::{EventType, Outcome};
use crate::ids::{ProfileName, SessionId, TenantId};
use crate::image::ImageRef;
use crate::placement::{Placement, PlacementHint};
use crate::secret::Secret;
use crate::session::SessionStatus;
use crate::timestamp::Timestamp;

/// The shortest and longest session lifetime a request may ask for.
pub const TTL_SECONDS: std::ops::RangeInclusive<u32> = 60..=7 * 24 * 3600;

/// `POST /v1/sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(deny_unknown_fields)]
pub struct CreateSessionRequest {
    /// The profile whose limits the session gets.
    pub profile: ProfileName,
    /// How long the session may live, in seconds ([`TTL_SECONDS`]).
    pub ttl_seconds: u32,
    /// What the client knows about where it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement_hint: Option<PlacementHint>,
    /// The image to run; the coordinator's default image when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_ref: Option<ImageRef>,
}

impl CreateSessionRequest {
    /// Checks what serde cannot: the TTL range and the hint's size.
    pub fn validate(&self) -> Result<(), String> {
        if !TTL_SECONDS.contains(&self.ttl_seconds) {
            return Err(format!(
                "ttl_seconds must be between {} and {}",
                TTL_SECONDS.start(),
                TTL_SECONDS.end()
            ));
        }
        if let Some(hint) = &self.placement_hint {
            hint.validate()?;
        }
        Ok(())
    }
}

/// How to attach a terminal: a WebSocket URL and a short-lived token bound to the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct AttachInfo {
    /// `wss://…/v1/sessions/{id}/pty` (the token goes in its `token` query parameter): the
    /// user's best path to the terminal — the node's own gateway when it has one the client
    /// can reach, else the coordinator's relay.
    pub ws_url: String,
    /// The coordinator's relay, when `ws_url` is a node's gateway: the same token opens it.
    /// Clients fall back to it when `ws_url` cannot be reached, or stops serving the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_ws_url: Option<String>,
    /// The attach token; accepted only by the attach endpoint, only for this session.
    pub token: Secret,
    /// When the token stops being accepted.
    pub expires_at: Timestamp,
}

/// `201` answer to `POST /v1/sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct CreateSessionResponse {
    /// The new session.
    pub session_id: SessionId,
    /// How to attach to it now.
    pub attach: AttachInfo,
    /// Where it was placed and why.
    pub placement: Placement,
}

/// `GET /v1/sessions/{id}`, and each item of `GET /v1/sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct SessionView {
    /// The session.
    pub session_id: SessionId,
    /// Where it is in its life.
    pub status: SessionStatus,
    /// Where it runs now (after a failover, the new place).
    pub placement: Placement,
    /// When it was created.
    pub created_at: Timestamp,
    /// When its TTL runs out.
    pub expires_at: Timestamp,
    /// The image it runs, pinned by digest.
    pub image_ref: ImageRef,
    /// The profile it was created with.
    pub profile: ProfileName,
}

/// One gateway a terminal can reach its session through (`GET /v1/gateways`): the
/// coordinator's relay, or a node's own edge gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct GatewayView {
    /// `relay` for the coordinator's, else the node's id.
    pub id: String,
    /// `relay` or `node`.
    pub kind: GatewayKind,
    /// The node it serves, for a node's gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<crate::ids::NodeId>,
    /// Its base WebSocket URL (`wss://host:port`).
    pub ws_url: String,
    /// A URL to time a round trip against (`GET`, answers `204`, any origin): the client
    /// measures each gateway and sends the results in `placement_hint`.
    pub probe_url: String,
}

/// Which kind of gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum GatewayKind {
    /// The coordinator's relay: reaches every session.
    Relay,
    /// A node's edge gateway: reaches the sessions on that node.
    Node,
}

/// The path of the probe every gateway answers.
pub const GATEWAY_PROBE_PATH: &str = "/v1/gateway/probe";

/// `DELETE /v1/sessions/{id}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct TerminateResponse {
    /// Always `true` on success (the seed's shape).
    pub terminated: bool,
}

/// A page of a cursor-paginated list: `{items, next_cursor}`; `next_cursor` is present only
/// while more items remain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Page<T> {
    /// This page's items.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Page size limits for every list endpoint (ws4-spec: default 100, max 1000).
pub const DEFAULT_PAGE_LIMIT: u32 = 100;
/// The largest `limit` a list endpoint accepts.
pub const MAX_PAGE_LIMIT: u32 = 1000;

/// Checks a `limit` query parameter: absent → default, 1..=1000 → as given, else an error.
pub fn page_limit(requested: Option<u32>) -> Result<u32, String> {
    match requested {
        None => Ok(DEFAULT_PAGE_LIMIT),
        Some(n @ 1..=MAX_PAGE_LIMIT) => Ok(n),
        Some(n) => Err(format!(
            "limit must be between 1 and {MAX_PAGE_LIMIT}, not {n}"
        )),
    }
}

/// Query parameters of `GET /v1/events`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    /// Only this tenant's events (admins; others always see only their own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    /// Events at or after this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Timestamp>,
    /// Events before this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Timestamp>,
    /// Only events of this type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<EventType>,
    /// Only events with this outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Where the previous page ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Page size (default 100, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

impl EventQuery {
    /// Checks the time range and the limit; returns the page size to use.
    pub fn validate(&self) -> Result<u32, String> {
        if let (Some(from), Some(to)) = (self.from, self.to)
            && from > to
        {
            return Err("`from` must not be after `to`".to_owned());
        }
        page_limit(self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{NodeId, Region};
    use crate::node::TrustTier;
    use crate::placement::ReasonCode;

    #[test]
    fn create_request_reads_the_seed_shape() {
        let req: CreateSessionRequest = serde_json::from_str(
            r#"{"profile":"default","ttl_seconds":3600,"placement_hint":{"client_region":"eu-west"}}"#,
        )
        .unwrap();
        assert_eq!(req.profile.as_str(), "default");
        assert_eq!(req.ttl_seconds, 3600);
        assert!(req.image_ref.is_none());
        assert!(req.validate().is_ok());
    }

    #[test]
    fn create_request_refuses_bad_input_with_a_reason() {
        let typo =
            serde_json::from_str::<CreateSessionRequest>(r#"{"profile":"default","ttl":60}"#);
        assert!(
            typo.unwrap_err()
                .to_string()
                .contains("unknown field `ttl`")
        );
        let missing = serde_json::from_str::<CreateSessionRequest>(r#"{"profile":"default"}"#);
        assert!(
            missing
                .unwrap_err()
                .to_string()
                .contains("missing field `ttl_seconds`")
        );
        let bad_image = serde_json::from_str::<CreateSessionRequest>(
            r#"{"profile":"default","ttl_seconds":60,"image_ref":"UPPER"}"#,
        );
        assert!(bad_image.unwrap_err().to_string().contains("repository"));
        let short = CreateSessionRequest {
            profile: "default".parse().unwrap(),
            ttl_seconds: 5,
            placement_hint: None,
            image_ref: None,
        };
        assert!(short.validate().unwrap_err().contains("ttl_seconds"));
    }

    #[test]
    fn create_response_has_the_seed_fields() {
        let resp = CreateSessionResponse {
            session_id: SessionId::from_random_bytes([7; 16]),
            attach: AttachInfo {
                ws_url: "wss://gw.example/v1/sessions/x/pty".into(),
                token: Secret::new("tok"),
                expires_at: Timestamp::from_unix_millis(60_000).unwrap(),
                fallback_ws_url: None,
            },
            placement: Placement {
                node_id: NodeId::new("fog-a").unwrap(),
                region: Region::new("eu-west").unwrap(),
                trust_tier: TrustTier::Attested,
                reasons: vec![ReasonCode::FogLowestLatency],
            },
        };
        let v: serde_json::Value = serde_json::to_value(&resp).unwrap();
        assert_eq!(v["session_id"], "07070707-0707-4707-8707-070707070707");
        assert_eq!(v["attach"]["token"], "tok");
        assert_eq!(v["attach"]["expires_at"], "1970-01-01T00:01:00.000Z");
        assert_eq!(v["placement"]["trust_tier"], "attested");
        assert_eq!(v["placement"]["reasons"][0], "FOG_LOWEST_LATENCY");
    }

    #[test]
    fn pages_carry_a_cursor_only_while_more_remain() {
        let last: Page<u32> = Page {
            items: vec![1, 2],
            next_cursor: None,
        };
        assert_eq!(serde_json::to_string(&last).unwrap(), r#"{"items":[1,2]}"#);
        let more: Page<u32> = Page {
            items: vec![1],
            next_cursor: Some("c1".into()),
        };
        assert_eq!(
            serde_json::to_string(&more).unwrap(),
            r#"{"items":[1],"next_cursor":"c1"}"#
        );
    }

    #[test]
    fn page_limits_follow_ws4() {
        assert_eq!(page_limit(None), Ok(100));
        assert_eq!(page_limit(Some(1000)), Ok(1000));
        assert!(page_limit(Some(0)).is_err());
        assert!(page_limit(Some(1001)).is_err());
        let q: EventQuery = serde_json::from_str(
            r#"{"event_type":"policy.denied","outcome":"denied","from":"2026-01-02T00:00:00Z","to":"2026-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert!(q.validate().unwrap_err().contains("from"));
    }
}

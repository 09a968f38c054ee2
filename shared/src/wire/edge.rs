//! What a node's edge gateway adds to the link: the URL users reach it by (in the hello), and
//! the audit records of what it decided on its own — direct attaches and refusals — which
//! reach the coordinator's hash chain later, exactly once, in the node's order.
//!
//! Each record carries a per-node sequence number the node assigns and keeps across restarts.
//! The agent sends what the coordinator has not acknowledged, on every connection; the
//! coordinator commits each record with the node's new high-water mark in one transaction,
//! skips any at or below it (a resend after a lost acknowledgement), and acknowledges.

use serde::{Deserialize, Serialize};

use super::WireError;
use crate::ids::SessionId;
use crate::timestamp::Timestamp;

/// The longest gateway URL a node may announce.
pub const MAX_GATEWAY_URL: usize = 256;
/// The most records in one [`super::AgentMessage::EdgeAudit`].
pub const MAX_RECORDS: usize = 256;
/// The longest rule id and reason in a refusal.
pub const MAX_RULE_ID: usize = 64;
/// The longest reason in a refusal.
pub const MAX_REASON: usize = 512;

/// Checks a gateway's base URL as a node announces it: `wss://host[:port]` (or `ws://` for a
/// gateway on loopback), no path, query or credentials — clients append the PTY path.
pub fn validate_gateway_url(url: &str) -> Result<(), WireError> {
    let bad = |why: &str| Err(WireError::Malformed(format!("gateway url {url:?}: {why}")));
    if url.len() > MAX_GATEWAY_URL {
        return bad("too long");
    }
    let Some(authority) = url
        .strip_prefix("wss://")
        .or_else(|| url.strip_prefix("ws://"))
    else {
        return bad("must start with wss:// (or ws:// on loopback)");
    };
    if authority.is_empty()
        || !authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
    {
        return bad("must be wss://host[:port] with nothing after it");
    }
    Ok(())
}

/// One thing a node's gateway decided, for the audit chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct EdgeRecord {
    /// The node's sequence number for it: 1, 2, 3, … with no gaps, across restarts.
    pub seq: u64,
    /// When it happened, by the node's clock.
    pub at: Timestamp,
    /// What happened.
    pub event: EdgeEvent,
}

/// What a gateway records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum EdgeEvent {
    /// A terminal attached directly at the node (`session.attached`).
    Attached {
        /// The session.
        session_id: SessionId,
    },
    /// An attach was refused (`policy.denied`).
    Refused {
        /// The rule that refused (`auth.attach_token_wrong_node`, …).
        rule_id: String,
        /// In words.
        reason: String,
        /// The session asked for, when the request named a valid one.
        session_id: Option<SessionId>,
    },
}

impl EdgeRecord {
    /// Checks bounds serde cannot express.
    pub fn validate(&self) -> Result<(), WireError> {
        match &self.event {
            EdgeEvent::Refused {
                rule_id, reason, ..
            } if rule_id.len() > MAX_RULE_ID || reason.len() > MAX_REASON => Err(
                WireError::Malformed("an edge refusal's rule id or reason is too long".into()),
            ),
            _ => Ok(()),
        }
    }
}

/// Checks a batch of records: bounded, each valid, numbered one after another.
pub fn validate_batch(records: &[EdgeRecord]) -> Result<(), WireError> {
    if records.len() > MAX_RECORDS {
        return Err(WireError::Malformed("too many edge audit records".into()));
    }
    for pair in records.windows(2) {
        if pair[1].seq != pair[0].seq + 1 {
            return Err(WireError::Malformed(
                "edge audit records out of order".into(),
            ));
        }
    }
    records.iter().try_for_each(EdgeRecord::validate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_urls_are_a_scheme_and_an_authority() {
        for good in [
            "wss://fog-a.example.org",
            "wss://198.18.1.2:8444",
            "ws://127.0.0.1:9",
            "wss://[::1]:8443",
        ] {
            validate_gateway_url(good).unwrap();
        }
        for bad in [
            "https://fog-a",
            "wss://",
            "wss://a/v1",
            "wss://a?token=x",
            "wss://u:p@a",
            "ws://a b",
        ] {
            assert!(validate_gateway_url(bad).is_err(), "{bad}");
        }
        assert!(validate_gateway_url(&format!("wss://{}", "a".repeat(300))).is_err());
    }

    #[test]
    fn batches_are_bounded_and_in_order() {
        let record = |seq| EdgeRecord {
            seq,
            at: Timestamp::UNIX_EPOCH,
            event: EdgeEvent::Attached {
                session_id: SessionId::from_random_bytes([1; 16]),
            },
        };
        validate_batch(&[record(4), record(5)]).unwrap();
        assert!(validate_batch(&[record(4), record(6)]).is_err());
        assert!(validate_batch(&[record(5), record(4)]).is_err());
        let long = EdgeRecord {
            seq: 1,
            at: Timestamp::UNIX_EPOCH,
            event: EdgeEvent::Refused {
                rule_id: "r".repeat(65),
                reason: String::new(),
                session_id: None,
            },
        };
        assert!(validate_batch(&[long]).is_err());
    }
}

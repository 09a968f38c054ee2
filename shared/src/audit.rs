//! Audit events and the hash chain over them.
//!
//! Every decision and refusal is one [`AuditRecord`]. Records form a chain: each carries the
//! hash of the one before, and its own hash covers its canonical bytes, previous hash included.
//! Changing, dropping or reordering any record breaks every hash after it, which
//! [`verify_chain`] finds.
//!
//! The canonical bytes ([`AuditRecord::canonical_bytes`]) are the record's JSON with object keys
//! sorted, no whitespace, and no floating-point numbers: for these documents (ASCII keys,
//! integers only) that is exactly RFC 8785 (JCS), so an auditor can re-hash an exported record
//! with any JCS library.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::ids::{NodeId, ProfileName, Region, SessionId, TenantId};
use crate::image::{Digest, ImageRef};
use crate::node::TrustTier;
use crate::placement::ReasonCode;
use crate::timestamp::Timestamp;

/// A SHA-256 chain hash, written as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct ChainHash([u8; 32]);

impl ChainHash {
    /// The `prev_hash` of the first record.
    pub const GENESIS: Self = Self([0; 32]);

    /// The raw hash.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainHash({self})")
    }
}

impl TryFrom<String> for ChainHash {
    type Error = &'static str;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        let mut bytes = [0u8; 32];
        if value.len() != 64 || value.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err("a chain hash is 64 lowercase hex digits");
        }
        hex::decode_to_slice(&value, &mut bytes)
            .map_err(|_| "a chain hash is 64 lowercase hex digits")?;
        Ok(Self(bytes))
    }
}

impl From<ChainHash> for String {
    fn from(value: ChainHash) -> Self {
        value.to_string()
    }
}

/// How a decision came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It happened as asked.
    Success,
    /// A policy refused it.
    Denied,
    /// It was tried and failed.
    Failure,
}

/// Who caused an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Actor {
    /// A user or API client, by the OIDC `sub` claim.
    User {
        /// The token's subject.
        subject: String,
    },
    /// A node, by its certificate's node id.
    Node {
        /// The node.
        node_id: NodeId,
    },
    /// The coordinator itself (failover, TTL expiry, liveness).
    System,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "snake_case")]
pub enum TerminationCause {
    /// `DELETE /v1/sessions/{id}`.
    UserRequest,
    /// The TTL ran out.
    Expired,
    /// The shell exited by itself.
    ShellExited,
    /// Its node lost `attested` and the profile demands it.
    TrustLost,
    /// Fenced: a copy that was moved elsewhere while its node was away.
    Fenced,
    /// Its node reported limits other than its profile's (`enforce_limits` failed).
    LimitsNotEnforced,
}

/// What happened, with the details each kind of event needs. Serialized as
/// `{"event_type": "session.created", "details": {…}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(tag = "event_type", content = "details")]
pub enum AuditEvent {
    /// A session was created (interfaces-v1 minimum set).
    #[serde(rename = "session.created")]
    SessionCreated {
        /// The session.
        session_id: SessionId,
        /// Its profile.
        profile: ProfileName,
        /// Its lifetime.
        ttl_seconds: u32,
        /// The image asked for.
        image_ref: ImageRef,
    },
    /// A terminal attached (minimum set).
    #[serde(rename = "session.attached")]
    SessionAttached {
        /// The session.
        session_id: SessionId,
        /// The node serving the terminal.
        node_id: NodeId,
    },
    /// A session ended (minimum set).
    #[serde(rename = "session.terminated")]
    SessionTerminated {
        /// The session.
        session_id: SessionId,
        /// Why.
        cause: TerminationCause,
    },
    /// Placement chose a node, with reason codes (minimum set).
    #[serde(rename = "placement.decided")]
    PlacementDecided {
        /// The session placed.
        session_id: SessionId,
        /// The node chosen.
        node_id: NodeId,
        /// Its region.
        region: Region,
        /// Its trust tier.
        trust_tier: TrustTier,
        /// Why.
        reasons: Vec<ReasonCode>,
    },
    /// A node started a session's container, with the image digest (minimum set).
    #[serde(rename = "runtime.allocated")]
    RuntimeAllocated {
        /// The session.
        session_id: SessionId,
        /// The node.
        node_id: NodeId,
        /// The image's digest; `None` when the `process` driver (development only) ran a host
        /// shell instead of an image.
        image_digest: Option<Digest>,
    },
    /// A session's image passed admission (interfaces-v1 §2): its digest and what was
    /// verified.
    #[serde(rename = "image.admitted")]
    ImageAdmitted {
        /// The session.
        session_id: SessionId,
        /// The image, pinned.
        image_ref: ImageRef,
        /// What was verified (rule, signature, attestations, builders), or that dev mode ran
        /// it unverified.
        verified: String,
        /// Whether the verdict came from the coordinator's cache.
        cached: bool,
    },
    /// A policy refused something, with the rule id (minimum set).
    #[serde(rename = "policy.denied")]
    PolicyDenied {
        /// The rule that refused (`image.unpinned`, `auth.token_expired`, …).
        rule_id: String,
        /// In words.
        reason: String,
        /// What was refused (a session id, an image, a node), when there is one.
        subject: Option<String>,
    },
    /// A node joined the fleet with a join token.
    #[serde(rename = "node.enrolled")]
    NodeEnrolled {
        /// The new node.
        node_id: NodeId,
    },
    /// A node's link came up.
    #[serde(rename = "node.connected")]
    NodeConnected {
        /// The node.
        node_id: NodeId,
        /// The tier the coordinator grants it.
        trust_tier: TrustTier,
    },
    /// A node's certificate was renewed over its link.
    #[serde(rename = "node.certificate_renewed")]
    NodeCertificateRenewed {
        /// The node.
        node_id: NodeId,
        /// When the new certificate expires.
        not_after: Timestamp,
    },
    /// A node went silent past the liveness limit.
    #[serde(rename = "node.lost")]
    NodeLost {
        /// The node.
        node_id: NodeId,
        /// How many sessions it held.
        sessions: u32,
    },
    /// A node's TPM evidence verified and it holds the `attested` tier (recorded when it
    /// gains it, not at every quote).
    #[serde(rename = "node.attested")]
    NodeAttested {
        /// The node.
        node_id: NodeId,
        /// Its attestation key's TPM name (hex), pinned at enrollment.
        ak_name: String,
        /// Whether this connection enrolled the node (bound its AK to its EK).
        enrolled: bool,
    },
    /// A node's TPM evidence did not verify.
    #[serde(rename = "node.attestation_failed")]
    NodeAttestationFailed {
        /// The node.
        node_id: NodeId,
        /// What failed.
        reason: String,
    },
    /// A session lost its node and is being moved.
    #[serde(rename = "failover.started")]
    FailoverStarted {
        /// The session.
        session_id: SessionId,
        /// The node it was on.
        from_node: NodeId,
    },
    /// A session runs again on another node.
    #[serde(rename = "failover.completed")]
    FailoverCompleted {
        /// The session.
        session_id: SessionId,
        /// The node it was on.
        from_node: NodeId,
        /// The node it runs on now.
        to_node: NodeId,
    },
    /// A session could not be moved.
    #[serde(rename = "failover.failed")]
    FailoverFailed {
        /// The session.
        session_id: SessionId,
        /// The node it was on.
        from_node: NodeId,
        /// Why.
        reason: String,
    },
    /// A session's limits as its node read them back (interfaces-v1 §1.4 `enforce_limits`):
    /// after it starts, and whenever a periodic check finds them not held. `failure` when they
    /// differ from its profile's.
    #[serde(rename = "session.limits_checked")]
    LimitsChecked {
        /// The session.
        session_id: SessionId,
        /// Its node.
        node_id: NodeId,
        /// Each limit that differs, in words (`memory: wanted 536870912, found unlimited`);
        /// empty when they hold.
        mismatches: Vec<String>,
    },
}

/// The kinds of [`AuditEvent`], for filtering (`event_type` in `GET /v1/events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum EventType {
    /// `session.created`
    #[serde(rename = "session.created")]
    SessionCreated,
    /// `session.attached`
    #[serde(rename = "session.attached")]
    SessionAttached,
    /// `session.terminated`
    #[serde(rename = "session.terminated")]
    SessionTerminated,
    /// `placement.decided`
    #[serde(rename = "placement.decided")]
    PlacementDecided,
    /// `runtime.allocated`
    #[serde(rename = "runtime.allocated")]
    RuntimeAllocated,
    /// `policy.denied`
    #[serde(rename = "policy.denied")]
    PolicyDenied,
    /// `node.enrolled`
    #[serde(rename = "node.enrolled")]
    NodeEnrolled,
    /// `node.connected`
    #[serde(rename = "node.connected")]
    NodeConnected,
    /// `node.certificate_renewed`
    #[serde(rename = "node.certificate_renewed")]
    NodeCertificateRenewed,
    /// `node.lost`
    #[serde(rename = "node.lost")]
    NodeLost,
    /// `node.attested`
    #[serde(rename = "node.attested")]
    NodeAttested,
    /// `image.admitted`
    #[serde(rename = "image.admitted")]
    ImageAdmitted,
    /// `node.attestation_failed`
    #[serde(rename = "node.attestation_failed")]
    NodeAttestationFailed,
    /// `failover.started`
    #[serde(rename = "failover.started")]
    FailoverStarted,
    /// `failover.completed`
    #[serde(rename = "failover.completed")]
    FailoverCompleted,
    /// `failover.failed`
    #[serde(rename = "failover.failed")]
    FailoverFailed,
    /// `session.limits_checked`
    #[serde(rename = "session.limits_checked")]
    LimitsChecked,
}

impl AuditEvent {
    /// This event's kind.
    pub fn event_type(&self) -> EventType {
        match self {
            Self::SessionCreated { .. } => EventType::SessionCreated,
            Self::SessionAttached { .. } => EventType::SessionAttached,
            Self::SessionTerminated { .. } => EventType::SessionTerminated,
            Self::PlacementDecided { .. } => EventType::PlacementDecided,
            Self::RuntimeAllocated { .. } => EventType::RuntimeAllocated,
            Self::PolicyDenied { .. } => EventType::PolicyDenied,
            Self::NodeEnrolled { .. } => EventType::NodeEnrolled,
            Self::NodeConnected { .. } => EventType::NodeConnected,
            Self::NodeCertificateRenewed { .. } => EventType::NodeCertificateRenewed,
            Self::NodeLost { .. } => EventType::NodeLost,
            Self::NodeAttested { .. } => EventType::NodeAttested,
            Self::ImageAdmitted { .. } => EventType::ImageAdmitted,
            Self::NodeAttestationFailed { .. } => EventType::NodeAttestationFailed,
            Self::FailoverStarted { .. } => EventType::FailoverStarted,
            Self::FailoverCompleted { .. } => EventType::FailoverCompleted,
            Self::FailoverFailed { .. } => EventType::FailoverFailed,
            Self::LimitsChecked { .. } => EventType::LimitsChecked,
        }
    }
}

/// What a caller knows when it records an event; the log adds the sequence number, the id
/// and the hashes ([`AuditRecord::chain`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct AuditEntry {
    /// When it happened.
    pub at: Timestamp,
    /// Whose tenant it concerns (none for fleet events).
    pub tenant: Option<TenantId>,
    /// Who caused it.
    pub actor: Actor,
    /// How it came out.
    pub outcome: Outcome,
    /// What happened.
    #[serde(flatten)]
    pub event: AuditEvent,
}

/// One link of the audit chain, as stored and as `GET /v1/events` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct AuditRecord {
    /// Position in the chain, from 1, without gaps.
    pub seq: u64,
    /// The record's id (`ev-<seq>`), the `evidence_pointer` of errors it backs.
    pub id: String,
    /// The event.
    #[serde(flatten)]
    pub entry: AuditEntry,
    /// The previous record's hash ([`ChainHash::GENESIS`] for the first).
    pub prev_hash: ChainHash,
    /// SHA-256 of this record's canonical bytes.
    pub hash: ChainHash,
}

/// The id a record at `seq` gets.
pub fn event_id(seq: u64) -> String {
    format!("ev-{seq}")
}

/// Why a chain does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A record's `seq` is not one more than the one before (or the first is not `first_seq`).
    #[error("record {found} follows {expected_prev} out of order")]
    OutOfSequence {
        /// The seq found.
        found: u64,
        /// The seq it should have followed.
        expected_prev: u64,
    },
    /// A record's `prev_hash` is not the previous record's hash.
    #[error("record {seq} does not link to the record before it")]
    BrokenLink {
        /// The record.
        seq: u64,
    },
    /// A record's `hash` does not match its contents: it was changed after it was written.
    #[error("record {seq} was altered (its hash does not match its contents)")]
    Altered {
        /// The record.
        seq: u64,
    },
    /// A record's id is not `ev-<seq>`.
    #[error("record {seq} has the wrong id")]
    WrongId {
        /// The record.
        seq: u64,
    },
}

/// What the hash covers: every field of the record but `hash`.
#[derive(Serialize)]
struct Hashed<'a> {
    seq: u64,
    id: &'a str,
    #[serde(flatten)]
    entry: &'a AuditEntry,
    prev_hash: ChainHash,
}

impl AuditRecord {
    /// Appends `entry` after a record with `prev` (`(0, GENESIS)` for the first): gives it the
    /// next sequence number, its id, and its hash.
    pub fn chain(entry: AuditEntry, prev: (u64, ChainHash)) -> Self {
        let seq = prev.0 + 1;
        let mut record = Self {
            seq,
            id: event_id(seq),
            entry,
            prev_hash: prev.1,
            hash: ChainHash::GENESIS,
        };
        record.hash = record.compute_hash();
        record
    }

    /// The canonical bytes the hash covers (sorted keys, no whitespace; see module docs).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let hashed = Hashed {
            seq: self.seq,
            id: &self.id,
            entry: &self.entry,
            prev_hash: self.prev_hash,
        };
        // Records hold only strings, integers, booleans and nulls, so they always convert.
        let value = serde_json::to_value(hashed).unwrap_or(Value::Null);
        let mut out = Vec::with_capacity(512);
        write_canonical(&value, &mut out);
        out
    }

    /// SHA-256 of [`Self::canonical_bytes`].
    pub fn compute_hash(&self) -> ChainHash {
        ChainHash(Sha256::digest(self.canonical_bytes()).into())
    }
}

/// Writes `value` as canonical JSON. Keys are sorted here, explicitly, so the result does not
/// depend on whether some crate in the build turned on serde_json's `preserve_order`.
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(&Value::String(key.clone()), out);
                out.push(b':');
                write_canonical(value, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(value: &Value, out: &mut Vec<u8>) {
    // serde_json escapes strings as JCS does (only `"`, `\` and control characters) and writes
    // integers in plain decimal; writing into a Vec cannot fail.
    let _ = serde_json::to_writer(out, value);
}

/// Checks a run of consecutive records: sequence, links and hashes. `prev` is the record
/// before the run (`(0, GENESIS)` when it starts the chain).
pub fn verify_chain<'a>(
    records: impl IntoIterator<Item = &'a AuditRecord>,
    prev: (u64, ChainHash),
) -> Result<(u64, ChainHash), ChainError> {
    let (mut last_seq, mut last_hash) = prev;
    for record in records {
        if record.seq != last_seq + 1 {
            return Err(ChainError::OutOfSequence {
                found: record.seq,
                expected_prev: last_seq,
            });
        }
        if record.id != event_id(record.seq) {
            return Err(ChainError::WrongId { seq: record.seq });
        }
        if record.prev_hash != last_hash {
            return Err(ChainError::BrokenLink { seq: record.seq });
        }
        if record.compute_hash() != record.hash {
            return Err(ChainError::Altered { seq: record.seq });
        }
        (last_seq, last_hash) = (record.seq, record.hash);
    }
    Ok((last_seq, last_hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(event: AuditEvent) -> AuditEntry {
        AuditEntry {
            at: Timestamp::from_unix_millis(1_795_544_330_123).unwrap(),
            tenant: Some("org:acme".parse().unwrap()),
            actor: Actor::User {
                subject: "alice".into(),
            },
            outcome: Outcome::Success,
            event,
        }
    }

    fn sample_chain(n: usize) -> Vec<AuditRecord> {
        let mut prev = (0, ChainHash::GENESIS);
        (0..n)
            .map(|i| {
                let r = AuditRecord::chain(
                    entry(AuditEvent::NodeLost {
                        node_id: "fog-a".parse().unwrap(),
                        sessions: i as u32,
                    }),
                    prev,
                );
                prev = (r.seq, r.hash);
                r
            })
            .collect()
    }

    #[test]
    fn canonical_bytes_are_sorted_compact_json() {
        let record = AuditRecord::chain(
            entry(AuditEvent::PolicyDenied {
                rule_id: "image.unpinned".into(),
                reason: "tag \"latest\" is mutable".into(),
                subject: None,
            }),
            (0, ChainHash::GENESIS),
        );
        let text = String::from_utf8(record.canonical_bytes()).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"actor":{"kind":"user","subject":"alice"},"at":"2026-11-24T18:18:50.123Z","#,
                r#""details":{"reason":"tag \"latest\" is mutable","rule_id":"image.unpinned","subject":null},"#,
                r#""event_type":"policy.denied","id":"ev-1","outcome":"success","#,
                r#""prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","#,
                r#""seq":1,"tenant":"org:acme"}"#
            )
        );
        // The hash is SHA-256 of exactly those bytes.
        let want: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        assert_eq!(record.hash.as_bytes(), &want);
    }

    #[test]
    fn a_chain_verifies_and_each_tampering_is_found() {
        let chain = sample_chain(5);
        assert_eq!(verify_chain(&chain, (0, ChainHash::GENESIS)).unwrap().0, 5);
        // A suffix verifies from its predecessor.
        assert!(verify_chain(&chain[2..], (chain[1].seq, chain[1].hash)).is_ok());

        let mut altered = chain.clone();
        altered[2].entry.outcome = Outcome::Denied;
        assert_eq!(
            verify_chain(&altered, (0, ChainHash::GENESIS)),
            Err(ChainError::Altered { seq: 3 })
        );

        let mut dropped = chain.clone();
        dropped.remove(1);
        assert!(matches!(
            verify_chain(&dropped, (0, ChainHash::GENESIS)),
            Err(ChainError::OutOfSequence {
                found: 3,
                expected_prev: 1
            })
        ));

        // Rewriting a record and its own hash still breaks the next link.
        let mut rehashed = chain.clone();
        rehashed[1].entry.tenant = None;
        rehashed[1].hash = rehashed[1].compute_hash();
        assert_eq!(
            verify_chain(&rehashed, (0, ChainHash::GENESIS)),
            Err(ChainError::BrokenLink { seq: 3 })
        );

        let mut renamed = chain;
        renamed[0].id = "ev-9".into();
        assert_eq!(
            verify_chain(&renamed, (0, ChainHash::GENESIS)),
            Err(ChainError::WrongId { seq: 1 })
        );
    }

    #[test]
    fn records_round_trip_through_json() {
        let record = &sample_chain(1)[0];
        let json = serde_json::to_string(record).unwrap();
        let back: AuditRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, record);
        assert_eq!(back.compute_hash(), record.hash);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["event_type"], "node.lost");
        assert_eq!(v["details"]["sessions"], 0);
    }

    #[test]
    fn event_type_names_match_the_event_tags() {
        let e = AuditEvent::RuntimeAllocated {
            session_id: SessionId::from_random_bytes([1; 16]),
            node_id: "fog-a".parse().unwrap(),
            image_digest: Some(Digest::from_bytes([2; 32])),
        };
        let tagged = serde_json::to_value(&e).unwrap();
        let named = serde_json::to_value(e.event_type()).unwrap();
        assert_eq!(tagged["event_type"], named);
    }
}

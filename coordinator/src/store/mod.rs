//! What the coordinator keeps: sessions and the audit log, behind [`Store`] so that SQLite
//! (the embedded default, [`sqlite`]) and PostgreSQL (multi-coordinator) are interchangeable.
//!
//! Every change is a [`Batch`]: session rows to write and audit entries to chain, committed in
//! one durable transaction. A state change and the event that records it land together or not
//! at all, and the API answers only after the commit — kill -9 loses nothing acknowledged.

pub mod sqlite;

use fogshell_shared::api::SessionView;
use fogshell_shared::audit::{AuditEntry, AuditRecord, EventType, Outcome};
use fogshell_shared::placement::PlacementHint;
use fogshell_shared::{
    ImageRef, NodeId, Placement, ProfileName, RuntimeRef, SessionId, SessionStatus, TenantId,
    Timestamp,
};
use serde::{Deserialize, Serialize};

/// A session as the coordinator keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The session.
    pub session_id: SessionId,
    /// Whose (from the creator's token).
    pub tenant: TenantId,
    /// The creator's `sub`.
    pub owner: String,
    /// Where it is in its lifecycle.
    pub status: SessionStatus,
    /// The profile it runs under.
    pub profile: ProfileName,
    /// The image, pinned.
    pub image_ref: ImageRef,
    /// Where it runs.
    pub placement: Placement,
    /// When it was created.
    pub created_at: Timestamp,
    /// When its TTL runs out.
    pub expires_at: Timestamp,
    /// The node's handle, once allocated.
    pub runtime_ref: Option<RuntimeRef>,
    /// The shell's exit status, once it exited.
    pub exit_code: Option<i32>,
    /// What the client asked of placement; its locality binds a failover too. (Rows written
    /// before it was kept read as none.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement_hint: Option<PlacementHint>,
}

impl SessionRecord {
    /// What `GET /v1/sessions/{id}` shows.
    pub fn view(&self) -> SessionView {
        SessionView {
            session_id: self.session_id,
            status: self.status,
            placement: self.placement.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            image_ref: self.image_ref.clone(),
            profile: self.profile.clone(),
        }
    }

    /// The node it runs on.
    pub fn node_id(&self) -> &NodeId {
        &self.placement.node_id
    }
}

/// One atomic change.
#[derive(Debug, Default)]
pub struct Batch {
    /// Sessions to insert or replace.
    pub sessions: Vec<SessionRecord>,
    /// Events to append to the audit chain, in order.
    pub events: Vec<AuditEntry>,
    /// When the events are a node's edge audit records: which ones, so they land exactly
    /// once (a batch whose records are already in commits nothing).
    pub edge_cursor: Option<EdgeCursor>,
}

/// A run of one node's edge audit records, numbered `first..=last` by the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeCursor {
    /// The node.
    pub node_id: NodeId,
    /// The first record's number: one past what is already in.
    pub first: u64,
    /// The last record's number.
    pub last: u64,
}

impl Batch {
    /// A batch of just these events.
    pub fn events(events: impl IntoIterator<Item = AuditEntry>) -> Self {
        Self {
            sessions: Vec::new(),
            events: events.into_iter().collect(),
            edge_cursor: None,
        }
    }
}

/// Which audit events to list (`GET /v1/events`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only this tenant's.
    pub tenant: Option<TenantId>,
    /// At or after.
    pub from: Option<Timestamp>,
    /// Before.
    pub to: Option<Timestamp>,
    /// Only this kind.
    pub event_type: Option<EventType>,
    /// Only this outcome.
    pub outcome: Option<Outcome>,
}

/// Why the store failed. Callers answer `ECS_INTERNAL`; the detail goes to the log.
#[derive(Debug, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

/// The coordinator's persistent state.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Commits `batch` durably; returns the audit records it appended (with seq, id, hashes).
    fn commit(&self, batch: Batch) -> Result<Vec<AuditRecord>, StoreError>;
    /// The highest edge audit record number of `node_id` in the chain (0: none).
    fn edge_audit_through(&self, node_id: &NodeId) -> Result<u64, StoreError>;
    /// One session.
    fn session(&self, session_id: SessionId) -> Result<Option<SessionRecord>, StoreError>;
    /// A tenant's sessions in creation order, each with its position; only those after
    /// position `after` (0 for the first page), at most `limit`.
    fn sessions_of(
        &self,
        tenant: &TenantId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<(u64, SessionRecord)>, StoreError>;
    /// Every session not in a final state (for the TTL reaper, reconciliation and fencing).
    fn live_sessions(&self) -> Result<Vec<SessionRecord>, StoreError>;
    /// One audit record by id.
    fn event(&self, id: &str) -> Result<Option<AuditRecord>, StoreError>;
    /// Audit records matching `filter` with `seq > after`, in chain order, at most `limit`.
    fn events(
        &self,
        filter: &EventFilter,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError>;
}

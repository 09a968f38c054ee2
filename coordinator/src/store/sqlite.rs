//! The embedded store: one SQLite file (`<data dir>/fogshell.db`), WAL mode with
//! `synchronous = FULL`, so a commit is on disk before [`Store::commit`] returns.
//!
//! Rows keep the record as JSON (the shared crate's serde form) next to the columns queries
//! filter on; schema changes are numbered migrations tracked in `PRAGMA user_version`.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use fogshell_shared::audit::{AuditRecord, ChainHash};
use fogshell_shared::{NodeId, SessionId, TenantId};
use rusqlite::{Connection, OptionalExtension, params};

use super::{Batch, EventFilter, SessionRecord, Store, StoreError};

/// Migrations, in order; `user_version` says how many have run. Append, never edit.
const MIGRATIONS: &[&str] = &[
    // 1: sessions and the audit chain.
    "CREATE TABLE sessions (
        n INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL UNIQUE,
        tenant TEXT NOT NULL,
        status TEXT NOT NULL,
        record TEXT NOT NULL
     );
     CREATE INDEX sessions_by_tenant ON sessions (tenant, n);
     CREATE INDEX sessions_by_status ON sessions (status);
     CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        at INTEGER NOT NULL,
        tenant TEXT,
        event_type TEXT NOT NULL,
        outcome TEXT NOT NULL,
        hash TEXT NOT NULL,
        record TEXT NOT NULL
     );
     CREATE INDEX audit_by_tenant ON audit (tenant, seq);",
    // 2: how far each node's edge audit records are in the chain.
    "CREATE TABLE edge_audit (
        node_id TEXT PRIMARY KEY,
        through INTEGER NOT NULL
     );",
];

/// The SQLite store.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

fn err(context: &str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError(format!("{context}: {e}"))
}

/// SQLite integers are signed; sequence numbers and positions never come near 2^63.
fn sql_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn json_err(e: serde_json::Error) -> StoreError {
    StoreError(format!("a stored record does not decode: {e}"))
}

/// A value's serde name (`"running"`, `"session.created"`), for indexed columns.
fn serde_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)
            .map_err(|e| StoreError(format!("opening {}: {e}", path.display())))?;
        Self::setup(conn)
    }

    /// An in-memory database (tests).
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::setup(Connection::open_in_memory().map_err(err("opening"))?)
    }

    fn setup(mut conn: Connection) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err("journal_mode"))?;
        // FULL: every commit is fsynced, so an acknowledged change survives power loss too.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err("synchronous"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err("busy_timeout"))?;
        let version: usize = conn
            .pragma_query_value(None, "user_version", |row| row.get::<_, i64>(0))
            .map_err(err("user_version"))
            .map(|v| usize::try_from(v).unwrap_or(usize::MAX))?;
        if version > MIGRATIONS.len() {
            return Err(StoreError(format!(
                "the database is at schema {version}, newer than this coordinator knows ({}); \
                 run a newer release",
                MIGRATIONS.len()
            )));
        }
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = conn.transaction().map_err(err("migration"))?;
            tx.execute_batch(migration).map_err(err("migration"))?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(err("migration"))?;
            tx.commit().map_err(err("migration"))?;
            tracing::info!(schema = i + 1, "store migrated");
        }
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        fogshell_shared::sync::lock(&self.conn)
    }

    /// Every audit record in chain order, `batch` at a time, for `verify`.
    pub fn for_each_event(
        &self,
        mut visit: impl FnMut(&AuditRecord) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut after = 0u64;
        loop {
            let page = self
                .events(&EventFilter::default(), after, 1000)
                .map_err(|e| e.to_string())?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = last.seq;
            for record in &page {
                visit(record)?;
            }
        }
    }
}

fn last_link(tx: &rusqlite::Transaction<'_>) -> Result<(u64, ChainHash), StoreError> {
    let last: Option<(i64, String)> = tx
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
        .map_err(err("reading the chain's end"))?;
    match last {
        None => Ok((0, ChainHash::GENESIS)),
        Some((seq, hash)) => Ok((
            seq.unsigned_abs(),
            ChainHash::try_from(hash).map_err(|e| StoreError(format!("stored hash: {e}")))?,
        )),
    }
}

/// How far `node_id`'s edge audit records are in the chain (0: none yet).
fn edge_through(conn: &Connection, node_id: &NodeId) -> Result<u64, StoreError> {
    let through: Option<i64> = conn
        .query_row(
            "SELECT through FROM edge_audit WHERE node_id = ?1",
            params![node_id.as_str()],
            |row| row.get(0),
        )
        .optional()
        .map_err(err("reading edge audit progress"))?;
    Ok(through.unwrap_or(0).unsigned_abs())
}

impl Store for SqliteStore {
    fn commit(&self, batch: Batch) -> Result<Vec<AuditRecord>, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(err("begin"))?;
        if let Some(cursor) = &batch.edge_cursor {
            let through = edge_through(&tx, &cursor.node_id)?;
            if through >= cursor.last {
                // A resend of records already in the chain: nothing to do, exactly once.
                return Ok(Vec::new());
            }
            if through + 1 != cursor.first {
                return Err(StoreError(format!(
                    "node {}'s edge audit records start at {} but {} are in",
                    cursor.node_id, cursor.first, through
                )));
            }
            tx.execute(
                "INSERT INTO edge_audit (node_id, through) VALUES (?1, ?2)
                 ON CONFLICT (node_id) DO UPDATE SET through = excluded.through",
                params![cursor.node_id.as_str(), sql_int(cursor.last)],
            )
            .map_err(err("recording edge audit progress"))?;
        }
        for session in &batch.sessions {
            let record = serde_json::to_string(session).map_err(json_err)?;
            tx.execute(
                "INSERT INTO sessions (session_id, tenant, status, record) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (session_id) DO UPDATE SET status = excluded.status, record = excluded.record",
                params![
                    session.session_id.to_string(),
                    session.tenant.as_str(),
                    session.status.as_str(),
                    record
                ],
            )
            .map_err(err("writing a session"))?;
        }
        let mut prev = last_link(&tx)?;
        let mut appended = Vec::with_capacity(batch.events.len());
        for entry in batch.events {
            let record = AuditRecord::chain(entry, prev);
            tx.execute(
                "INSERT INTO audit (seq, id, at, tenant, event_type, outcome, hash, record)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    sql_int(record.seq),
                    record.id,
                    record.entry.at.unix_millis(),
                    record.entry.tenant.as_ref().map(|t| t.as_str().to_owned()),
                    serde_name(&record.entry.event.event_type()),
                    serde_name(&record.entry.outcome),
                    record.hash.to_string(),
                    serde_json::to_string(&record).map_err(json_err)?,
                ],
            )
            .map_err(err("appending an audit event"))?;
            prev = (record.seq, record.hash);
            appended.push(record);
        }
        tx.commit().map_err(err("commit"))?;
        Ok(appended)
    }

    fn edge_audit_through(&self, node_id: &NodeId) -> Result<u64, StoreError> {
        edge_through(&self.lock(), node_id)
    }

    fn session(&self, session_id: SessionId) -> Result<Option<SessionRecord>, StoreError> {
        let conn = self.lock();
        let record: Option<String> = conn
            .query_row(
                "SELECT record FROM sessions WHERE session_id = ?1",
                params![session_id.to_string()],
                |row| row.get(0),
            )
            .optional()
            .map_err(err("reading a session"))?;
        record
            .map(|r| serde_json::from_str(&r).map_err(json_err))
            .transpose()
    }

    fn sessions_of(
        &self,
        tenant: &TenantId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<(u64, SessionRecord)>, StoreError> {
        let conn = self.lock();
        let mut statement = conn
            .prepare_cached(
                "SELECT n, record FROM sessions WHERE tenant = ?1 AND n > ?2 ORDER BY n LIMIT ?3",
            )
            .map_err(err("listing sessions"))?;
        let rows = statement
            .query_map(params![tenant.as_str(), sql_int(after), limit], |row| {
                Ok((
                    row.get::<_, i64>(0)?.unsigned_abs(),
                    row.get::<_, String>(1)?,
                ))
            })
            .map_err(err("listing sessions"))?;
        rows.map(|row| {
            let (n, record) = row.map_err(err("listing sessions"))?;
            Ok((n, serde_json::from_str(&record).map_err(json_err)?))
        })
        .collect()
    }

    fn live_sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
        let conn = self.lock();
        let mut statement = conn
            .prepare_cached(
                "SELECT record FROM sessions WHERE status NOT IN ('terminated', 'failed') ORDER BY n",
            )
            .map_err(err("listing live sessions"))?;
        let rows = statement
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(err("listing live sessions"))?;
        rows.map(|row| {
            serde_json::from_str(&row.map_err(err("listing live sessions"))?).map_err(json_err)
        })
        .collect()
    }

    fn event(&self, id: &str) -> Result<Option<AuditRecord>, StoreError> {
        let conn = self.lock();
        let record: Option<String> = conn
            .query_row(
                "SELECT record FROM audit WHERE id = ?1",
                params![id],
                |row| row.get(0),
            )
            .optional()
            .map_err(err("reading an event"))?;
        record
            .map(|r| serde_json::from_str(&r).map_err(json_err))
            .transpose()
    }

    fn events(
        &self,
        filter: &EventFilter,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let conn = self.lock();
        let mut statement = conn
            .prepare_cached(
                "SELECT record FROM audit
                 WHERE seq > ?1
                   AND (?2 IS NULL OR tenant = ?2)
                   AND (?3 IS NULL OR at >= ?3)
                   AND (?4 IS NULL OR at < ?4)
                   AND (?5 IS NULL OR event_type = ?5)
                   AND (?6 IS NULL OR outcome = ?6)
                 ORDER BY seq LIMIT ?7",
            )
            .map_err(err("listing events"))?;
        let rows = statement
            .query_map(
                params![
                    sql_int(after),
                    filter.tenant.as_ref().map(|t| t.as_str().to_owned()),
                    filter.from.map(|t| t.unix_millis()),
                    filter.to.map(|t| t.unix_millis()),
                    filter.event_type.as_ref().map(serde_name),
                    filter.outcome.as_ref().map(serde_name),
                    limit
                ],
                |row| row.get::<_, String>(0),
            )
            .map_err(err("listing events"))?;
        rows.map(|row| serde_json::from_str(&row.map_err(err("listing events"))?).map_err(json_err))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fogshell_shared::audit::{Actor, AuditEntry, AuditEvent, Outcome, verify_chain};
    use fogshell_shared::{Placement, SessionStatus, Timestamp, TrustTier};

    fn entry(tenant: &str, outcome: Outcome, at: i64) -> AuditEntry {
        AuditEntry {
            at: Timestamp::from_unix_millis(at).unwrap(),
            tenant: Some(tenant.parse().unwrap()),
            actor: Actor::System,
            outcome,
            event: AuditEvent::PolicyDenied {
                rule_id: "test.rule".into(),
                reason: "because".into(),
                subject: None,
            },
        }
    }

    fn session(n: u8, tenant: &str) -> SessionRecord {
        SessionRecord {
            session_id: SessionId::from_random_bytes([n; 16]),
            tenant: tenant.parse().unwrap(),
            owner: "alice".into(),
            status: SessionStatus::Pending,
            profile: "default".parse().unwrap(),
            image_ref: format!("registry.test/shell@sha256:{}", "a".repeat(64))
                .parse()
                .unwrap(),
            placement: Placement {
                node_id: "fog-a".parse().unwrap(),
                region: "eu-west".parse().unwrap(),
                trust_tier: TrustTier::Dev,
                reasons: vec![],
            },
            created_at: Timestamp::from_unix_millis(1000).unwrap(),
            expires_at: Timestamp::from_unix_millis(61000).unwrap(),
            runtime_ref: None,
            exit_code: None,
            placement_hint: None,
        }
    }

    #[test]
    fn events_chain_across_commits_and_filter() {
        let store = SqliteStore::in_memory().unwrap();
        let first = store
            .commit(Batch::events([
                entry("org:a", Outcome::Success, 1000),
                entry("org:b", Outcome::Denied, 2000),
            ]))
            .unwrap();
        let second = store
            .commit(Batch::events([entry("org:a", Outcome::Denied, 3000)]))
            .unwrap();
        assert_eq!(second[0].seq, 3);
        assert_eq!(second[0].prev_hash, first[1].hash);
        let all = store.events(&EventFilter::default(), 0, 100).unwrap();
        verify_chain(&all, (0, ChainHash::GENESIS)).unwrap();
        let denied_a = store
            .events(
                &EventFilter {
                    tenant: Some("org:a".parse().unwrap()),
                    outcome: Some(Outcome::Denied),
                    ..EventFilter::default()
                },
                0,
                100,
            )
            .unwrap();
        assert_eq!(denied_a.iter().map(|r| r.seq).collect::<Vec<_>>(), [3]);
        let window = store
            .events(
                &EventFilter {
                    from: Some(Timestamp::from_unix_millis(2000).unwrap()),
                    to: Some(Timestamp::from_unix_millis(3000).unwrap()),
                    ..EventFilter::default()
                },
                0,
                100,
            )
            .unwrap();
        assert_eq!(window.iter().map(|r| r.seq).collect::<Vec<_>>(), [2]);
        assert_eq!(store.event("ev-2").unwrap().unwrap(), all[1]);
        assert!(store.event("ev-9").unwrap().is_none());
    }

    #[test]
    fn sessions_upsert_page_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fogshell.db");
        {
            let store = SqliteStore::open(&path).unwrap();
            let mut sessions: Vec<_> = (1..=3).map(|n| session(n, "org:a")).collect();
            sessions.push(session(4, "org:b"));
            store
                .commit(Batch {
                    edge_cursor: None,
                    sessions,
                    events: vec![],
                })
                .unwrap();
            let mut running = session(2, "org:a");
            running.status = SessionStatus::Terminated;
            store
                .commit(Batch {
                    edge_cursor: None,
                    sessions: vec![running],
                    events: vec![],
                })
                .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let page = store.sessions_of(&"org:a".parse().unwrap(), 0, 2).unwrap();
        assert_eq!(page.len(), 2);
        let rest = store
            .sessions_of(&"org:a".parse().unwrap(), page[1].0, 2)
            .unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].1.session_id, session(3, "org:a").session_id);
        let live: Vec<_> = store
            .live_sessions()
            .unwrap()
            .into_iter()
            .map(|s| s.session_id)
            .collect();
        assert_eq!(live.len(), 3, "the terminated one is not live");
        assert_eq!(
            store
                .session(session(2, "org:a").session_id)
                .unwrap()
                .unwrap()
                .status,
            SessionStatus::Terminated
        );
    }
}

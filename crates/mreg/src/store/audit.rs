//! Storage of the audit log: rows in chain order (`seq`), each with the hash of the row before
//! it. Appending is serialised (a transaction-scoped advisory lock in PostgreSQL, the single
//! writer in SQLite) so that every replica extends one chain; an event already stored (same id,
//! e.g. replayed from the spool after a write whose answer was lost) is skipped, so every event
//! is stored exactly once. Pruning removes a prefix and records a checkpoint (the last removed
//! row's position and hash) from which the rest still verifies.

use async_trait::async_trait;
use domain::Result;
use sqlx::Row;

use super::db_error;
pub use domain::audit::AuditRecord;
use domain::audit::{AuditEvent, GENESIS, chain};

/// Which rows to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Subject or email of the actor.
    pub actor: Option<String>,
    /// Tool called.
    pub tool: Option<String>,
    /// Server addressed.
    pub server: Option<String>,
    /// `allow`, `deny` or `rate_limited`.
    pub decision: Option<String>,
    /// Operation (exact).
    pub operation: Option<String>,
    /// Started at or after (µs since the epoch).
    pub since_us: Option<i64>,
    /// Started before (µs since the epoch).
    pub until_us: Option<i64>,
    /// Actor's tenant (tenant isolation).
    pub tenant: Option<String>,
    /// Only rows before this position (the cursor).
    pub before_seq: Option<i64>,
    /// At most this many rows.
    pub limit: i64,
}

/// The audit table.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Appends `events` to the chain in order. With `skip_stored` (a replay, or a retry after
    /// an attempt whose answer was lost), events already stored are skipped first; without it,
    /// a stored event makes the whole append fail (unique id). Returns how many were stored.
    async fn append(&self, events: &[AuditEvent], skip_stored: bool) -> Result<u64>;
    /// Rows matching `filter`, newest first.
    async fn list(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>>;
    /// Up to `limit` rows after position `seq`, in chain order.
    async fn chain_after(&self, seq: i64, limit: i64) -> Result<Vec<AuditRecord>>;
    /// The latest retention checkpoint: position and hash of the last pruned row.
    async fn anchor(&self) -> Result<Option<(i64, String)>>;
    /// Removes the rows before the first one that started at or after `before_us` (a prefix of
    /// the chain) and records the checkpoint. Returns how many were removed.
    async fn prune(&self, before_us: i64, now_us: i64) -> Result<u64>;
}

const COLUMNS: &str = "seq, prev_hash, hash, id, at_us, request_id, actor_subject, actor_email, \
     actor_tenant, actor_client_id, operation, tool, server, arguments, decision, outcome, \
     error, duration_us";

fn record<R: Row>(row: &R) -> std::result::Result<AuditRecord, sqlx::Error>
where
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database>,
{
    Ok(AuditRecord {
        seq: row.try_get("seq")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
        event: AuditEvent {
            id: row.try_get("id")?,
            at_us: row.try_get("at_us")?,
            request_id: row.try_get("request_id")?,
            actor_subject: row.try_get("actor_subject")?,
            actor_email: row.try_get("actor_email")?,
            actor_tenant: row.try_get("actor_tenant")?,
            actor_client_id: row.try_get("actor_client_id")?,
            operation: row.try_get("operation")?,
            tool: row.try_get("tool")?,
            server: row.try_get("server")?,
            arguments: row.try_get("arguments")?,
            decision: row.try_get("decision")?,
            outcome: row.try_get("outcome")?,
            error: row.try_get("error")?,
            duration_us: row.try_get("duration_us")?,
        },
    })
}

/// The SQL both backends share (`$n` placeholders, `CAST` for typed NULL checks).
macro_rules! audit_reads {
    ($store:ty) => {
        impl $store {
            async fn audit_list(&self, f: &AuditFilter) -> Result<Vec<AuditRecord>> {
                let sql = format!(
                    "SELECT {COLUMNS} FROM audit_log WHERE \
                 (CAST($1 AS TEXT) IS NULL OR actor_subject = $1 OR actor_email = $1) \
                 AND (CAST($2 AS TEXT) IS NULL OR tool = $2) \
                 AND (CAST($3 AS TEXT) IS NULL OR server = $3) \
                 AND (CAST($4 AS TEXT) IS NULL OR decision = $4) \
                 AND (CAST($5 AS TEXT) IS NULL OR operation = $5) \
                 AND (CAST($6 AS BIGINT) IS NULL OR at_us >= $6) \
                 AND (CAST($7 AS BIGINT) IS NULL OR at_us < $7) \
                 AND (CAST($8 AS BIGINT) IS NULL OR seq < $8) \
                 AND (CAST($10 AS TEXT) IS NULL OR actor_tenant = $10) \
                 ORDER BY seq DESC LIMIT $9"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(&f.actor)
                    .bind(&f.tool)
                    .bind(&f.server)
                    .bind(&f.decision)
                    .bind(&f.operation)
                    .bind(f.since_us)
                    .bind(f.until_us)
                    .bind(f.before_seq)
                    .bind(f.limit)
                    .bind(&f.tenant)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db_error("audit"))?;
                rows.iter()
                    .map(|r| record(r))
                    .collect::<std::result::Result<_, _>>()
                    .map_err(db_error("audit"))
            }

            async fn audit_chain_after(&self, seq: i64, limit: i64) -> Result<Vec<AuditRecord>> {
                let sql =
                    format!("SELECT {COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2");
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(seq)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db_error("audit"))?;
                rows.iter()
                    .map(|r| record(r))
                    .collect::<std::result::Result<_, _>>()
                    .map_err(db_error("audit"))
            }

            async fn audit_anchor(&self) -> Result<Option<(i64, String)>> {
                let row = sqlx::query(
                    "SELECT seq, hash FROM audit_checkpoints ORDER BY seq DESC LIMIT 1",
                )
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error("audit"))?;
                row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .transpose()
                    .map_err(db_error("audit"))
            }
        }
    };
}

audit_reads!(super::PgStore);
audit_reads!(super::SqliteStore);

/// The end of the chain inside transaction `tx`: the last row, else the last checkpoint, else
/// the genesis.
macro_rules! tail {
    ($tx:expr) => {{
        let last = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *$tx)
            .await
            .map_err(db_error("audit"))?;
        let last = match last {
            Some(row) => Some(row),
            None => {
                sqlx::query("SELECT seq, hash FROM audit_checkpoints ORDER BY seq DESC LIMIT 1")
                    .fetch_optional(&mut *$tx)
                    .await
                    .map_err(db_error("audit"))?
            }
        };
        match last {
            Some(row) => (
                row.try_get::<i64, _>(0).map_err(db_error("audit"))?,
                row.try_get::<String, _>(1).map_err(db_error("audit"))?,
            ),
            None => (0, GENESIS.to_owned()),
        }
    }};
}

/// Pruning, the same SQL on both backends, inside transaction `tx`.
macro_rules! prune_in {
    ($tx:expr, $before:expr, $now:expr) => {{
        // The prefix ends before the first row that is still young enough (or at the end).
        let keep_from: Option<i64> =
            sqlx::query_scalar("SELECT MIN(seq) FROM audit_log WHERE at_us >= $1")
                .bind($before)
                .fetch_one(&mut *$tx)
                .await
                .map_err(db_error("audit"))?;
        let last: Option<(i64, String)> = match keep_from {
            Some(first) => sqlx::query_as(
                "SELECT seq, hash FROM audit_log WHERE seq < $1 ORDER BY seq DESC LIMIT 1",
            )
            .bind(first)
            .fetch_optional(&mut *$tx)
            .await
            .map_err(db_error("audit"))?,
            None => sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut *$tx)
                .await
                .map_err(db_error("audit"))?,
        };
        let Some((seq, hash)) = last else {
            return Ok(0);
        };
        sqlx::query("INSERT INTO audit_checkpoints (seq, hash, pruned_at_us) VALUES ($1, $2, $3)")
            .bind(seq)
            .bind(&hash)
            .bind($now)
            .execute(&mut *$tx)
            .await
            .map_err(db_error("audit"))?;
        let removed = sqlx::query("DELETE FROM audit_log WHERE seq <= $1")
            .bind(seq)
            .execute(&mut *$tx)
            .await
            .map_err(db_error("audit"))?
            .rows_affected();
        removed
    }};
}

/// Key of the advisory lock that serialises appends to the chain in PostgreSQL.
const CHAIN_LOCK: i64 = 0x6d72_6567_6175_6474;

#[async_trait]
impl AuditStore for super::PgStore {
    async fn append(&self, events: &[AuditEvent], skip_stored: bool) -> Result<u64> {
        if events.is_empty() {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await.map_err(db_error("audit"))?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(CHAIN_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db_error("audit"))?;
        let stored: Vec<String> = if skip_stored {
            let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
            sqlx::query_scalar("SELECT id FROM audit_log WHERE id = ANY($1)")
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error("audit"))?
        } else {
            Vec::new()
        };
        let stored: std::collections::HashSet<&str> = stored.iter().map(String::as_str).collect();
        let fresh: Vec<&AuditEvent> = events
            .iter()
            .filter(|e| !stored.contains(e.id.as_str()))
            .collect();
        if fresh.is_empty() {
            return Ok(0);
        }
        let (seq, hash) = tail!(tx);
        let rows = chain(fresh, seq, hash);
        macro_rules! column {
            ($f:expr) => {
                rows.iter().map($f).collect::<Vec<_>>()
            };
        }
        sqlx::query(
            "INSERT INTO audit_log (seq, prev_hash, hash, id, at_us, request_id, actor_subject, \
             actor_email, actor_tenant, actor_client_id, operation, tool, server, arguments, \
             decision, outcome, error, duration_us) \
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[], \
             $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], \
             $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::bigint[])",
        )
        .bind(column!(|r| r.seq))
        .bind(column!(|r| r.prev_hash.as_str()))
        .bind(column!(|r| r.hash.as_str()))
        .bind(column!(|r| r.event.id.as_str()))
        .bind(column!(|r| r.event.at_us))
        .bind(column!(|r| r.event.request_id.as_str()))
        .bind(column!(|r| r.event.actor_subject.as_str()))
        .bind(column!(|r| r.event.actor_email.as_deref()))
        .bind(column!(|r| r.event.actor_tenant.as_deref()))
        .bind(column!(|r| r.event.actor_client_id.as_deref()))
        .bind(column!(|r| r.event.operation.as_str()))
        .bind(column!(|r| r.event.tool.as_deref()))
        .bind(column!(|r| r.event.server.as_deref()))
        .bind(column!(|r| r.event.arguments.as_deref()))
        .bind(column!(|r| r.event.decision.as_str()))
        .bind(column!(|r| r.event.outcome.as_str()))
        .bind(column!(|r| r.event.error.as_deref()))
        .bind(column!(|r| r.event.duration_us))
        .execute(&mut *tx)
        .await
        .map_err(db_error("audit"))?;
        tx.commit().await.map_err(db_error("audit"))?;
        Ok(rows.len() as u64)
    }

    async fn list(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        self.audit_list(filter).await
    }

    async fn chain_after(&self, seq: i64, limit: i64) -> Result<Vec<AuditRecord>> {
        self.audit_chain_after(seq, limit).await
    }

    async fn anchor(&self) -> Result<Option<(i64, String)>> {
        self.audit_anchor().await
    }

    async fn prune(&self, before_us: i64, now_us: i64) -> Result<u64> {
        let mut tx = self.pool.begin().await.map_err(db_error("audit"))?;
        // A retention sweep over a large backlog may outlast MREG_DATABASE_TIMEOUT.
        sqlx::query("SET LOCAL statement_timeout = 0")
            .execute(&mut *tx)
            .await
            .map_err(db_error("audit"))?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(CHAIN_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db_error("audit"))?;
        let removed = prune_in!(tx, before_us, now_us);
        tx.commit().await.map_err(db_error("audit"))?;
        Ok(removed)
    }
}

#[async_trait]
impl AuditStore for super::SqliteStore {
    async fn append(&self, events: &[AuditEvent], skip_stored: bool) -> Result<u64> {
        if events.is_empty() {
            return Ok(0);
        }
        // BEGIN IMMEDIATE: take the write lock first, so that reading the tail and appending
        // are one step.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_error("audit"))?;
        let mut fresh = Vec::with_capacity(events.len());
        for event in events {
            let stored = skip_stored
                && sqlx::query("SELECT 1 FROM audit_log WHERE id = $1")
                    .bind(&event.id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_error("audit"))?
                    .is_some();
            if !stored {
                fresh.push(event);
            }
        }
        if fresh.is_empty() {
            return Ok(0);
        }
        let (seq, hash) = tail!(tx);
        let rows = chain(fresh, seq, hash);
        for r in &rows {
            let e = &r.event;
            sqlx::query(
                "INSERT INTO audit_log (seq, prev_hash, hash, id, at_us, request_id, \
                 actor_subject, actor_email, actor_tenant, actor_client_id, operation, tool, \
                 server, arguments, decision, outcome, error, duration_us) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
                 $17, $18)",
            )
            .bind(r.seq)
            .bind(&r.prev_hash)
            .bind(&r.hash)
            .bind(&e.id)
            .bind(e.at_us)
            .bind(&e.request_id)
            .bind(&e.actor_subject)
            .bind(&e.actor_email)
            .bind(&e.actor_tenant)
            .bind(&e.actor_client_id)
            .bind(&e.operation)
            .bind(&e.tool)
            .bind(&e.server)
            .bind(&e.arguments)
            .bind(&e.decision)
            .bind(&e.outcome)
            .bind(&e.error)
            .bind(e.duration_us)
            .execute(&mut *tx)
            .await
            .map_err(db_error("audit"))?;
        }
        tx.commit().await.map_err(db_error("audit"))?;
        Ok(rows.len() as u64)
    }

    async fn list(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        self.audit_list(filter).await
    }

    async fn chain_after(&self, seq: i64, limit: i64) -> Result<Vec<AuditRecord>> {
        self.audit_chain_after(seq, limit).await
    }

    async fn anchor(&self) -> Result<Option<(i64, String)>> {
        self.audit_anchor().await
    }

    async fn prune(&self, before_us: i64, now_us: i64) -> Result<u64> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_error("audit"))?;
        let removed = prune_in!(tx, before_us, now_us);
        tx.commit().await.map_err(db_error("audit"))?;
        Ok(removed)
    }
}

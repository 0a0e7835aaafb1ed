//! The audit log in PostgreSQL: a batch is inserted with one `UNNEST`; an instance that wrote
//! the chain's tail moments ago extends it in that one statement (the primary key refuses the
//! position if another replica took it), otherwise appends take a transaction-scoped advisory
//! lock and read the tail, so that every replica extends one chain.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use domain::audit::{AuditEvent, AuditRecord, GENESIS, chain};
use domain::{AuditFilter, AuditStore, Result};
use sqlx::Row;

use super::PgStore;
use crate::store::audit::{COLUMNS, audit_store, prune_in, record, tail};
use crate::store::db_error;

/// Key of the advisory lock that serialises appends to the chain in PostgreSQL.
const CHAIN_LOCK: i64 = 0x6d72_6567_6175_6474;

audit_store!(PgStore);

/// The end of the chain as this instance last wrote it, and when.
#[derive(Debug)]
pub(in crate::store) struct Tail {
    seq: i64,
    hash: String,
    at: Instant,
}

/// How long a remembered tail is trusted for an append without the lock. Appends by another
/// replica since then are caught by the primary key (a row already holds the next position);
/// a retention sweep could remove them, but it never removes rows younger than a day.
const TAIL_TRUST: Duration = Duration::from_secs(10);

impl PgStore {
    /// Appends `events` to the chain (see [`AuditStore::append`]). While this instance's last
    /// append is recent, the next extends it in one statement (one round trip, no lock); when
    /// another replica took that position meanwhile, or nothing recent is remembered, under the
    /// advisory lock after reading the tail.
    async fn append_events(&self, events: &[AuditEvent], skip_stored: bool) -> Result<u64> {
        if events.is_empty() {
            return Ok(0);
        }
        if !skip_stored && let Some((seq, hash)) = self.trusted_tail() {
            let rows = chain(events, seq, hash);
            match insert(&self.pool, &rows).await {
                Ok(()) => {
                    self.remember(&rows);
                    return Ok(rows.len() as u64);
                }
                // Another replica appended since: read the tail under the lock.
                Err(sqlx::Error::Database(db))
                    if db.is_unique_violation() && db.constraint() == Some("audit_log_pkey") =>
                {
                    self.forget_tail();
                }
                Err(e) => {
                    self.forget_tail();
                    return Err(db_error("audit")(e));
                }
            }
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
        insert(&mut *tx, &rows).await.map_err(db_error("audit"))?;
        tx.commit().await.map_err(db_error("audit"))?;
        self.remember(&rows);
        Ok(rows.len() as u64)
    }

    /// The remembered tail, while it may be trusted.
    fn trusted_tail(&self) -> Option<(i64, String)> {
        let tail = self.audit_tail.lock().ok()?;
        tail.as_ref()
            .filter(|t| t.at.elapsed() < TAIL_TRUST)
            .map(|t| (t.seq, t.hash.clone()))
    }

    fn remember(&self, rows: &[AuditRecord]) {
        if let (Some(last), Ok(mut tail)) = (rows.last(), self.audit_tail.lock()) {
            *tail = Some(Tail {
                seq: last.seq,
                hash: last.hash.clone(),
                at: Instant::now(),
            });
        }
    }

    fn forget_tail(&self) {
        if let Ok(mut tail) = self.audit_tail.lock() {
            *tail = None;
        }
    }

    /// Removes a prefix of the chain (see [`AuditStore::prune`]).
    async fn prune_chain(&self, before_us: i64, now_us: i64) -> Result<u64> {
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
        self.forget_tail();
        Ok(removed)
    }
}

/// Inserts chained `rows` with one statement.
async fn insert<'e>(
    db: impl sqlx::PgExecutor<'e>,
    rows: &[AuditRecord],
) -> std::result::Result<(), sqlx::Error> {
    macro_rules! column {
        ($f:expr) => {
            rows.iter().map($f).collect::<Vec<_>>()
        };
    }
    sqlx::query(
        "INSERT INTO audit_log (seq, prev_hash, hash, id, at_us, request_id, actor_subject, \
         actor_email, actor_tenant, actor_client_id, operation, tool, server, arguments, \
         decision, outcome, error, duration_us, server_tenant) \
         SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[], \
         $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], \
         $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::bigint[], \
         $19::text[])",
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
    .bind(column!(|r| r.event.server_tenant.as_deref()))
    .execute(db)
    .await
    .map(|_| ())
}

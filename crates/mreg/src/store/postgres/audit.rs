//! The audit log in PostgreSQL: appends take a transaction-scoped advisory lock, so that every
//! replica extends one chain, and insert a batch with one `UNNEST`.

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

impl PgStore {
    /// Appends `events` to the chain (see [`AuditStore::append`]).
    async fn append_events(&self, events: &[AuditEvent], skip_stored: bool) -> Result<u64> {
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
        Ok(removed)
    }
}

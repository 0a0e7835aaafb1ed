//! The audit log in SQLite: the single writer serialises appends (`BEGIN IMMEDIATE` takes the
//! write lock before the chain's tail is read).

use async_trait::async_trait;
use domain::audit::{AuditEvent, AuditRecord, GENESIS, chain};
use domain::{AuditFilter, AuditStore, Result};
use sqlx::Row;

use super::SqliteStore;
use crate::store::audit::{COLUMNS, audit_store, prune_in, record, tail};
use crate::store::db_error;

audit_store!(SqliteStore);

impl SqliteStore {
    /// Appends `events` to the chain (see [`AuditStore::append`]).
    async fn append_events(&self, events: &[AuditEvent], skip_stored: bool) -> Result<u64> {
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
                 server, arguments, decision, outcome, error, duration_us, server_tenant) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
                 $17, $18, $19)",
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
            .bind(&e.server_tenant)
            .execute(&mut *tx)
            .await
            .map_err(db_error("audit"))?;
        }
        tx.commit().await.map_err(db_error("audit"))?;
        Ok(rows.len() as u64)
    }

    /// Removes a prefix of the chain (see [`AuditStore::prune`]).
    async fn prune_chain(&self, before_us: i64, now_us: i64) -> Result<u64> {
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

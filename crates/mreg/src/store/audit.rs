//! The audit log's SQL that both backends run (`$n` placeholders, `CAST` for typed NULL
//! checks): the reads, the chain's tail and pruning. Appending differs (`UNNEST`, after the
//! tail this instance remembers or under a transaction-scoped advisory lock, in PostgreSQL;
//! `BEGIN IMMEDIATE` and a row at a time in SQLite)
//! and lives with each backend. Appending is serialised so that every replica extends one chain;
//! an event already stored (same id, e.g. replayed from the spool after a write whose answer was
//! lost) is skipped, so every event is stored exactly once. Pruning removes a prefix and records
//! a checkpoint (the last removed row's position and hash) from which the rest still verifies.

use sqlx::Row;

use domain::audit::{AuditEvent, AuditRecord};

pub(super) const COLUMNS: &str = "seq, prev_hash, hash, id, at_us, request_id, actor_subject, actor_email, \
     actor_tenant, actor_client_id, operation, tool, server, arguments, decision, outcome, \
     error, duration_us, server_tenant";

pub(super) fn record<R: Row>(row: &R) -> std::result::Result<AuditRecord, sqlx::Error>
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
            server_tenant: row.try_get("server_tenant")?,
        },
    })
}

/// Implements `AuditStore` for `$store`: the reads here (the same SQL on both backends), appending
/// and pruning by the backend's own `append_events` and `prune_chain`.
macro_rules! audit_store {
    ($store:ty) => {
        #[async_trait]
        impl AuditStore for $store {
            async fn append(&self, events: &[AuditEvent], skip_stored: bool) -> Result<u64> {
                self.append_events(events, skip_stored).await
            }

            async fn prune(&self, before_us: i64, now_us: i64) -> Result<u64> {
                self.prune_chain(before_us, now_us).await
            }

            async fn list(&self, f: &AuditFilter) -> Result<Vec<AuditRecord>> {
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

            async fn chain_after(&self, seq: i64, limit: i64) -> Result<Vec<AuditRecord>> {
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

            async fn anchor(&self) -> Result<Option<(i64, String)>> {
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

pub(super) use audit_store;

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
pub(super) use tail;

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
pub(super) use prune_in;

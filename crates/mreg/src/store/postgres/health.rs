//! Health state, probe history and the tool catalog in PostgreSQL. Replicas claim due servers
//! with `FOR UPDATE SKIP LOCKED`, so two replicas never lease the same server at once.

use async_trait::async_trait;
use domain::{
    CatalogStore, Health, HealthCheck, HealthStatus, HealthStore, Outcome, Result, ServerName,
    ToolHit, ToolInfo, ToolQuery,
};
use sqlx::Postgres;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{PgStore, col, corrupt};
use crate::store::select;
use crate::store::{db_error, millis};

fn health_from_row(row: &PgRow) -> Result<Health> {
    health_from_columns(row, "")
}

/// The health a page of servers joined (columns `h_…`); `None` when there is none.
pub(super) fn prefixed_health_from_row(row: &PgRow) -> Result<Option<Health>> {
    let id: Option<Uuid> = col(row, "h_server_id")?;
    id.map(|_| health_from_columns(row, "h_")).transpose()
}

/// A health row whose columns are named `{prefix}COLUMN`.
fn health_from_columns(row: &PgRow, prefix: &str) -> Result<Health> {
    let name = |c: &str| format!("{prefix}{c}");
    let status: Option<String> = col(row, &name("status"))?;
    let last_check = match (
        col::<Option<OffsetDateTime>>(row, &name("last_checked_at"))?,
        col::<Option<String>>(row, &name("last_outcome"))?,
    ) {
        (Some(at), Some(outcome)) => Some(HealthCheck {
            checked_at: at,
            outcome: Outcome::parse(&outcome)?,
            detail: col(row, &name("last_detail"))?,
            latency_ms: millis(col(row, &name("last_latency_ms"))?),
            protocol_version: col(row, &name("last_protocol_version"))?,
            checked_by: col::<Option<String>>(row, &name("last_checked_by"))?.unwrap_or_default(),
        }),
        _ => None,
    };
    let next: OffsetDateTime = col::<Option<OffsetDateTime>>(row, &name("next_check_at_finite"))?
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let server_id: Option<Uuid> = col(row, &name("server_id"))?;
    Ok(Health {
        server_id: server_id.unwrap_or_default(),
        status: HealthStatus::parse_field(status.as_deref().unwrap_or_default(), "status")
            .map_err(|e| corrupt("status", e))?,
        consecutive_failures: u32::try_from(
            col::<Option<i32>>(row, &name("consecutive_failures"))?.unwrap_or(0),
        )
        .unwrap_or(0),
        last_check,
        last_ok_at: col(row, &name("last_ok_at"))?,
        next_check_at: next,
        status_since: col(row, &name("status_since"))?,
    })
}

#[async_trait]
impl HealthStore for PgStore {
    async fn claim_due(
        &self,
        owner: &str,
        now: OffsetDateTime,
        lease: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<(Uuid, ServerName)>> {
        let rows = sqlx::query(
            "UPDATE server_health SET lease_owner = $1, lease_until = $2 \
             WHERE server_id IN ( \
                 SELECT h.server_id FROM server_health h JOIN servers s ON s.id = h.server_id \
                 WHERE s.status <> 'disabled' AND h.next_check_at <= $3 \
                   AND (h.lease_until IS NULL OR h.lease_until < $3) \
                 ORDER BY h.next_check_at LIMIT $4 \
                 FOR UPDATE OF h SKIP LOCKED) \
             RETURNING server_id, (SELECT name FROM servers WHERE id = server_health.server_id) AS name",
        )
        .bind(owner.to_owned())
        .bind(now + lease)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("server health"))?;
        rows.iter()
            .map(|row| {
                let name: String = col(row, "name")?;
                Ok((
                    col(row, "server_id")?,
                    ServerName::parse(&name).map_err(|e| corrupt("name", e))?,
                ))
            })
            .collect()
    }

    async fn health(&self, server_id: Uuid) -> Result<Option<Health>> {
        let row = sqlx::query(
            "SELECT *, CASE WHEN isfinite(next_check_at) THEN next_check_at END AS next_check_at_finite \
             FROM server_health WHERE server_id = $1",
        )
        .bind(server_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error("server health"))?;
        row.as_ref().map(health_from_row).transpose()
    }

    async fn record(&self, health: &Health) -> Result<bool> {
        let Some(check) = &health.last_check else {
            return Ok(true);
        };
        let latency = i64::try_from(check.latency_ms).unwrap_or(i64::MAX);
        let mut tx = self.pool.begin().await.map_err(db_error("server health"))?;
        let updated = sqlx::query(
            "UPDATE server_health SET status = $1, consecutive_failures = $2, last_checked_at = $3, \
             last_outcome = $4, last_detail = $5, last_latency_ms = $6, last_protocol_version = $7, \
             last_checked_by = $8, last_ok_at = $9, next_check_at = $10, \
             status_since = CASE WHEN status = $1 THEN COALESCE(status_since, $11) ELSE $3 END, \
             lease_owner = NULL, lease_until = NULL WHERE server_id = $12",
        )
        .bind(health.status.as_str())
        .bind(i32::try_from(health.consecutive_failures).unwrap_or(i32::MAX))
        .bind(check.checked_at)
        .bind(check.outcome.as_str())
        .bind(check.detail.clone())
        .bind(latency)
        .bind(check.protocol_version.clone())
        .bind(check.checked_by.clone())
        .bind(health.last_ok_at)
        .bind(health.next_check_at)
        .bind(health.status_since)
        .bind(health.server_id)
        .execute(&mut *tx)
        .await
        .map_err(db_error("server health"))?;
        if updated.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO health_checks (server_id, checked_at, outcome, detail, latency_ms, \
             protocol_version, checked_by) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(health.server_id)
        .bind(check.checked_at)
        .bind(check.outcome.as_str())
        .bind(check.detail.clone())
        .bind(latency)
        .bind(check.protocol_version.clone())
        .bind(check.checked_by.clone())
        .execute(&mut *tx)
        .await
        .map_err(db_error("health check"))?;
        tx.commit().await.map_err(db_error("server health"))?;
        Ok(true)
    }

    async fn history(
        &self,
        server_id: Uuid,
        since: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<HealthCheck>> {
        let rows = sqlx::query(
            "SELECT checked_at, outcome, detail, latency_ms, protocol_version, checked_by \
             FROM health_checks WHERE server_id = $1 AND checked_at >= $2 \
             ORDER BY checked_at DESC, id DESC LIMIT $3",
        )
        .bind(server_id)
        .bind(since)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("health history"))?;
        rows.iter()
            .map(|row| {
                let outcome: String = col(row, "outcome")?;
                Ok(HealthCheck {
                    checked_at: col(row, "checked_at")?,
                    outcome: Outcome::parse(&outcome)?,
                    detail: col(row, "detail")?,
                    latency_ms: millis(col(row, "latency_ms")?),
                    protocol_version: col(row, "protocol_version")?,
                    checked_by: col(row, "checked_by")?,
                })
            })
            .collect()
    }

    async fn changed_since(&self, since: OffsetDateTime) -> Result<Vec<(Uuid, HealthStatus)>> {
        let rows =
            sqlx::query("SELECT server_id, status FROM server_health WHERE last_checked_at >= $1")
                .bind(since)
                .fetch_all(&self.pool)
                .await
                .map_err(db_error("server health"))?;
        rows.iter()
            .map(|row| {
                let status: String = col(row, "status")?;
                Ok((
                    col(row, "server_id")?,
                    HealthStatus::parse_field(&status, "status")
                        .map_err(|e| corrupt("status", e))?,
                ))
            })
            .collect()
    }

    async fn prune(&self, before: OffsetDateTime) -> Result<u64> {
        let done = sqlx::query("DELETE FROM health_checks WHERE checked_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await
            .map_err(db_error("health history"))?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl CatalogStore for PgStore {
    async fn replace_tools(&self, server_id: Uuid, tools: &[ToolInfo]) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(db_error("tool catalog"))?;
        sqlx::query("DELETE FROM server_tools WHERE server_id = $1")
            .bind(server_id)
            .execute(&mut *tx)
            .await
            .map_err(db_error("tool catalog"))?;
        for tool in tools {
            sqlx::query(
                "INSERT INTO server_tools (server_id, name, title, description, input_schema, search_text) \
                 SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM servers WHERE id = $1) \
                 ON CONFLICT (server_id, name) DO NOTHING",
            )
            .bind(server_id)
            .bind(tool.name.clone())
            .bind(tool.title.clone())
            .bind(tool.description.clone())
            .bind(Json(tool.input_schema.clone()))
            .bind(tool.search_text())
            .execute(&mut *tx)
            .await
            .map_err(db_error("tool catalog"))?;
        }
        tx.commit().await.map_err(db_error("tool catalog"))
    }

    async fn search_tools(&self, query: &ToolQuery) -> Result<Vec<ToolHit>> {
        let rows = select::tool_search::<Postgres>(query)
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("tool catalog"))?;
        rows.iter()
            .map(|row| {
                let server: String = col(row, "server")?;
                let health: String = col(row, "health")?;
                let Json(input_schema): Json<serde_json::Value> = col(row, "input_schema")?;
                Ok(ToolHit {
                    server: ServerName::parse(&server).map_err(|e| corrupt("name", e))?,
                    tenant: col(row, "tenant")?,
                    health: HealthStatus::parse_field(&health, "health")
                        .map_err(|e| corrupt("status", e))?,
                    tool: ToolInfo {
                        name: col(row, "name")?,
                        title: col(row, "title")?,
                        description: col(row, "description")?,
                        input_schema,
                    },
                })
            })
            .collect()
    }
}

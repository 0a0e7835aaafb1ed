//! Health state, probe history and the tool catalog in SQLite. SQLite has one writer at a time,
//! so claiming due servers with a single `UPDATE … RETURNING` is atomic across connections.

use async_trait::async_trait;
use domain::{
    CatalogStore, Health, HealthCheck, HealthStatus, HealthStore, Outcome, Result, ServerName,
    ToolHit, ToolInfo, ToolQuery,
};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{SqliteStore, corrupt, from_micros, micros};
use crate::store::select;
use crate::store::{db_error, millis};

fn uuid(row: &SqliteRow, column: &str) -> Result<Uuid> {
    let text: String = row.try_get(column).map_err(|e| corrupt(column, e))?;
    Uuid::parse_str(&text).map_err(|e| corrupt(column, e))
}

fn health_from_row(row: &SqliteRow) -> Result<Health> {
    health_from_columns(row, "")
}

/// The health a page of servers joined (columns `h_…`); `None` when there is none.
pub(super) fn prefixed_health_from_row(row: &SqliteRow) -> Result<Option<Health>> {
    let id: Option<String> = row
        .try_get("h_server_id")
        .map_err(|e| corrupt("h_server_id", e))?;
    id.map(|_| health_from_columns(row, "h_")).transpose()
}

/// A health row whose columns are named `{prefix}COLUMN`.
fn health_from_columns(row: &SqliteRow, prefix: &str) -> Result<Health> {
    let name = |c: &str| format!("{prefix}{c}");
    let get_opt = |c: &str| {
        row.try_get::<Option<String>, _>(name(c).as_str())
            .map_err(|e| corrupt(c, e))
    };
    let get_int = |c: &str| {
        row.try_get::<Option<i64>, _>(name(c).as_str())
            .map_err(|e| corrupt(c, e))
    };
    let status = get_opt("status")?.unwrap_or_default();
    let last_check = match (get_int("last_checked_at")?, get_opt("last_outcome")?) {
        (Some(at), Some(outcome)) => Some(HealthCheck {
            checked_at: from_micros(at)?,
            outcome: Outcome::parse(&outcome)?,
            detail: get_opt("last_detail")?,
            latency_ms: millis(get_int("last_latency_ms")?),
            protocol_version: get_opt("last_protocol_version")?,
            checked_by: get_opt("last_checked_by")?.unwrap_or_default(),
        }),
        _ => None,
    };
    let server_id = get_opt("server_id")?.unwrap_or_default();
    Ok(Health {
        server_id: Uuid::parse_str(&server_id).map_err(|e| corrupt("server_id", e))?,
        status: HealthStatus::parse_field(&status, "status").map_err(|e| corrupt("status", e))?,
        consecutive_failures: u32::try_from(get_int("consecutive_failures")?.unwrap_or(0))
            .unwrap_or(u32::MAX),
        last_check,
        last_ok_at: get_int("last_ok_at")?.map(from_micros).transpose()?,
        next_check_at: from_micros(get_int("next_check_at")?.unwrap_or(0))?,
        status_since: get_int("status_since")?.map(from_micros).transpose()?,
    })
}

#[async_trait]
impl HealthStore for SqliteStore {
    async fn claim_due(
        &self,
        owner: &str,
        now: OffsetDateTime,
        lease: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<(Uuid, ServerName)>> {
        let rows = sqlx::query(
            "UPDATE server_health SET lease_owner = ?1, lease_until = ?2 \
             WHERE server_id IN ( \
                 SELECT h.server_id FROM server_health h JOIN servers s ON s.id = h.server_id \
                 WHERE s.status != 'disabled' AND h.next_check_at <= ?3 \
                   AND (h.lease_until IS NULL OR h.lease_until < ?3) \
                 ORDER BY h.next_check_at LIMIT ?4) \
             RETURNING server_id, (SELECT name FROM servers WHERE id = server_id) AS name",
        )
        .bind(owner.to_owned())
        .bind(micros(now + lease))
        .bind(micros(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("server health"))?;
        rows.iter()
            .map(|row| {
                let name: String = row.try_get("name").map_err(|e| corrupt("name", e))?;
                Ok((
                    uuid(row, "server_id")?,
                    ServerName::parse(&name).map_err(|e| corrupt("name", e))?,
                ))
            })
            .collect()
    }

    async fn health(&self, server_id: Uuid) -> Result<Option<Health>> {
        let row = sqlx::query("SELECT * FROM server_health WHERE server_id = ?")
            .bind(server_id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("server health"))?;
        row.as_ref().map(health_from_row).transpose()
    }

    async fn record(&self, health: &Health) -> Result<bool> {
        let Some(check) = &health.last_check else {
            return Ok(true);
        };
        let mut tx = self.pool.begin().await.map_err(db_error("server health"))?;
        let latency = i64::try_from(check.latency_ms).unwrap_or(i64::MAX);
        let updated = sqlx::query(
            "UPDATE server_health SET status = ?, consecutive_failures = ?, last_checked_at = ?, \
             last_outcome = ?, last_detail = ?, last_latency_ms = ?, last_protocol_version = ?, \
             last_checked_by = ?, last_ok_at = ?, next_check_at = ?, \
             status_since = CASE WHEN status = ? THEN COALESCE(status_since, ?) ELSE ? END, \
             lease_owner = NULL, lease_until = NULL WHERE server_id = ?",
        )
        .bind(health.status.as_str())
        .bind(i64::from(health.consecutive_failures))
        .bind(micros(check.checked_at))
        .bind(check.outcome.as_str())
        .bind(check.detail.clone())
        .bind(latency)
        .bind(check.protocol_version.clone())
        .bind(check.checked_by.clone())
        .bind(health.last_ok_at.map(micros))
        .bind(micros(health.next_check_at))
        .bind(health.status.as_str())
        .bind(health.status_since.map(micros))
        .bind(micros(check.checked_at))
        .bind(health.server_id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(db_error("server health"))?;
        if updated.rows_affected() == 0 {
            // The server was deleted while it was being probed.
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO health_checks (server_id, checked_at, outcome, detail, latency_ms, \
             protocol_version, checked_by) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(health.server_id.to_string())
        .bind(micros(check.checked_at))
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
             FROM health_checks WHERE server_id = ? AND checked_at >= ? \
             ORDER BY checked_at DESC, id DESC LIMIT ?",
        )
        .bind(server_id.to_string())
        .bind(micros(since))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("health history"))?;
        rows.iter()
            .map(|row| {
                let outcome: String = row.try_get("outcome").map_err(|e| corrupt("outcome", e))?;
                Ok(HealthCheck {
                    checked_at: from_micros(
                        row.try_get("checked_at")
                            .map_err(|e| corrupt("checked_at", e))?,
                    )?,
                    outcome: Outcome::parse(&outcome)?,
                    detail: row.try_get("detail").map_err(|e| corrupt("detail", e))?,
                    latency_ms: millis(
                        row.try_get("latency_ms")
                            .map_err(|e| corrupt("latency_ms", e))?,
                    ),
                    protocol_version: row
                        .try_get("protocol_version")
                        .map_err(|e| corrupt("protocol_version", e))?,
                    checked_by: row
                        .try_get("checked_by")
                        .map_err(|e| corrupt("checked_by", e))?,
                })
            })
            .collect()
    }

    async fn changed_since(&self, since: OffsetDateTime) -> Result<Vec<(Uuid, HealthStatus)>> {
        let rows =
            sqlx::query("SELECT server_id, status FROM server_health WHERE last_checked_at >= ?")
                .bind(micros(since))
                .fetch_all(&self.pool)
                .await
                .map_err(db_error("server health"))?;
        rows.iter()
            .map(|row| {
                let status: String = row.try_get("status").map_err(|e| corrupt("status", e))?;
                Ok((
                    uuid(row, "server_id")?,
                    HealthStatus::parse_field(&status, "status")
                        .map_err(|e| corrupt("status", e))?,
                ))
            })
            .collect()
    }

    async fn prune(&self, before: OffsetDateTime) -> Result<u64> {
        let done = sqlx::query("DELETE FROM health_checks WHERE checked_at < ?")
            .bind(micros(before))
            .execute(&self.pool)
            .await
            .map_err(db_error("health history"))?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl CatalogStore for SqliteStore {
    async fn replace_tools(&self, server_id: Uuid, tools: &[ToolInfo]) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(db_error("tool catalog"))?;
        sqlx::query("DELETE FROM server_tools WHERE server_id = ?")
            .bind(server_id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db_error("tool catalog"))?;
        for tool in tools {
            sqlx::query(
                "INSERT INTO server_tools (server_id, name, title, description, input_schema, search_text) \
                 SELECT ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM servers WHERE id = ?) \
                 ON CONFLICT (server_id, name) DO NOTHING",
            )
            .bind(server_id.to_string())
            .bind(tool.name.clone())
            .bind(tool.title.clone())
            .bind(tool.description.clone())
            .bind(tool.input_schema.to_string())
            .bind(tool.search_text())
            .bind(server_id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db_error("tool catalog"))?;
        }
        tx.commit().await.map_err(db_error("tool catalog"))
    }

    async fn search_tools(&self, query: &ToolQuery) -> Result<Vec<ToolHit>> {
        let rows = select::tool_search::<Sqlite>(query)
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("tool catalog"))?;
        rows.iter()
            .map(|row| {
                let server: String = row.try_get("server").map_err(|e| corrupt("name", e))?;
                let health: String = row.try_get("health").map_err(|e| corrupt("status", e))?;
                let schema: String = row
                    .try_get("input_schema")
                    .map_err(|e| corrupt("input_schema", e))?;
                Ok(ToolHit {
                    server: ServerName::parse(&server).map_err(|e| corrupt("name", e))?,
                    tenant: row.try_get("tenant").map_err(|e| corrupt("tenant", e))?,
                    health: HealthStatus::parse_field(&health, "health")
                        .map_err(|e| corrupt("status", e))?,
                    tool: ToolInfo {
                        name: row.try_get("name").map_err(|e| corrupt("name", e))?,
                        title: row.try_get("title").map_err(|e| corrupt("title", e))?,
                        description: row
                            .try_get("description")
                            .map_err(|e| corrupt("description", e))?,
                        input_schema: serde_json::from_str(&schema)
                            .map_err(|e| corrupt("input_schema", e))?,
                    },
                })
            })
            .collect()
    }
}

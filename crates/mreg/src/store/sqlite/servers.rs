//! Server registrations and shared secrets in SQLite: ids are text, tags and metadata JSON
//! text, times Unix microseconds.

use async_trait::async_trait;
use domain::{
    Credentials, Health, Result, SecretStore, Server, ServerName, ServerQuery, ServerStatus,
    ServerStore, ServerUrl, Transport,
};
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Row, Sqlite};
use uuid::Uuid;

use super::health::prefixed_health_from_row;
use super::{SqliteStore, corrupt, from_micros, json, micros};
use crate::store::db_error;
use crate::store::select::{self, SERVER_COLUMNS};

fn server_from_row(row: &SqliteRow) -> Result<Server> {
    let get = |col: &str| -> Result<String> {
        row.try_get::<String, _>(col).map_err(|e| corrupt(col, e))
    };
    let opt = |col: &str| -> Result<Option<String>> {
        row.try_get::<Option<String>, _>(col)
            .map_err(|e| corrupt(col, e))
    };
    let int =
        |col: &str| -> Result<i64> { row.try_get::<i64, _>(col).map_err(|e| corrupt(col, e)) };
    Ok(Server {
        id: Uuid::parse_str(&get("id")?).map_err(|e| corrupt("id", e))?,
        name: ServerName::parse(&get("name")?).map_err(|e| corrupt("name", e))?,
        url: ServerUrl::parse_field(&get("url")?, "url").map_err(|e| corrupt("url", e))?,
        transport: Transport::parse_field(&get("transport")?, "transport")
            .map_err(|e| corrupt("transport", e))?,
        description: get("description")?,
        tags: serde_json::from_str(&get("tags")?).map_err(|e| corrupt("tags", e))?,
        version: opt("version")?,
        registered_by: get("registered_by")?,
        tenant: opt("tenant")?,
        shared: row
            .try_get::<bool, _>("shared")
            .map_err(|e| corrupt("shared", e))?,
        status: ServerStatus::parse_field(&get("status")?, "status")
            .map_err(|e| corrupt("status", e))?,
        metadata: serde_json::from_str(&get("metadata")?).map_err(|e| corrupt("metadata", e))?,
        created_at: from_micros(int("created_at")?)?,
        updated_at: from_micros(int("updated_at")?)?,
        revision: int("revision")?,
        timeout_secs: row
            .try_get::<Option<i64>, _>("timeout_secs")
            .map_err(|e| corrupt("timeout_secs", e))?
            .map(|t| u32::try_from(t).map_err(|e| corrupt("timeout_secs", e)))
            .transpose()?,
        has_upstream_credentials: row
            .try_get::<bool, _>("has_upstream_credentials")
            .map_err(|e| corrupt("upstream_credentials", e))?,
    })
}

#[async_trait]
impl ServerStore for SqliteStore {
    async fn insert(&self, s: &Server, credentials: Option<&[u8]>) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(db_error("server"))?;
        sqlx::query(
            "INSERT INTO servers (id, name, url, transport, description, tags, version, \
             registered_by, tenant, status, metadata, search_text, created_at, updated_at, \
             revision, timeout_secs, upstream_credentials, shared) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(s.id.to_string())
        .bind(s.name.as_str().to_owned())
        .bind(s.url.as_str().to_owned())
        .bind(s.transport.as_str())
        .bind(s.description.clone())
        .bind(json(&s.tags)?)
        .bind(s.version.clone())
        .bind(s.registered_by.clone())
        .bind(s.tenant.clone())
        .bind(s.status.as_str())
        .bind(json(&s.metadata)?)
        .bind(s.search_text())
        .bind(micros(s.created_at))
        .bind(micros(s.updated_at))
        .bind(s.revision)
        .bind(s.timeout_secs.map(i64::from))
        .bind(credentials.map(<[u8]>::to_vec))
        .bind(s.shared)
        .execute(&mut *tx)
        .await
        .map_err(db_error(&format!("server '{}'", s.name)))?;
        sqlx::query("INSERT INTO server_health (server_id) VALUES (?)")
            .bind(s.id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db_error("server health"))?;
        tx.commit().await.map_err(db_error("server"))?;
        Ok(())
    }

    async fn named(&self, name: &ServerName) -> Result<Vec<Server>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SERVER_COLUMNS} FROM servers WHERE name = ? \
             ORDER BY tenant IS NOT NULL, tenant"
        )))
        .bind(name.as_str().to_owned())
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("server"))?;
        rows.iter().map(server_from_row).collect()
    }

    async fn list_with_health(&self, query: &ServerQuery) -> Result<Vec<(Server, Option<Health>)>> {
        let rows = select::servers_with_health::<Sqlite>(query)
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("servers"))?;
        rows.iter()
            .map(|row| Ok((server_from_row(row)?, prefixed_health_from_row(row)?)))
            .collect()
    }

    async fn update(
        &self,
        s: &Server,
        expected_revision: i64,
        credentials: Credentials<'_>,
    ) -> Result<bool> {
        let (replace, sealed) = match credentials {
            Credentials::Keep => (false, None),
            Credentials::Clear => (true, None),
            Credentials::Set(bytes) => (true, Some(bytes.to_vec())),
        };
        let done = sqlx::query(
            "UPDATE servers SET url = ?, transport = ?, description = ?, tags = ?, version = ?, \
             status = ?, metadata = ?, search_text = ?, updated_at = ?, revision = ?, \
             timeout_secs = ?, \
             upstream_credentials = CASE WHEN ? THEN ? ELSE upstream_credentials END, \
             shared = ? WHERE id = ? AND revision = ?",
        )
        .bind(s.url.as_str().to_owned())
        .bind(s.transport.as_str())
        .bind(s.description.clone())
        .bind(json(&s.tags)?)
        .bind(s.version.clone())
        .bind(s.status.as_str())
        .bind(json(&s.metadata)?)
        .bind(s.search_text())
        .bind(micros(s.updated_at))
        .bind(s.revision)
        .bind(s.timeout_secs.map(i64::from))
        .bind(replace)
        .bind(sealed)
        .bind(s.shared)
        .bind(s.id.to_string())
        .bind(expected_revision)
        .execute(&self.pool)
        .await
        .map_err(db_error("server"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete(&self, id: Uuid) -> Result<bool> {
        let done = sqlx::query("DELETE FROM servers WHERE id = ?")
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(db_error("server"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn credentials(&self, id: Uuid) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT upstream_credentials FROM servers WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("server"))?;
        match row {
            None => Ok(None),
            Some(row) => row
                .try_get::<Option<Vec<u8>>, _>("upstream_credentials")
                .map_err(|e| corrupt("upstream_credentials", e)),
        }
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db_error("database"))?;
        Ok(())
    }
}

#[async_trait]
impl SecretStore for SqliteStore {
    async fn get_or_insert(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>> {
        sqlx::query("INSERT INTO secrets (name, value, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING")
            .bind(name.to_owned())
            .bind(candidate.to_vec())
            .bind(micros(domain::now()))
            .execute(&self.pool)
            .await
            .map_err(db_error("secret"))?;
        sqlx::query_scalar::<_, Vec<u8>>("SELECT value FROM secrets WHERE name = ?")
            .bind(name.to_owned())
            .fetch_one(&self.pool)
            .await
            .map_err(db_error("secret"))
    }
}

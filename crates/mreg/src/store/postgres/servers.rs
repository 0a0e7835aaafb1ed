//! Server registrations and shared secrets in PostgreSQL: ids are `uuid`, tags a `text[]`,
//! metadata `jsonb`, times `timestamptz`.

use async_trait::async_trait;
use domain::{
    Credentials, Health, Result, SecretStore, Server, ServerName, ServerQuery, ServerStatus,
    ServerStore, ServerUrl, Transport,
};
use serde_json::{Map, Value};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Postgres};
use time::OffsetDateTime;
use uuid::Uuid;

use super::health::prefixed_health_from_row;
use super::{PgStore, col, corrupt};
use crate::store::db_error;
use crate::store::select::{self, SERVER_COLUMNS};

fn server_from_row(row: &PgRow) -> Result<Server> {
    let name: String = col(row, "name")?;
    let url: String = col(row, "url")?;
    let transport: String = col(row, "transport")?;
    let status: String = col(row, "status")?;
    let Json(metadata): Json<Map<String, Value>> = col(row, "metadata")?;
    Ok(Server {
        id: col::<Uuid>(row, "id")?,
        name: ServerName::parse(&name).map_err(|e| corrupt("name", e))?,
        url: ServerUrl::parse_field(&url, "url").map_err(|e| corrupt("url", e))?,
        transport: Transport::parse_field(&transport, "transport")
            .map_err(|e| corrupt("transport", e))?,
        description: col(row, "description")?,
        tags: col(row, "tags")?,
        version: col(row, "version")?,
        registered_by: col(row, "registered_by")?,
        tenant: col(row, "tenant")?,
        shared: col(row, "shared")?,
        status: ServerStatus::parse_field(&status, "status").map_err(|e| corrupt("status", e))?,
        metadata,
        created_at: col::<OffsetDateTime>(row, "created_at")?,
        updated_at: col::<OffsetDateTime>(row, "updated_at")?,
        revision: col(row, "revision")?,
        timeout_secs: col::<Option<i32>>(row, "timeout_secs")?
            .map(|t| u32::try_from(t).map_err(|e| corrupt("timeout_secs", e)))
            .transpose()?,
        has_upstream_credentials: col(row, "has_upstream_credentials")?,
    })
}

#[async_trait]
impl ServerStore for PgStore {
    async fn insert(&self, s: &Server, credentials: Option<&[u8]>) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(db_error("server"))?;
        sqlx::query(
            "INSERT INTO servers (id, name, url, transport, description, tags, version, \
             registered_by, tenant, status, metadata, search_text, created_at, updated_at, \
             revision, timeout_secs, upstream_credentials, shared) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
             $18)",
        )
        .bind(s.id)
        .bind(s.name.as_str().to_owned())
        .bind(s.url.as_str().to_owned())
        .bind(s.transport.as_str())
        .bind(s.description.clone())
        .bind(s.tags.clone())
        .bind(s.version.clone())
        .bind(s.registered_by.clone())
        .bind(s.tenant.clone())
        .bind(s.status.as_str())
        .bind(Json(s.metadata.clone()))
        .bind(s.search_text())
        .bind(s.created_at)
        .bind(s.updated_at)
        .bind(s.revision)
        .bind(s.timeout_secs.map(|t| i32::try_from(t).unwrap_or(i32::MAX)))
        .bind(credentials.map(<[u8]>::to_vec))
        .bind(s.shared)
        .execute(&mut *tx)
        .await
        .map_err(db_error(&format!("server '{}'", s.name)))?;
        sqlx::query("INSERT INTO server_health (server_id) VALUES ($1)")
            .bind(s.id)
            .execute(&mut *tx)
            .await
            .map_err(db_error("server health"))?;
        tx.commit().await.map_err(db_error("server"))?;
        Ok(())
    }

    async fn named(&self, name: &ServerName) -> Result<Vec<Server>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SERVER_COLUMNS} FROM servers WHERE name = $1 \
             ORDER BY tenant IS NOT NULL, tenant"
        )))
        .bind(name.as_str().to_owned())
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("server"))?;
        rows.iter().map(server_from_row).collect()
    }

    async fn list_with_health(&self, query: &ServerQuery) -> Result<Vec<(Server, Option<Health>)>> {
        let rows = select::servers_with_health::<Postgres>(query)
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
            "UPDATE servers SET url = $1, transport = $2, description = $3, tags = $4, \
             version = $5, status = $6, metadata = $7, search_text = $8, updated_at = $9, \
             revision = $10, timeout_secs = $11, \
             upstream_credentials = CASE WHEN $12 THEN $13 ELSE upstream_credentials END, \
             shared = $16 WHERE id = $14 AND revision = $15",
        )
        .bind(s.url.as_str().to_owned())
        .bind(s.transport.as_str())
        .bind(s.description.clone())
        .bind(s.tags.clone())
        .bind(s.version.clone())
        .bind(s.status.as_str())
        .bind(Json(s.metadata.clone()))
        .bind(s.search_text())
        .bind(s.updated_at)
        .bind(s.revision)
        .bind(s.timeout_secs.map(|t| i32::try_from(t).unwrap_or(i32::MAX)))
        .bind(replace)
        .bind(sealed)
        .bind(s.id)
        .bind(expected_revision)
        .bind(s.shared)
        .execute(&self.pool)
        .await
        .map_err(db_error("server"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete(&self, id: Uuid) -> Result<bool> {
        let done = sqlx::query("DELETE FROM servers WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db_error("server"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn credentials(&self, id: Uuid) -> Result<Option<Vec<u8>>> {
        sqlx::query_scalar::<_, Option<Vec<u8>>>(
            "SELECT upstream_credentials FROM servers WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map(Option::flatten)
        .map_err(db_error("server"))
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
impl SecretStore for PgStore {
    async fn get_or_insert(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>> {
        sqlx::query(
            "INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name.to_owned())
        .bind(candidate.to_vec())
        .execute(&self.pool)
        .await
        .map_err(db_error("secret"))?;
        sqlx::query_scalar::<_, Vec<u8>>("SELECT value FROM secrets WHERE name = $1")
            .bind(name.to_owned())
            .fetch_one(&self.pool)
            .await
            .map_err(db_error("secret"))
    }
}

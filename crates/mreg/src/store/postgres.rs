//! The production backend: PostgreSQL, shared by every replica. Tags are a `text[]` with a GIN
//! index, metadata `jsonb`, and text search uses a trigram index when `pg_trgm` is available.

use async_trait::async_trait;
use domain::{
    Credentials, Error, Health, Result, SecretStore, Server, ServerName, ServerQuery, ServerSort,
    ServerStatus, ServerStore, ServerUrl, Transport, Visibility,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Postgres, QueryBuilder, Row};
use std::str::FromStr;
use std::time::Duration;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{ACQUIRE_TIMEOUT, Close, db_error, like_pattern, migrator};

pub(super) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "servers",
        include_str!("../../migrations/postgres/0001_servers.sql"),
    ),
    (
        2,
        "upstream",
        include_str!("../../migrations/postgres/0002_upstream.sql"),
    ),
    (
        3,
        "health",
        include_str!("../../migrations/postgres/0003_health.sql"),
    ),
    (
        4,
        "oauth",
        include_str!("../../migrations/postgres/0004_oauth.sql"),
    ),
    (
        5,
        "sharing",
        include_str!("../../migrations/postgres/0005_sharing.sql"),
    ),
    (
        6,
        "audit",
        include_str!("../../migrations/postgres/0006_audit.sql"),
    ),
    (
        7,
        "audit actor index",
        include_str!("../../migrations/postgres/0007_audit_actor_index.sql"),
    ),
    (
        8,
        "health since",
        include_str!("../../migrations/postgres/0008_health_since.sql"),
    ),
];

const COLUMNS: &str = "id, name, url, transport, description, tags, version, registered_by, \
                       tenant, shared, status, metadata, created_at, updated_at, revision, \
                       timeout_secs, upstream_credentials IS NOT NULL AS has_upstream_credentials";

/// Registry storage in PostgreSQL.
#[derive(Clone)]
pub struct PgStore {
    pub(super) pool: PgPool,
}

impl PgStore {
    /// Connects to `url` and migrates the database.
    pub async fn connect(url: &SecretString, max_connections: u32) -> anyhow::Result<Self> {
        Self::open(url, max_connections, None).await
    }

    /// Connects to `url` and migrates the database; with a `timeout`, every statement on the
    /// pool's connections is cancelled by the server after that long (`statement_timeout`), a
    /// request waits at most that long for a free connection, and the server drops a connection
    /// whose client stopped acknowledging for that long (`tcp_user_timeout`, keepalives), so a
    /// partition does not leave it holding locks. Migrations run first, on a connection of
    /// their own without the timeout.
    pub async fn open(
        url: &SecretString,
        max_connections: u32,
        timeout: Option<Duration>,
    ) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url.expose_secret())
            .map_err(|e| anyhow::anyhow!("invalid PostgreSQL URL: {e}"))?
            .application_name("mreg");
        let described = format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or_default()
        );
        let cannot_connect =
            |e: sqlx::Error| anyhow::anyhow!("cannot connect to PostgreSQL at {described}: {e}");
        let mut migration = PgConnection::connect_with(&options)
            .await
            .map_err(cannot_connect)?;
        migrator(MIGRATIONS)
            .run(&mut migration)
            .await
            .map_err(|e| anyhow::anyhow!("cannot migrate PostgreSQL database {described}: {e}"))?;
        let _ = migration.close().await;
        let (options, acquire) = match timeout {
            None => (options, ACQUIRE_TIMEOUT),
            Some(timeout) => {
                let ms = timeout.as_millis().to_string();
                let idle = timeout.as_secs().clamp(1, 60).to_string();
                (
                    options.options([
                        ("statement_timeout", ms.as_str()),
                        ("tcp_user_timeout", ms.as_str()),
                        ("tcp_keepalives_idle", idle.as_str()),
                        ("tcp_keepalives_interval", "1"),
                        ("tcp_keepalives_count", "3"),
                    ]),
                    timeout.min(ACQUIRE_TIMEOUT),
                )
            }
        };
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(acquire)
            .connect_with(options)
            .await
            .map_err(cannot_connect)?;
        Ok(Self { pool })
    }

    /// Wraps an existing pool and migrates its database.
    pub async fn from_pool(pool: PgPool) -> anyhow::Result<Self> {
        migrator(MIGRATIONS).run(&pool).await?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl Close for PgStore {
    async fn close(&self) {
        self.pool.close().await;
    }
}

pub(super) fn corrupt(column: &str, e: impl std::fmt::Display) -> Error {
    Error::Internal(format!(
        "servers.{column} holds a value mreg cannot read: {e}"
    ))
}

fn server_from_row(row: &PgRow) -> Result<Server> {
    fn col<'r, T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>>(
        row: &'r PgRow,
        name: &str,
    ) -> Result<T> {
        row.try_get(name).map_err(|e| corrupt(name, e))
    }
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

    async fn get(&self, name: &ServerName) -> Result<Option<Server>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM servers WHERE name = $1"
        )))
        .bind(name.as_str().to_owned())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error("server"))?;
        row.as_ref().map(server_from_row).transpose()
    }

    async fn list_with_health(&self, query: &ServerQuery) -> Result<Vec<(Server, Option<Health>)>> {
        let mut sql = QueryBuilder::<Postgres>::new(format!(
            "SELECT page.*, {} FROM (",
            super::postgres_health::PREFIXED_COLUMNS
        ));
        let order = match query.sort {
            ServerSort::Name => {
                push_page(&mut sql, query);
                "page.name"
            }
            ServerSort::Health => {
                push_page_by_health(&mut sql, query);
                "page.health_rank, page.name"
            }
        };
        sql.push(format!(
            ") AS page LEFT JOIN server_health h ON h.server_id = page.id ORDER BY {order}"
        ));
        let rows = sql
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("servers"))?;
        rows.iter()
            .map(|row| {
                Ok((
                    server_from_row(row)?,
                    super::postgres_health::prefixed_health_from_row(row)?,
                ))
            })
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

    async fn delete(&self, name: &ServerName) -> Result<bool> {
        let done = sqlx::query("DELETE FROM servers WHERE name = $1")
            .bind(name.as_str().to_owned())
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

/// Pushes the query of one page of servers in name order (see [`ServerStore::list`]).
fn push_page(sql: &mut QueryBuilder<Postgres>, query: &ServerQuery) {
    sql.push(format!("SELECT {COLUMNS} FROM servers WHERE true"));
    if let Some(after) = &query.after {
        sql.push(" AND name > ")
            .push_bind(after.as_str().to_owned());
    }
    push_filters(sql, query);
    sql.push(" ORDER BY name LIMIT ")
        .push_bind(i64::from(query.limit));
}

/// Pushes the query of one page of servers healthiest first (see
/// [`ServerStore::list_by_health`]); each row has the columns `health` and `health_rank`.
fn push_page_by_health(sql: &mut QueryBuilder<Postgres>, query: &ServerQuery) {
    sql.push(format!(
        "SELECT * FROM (SELECT *, CASE health WHEN 'healthy' THEN 0 WHEN 'degraded' THEN 1 \
             WHEN 'unknown' THEN 2 ELSE 3 END AS health_rank FROM (SELECT {COLUMNS}, \
             COALESCE((SELECT h.status FROM server_health h WHERE h.server_id = servers.id), \
             'unknown') AS health FROM servers WHERE true"
    ));
    push_filters(sql, query);
    sql.push(") AS inner_servers) AS ranked");
    if let (Some(after), Some(rank)) = (&query.after, query.after_rank) {
        sql.push(" WHERE (health_rank, name) > (")
            .push_bind(i32::from(rank))
            .push(", ")
            .push_bind(after.as_str().to_owned())
            .push(")");
    }
    sql.push(" ORDER BY health_rank, name LIMIT ")
        .push_bind(i64::from(query.limit));
}

/// Appends the filters of `query` (all but the cursor) to a `WHERE` clause over `servers`.
fn push_filters(sql: &mut QueryBuilder<Postgres>, query: &ServerQuery) {
    push_visibility(sql, &query.visibility, "");
    if let Some(tag) = &query.tag {
        sql.push(" AND tags @> ARRAY[")
            .push_bind(tag.clone())
            .push("]::text[]");
    }
    if let Some(status) = query.status {
        sql.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(text) = &query.text {
        sql.push(" AND search_text LIKE ")
            .push_bind(like_pattern(text));
    }
    if let Some(since) = query.updated_since {
        sql.push(" AND updated_at >= ").push_bind(since);
    }
    if let Some(health) = query.health {
        sql.push(" AND EXISTS (SELECT 1 FROM server_health h WHERE h.server_id = servers.id AND h.status = ")
            .push_bind(health.as_str())
            .push(")");
    }
}

/// Restricts a query of `servers` (aliased `alias`, with its dot) to what `visibility` allows.
pub(super) fn push_visibility(
    sql: &mut QueryBuilder<Postgres>,
    visibility: &Visibility,
    alias: &str,
) {
    if let Visibility::Tenant(tenant) = visibility {
        sql.push(format!(" AND ({alias}tenant IS NULL OR {alias}shared"));
        if let Some(tenant) = tenant {
            sql.push(format!(" OR {alias}tenant = "))
                .push_bind(tenant.clone());
        }
        sql.push(")");
    }
}

//! The embedded backend: one SQLite file in WAL mode. Times are stored as Unix microseconds,
//! tags and metadata as JSON text.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use domain::{
    Credentials, Error, Health, Result, SecretStore, Server, ServerName, ServerQuery, ServerSort,
    ServerStatus, ServerStore, ServerUrl, Transport, Visibility,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, QueryBuilder, Row, Sqlite};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{ACQUIRE_TIMEOUT, Close, db_error, like_pattern, migrator};

/// How long a connection of the embedded database is used before it is replaced.
const MAX_LIFETIME: Duration = Duration::from_secs(60);

pub(super) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "servers",
        include_str!("../../migrations/sqlite/0001_servers.sql"),
    ),
    (
        2,
        "upstream",
        include_str!("../../migrations/sqlite/0002_upstream.sql"),
    ),
    (
        3,
        "health",
        include_str!("../../migrations/sqlite/0003_health.sql"),
    ),
    (
        4,
        "oauth",
        include_str!("../../migrations/sqlite/0004_oauth.sql"),
    ),
    (
        5,
        "sharing",
        include_str!("../../migrations/sqlite/0005_sharing.sql"),
    ),
    (
        6,
        "audit",
        include_str!("../../migrations/sqlite/0006_audit.sql"),
    ),
    (
        7,
        "audit actor index",
        include_str!("../../migrations/sqlite/0007_audit_actor_index.sql"),
    ),
    (
        8,
        "health since",
        include_str!("../../migrations/sqlite/0008_health_since.sql"),
    ),
];

const COLUMNS: &str = "id, name, url, transport, description, tags, version, registered_by, \
                       tenant, shared, status, metadata, created_at, updated_at, revision, \
                       timeout_secs, upstream_credentials IS NOT NULL AS has_upstream_credentials";

/// Registry storage in a SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    pub(super) pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating it if needed) the database at `path` and migrates it.
    pub async fn open(path: &Path, max_connections: u32) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                anyhow::anyhow!("cannot create data directory {}: {e}", dir.display())
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        // Connections are replaced after a while, so that the ones a burst opened (start-up
        // runs migrations, the monitor and the audit writer at once) do not stay: each holds a
        // worker thread and its caches, and a quiet gateway needs one.
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .max_lifetime(MAX_LIFETIME)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open SQLite database {}: {e}", path.display()))?;
        migrator(MIGRATIONS).run(&pool).await.map_err(|e| {
            anyhow::anyhow!("cannot migrate SQLite database {}: {e}", path.display())
        })?;
        Ok(Self { pool })
    }

    /// Opens a private in-memory database, for tests.
    pub async fn in_memory() -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?;
        // One connection: every connection to :memory: is a database of its own.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        migrator(MIGRATIONS).run(&pool).await?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl Close for SqliteStore {
    async fn close(&self) {
        self.pool.close().await;
    }
}

pub(super) fn micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

pub(super) fn from_micros(us: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000)
        .map_err(|e| Error::Internal(format!("stored time out of range: {e}")))
}

pub(super) fn corrupt(column: &str, e: impl std::fmt::Display) -> Error {
    Error::Internal(format!(
        "servers.{column} holds a value mreg cannot read: {e}"
    ))
}

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

fn json(value: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Internal(e.to_string()))
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

    async fn get(&self, name: &ServerName) -> Result<Option<Server>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM servers WHERE name = ?"
        )))
        .bind(name.as_str().to_owned())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error("server"))?;
        row.as_ref().map(server_from_row).transpose()
    }

    async fn list_with_health(&self, query: &ServerQuery) -> Result<Vec<(Server, Option<Health>)>> {
        let mut sql = QueryBuilder::<Sqlite>::new(format!(
            "SELECT page.*, {} FROM (",
            super::sqlite_health::PREFIXED_COLUMNS
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
                    super::sqlite_health::prefixed_health_from_row(row)?,
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

    async fn delete(&self, name: &ServerName) -> Result<bool> {
        let done = sqlx::query("DELETE FROM servers WHERE name = ?")
            .bind(name.as_str().to_owned())
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

/// Pushes the query of one page of servers in name order (see [`ServerStore::list`]).
fn push_page(sql: &mut QueryBuilder<Sqlite>, query: &ServerQuery) {
    sql.push(format!("SELECT {COLUMNS} FROM servers WHERE 1 = 1"));
    if let Some(after) = &query.after {
        sql.push(" AND name > ")
            .push_bind(after.as_str().to_owned());
    }
    push_filters(sql, query);
    // The limit is written into the statement, not bound: SQLite plans with the value of a
    // bound LIMIT, so binding it again (each execution of the cached statement) made it
    // prepare the statement anew every time.
    sql.push(format!(" ORDER BY name LIMIT {}", query.limit));
}

/// Pushes the query of one page of servers healthiest first (see
/// [`ServerStore::list_by_health`]); each row has the columns `health` and `health_rank`.
fn push_page_by_health(sql: &mut QueryBuilder<Sqlite>, query: &ServerQuery) {
    sql.push(format!(
        "SELECT * FROM (SELECT *, CASE health WHEN 'healthy' THEN 0 WHEN 'degraded' THEN 1 \
         WHEN 'unknown' THEN 2 ELSE 3 END AS health_rank FROM (SELECT {COLUMNS}, \
         COALESCE((SELECT h.status FROM server_health h WHERE h.server_id = servers.id), \
         'unknown') AS health FROM servers WHERE 1 = 1"
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
    // Written into the statement, as in push_page.
    sql.push(format!(" ORDER BY health_rank, name LIMIT {}", query.limit));
}

/// Appends the filters of `query` (all but the cursor) to a `WHERE` clause over `servers`.
fn push_filters(sql: &mut QueryBuilder<Sqlite>, query: &ServerQuery) {
    push_visibility(sql, &query.visibility, "");
    if let Some(tag) = &query.tag {
        sql.push(" AND EXISTS (SELECT 1 FROM json_each(servers.tags) WHERE json_each.value = ")
            .push_bind(tag.clone())
            .push(")");
    }
    if let Some(status) = query.status {
        sql.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(text) = &query.text {
        sql.push(" AND search_text LIKE ")
            .push_bind(like_pattern(text))
            .push(" ESCAPE '\\'");
    }
    if let Some(since) = query.updated_since {
        sql.push(" AND updated_at >= ").push_bind(micros(since));
    }
    if let Some(health) = query.health {
        sql.push(" AND EXISTS (SELECT 1 FROM server_health h WHERE h.server_id = servers.id AND h.status = ")
            .push_bind(health.as_str())
            .push(")");
    }
}

/// Restricts a query of `servers` (aliased `alias`, with its dot) to what `visibility` allows.
pub(super) fn push_visibility(
    sql: &mut QueryBuilder<Sqlite>,
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

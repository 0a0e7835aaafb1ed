//! The embedded backend: one SQLite file in WAL mode. Times are stored as Unix microseconds,
//! tags and metadata as JSON text.

mod audit;
mod health;
mod servers;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use domain::{Error, Result};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite};
use time::OffsetDateTime;

use super::select::Dialect;
use super::{ACQUIRE_TIMEOUT, Close, migrator};
pub(super) use crate::store::corrupt;

#[cfg(test)]
mod upgrade_tests;

/// How long a connection of the embedded database is used before it is replaced.
const MAX_LIFETIME: Duration = Duration::from_secs(60);

/// How long a connection of the embedded database may sit unused before it is closed (one is
/// always kept).
const IDLE_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "servers",
        include_str!("../../../migrations/sqlite/0001_servers.sql"),
    ),
    (
        2,
        "upstream",
        include_str!("../../../migrations/sqlite/0002_upstream.sql"),
    ),
    (
        3,
        "health",
        include_str!("../../../migrations/sqlite/0003_health.sql"),
    ),
    (
        4,
        "oauth",
        include_str!("../../../migrations/sqlite/0004_oauth.sql"),
    ),
    (
        5,
        "sharing",
        include_str!("../../../migrations/sqlite/0005_sharing.sql"),
    ),
    (
        6,
        "audit",
        include_str!("../../../migrations/sqlite/0006_audit.sql"),
    ),
    (
        7,
        "audit actor index",
        include_str!("../../../migrations/sqlite/0007_audit_actor_index.sql"),
    ),
    (
        8,
        "health since",
        include_str!("../../../migrations/sqlite/0008_health_since.sql"),
    ),
    (
        9,
        "tenant names",
        include_str!("../../../migrations/sqlite/0009_tenant_names.sql"),
    ),
    (
        10,
        "audit server tenant",
        include_str!("../../../migrations/sqlite/0010_audit_server_tenant.sql"),
    ),
    (
        11,
        "servers name id",
        include_str!("../../../migrations/sqlite/0011_servers_name_id.sql"),
    ),
];

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
        // The connections a burst opened (start-up runs migrations, the monitor and the audit
        // writer at once) are closed once idle, and long-lived ones replaced: each holds a worker
        // thread and its caches, and a quiet gateway needs one. Opening a connection to a local
        // file costs well under a millisecond.
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .min_connections(1)
            .idle_timeout(IDLE_TIMEOUT)
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

fn micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

fn from_micros(us: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000)
        .map_err(|e| Error::Internal(format!("stored time out of range: {e}")))
}

fn json(value: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Internal(e.to_string()))
}

impl Dialect for Sqlite {
    const LIKE_ESCAPE: &'static str = " ESCAPE '\\'";
    const PREFIXED_NEXT_CHECK: &'static str = "h.next_check_at AS h_next_check_at";

    fn bind_text(sql: &mut QueryBuilder<Self>, value: String) {
        sql.push_bind(value);
    }

    fn bind_rank(sql: &mut QueryBuilder<Self>, rank: i32) {
        sql.push_bind(rank);
    }

    fn bind_id(sql: &mut QueryBuilder<Self>, id: uuid::Uuid) {
        sql.push_bind(id.to_string());
    }

    fn bind_time(sql: &mut QueryBuilder<Self>, at: OffsetDateTime) {
        sql.push_bind(micros(at));
    }

    fn push_has_tag(sql: &mut QueryBuilder<Self>, tag: String) {
        sql.push("EXISTS (SELECT 1 FROM json_each(servers.tags) WHERE json_each.value = ")
            .push_bind(tag)
            .push(")");
    }

    fn push_limit(sql: &mut QueryBuilder<Self>, limit: u32) {
        // Written into the statement, not bound: SQLite plans with the value of a bound LIMIT,
        // so binding it again (each execution of the cached statement) made it prepare the
        // statement anew every time.
        sql.push(format!(" LIMIT {limit}"));
    }
}

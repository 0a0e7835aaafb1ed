//! The production backend: PostgreSQL, shared by every replica. Tags are a `text[]` with a GIN
//! index, metadata `jsonb`, and text search uses a trigram index when `pg_trgm` is available.

mod audit;
mod health;
mod servers;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres, QueryBuilder};
use time::OffsetDateTime;

use super::select::Dialect;
use super::{ACQUIRE_TIMEOUT, Close, migrator};

/// Least time given to the first connection at start-up (a TLS handshake to a distant server).
const MIN_CONNECT_WAIT: Duration = Duration::from_secs(5);
pub(super) use crate::store::corrupt;

pub(super) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "servers",
        include_str!("../../../migrations/postgres/0001_servers.sql"),
    ),
    (
        2,
        "upstream",
        include_str!("../../../migrations/postgres/0002_upstream.sql"),
    ),
    (
        3,
        "health",
        include_str!("../../../migrations/postgres/0003_health.sql"),
    ),
    (
        4,
        "oauth",
        include_str!("../../../migrations/postgres/0004_oauth.sql"),
    ),
    (
        5,
        "sharing",
        include_str!("../../../migrations/postgres/0005_sharing.sql"),
    ),
    (
        6,
        "audit",
        include_str!("../../../migrations/postgres/0006_audit.sql"),
    ),
    (
        7,
        "audit actor index",
        include_str!("../../../migrations/postgres/0007_audit_actor_index.sql"),
    ),
    (
        8,
        "health since",
        include_str!("../../../migrations/postgres/0008_health_since.sql"),
    ),
    (
        9,
        "tenant names",
        include_str!("../../../migrations/postgres/0009_tenant_names.sql"),
    ),
    (
        10,
        "audit server tenant",
        include_str!("../../../migrations/postgres/0010_audit_server_tenant.sql"),
    ),
    (
        11,
        "servers name id",
        include_str!("../../../migrations/postgres/0011_servers_name_id.sql"),
    ),
];

/// Registry storage in PostgreSQL.
#[derive(Clone)]
pub struct PgStore {
    pub(super) pool: PgPool,
    /// The end of the audit chain as this instance last wrote it (see `append_events`).
    pub(super) audit_tail: std::sync::Arc<std::sync::Mutex<Option<audit::Tail>>>,
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
        // A server that takes the connection and never answers (a partition, a proxy in front
        // of a stopped server) must not hang start-up (`serve`, `migrate`, `audit verify`)
        // without a word.
        let connect_limit = timeout.unwrap_or(ACQUIRE_TIMEOUT).max(MIN_CONNECT_WAIT);
        let mut migration = match tokio::time::timeout(
            connect_limit,
            PgConnection::connect_with(&options),
        )
        .await
        {
            Ok(connected) => connected.map_err(cannot_connect)?,
            Err(_) => anyhow::bail!(
                "cannot connect to PostgreSQL at {described}: no answer within {} s (MREG_DATABASE_TIMEOUT); is the server up, and is this its address?",
                connect_limit.as_secs()
            ),
        };
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
        Ok(Self::on(pool))
    }

    fn on(pool: PgPool) -> Self {
        Self {
            pool,
            audit_tail: std::sync::Arc::default(),
        }
    }

    /// Wraps an existing pool and migrates its database.
    pub async fn from_pool(pool: PgPool) -> anyhow::Result<Self> {
        migrator(MIGRATIONS).run(&pool).await?;
        Ok(Self::on(pool))
    }
}

#[async_trait]
impl Close for PgStore {
    async fn close(&self) {
        self.pool.close().await;
    }
}

/// Column `name` of `row`, or the error that says it holds what mreg cannot read.
fn col<'r, T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>>(
    row: &'r sqlx::postgres::PgRow,
    name: &str,
) -> domain::Result<T> {
    sqlx::Row::try_get(row, name).map_err(|e| corrupt(name, e))
}

impl Dialect for Postgres {
    // PostgreSQL's default escape character is `\`.
    const LIKE_ESCAPE: &'static str = "";
    // `infinity` (never due again) is read as no time.
    const PREFIXED_NEXT_CHECK: &'static str =
        "CASE WHEN isfinite(h.next_check_at) THEN h.next_check_at END AS h_next_check_at_finite";

    fn bind_text(sql: &mut QueryBuilder<Self>, value: String) {
        sql.push_bind(value);
    }

    fn bind_rank(sql: &mut QueryBuilder<Self>, rank: i32) {
        sql.push_bind(rank);
    }

    fn bind_id(sql: &mut QueryBuilder<Self>, id: uuid::Uuid) {
        sql.push_bind(id);
    }

    fn bind_time(sql: &mut QueryBuilder<Self>, at: OffsetDateTime) {
        sql.push_bind(at);
    }

    fn push_has_tag(sql: &mut QueryBuilder<Self>, tag: String) {
        // `@>` on the `text[]` uses its GIN index.
        sql.push("tags @> ARRAY[").push_bind(tag).push("]::text[]");
    }

    fn push_limit(sql: &mut QueryBuilder<Self>, limit: u32) {
        sql.push(" LIMIT ").push_bind(i64::from(limit));
    }
}

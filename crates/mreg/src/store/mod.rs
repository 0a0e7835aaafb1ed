//! Durable storage: one implementation of the domain's store traits per backend, each with its
//! own schema and embedded migrations, in mirrored folders (`sqlite/`, `postgres/`: `servers`,
//! `health`, `audit`). What both run alike is written once: the queries built at run time
//! (`select`, over a dialect), the OAuth store (`auth`) and the audit log's reads and pruning
//! (`audit`). [`connect`] picks the backend from the configuration;
//! nothing else in mreg knows which one runs.

mod audit;
mod auth;
mod bounded;
mod postgres;
mod select;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use domain::{AuditStore, AuthStore, CatalogStore, Error, HealthStore, SecretStore, ServerStore};
use sqlx::migrate::{Migration, MigrationType, Migrator};

use crate::config::{Config, DatabaseConfig};

pub use bounded::Bounded;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// How long a request waits for a free database connection before the database counts as
/// unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The stores of one database, behind the domain's traits.
#[derive(Clone)]
pub struct Stores {
    /// Server registrations.
    pub servers: Arc<dyn ServerStore>,
    /// Shared generated secrets.
    pub secrets: Arc<dyn SecretStore>,
    /// Server health and probe history.
    pub health: Arc<dyn HealthStore>,
    /// The tool catalog.
    pub catalog: Arc<dyn CatalogStore>,
    /// OAuth clients and grants.
    pub auth: Arc<dyn AuthStore>,
    /// The audit log.
    pub audit: Arc<dyn AuditStore>,
    closer: Arc<dyn Close>,
    /// `sqlite` or `postgres`, for logs and `/readyz`.
    pub backend: &'static str,
}

impl Stores {
    /// Closes the connection pool, waiting for checked-out connections to come back.
    pub async fn close(&self) {
        self.closer.close().await;
    }
}

#[async_trait::async_trait]
trait Close: Send + Sync {
    async fn close(&self);
}

/// Connects to the configured database and brings its schema up to date.
pub async fn connect(config: &Config) -> anyhow::Result<Stores> {
    let limit = config.database_timeout;
    Ok(match &config.database {
        DatabaseConfig::Sqlite { path } => {
            let store = SqliteStore::open(path, config.database_max_connections).await?;
            Stores::of(Bounded::new(store, limit), "sqlite")
        }
        DatabaseConfig::Postgres { url } => {
            let store = PgStore::open(url, config.database_max_connections, Some(limit)).await?;
            Stores::of(Bounded::new(store, limit), "postgres")
        }
    })
}

impl Stores {
    fn of<S>(store: Bounded<S>, backend: &'static str) -> Self
    where
        S: ServerStore + SecretStore + HealthStore + CatalogStore + AuthStore + AuditStore,
        S: Close + Clone,
    {
        Self {
            servers: Arc::new(store.clone()),
            secrets: Arc::new(store.clone()),
            health: Arc::new(store.clone()),
            catalog: Arc::new(store.clone()),
            auth: Arc::new(store.clone()),
            audit: Arc::new(store.clone()),
            closer: Arc::new(store.into_inner()),
            backend,
        }
    }
}

/// A migrator over SQL files embedded in the binary (no migrations directory at run time).
fn migrator(files: &[(i64, &'static str, &'static str)]) -> Migrator {
    use sqlx::SqlSafeStr;
    Migrator::with_migrations(
        files
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    (*description).into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    // A file that manages its own transaction (SQLite's table rebuild, which
                    // turns foreign keys off first) says so on its first line.
                    sql.starts_with("-- no-transaction"),
                )
            })
            .collect(),
    )
}

/// Maps a driver error onto the domain: lost connections are [`Error::Unavailable`], unique
/// violations [`Error::AlreadyExists`] for `what`, data exceptions (SQLSTATE class 22: a value
/// the database cannot take, such as a NUL character in text) [`Error::Invalid`] for `what`
/// with the SQLSTATE in the message (see [`data_error_sqlstate`]), anything else [`Error::Internal`].
fn db_error(what: &str) -> impl Fn(sqlx::Error) -> Error + '_ {
    move |e| match e {
        sqlx::Error::Database(ref db) if db.is_unique_violation() => Error::AlreadyExists {
            what: what.to_owned(),
        },
        sqlx::Error::Database(ref db)
            if db
                .code()
                .is_some_and(|code| code.starts_with(DATA_EXCEPTION)) =>
        {
            data_error(what, &db.code().unwrap_or_default(), db.message())
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Error::unavailable("database", e),
        other => Error::Internal(format!("database: {other}")),
    }
}

/// The error for a stored value of `column` that mreg cannot read.
fn corrupt(column: &str, e: impl std::fmt::Display) -> Error {
    Error::Internal(format!(
        "servers.{column} holds a value mreg cannot read: {e}"
    ))
}

/// A stored latency in milliseconds (none, or negative, is 0).
fn millis(value: Option<i64>) -> u64 {
    value.and_then(|v| u64::try_from(v).ok()).unwrap_or(0)
}

/// The SQLSTATE class of data exceptions.
const DATA_EXCEPTION: &str = "22";

/// How the message of an [`Error::Invalid`] made by [`db_error`] from a data exception starts.
const DATA_ERROR_PREFIX: &str = "the database cannot store a value (SQLSTATE ";

/// The error `db_error` makes of a data exception with SQLSTATE `code` about `what`.
pub fn data_error(what: &str, code: &str, message: &str) -> Error {
    Error::invalid(what, format!("{DATA_ERROR_PREFIX}{code}: {message})"))
}

/// The SQLSTATE of `error` when it is a data exception from the database (class 22, e.g. 22021,
/// a NUL byte in text, or 22P05, `\u0000` in `jsonb`): the values written are at fault, not the
/// database, and writing them again will fail again.
pub fn data_error_sqlstate(error: &Error) -> Option<&str> {
    match error {
        Error::Invalid { message, .. } => {
            message.strip_prefix(DATA_ERROR_PREFIX)?.split(':').next()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    /// Every SQL file of a backend's migrations directory is embedded, in order, under the
    /// version its name starts with: a file added but not listed would never run.
    #[test]
    fn every_migration_file_is_embedded() {
        for (backend, embedded) in [
            ("sqlite", super::sqlite::MIGRATIONS),
            ("postgres", super::postgres::MIGRATIONS),
        ] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(backend);
            let mut files: Vec<(i64, String)> = std::fs::read_dir(&dir)
                .expect("migrations directory")
                .map(|entry| {
                    let name = entry
                        .expect("entry")
                        .file_name()
                        .into_string()
                        .expect("utf-8");
                    let version = name
                        .split('_')
                        .next()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or_else(|| panic!("{backend}/{name}: no version prefix"));
                    let sql = std::fs::read_to_string(dir.join(&name)).expect("read");
                    (version, sql)
                })
                .collect();
            files.sort();
            let listed: Vec<(i64, String)> = embedded
                .iter()
                .map(|(version, _, sql)| (*version, (*sql).to_owned()))
                .collect();
            assert_eq!(
                listed, files,
                "{backend}: embedded migrations differ from the files"
            );
        }
    }

    #[test]
    fn data_errors_keep_their_sqlstate() {
        let e = super::data_error("audit", "22021", "invalid byte sequence");
        assert_eq!(super::data_error_sqlstate(&e), Some("22021"));
        assert!(e.to_string().contains("SQLSTATE 22021"), "{e}");
        let other = domain::Error::invalid("audit", "something else");
        assert_eq!(super::data_error_sqlstate(&other), None);
        assert_eq!(
            super::data_error_sqlstate(&domain::Error::Internal("x".into())),
            None
        );
    }
}

//! Durable storage: one implementation of the domain's store traits per backend, each with its
//! own SQL and its own embedded migrations. [`connect`] picks the backend from the configuration;
//! nothing else in mreg knows which one runs.

pub mod audit;
pub mod auth;
mod postgres;
mod postgres_health;
mod sqlite;
mod sqlite_health;

use std::sync::Arc;
use std::time::Duration;

use domain::{CatalogStore, Error, HealthStore, SecretStore, ServerStore};
use sqlx::migrate::{Migration, MigrationType, Migrator};

use crate::config::{Config, DatabaseConfig};

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
    pub auth: Arc<dyn auth::AuthStore>,
    /// The audit log.
    pub audit: Arc<dyn audit::AuditStore>,
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
    Ok(match &config.database {
        DatabaseConfig::Sqlite { path } => {
            let store = SqliteStore::open(path, config.database_max_connections).await?;
            Stores {
                servers: Arc::new(store.clone()),
                secrets: Arc::new(store.clone()),
                health: Arc::new(store.clone()),
                catalog: Arc::new(store.clone()),
                auth: Arc::new(store.clone()),
                audit: Arc::new(store.clone()),
                closer: Arc::new(store),
                backend: "sqlite",
            }
        }
        DatabaseConfig::Postgres { url } => {
            let store = PgStore::connect(url, config.database_max_connections).await?;
            Stores {
                servers: Arc::new(store.clone()),
                secrets: Arc::new(store.clone()),
                health: Arc::new(store.clone()),
                catalog: Arc::new(store.clone()),
                auth: Arc::new(store.clone()),
                audit: Arc::new(store.clone()),
                closer: Arc::new(store),
                backend: "postgres",
            }
        }
    })
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
                    false,
                )
            })
            .collect(),
    )
}

/// Maps a driver error onto the domain: lost connections are [`Error::Unavailable`], unique
/// violations [`Error::AlreadyExists`] for `what`, anything else [`Error::Internal`].
fn db_error(what: &str) -> impl Fn(sqlx::Error) -> Error + '_ {
    move |e| match e {
        sqlx::Error::Database(ref db) if db.is_unique_violation() => Error::AlreadyExists {
            what: what.to_owned(),
        },
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Error::unavailable("database", e),
        other => Error::Internal(format!("database: {other}")),
    }
}

/// Escapes `%`, `_` and `\` so that `text` matches literally inside a `LIKE` pattern whose
/// escape character is `\`.
fn like_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

#[cfg(test)]
mod tests {
    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(super::like_pattern("a_b%c\\"), "%a\\_b\\%c\\\\%");
    }
}

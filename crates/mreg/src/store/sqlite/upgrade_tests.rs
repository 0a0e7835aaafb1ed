//! Upgrading an embedded database that holds data: the table rebuild of migration 9 (names unique
//! per tenant) keeps every server with its health, history and tools.

use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Row, SqlitePool};

use super::MIGRATIONS;
use crate::store::migrator;

async fn count(pool: &SqlitePool, table: &str) -> i64 {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) AS n FROM {table}"
    )))
    .fetch_one(pool)
    .await
    .expect("count")
    .get("n")
}

/// A database file of its own, removed with the value.
struct DbFile(std::path::PathBuf);

impl Drop for DbFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

#[tokio::test]
async fn migration_9_keeps_servers_with_their_health_history_and_tools() {
    // A database file as an earlier mreg left it (WAL, foreign keys on, migrations 1-8)...
    let file =
        DbFile(std::env::temp_dir().join(format!("mreg-upgrade-{}.db", uuid::Uuid::now_v7())));
    let options = SqliteConnectOptions::from_str("sqlite:")
        .expect("options")
        .filename(&file.0)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .foreign_keys(true);
    let old = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .expect("pool");
    migrator(&MIGRATIONS[..8])
        .run(&old)
        .await
        .expect("migrations 1-8");
    let pool = old;
    for statement in [
        "INSERT INTO servers (id, name, url, transport, registered_by, tenant, status, \
         search_text, created_at, updated_at, revision, shared) VALUES ('a', 'payroll', \
         'https://a.example.com/mcp', 'streamable-http', 'alice', 't1', 'active', '', 1, 1, 1, 0)",
        "INSERT INTO server_health (server_id, status) VALUES ('a', 'healthy')",
        "INSERT INTO health_checks (server_id, checked_at, outcome, latency_ms, checked_by) \
         VALUES ('a', 1, 'ok', 3, 'r1')",
        "INSERT INTO server_tools (server_id, name, description, input_schema, search_text) \
         VALUES ('a', 'run', '', '{}', 'run')",
    ] {
        sqlx::query(statement)
            .execute(&pool)
            .await
            .expect(statement);
    }
    pool.close().await;
    // ...opened by this one, as `mreg serve` opens it.
    let store = super::SqliteStore::open(&file.0, 1)
        .await
        .expect("open and migrate");
    let pool = store.pool.clone();
    for table in ["servers", "server_health", "health_checks", "server_tools"] {
        assert_eq!(count(&pool, table).await, 1, "{table}");
    }
    let status: String = sqlx::query("SELECT status FROM server_health WHERE server_id = 'a'")
        .fetch_one(&pool)
        .await
        .expect("health")
        .get("status");
    assert_eq!(status, "healthy");
    let fk: i64 = sqlx::query("PRAGMA foreign_keys")
        .fetch_one(&pool)
        .await
        .expect("pragma")
        .get(0);
    assert_eq!(fk, 1, "foreign keys are on again");
    assert!(
        sqlx::query("PRAGMA foreign_key_check")
            .fetch_all(&pool)
            .await
            .expect("check")
            .is_empty()
    );
    // Another tenant may now use the name; the same tenant still may not.
    let insert = |id: &'static str, tenant: &'static str| {
        sqlx::query(
            "INSERT INTO servers (id, name, url, transport, registered_by, tenant, status, \
             search_text, created_at, updated_at, revision) VALUES (?, 'payroll', \
             'https://b.example.com/mcp', 'streamable-http', 'dave', ?, 'active', '', 1, 1, 1)",
        )
        .bind(id)
        .bind(tenant)
        .execute(&pool)
    };
    insert("b", "t2").await.expect("another tenant's payroll");
    assert!(insert("c", "t1").await.is_err(), "twice in one tenant");
    // And the cascade still holds: deleting the server takes its rows with it.
    sqlx::query("DELETE FROM servers WHERE id = 'a'")
        .execute(&pool)
        .await
        .expect("delete");
    for table in ["server_health", "health_checks", "server_tools"] {
        assert_eq!(count(&pool, table).await, 0, "{table}");
    }
}

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

#[tokio::test]
async fn migration_9_keeps_servers_with_their_health_history_and_tools() {
    let options = SqliteConnectOptions::from_str("sqlite::memory:")
        .expect("options")
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .expect("pool");
    migrator(&MIGRATIONS[..8])
        .run(&pool)
        .await
        .expect("migrations 1-8");
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
    migrator(MIGRATIONS).run(&pool).await.expect("migration 9");
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

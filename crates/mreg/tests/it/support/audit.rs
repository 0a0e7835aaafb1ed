//! Reading the audit log in tests: the rows of an app's embedded database, and waiting until
//! enough of them (or a condition) have arrived.

use std::path::Path;
use std::time::{Duration, Instant};

use domain::audit::AuditRecord;
use domain::{AuditFilter, AuditStore};
use mreg::store::SqliteStore;

/// Every row, newest first.
pub(crate) fn all() -> AuditFilter {
    AuditFilter {
        limit: 100_000,
        ..AuditFilter::default()
    }
}

/// The rows of an app's SQLite database, oldest first.
pub(crate) async fn sqlite_rows(dir: &Path) -> Vec<AuditRecord> {
    let store = SqliteStore::open(&dir.join("mreg.db"), 1)
        .await
        .expect("open the database");
    let mut rows = store.list(&all()).await.expect("audit rows");
    rows.reverse();
    rows
}

/// Waits (at most 15 s) until `fetch` returns at least `n` rows, and returns them.
pub(crate) async fn at_least<F, Fut>(n: usize, fetch: F) -> Vec<AuditRecord>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Vec<AuditRecord>>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rows = fetch().await;
        if rows.len() >= n || Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (at most 15 s) until `done` holds for the rows `fetch` returns, and returns them.
pub(crate) async fn until<F, Fut>(
    done: impl Fn(&[AuditRecord]) -> bool,
    fetch: F,
) -> Vec<AuditRecord>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Vec<AuditRecord>>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rows = fetch().await;
        if done(&rows) || Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

use super::*;
use crate::audit::{decision, outcome};
use domain::AuditFilter;
use domain::audit::AuditRecord;

/// A store that keeps rows in memory, refuses as data (SQLSTATE 22021, as PostgreSQL does
/// for a NUL byte) every batch holding an event whose request id starts with `bad`, and
/// fails as unreachable while `down`.
#[derive(Default)]
struct Fake {
    rows: Mutex<Vec<AuditEvent>>,
    down: AtomicBool,
    appends: AtomicU64,
}

impl Fake {
    fn ids(&self) -> Vec<String> {
        let rows = self.rows.lock().expect("rows");
        rows.iter().map(|e| e.request_id.clone()).collect()
    }
}

#[async_trait::async_trait]
impl AuditStore for Fake {
    async fn append(&self, events: &[AuditEvent], skip_stored: bool) -> domain::Result<u64> {
        self.appends.fetch_add(1, Ordering::Relaxed);
        if self.down.load(Ordering::Relaxed) {
            return Err(domain::Error::unavailable("database", "cut off"));
        }
        if events.iter().any(|e| e.request_id.starts_with("bad")) {
            return Err(crate::store::data_error(
                "audit",
                "22021",
                "invalid byte sequence for encoding \"UTF8\": 0x00",
            ));
        }
        let mut rows = self.rows.lock().expect("rows");
        let fresh: Vec<AuditEvent> = events
            .iter()
            .filter(|e| !(skip_stored && rows.iter().any(|r| r.id == e.id)))
            .cloned()
            .collect();
        rows.extend(fresh.iter().cloned());
        Ok(fresh.len() as u64)
    }
    async fn list(&self, _: &AuditFilter) -> domain::Result<Vec<AuditRecord>> {
        Ok(Vec::new())
    }
    async fn chain_after(&self, _: i64, _: i64) -> domain::Result<Vec<AuditRecord>> {
        Ok(Vec::new())
    }
    async fn anchor(&self) -> domain::Result<Option<(i64, String)>> {
        Ok(None)
    }
    async fn prune(&self, _: i64, _: i64) -> domain::Result<u64> {
        Ok(0)
    }
}

fn event(request_id: &str) -> AuditEvent {
    AuditEvent {
        id: format!("id-{request_id}"),
        at_us: 1,
        request_id: request_id.to_owned(),
        actor_subject: "s".to_owned(),
        actor_email: None,
        actor_tenant: None,
        actor_client_id: None,
        operation: "op".to_owned(),
        tool: None,
        server: None,
        arguments: None,
        decision: decision::ALLOW.to_owned(),
        outcome: outcome::OK.to_owned(),
        error: None,
        duration_us: 1,
        server_tenant: None,
    }
}

/// A writer task over `store` with its spool in a fresh directory (removed by the caller).
fn task(store: &Arc<Fake>) -> (Task, PathBuf) {
    let dir = std::env::temp_dir().join(format!("mreg-writer-{}", uuid::Uuid::new_v4()));
    let spool = dir.join("audit.spool");
    let task = Task::new(
        store.clone(),
        Spool::open(&spool, 1 << 20).expect("spool"),
        Arc::new(Status::default()),
        quarantine_path(&spool),
    );
    (task, dir)
}

/// The request ids in the quarantine file, each line checked for its SQLSTATE.
fn quarantined(task: &Task) -> Vec<String> {
    let text = std::fs::read_to_string(&task.quarantine).unwrap_or_default();
    text.lines()
        .map(|line| {
            let entry: serde_json::Value = serde_json::from_str(line).expect("json line");
            assert_eq!(entry["sqlstate"], "22021", "{entry}");
            entry["event"]["request_id"]
                .as_str()
                .expect("request id")
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_batch_with_rows_refused_as_data_lands_the_others_and_quarantines_those() {
    let store = Arc::new(Fake::default());
    let (mut task, dir) = task(&store);
    let batch = ["a", "bad-1", "b", "c", "d", "bad-2", "e"]
        .map(event)
        .to_vec();
    task.deliver(batch).await;
    assert_eq!(store.ids(), ["a", "b", "c", "d", "e"], "in order");
    assert_eq!(quarantined(&task), ["bad-1", "bad-2"]);
    assert_eq!(task.status.quarantined(), 2);
    assert_eq!(task.status.counts(), (5, 0, 0));
    assert!(!task.spool.pending() && !task.status.spooling());
    // Split in halves, not retried for ever.
    assert!(store.appends.load(Ordering::Relaxed) <= 12);
    // The writer moves on.
    task.deliver(vec![event("f")]).await;
    assert_eq!(store.ids().last().map(String::as_str), Some("f"));
    std::fs::remove_dir_all(dir).expect("cleanup");
}

#[tokio::test]
async fn replay_quarantines_refused_rows_and_reports_failures_until_it_succeeds() {
    let store = Arc::new(Fake::default());
    let (mut task, dir) = task(&store);
    // A spool from before NULs were replaced: the entry is cleaned when read back.
    let mut nul = event("n");
    nul.server = Some("a\0b".to_owned());
    let spooled = vec![event("a"), event("bad"), nul, event("b")];
    task.spool.append(&spooled).expect("spool");
    task.status.spooling.store(true, Ordering::Relaxed);

    store.down.store(true, Ordering::Relaxed);
    task.replay().await;
    let failure = task
        .status
        .replay_failure()
        .expect("a replay failure is reported");
    assert!(failure.contains("database is unavailable"), "{failure}");
    assert!(task.spool.pending() && task.status.spooling());

    store.down.store(false, Ordering::Relaxed);
    task.replay().await;
    assert_eq!(task.status.replay_failure(), None);
    assert_eq!(store.ids(), ["a", "n", "b"]);
    let rows = store.rows.lock().expect("rows").clone();
    assert_eq!(rows[1].server.as_deref(), Some("a\u{FFFD}b"));
    assert_eq!(quarantined(&task), ["bad"]);
    assert!(!task.spool.pending() && !task.status.spooling());
    std::fs::remove_dir_all(dir).expect("cleanup");
}

#[test]
fn a_spool_is_a_regular_file_no_larger_than_its_limit() {
    let refused = Spool::open(std::path::Path::new("/dev/zero"), 1 << 20)
        .err()
        .expect("a device is refused");
    assert!(
        format!("{refused:#}").contains("not a regular file"),
        "{refused:#}"
    );
    let dir = std::env::temp_dir().join(format!("mreg-spool-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let big = dir.join("audit.spool");
    std::fs::write(&big, vec![b'\n'; 3 << 20]).expect("write");
    let refused = Spool::open(&big, 1 << 20).err().expect("too large");
    assert!(
        format!("{refused:#}").contains("more than MREG_AUDIT_SPOOL_MAX_MB allows"),
        "{refused:#}"
    );
    assert!(Spool::open(&big, 4 << 20).is_ok(), "within a raised limit");
    let _ = std::fs::remove_dir_all(&dir);
}

//! The audit log: one row per tool call, proxied request, REST mutation and refusal, with
//! redacted arguments; written asynchronously, spooled through a database outage and replayed
//! exactly once; refused requests when it can keep nothing; drained at shutdown; a hash chain
//! that `mreg audit verify` checks.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::AuditStore;
use domain::audit::AuditRecord;
use mreg::store::{PgStore, SqliteStore};
use reqwest::StatusCode;
use rmcp::model::ProtocolVersion;
use serde_json::{Value, json};

use crate::support::audit::{all, at_least, sqlite_rows, until};
use crate::support::mcp::{call, connect};
use crate::support::upstream::Upstream;
use crate::support::{ChaosProxy, TempDir, TestApp, TestDb, test_config};

fn args(row: &AuditRecord) -> Value {
    serde_json::from_str(row.event.arguments.as_deref().unwrap_or("null")).expect("json")
}

fn find<'a>(rows: &'a [AuditRecord], operation: &str) -> Vec<&'a AuditRecord> {
    rows.iter()
        .filter(|r| r.event.operation == operation)
        .collect()
}

const ACCEPT: &str = "application/json, text/event-stream";

async fn proxy_post(app: &TestApp, server: &str, request_id: &str, body: Value) -> StatusCode {
    app.http
        .post(format!("http://{}/servers/{server}/mcp", app.mcp_addr))
        .header("accept", ACCEPT)
        .header("x-request-id", request_id)
        .json(&body)
        .send()
        .await
        .expect("send")
        .status()
}

/// Names a caller sends (a tool's, a server's in a tool's arguments) are cut in the row: a
/// caller could otherwise write megabytes into each row it causes, kept for the whole retention.
#[tokio::test]
async fn names_from_callers_are_bounded_in_the_row() {
    let app = TestApp::spawn().await;
    let upstream = Upstream::start(false).await;
    app.register("echo", json!({ "url": upstream.url })).await;
    let huge = "n".repeat(100_000);
    let client = connect(
        &format!("http://{}/mcp", app.mcp_addr),
        ProtocolVersion::V_2025_11_25,
    )
    .await;
    let unknown = client
        .call_tool(rmcp::model::CallToolRequestParams::new(huge.clone()))
        .await;
    assert!(
        unknown.as_ref().map_or(true, |r| r.is_error == Some(true)),
        "{unknown:?}"
    );
    let forwarded = call(
        &client,
        "proxy_request",
        json!({ "server": huge, "method": "tools/list" }),
    )
    .await;
    assert_eq!(forwarded.is_error, Some(true), "{forwarded:?}");
    let init = json!({ "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": { "name": "t", "version": "0" } } });
    proxy_post(&app, "echo", "req-init", init).await;
    let big_tool = json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": { "name": huge, "arguments": {} } });
    proxy_post(&app, "echo", "req-big", big_tool).await;
    let rows = until(
        |rows| {
            rows.iter().any(|r| r.event.request_id == "req-big")
                && rows
                    .iter()
                    .filter(|r| {
                        r.event
                            .tool
                            .as_deref()
                            .is_some_and(|t| t.starts_with("nnn"))
                    })
                    .count()
                    >= 2
        },
        || sqlite_rows(&app.dir.0),
    )
    .await;
    let long: Vec<&AuditRecord> = rows
        .iter()
        .filter(|r| {
            [
                Some(r.event.operation.as_str()),
                r.event.tool.as_deref(),
                r.event.server.as_deref(),
            ]
            .into_iter()
            .flatten()
            .any(|v| v.starts_with("nnn"))
        })
        .collect();
    assert!(
        long.len() >= 3,
        "the tool, the forwarded server, the proxied tool: {}",
        long.len()
    );
    for row in long {
        for value in [
            Some(row.event.operation.as_str()),
            row.event.tool.as_deref(),
            row.event.server.as_deref(),
        ]
        .into_iter()
        .flatten()
        {
            assert!(value.len() < 400, "{} bytes kept", value.len());
        }
        assert!(
            [
                row.event.tool.as_deref(),
                row.event.server.as_deref(),
                Some(row.event.operation.as_str())
            ]
            .into_iter()
            .flatten()
            .any(|v| v.ends_with("(100000 bytes in all)")),
            "says how long it was: {:?}",
            row.event
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn every_operation_becomes_one_row_with_its_arguments_redacted() {
    let app = TestApp::spawn().await;
    let upstream = Upstream::start(false).await;

    // REST mutations: one row each, success or failure; reads are not audited.
    let (status, _) = app
        .post(
            "/api/v1/servers",
            json!({
                "name": "echo", "url": upstream.url,
                "upstream_headers": { "X-Custom": "k-123" },
                "metadata": { "db_password": "hunter2", "team": "search" },
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = app
        .patch("/api/v1/servers/missing", json!({ "description": "x" }))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(app.get("/api/v1/servers").await.0, StatusCode::OK);

    // The gateway's own tools.
    let client = connect(
        &format!("http://{}/mcp", app.mcp_addr),
        ProtocolVersion::V_2025_11_25,
    )
    .await;
    let registered = call(
        &client,
        "register_server",
        json!({ "name": "second", "url": upstream.url }),
    )
    .await;
    assert_ne!(registered.is_error, Some(true), "{registered:?}");
    let missing = call(&client, "get_server", json!({ "name": "nowhere" })).await;
    assert_eq!(missing.is_error, Some(true));

    // Proxied requests, under the caller's request id.
    let init = json!({ "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": { "name": "t", "version": "0" } } });
    assert_eq!(
        proxy_post(&app, "echo", "req-init", init).await,
        StatusCode::OK
    );
    let echo = json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": { "name": "echo", "arguments": { "text": "hi", "api_key": "zzz" } } });
    assert_eq!(
        proxy_post(&app, "echo", "req-echo", echo).await,
        StatusCode::OK
    );

    let rows = at_least(6, || sqlite_rows(&app.dir.0)).await;
    let created = find(&rows, "POST /api/v1/servers");
    assert_eq!(created.len(), 1, "{rows:#?}");
    let created = created[0];
    assert_eq!(created.event.server.as_deref(), Some("echo"));
    assert_eq!(created.event.outcome, "ok");
    assert_eq!(created.event.decision, "allow");
    assert_eq!(created.event.actor_subject, "anonymous");
    let arguments = args(created);
    assert_eq!(arguments["metadata"]["db_password"], "[redacted]");
    assert_eq!(arguments["metadata"]["team"], "search");
    assert_eq!(arguments["upstream_headers"], "[redacted]");
    let everything = format!("{rows:?}");
    for secret in ["hunter2", "k-123", "zzz"] {
        assert!(!everything.contains(secret), "{secret} leaked");
    }

    let patched = find(&rows, "PATCH /api/v1/servers/{name}");
    assert_eq!(patched.len(), 1);
    assert_eq!(patched[0].event.server.as_deref(), Some("missing"));
    assert_eq!(patched[0].event.outcome, "error");
    assert!(
        patched[0]
            .event
            .error
            .as_deref()
            .is_some_and(|e| e.contains("missing")),
        "{:?}",
        patched[0].event.error
    );
    assert!(
        rows.iter().all(|r| !r.event.operation.starts_with("GET ")),
        "reads are not audited"
    );

    let tool = find(&rows, "register_server");
    assert_eq!(tool.len(), 1);
    assert_eq!(tool[0].event.tool.as_deref(), Some("register_server"));
    assert_eq!(tool[0].event.server.as_deref(), Some("second"));
    assert_eq!(args(tool[0])["url"], upstream.url.as_str());
    assert_eq!(tool[0].event.outcome, "ok");
    let failed = find(&rows, "get_server");
    assert_eq!(failed[0].event.outcome, "error");
    assert!(failed[0].event.error.is_some());

    let proxied = find(&rows, "tools/call");
    assert_eq!(proxied.len(), 1);
    let proxied = proxied[0];
    assert_eq!(proxied.event.request_id, "req-echo");
    assert_eq!(proxied.event.tool.as_deref(), Some("echo"));
    assert_eq!(proxied.event.server.as_deref(), Some("echo"));
    assert_eq!(
        args(proxied),
        json!({ "text": "hi", "api_key": "[redacted]" })
    );
    assert_eq!(proxied.event.outcome, "ok");
    let init = find(&rows, "initialize");
    assert_eq!(init.len(), 1);
    assert_eq!(init[0].event.request_id, "req-init");
    client.cancel().await.expect("close the MCP session");

    // A mutation right before shutdown is written while the gateway drains.
    let (status, _) = app.delete("/api/v1/servers/second").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let mut app = app;
    app.take_running().stop().await.expect("stop");
    let rows = sqlite_rows(&app.dir.0).await;
    assert_eq!(find(&rows, "DELETE /api/v1/servers/{name}").len(), 1);
    let store = SqliteStore::open(&app.dir.0.join("mreg.db"), 1)
        .await
        .expect("open");
    let verified = mreg::audit::verify(&store).await.expect("verify");
    assert_eq!(verified.broken, None);
    assert_eq!(verified.rows as usize, rows.len());
}

#[tokio::test]
async fn the_rest_api_lists_the_audit_log_with_filters_and_a_cursor() {
    let app = TestApp::spawn().await;
    for n in 0..5 {
        app.register(&format!("s{n}"), json!({})).await;
    }
    assert_eq!(
        app.delete("/api/v1/servers/s0").await.0,
        StatusCode::NO_CONTENT
    );
    at_least(6, || sqlite_rows(&app.dir.0)).await;
    let (status, page) = app.get("/api/v1/audit?limit=4").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let entries = page["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 4);
    assert_eq!(entries[0]["operation"], "DELETE /api/v1/servers/{name}");
    assert_eq!(entries[0]["actor"]["subject"], "anonymous");
    assert!(entries[0]["time"].as_str().expect("time").ends_with('Z'));
    let cursor = page["next_cursor"].as_str().expect("a next page");
    let (_, rest) = app
        .get(&format!("/api/v1/audit?limit=4&cursor={cursor}"))
        .await;
    let more = rest["entries"].as_array().expect("entries");
    assert_eq!(more.len(), 2);
    assert!(rest.get("next_cursor").is_none());
    let seqs: Vec<i64> = entries
        .iter()
        .chain(more)
        .map(|e| e["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(seqs, [6, 5, 4, 3, 2, 1], "newest first, no row twice");

    let (_, filtered) = app
        .get("/api/v1/audit?server=s3&operation=POST%20/api/v1/servers")
        .await;
    assert_eq!(filtered["entries"].as_array().expect("entries").len(), 1);
    let (_, none) = app.get("/api/v1/audit?decision=deny").await;
    assert_eq!(none["entries"], json!([]));
    let (_, future) = app.get("/api/v1/audit?since=2100-01-01T00:00:00Z").await;
    assert_eq!(future["entries"], json!([]));
    for bad in [
        "decision=maybe",
        "since=yesterday",
        "limit=0",
        "limit=501",
        "cursor=abc",
    ] {
        let (status, body) = app.get(&format!("/api/v1/audit?{bad}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
    }

    // The same through the command line, following every page.
    let cli = |args: &[&str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mreg"));
        command
            .args(["audit", "list", "--url", &app.base])
            .args(args)
            .env_remove("MREG_TOKEN")
            .env("XDG_CONFIG_HOME", &app.dir.0);
        async move {
            let output = command.output().await.expect("run mreg");
            (
                output.status.code(),
                String::from_utf8_lossy(&output.stdout).into_owned(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        }
    };
    let (code, out, err) = cli(&["--all", "--limit", "2", "--json"]).await;
    assert_eq!(code, Some(0), "{err}");
    let listed: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(listed.as_array().expect("rows").len(), 6);
    let (_, text, _) = cli(&["--server", "s0"]).await;
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.lines()
            .next()
            .expect("a line")
            .contains("DELETE /api/v1/servers/{name}  s0  allow  ok"),
        "{text}"
    );
    let (code, _, err) = cli(&["--decision", "maybe"]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("decision"), "{err}");
    app.stop().await;
}

/// Registers `name` through the gateway under request id `id`; returns the status.
async fn register_as(app: &TestApp, name: &str, id: &str) -> StatusCode {
    app.http
        .post(app.url("/api/v1/servers"))
        .header("x-request-id", id)
        // An address, not a name: no DNS lookup (and its timeout) in the registration's time.
        .json(&json!({ "name": name, "url": format!("http://127.0.0.1:9/{name}/mcp") }))
        .send()
        .await
        .expect("request")
        .status()
}

async fn pg_rows(url: &str) -> Vec<AuditRecord> {
    let store = PgStore::connect(&url.to_owned().into(), 1)
        .await
        .expect("postgres");
    let mut rows = store.list(&all()).await.expect("rows");
    rows.reverse();
    rows
}

/// A fresh PostgreSQL database behind a proxy the test can cut.
async fn cuttable_database() -> Option<(TestDb, ChaosProxy)> {
    let db = TestDb::create().await?;
    let target = url::Url::parse(&db.url).expect("url");
    let pg = tokio::net::lookup_host((
        target.host_str().expect("host"),
        target.port().unwrap_or(5432),
    ))
    .await
    .expect("resolve")
    .next()
    .expect("an address");
    let proxy = ChaosProxy::start(pg).await;
    Some((db, proxy))
}

/// The database's URL through the proxy.
fn through(db: &TestDb, proxy: &ChaosProxy) -> String {
    let mut url = url::Url::parse(&db.url).expect("url");
    url.set_port(Some(proxy.addr.port())).expect("port");
    url.set_host(Some("127.0.0.1")).expect("host");
    url.to_string()
}

#[tokio::test]
async fn a_database_outage_loses_no_row_and_duplicates_none() {
    outage_under_load(false).await;
}

/// A partition (the database's packets dropped, nothing refused) fails requests within the
/// database timeout instead of hanging, and ends within seconds of the network coming back.
#[tokio::test]
async fn a_database_partition_answers_within_the_timeout_and_loses_no_row() {
    outage_under_load(true).await;
}

/// 240 registrations from 8 clients with the database cut off (`partition`: made silent) for a
/// while in the middle; every request answered is audited exactly once and the chain verifies.
async fn outage_under_load(partition: bool) {
    let Some((db, proxy)) = cuttable_database().await else {
        return;
    };
    let url = through(&db, &proxy);
    let app = Arc::new(
        TestApp::builder()
            .with_postgres(&url)
            .with_config(|c| c.database_timeout = Duration::from_secs(1))
            .spawn()
            .await,
    );
    let slowest = Arc::new(std::sync::Mutex::new(Duration::ZERO));

    // Load from 8 concurrent clients; the database is cut off for a while in the middle: once
    // 40 requests have been answered (counted, not timed: a fast machine could otherwise finish
    // all of them before the cut).
    let total = 240;
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let load = {
        let (app, answered, refused) = (app.clone(), answered.clone(), refused.clone());
        let slowest = slowest.clone();
        tokio::spawn(async move {
            let mut statuses = HashMap::new();
            let mut tasks = tokio::task::JoinSet::new();
            for client in 0..8 {
                let (app, answered, refused) = (app.clone(), answered.clone(), refused.clone());
                let slowest = slowest.clone();
                tasks.spawn(async move {
                    let mut seen = Vec::new();
                    for i in 0..total / 8 {
                        let id = format!("load-{client}-{i}");
                        let started = Instant::now();
                        let status = register_as(&app, &format!("srv-{client}-{i}"), &id).await;
                        let took = started.elapsed();
                        {
                            let mut slowest = slowest.lock().expect("lock");
                            *slowest = (*slowest).max(took);
                        }
                        if status == StatusCode::SERVICE_UNAVAILABLE {
                            refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        seen.push(status);
                        answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    seen
                });
            }
            while let Some(done) = tasks.join_next().await {
                for status in done.expect("client") {
                    *statuses.entry(status).or_insert(0) += 1;
                }
            }
            statuses
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while answered.load(std::sync::atomic::Ordering::Relaxed) < 40 {
        assert!(Instant::now() < deadline, "the load did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if partition {
        proxy.partition();
    } else {
        proxy.cut();
    }
    // Requests in flight fail once the database timeout (1 s) gives up on the database; their
    // rows, and those of the requests after them, go to the spool.
    let deadline = Instant::now() + Duration::from_secs(20);
    let ready = loop {
        let metrics = app.metrics().await;
        let spooled: f64 = metrics
            .lines()
            .find(|l| l.starts_with("mreg_audit_rows_spooled_total"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no spool counter in {metrics}"));
        // The outage lasts until a row went to the spool and a request failed on it (on a busy
        // machine the writer's batch may meet the outage before any request does).
        if spooled > 0.0 && refused.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            break app.get("/readyz").await.1;
        }
        assert!(
            Instant::now() < deadline,
            "no row went to the spool during the outage"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        ready["checks"]["audit"]
            .as_str()
            .is_some_and(|a| a.starts_with("spooling")),
        "{ready}"
    );
    // The outage lasts a few database timeouts more; then the network comes back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.restore();
    let restored = Instant::now();
    let statuses = load.await.expect("load");
    assert_eq!(statuses.values().sum::<usize>(), total);
    let slowest = *slowest.lock().expect("lock");
    // The bound is one database timeout (1 s) per store call a registration makes, plus the
    // time to write the answer; a hang would last as long as the outage and beyond.
    assert!(
        slowest < Duration::from_millis(2_900),
        "a request waited {slowest:?} during the outage"
    );
    let mut attempts = 0;
    let back = loop {
        attempts += 1;
        let status = register_as(&app, "after-outage", "after-outage").await;
        if status == StatusCode::CREATED || status == StatusCode::CONFLICT {
            break restored.elapsed();
        }
        assert!(
            restored.elapsed() < Duration::from_secs(15),
            "registrations still fail 15 s after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "slowest request during the outage: {slowest:?}; registrations work again {back:?} after"
    );
    assert!(
        statuses.contains_key(&StatusCode::CREATED)
            && statuses.contains_key(&StatusCode::SERVICE_UNAVAILABLE),
        "some requests ran before or after the outage, some failed during it: {statuses:?}"
    );

    // Every request has exactly one row once the spool is replayed, and the chain verifies.
    let rows = at_least(total + attempts, || pg_rows(&db.url)).await;
    let mut per_request: HashMap<&str, usize> = HashMap::new();
    for row in &rows {
        *per_request
            .entry(row.event.request_id.as_str())
            .or_default() += 1;
    }
    for client in 0..8 {
        for i in 0..total / 8 {
            let id = format!("load-{client}-{i}");
            assert_eq!(per_request.get(id.as_str()), Some(&1), "{id}");
        }
    }
    assert_eq!(per_request.get("after-outage"), Some(&attempts));
    assert_eq!(rows.len(), total + attempts, "no row twice, no stray row");
    let store = PgStore::connect(&db.url.clone().into(), 1)
        .await
        .expect("postgres");
    let verified = mreg::audit::verify(&store).await.expect("verify");
    assert_eq!(verified.broken, None);
    assert_eq!(verified.rows as usize, total + attempts);
    let (_, ready) = app.get("/readyz").await;
    assert_eq!(ready["checks"]["audit"], "ok", "{ready}");
    drop(app);
    db.drop_db().await;
}

#[tokio::test]
async fn spooled_rows_survive_a_restart_and_are_replayed_by_the_next_run() {
    let Some((db, proxy)) = cuttable_database().await else {
        return;
    };
    let dir = TempDir::new();
    let settings = [("MREG_DATABASE_URL", through(&db, &proxy))];
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let running = mreg::app::start(test_config(&dir, &settings))
        .await
        .expect("start");
    let http = reqwest::Client::new();
    proxy.cut();
    for i in 0..5 {
        let status = http
            .delete(format!(
                "http://{}/api/v1/servers/gone-{i}",
                running.api_addr
            ))
            .header("x-request-id", format!("outage-{i}"))
            .send()
            .await
            .expect("request")
            .status();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    running.stop().await.expect("stop");
    let spool = std::fs::read_to_string(dir.0.join("audit.spool")).expect("spool");
    assert_eq!(spool.lines().count(), 5, "{spool}");

    proxy.restore();
    let running = mreg::app::start(test_config(&dir, &settings))
        .await
        .expect("restart");
    let rows = at_least(5, || pg_rows(&db.url)).await;
    let ids: Vec<&str> = rows.iter().map(|r| r.event.request_id.as_str()).collect();
    assert_eq!(
        ids,
        ["outage-0", "outage-1", "outage-2", "outage-3", "outage-4"],
        "in order"
    );
    assert!(rows.iter().all(|r| r.event.outcome == "error"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(dir.0.join("audit.spool")).map_or(1, |m| m.len()) > 0 {
        assert!(Instant::now() < deadline, "the spool is emptied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.stop().await.expect("stop");
    db.drop_db().await;
}

/// Posts a registration that fails validation (no database needed) under request id `id`.
async fn invalid_registration(app: &TestApp, id: &str) -> (StatusCode, Value) {
    let reply = app
        .http
        .post(app.url("/api/v1/servers"))
        .header("x-request-id", id)
        .json(&json!({ "name": "Not A Name", "url": "https://x.example.com/mcp" }))
        .send()
        .await
        .expect("request");
    (reply.status(), reply.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn requests_are_refused_when_the_audit_log_can_keep_nothing() {
    let Some((db, proxy)) = cuttable_database().await else {
        return;
    };
    let url = through(&db, &proxy);
    let app = TestApp::builder()
        .with_postgres(&url)
        .with_config(|c| {
            c.audit.queue = 2;
            c.audit.spool_max_bytes = 0;
        })
        .spawn()
        .await;
    proxy.cut();
    // The writer holds a batch it can keep neither in the database nor in the (full) spool;
    // two more entries fill the queue; then every audited request is refused before it runs.
    let mut ran = Vec::new();
    let mut refused = 0;
    for i in 0..8 {
        let id = format!("full-{i}");
        let (status, body) = invalid_registration(&app, &id).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(body["error"], "audit_unavailable", "{body}");
            assert!(
                body["message"]
                    .as_str()
                    .expect("message")
                    .contains("was not run"),
                "{body}"
            );
            refused += 1;
        } else {
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            ran.push(id);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        (4..=6).contains(&refused),
        "a writer batch and a queue of 2 hold at most 3-4: {refused} refused"
    );
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    let metrics = app.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("mreg_audit_refused_total") && !l.ends_with(" 0")),
        "{metrics}"
    );

    // Back: the held entries are written and requests run again.
    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0.. {
        let id = format!("after-{i}");
        let (status, body) = invalid_registration(&app, &id).await;
        if status == StatusCode::UNPROCESSABLE_ENTITY {
            ran.push(id);
            break;
        }
        assert!(Instant::now() < deadline, "still refused: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rows = at_least(ran.len(), || pg_rows(&db.url)).await;
    let ids: Vec<&str> = rows.iter().map(|r| r.event.request_id.as_str()).collect();
    assert_eq!(
        ids, ran,
        "one row per request that ran, none for refused ones"
    );
    app.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn mreg_audit_verify_detects_altered_removed_and_reordered_rows() {
    let (_app, dir) = stopped_with_registrations("v", 4).await;
    let verify = || verify_with_the_cli(&dir);
    let sql = |statement: &'static str| sqlite_exec(&dir, statement);
    let (code, out) = verify();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("intact: 4 rows"), "{out}");

    // Altered.
    sql("UPDATE audit_log SET outcome = 'error' WHERE seq = 2").await;
    let (code, out) = verify();
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("row 2") && out.contains("altered"), "{out}");
    sql("UPDATE audit_log SET outcome = 'ok' WHERE seq = 2").await;
    assert_eq!(verify().0, Some(0));
    // Reordered: rows 2 and 3 swap places.
    sql("UPDATE audit_log SET seq = -2 WHERE seq = 2").await;
    sql("UPDATE audit_log SET seq = 2 WHERE seq = 3").await;
    sql("UPDATE audit_log SET seq = 3 WHERE seq = -2").await;
    let (code, out) = verify();
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("row 2"), "{out}");
    sql("UPDATE audit_log SET seq = -2 WHERE seq = 2").await;
    sql("UPDATE audit_log SET seq = 2 WHERE seq = 3").await;
    sql("UPDATE audit_log SET seq = 3 WHERE seq = -2").await;
    assert_eq!(verify().0, Some(0));
    // Removed.
    sql("DELETE FROM audit_log WHERE seq = 3").await;
    let (code, out) = verify();
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("row 4") && out.contains("missing"), "{out}");
    // Removed, and the next row's position rewritten to hide the gap.
    sql("UPDATE audit_log SET seq = 3 WHERE seq = 4").await;
    let (code, out) = verify();
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("row 3"), "{out}");
}

#[tokio::test]
async fn a_writer_that_is_merely_behind_slows_requests_down_instead_of_refusing_them() {
    // Room for one entry: every other concurrent request waits for its turn.
    let app = Arc::new(
        TestApp::builder()
            .with_config(|c| c.audit.queue = 1)
            .spawn()
            .await,
    );
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let app = app.clone();
        tasks.spawn(
            async move { register_as(&app, &format!("busy-{i}"), &format!("busy-{i}")).await },
        );
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.expect("task"), StatusCode::CREATED);
    }
    let rows = at_least(20, || sqlite_rows(&app.dir.0)).await;
    assert_eq!(rows.len(), 20);
}

#[tokio::test]
async fn a_caller_that_goes_away_mid_call_leaves_a_cancelled_row() {
    let app = TestApp::spawn().await;
    let upstream = Upstream::start(false).await;
    app.register("slow", json!({ "url": upstream.url })).await;
    let call = app
        .http
        .post(format!("http://{}/servers/slow/mcp", app.mcp_addr))
        .header("accept", ACCEPT)
        .header("x-request-id", "gone")
        .timeout(Duration::from_millis(300))
        .json(&json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": { "name": "hang", "arguments": { "secs": 5 } } }))
        .send()
        .await;
    assert!(call.is_err(), "the caller gave up");
    let rows = until(
        |rows| rows.iter().any(|r| r.event.request_id == "gone"),
        || sqlite_rows(&app.dir.0),
    )
    .await;
    let row = rows
        .iter()
        .find(|r| r.event.request_id == "gone")
        .expect("a row for the abandoned call");
    assert_eq!(row.event.outcome, "cancelled");
    assert_eq!(row.event.tool.as_deref(), Some("hang"));
    assert!(row.event.duration_us < 5_000_000);
    app.stop().await;
}

#[tokio::test]
async fn two_instances_cannot_share_one_spool() {
    let first = TestApp::spawn().await;
    let spool = first.dir.0.join("audit.spool");
    let second = TestApp::builder()
        .with_config({
            let spool = spool.clone();
            move |c| c.audit.spool = spool
        })
        .try_spawn()
        .await
        .err()
        .expect("the second instance refuses to start");
    assert!(
        format!("{second:#}").contains("in use by another mreg process"),
        "{second:#}"
    );
    first.stop().await;
}

#[tokio::test]
async fn retention_prunes_old_rows_at_start_and_the_rest_still_verifies() {
    let (app, dir) = stopped_with_registrations("kept-", 3).await;
    // The first two rows become 400 days old (past the default 365-day retention).
    sqlite_exec(
        &dir,
        "UPDATE audit_log SET at_us = at_us - 400 * 86400000000 WHERE seq <= 2",
    )
    .await;

    // The retention task prunes when the gateway starts, then hourly.
    let running = mreg::app::start(test_config(&app.dir, &[]))
        .await
        .expect("restart");
    let rows = until(|rows| rows.len() == 1, || sqlite_rows(&dir)).await;
    let kept: Vec<(i64, Option<&str>)> = rows
        .iter()
        .map(|r| (r.seq, r.event.server.as_deref()))
        .collect();
    assert_eq!(kept, [(3, Some("kept-2"))]);
    // The run is the task's status in /readyz.
    let readyz = format!("http://{}/readyz", running.api_addr);
    let mut task = serde_json::Value::Null;
    for _ in 0..100 {
        let body: serde_json::Value = reqwest::get(&readyz)
            .await
            .expect("readyz")
            .json()
            .await
            .expect("json");
        task = body["checks"]["tasks"]["audit_prune"].clone();
        if !task.is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(task["ok"], true, "{task}");
    assert_eq!(task["runs"], 1, "{task}");
    assert_eq!(
        task["detail"], "pruned 2 audit row(s) past retention",
        "{task}"
    );
    running.stop().await.expect("stop");

    // What is left verifies from the checkpoint the pruning left.
    let (code, out) = verify_with_the_cli(&dir);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("intact: 1 rows (3 to 3)"), "{out}");
}

/// A stopped gateway (kept, so that its directory stays) whose audit log holds `n`
/// registrations of servers named `{prefix}0`, `{prefix}1`, …; and its data directory.
async fn stopped_with_registrations(prefix: &str, n: usize) -> (TestApp, std::path::PathBuf) {
    let mut app = TestApp::spawn().await;
    for i in 0..n {
        app.register(&format!("{prefix}{i}"), json!({})).await;
    }
    at_least(n, || sqlite_rows(&app.dir.0)).await;
    app.take_running().stop().await.expect("stop");
    let dir = app.dir.0.clone();
    (app, dir)
}

/// `mreg audit verify` (the real binary) on the SQLite database in `dir`, while no gateway runs
/// in this process: its exit code and output.
fn verify_with_the_cli(dir: &Path) -> (Option<i32>, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mreg"))
        .args(["audit", "verify"])
        .env("MREG_DATA_DIR", dir)
        .env("MREG_LOG", "error")
        .output()
        .expect("run mreg");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// Runs `statement` directly on the SQLite database in `dir` (tampering, back-dating).
async fn sqlite_exec(dir: &Path, statement: &'static str) {
    let db = dir.join("mreg.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("open");
    sqlx::query(statement)
        .execute(&pool)
        .await
        .expect("statement");
    pool.close().await;
}

/// `mreg audit verify` (the real binary) on the PostgreSQL database at `url`: its exit code and
/// output.
fn verify_postgres_with_the_cli(url: &str) -> (Option<i32>, String) {
    let dir = TempDir::new();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mreg"))
        .args(["audit", "verify"])
        .env("MREG_DATA_DIR", &dir.0)
        .env("MREG_DATABASE_URL", url)
        .env("MREG_LOG", "error")
        .output()
        .expect("run mreg");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// Every text of a row, for checking that none holds a NUL.
fn texts(row: &AuditRecord) -> Vec<&str> {
    let e = &row.event;
    [
        Some(e.request_id.as_str()),
        Some(e.actor_subject.as_str()),
        e.actor_email.as_deref(),
        e.actor_tenant.as_deref(),
        e.actor_client_id.as_deref(),
        Some(e.operation.as_str()),
        e.tool.as_deref(),
        e.server.as_deref(),
        e.arguments.as_deref(),
        e.error.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

#[tokio::test]
async fn a_nul_byte_in_a_request_does_not_stop_the_audit_log() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let app = TestApp::builder().with_postgres(&db.url).spawn().await;

    // A NUL in the path: the proxied request's row names server "a\0b".
    let ping = json!({ "jsonrpc": "2.0", "id": 1, "method": "ping" });
    let status = proxy_post(&app, "a%00b", "nul-path", ping).await;
    assert!(status.is_client_error(), "{status}");
    // NULs in a REST mutation's JSON body: the description is refused by validation; the
    // metadata reaches PostgreSQL (jsonb refuses \u0000), which is a data error, not a failure
    // of the database. Either way the row of the refused mutation must land.
    let register = |id: &'static str, body: Value| {
        app.http
            .post(app.url("/api/v1/servers"))
            .header("x-request-id", id)
            .json(&body)
            .send()
    };
    let reply = register(
        "nul-description",
        json!({ "name": "nul-d", "url": "https://d.example.com/mcp", "description": "a\u{0}b" }),
    )
    .await
    .expect("request");
    assert_eq!(reply.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let reply = register(
        "nul-metadata",
        json!({ "name": "nul-m", "url": "https://m.example.com/mcp", "metadata": { "note": "a\u{0}b" } }),
    )
    .await
    .expect("request");
    let metadata_refused = (reply.status(), reply.text().await.expect("body"));

    // A normal request afterwards is audited within a few seconds.
    assert_eq!(
        register_as(&app, "after-nul", "after-nul").await,
        StatusCode::CREATED
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let rows = loop {
        let rows = pg_rows(&db.url).await;
        if rows.iter().any(|r| r.event.request_id == "after-nul") {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "the row of a normal request after a NUL-bearing one did not land: {:?}",
            app.get("/readyz").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Every row landed, sanitised: NUL became U+FFFD.
    let ids: Vec<&str> = rows.iter().map(|r| r.event.request_id.as_str()).collect();
    assert_eq!(
        ids,
        ["nul-path", "nul-description", "nul-metadata", "after-nul"]
    );
    assert!(
        rows.iter()
            .all(|r| texts(r).iter().all(|t| !t.contains('\0'))),
        "{rows:?}"
    );
    assert_eq!(rows[0].event.server.as_deref(), Some("a\u{FFFD}b"));
    assert_eq!(args(&rows[1])["description"], "a\u{FFFD}b");
    assert_eq!(rows[1].event.outcome, "error");
    assert_eq!(args(&rows[2])["metadata"]["note"], "a\u{FFFD}b");
    assert_eq!(rows[2].event.outcome, "error");

    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["checks"]["audit"], "ok", "{ready}");
    // The database's refusal of the metadata is the caller's error, not an internal one.
    assert_eq!(
        metadata_refused.0,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        metadata_refused.1
    );
    let (code, out) = verify_postgres_with_the_cli(&db.url);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("intact: 4 rows"), "{out}");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("mreg_audit_rows_quarantined_total 0"),
        "nothing needed quarantining: {metrics}"
    );
    app.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn postgresql_refusing_a_row_as_data_is_told_apart_from_an_outage() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = PgStore::connect(&db.url.clone().into(), 1)
        .await
        .expect("postgres");
    // An event that was not sanitised (only the writer's last line of defence sees these).
    let event = mreg::audit::AuditEvent {
        id: "nul".to_owned(),
        at_us: 1,
        request_id: "r".to_owned(),
        actor_subject: "s".to_owned(),
        actor_email: None,
        actor_tenant: None,
        actor_client_id: None,
        operation: "op".to_owned(),
        tool: None,
        server: Some("a\0b".to_owned()),
        arguments: None,
        decision: "allow".to_owned(),
        outcome: "ok".to_owned(),
        error: None,
        duration_us: 1,
        server_tenant: None,
    };
    let error = store.append(&[event], true).await.expect_err("refused");
    assert_eq!(
        mreg::store::data_error_sqlstate(&error),
        Some("22021"),
        "{error}"
    );
    drop(store);
    db.drop_db().await;
}

/// Runs `statement` on the PostgreSQL database at `url`.
async fn pg_exec(url: &str, statement: &'static str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    sqlx::query(statement)
        .execute(&mut conn)
        .await
        .expect("statement");
}

#[tokio::test]
async fn readyz_fails_while_the_spool_cannot_be_replayed_into_a_database_that_answers() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let app = TestApp::builder().with_postgres(&db.url).spawn().await;
    // The database answers, but cannot take audit rows.
    pg_exec(&db.url, "ALTER TABLE audit_log RENAME TO audit_log_away").await;
    assert_eq!(
        register_as(&app, "stuck", "stuck").await,
        StatusCode::CREATED
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let ready = loop {
        let (status, ready) = app.get("/readyz").await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            break ready;
        }
        assert!(Instant::now() < deadline, "still ready: {ready}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(ready["checks"]["database"], "ok", "{ready}");
    assert!(
        ready["checks"]["audit"]
            .as_str()
            .is_some_and(|a| a.starts_with("replay failing")),
        "{ready}"
    );

    // Fixed: the spool is replayed and the gateway is ready again.
    pg_exec(&db.url, "ALTER TABLE audit_log_away RENAME TO audit_log").await;
    let rows = at_least(1, || pg_rows(&db.url)).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].event.request_id, "stuck");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, ready) = app.get("/readyz").await;
        if status == StatusCode::OK && ready["checks"]["audit"] == "ok" {
            break;
        }
        assert!(Instant::now() < deadline, "not ready again: {ready}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
    db.drop_db().await;
}

/// A streamed answer holds no place in the audit queue while it streams (its row waits for one
/// when it ends), so long streams cannot starve other requests of places; requests that keep
/// their place (tool calls in flight) can, and then the refusal says the queue is saturated —
/// not that the database is unreachable — and `/readyz` says so until places free up.
#[tokio::test]
async fn streams_hold_no_audit_place_and_a_saturated_queue_says_so() {
    let app = Arc::new(
        TestApp::builder()
            .with_config(|c| c.audit.queue = 1)
            .spawn()
            .await,
    );
    let upstream = Upstream::start(true).await;
    app.register("streams", json!({ "url": upstream.url }))
        .await;

    // Three answers streaming for about 2 s each (progress events over SSE) ...
    let mut streams = tokio::task::JoinSet::new();
    for i in 0..3 {
        let app = app.clone();
        streams.spawn(async move {
            let client = crate::support::mcp::connect(
                &format!("http://{}/servers/streams/mcp", app.mcp_addr),
                ProtocolVersion::V_2025_06_18,
            )
            .await;
            let counted = crate::support::mcp::call(
                &client,
                "count",
                json!({ "n": 5, "delay_ms": 400 + i * 10 }),
            )
            .await;
            counted.structured_content
        });
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    // ... and a registration meanwhile is admitted at once.
    let started = Instant::now();
    assert_eq!(
        register_as(&app, "during-streams", "during-streams").await,
        StatusCode::CREATED
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    while let Some(done) = streams.join_next().await {
        assert_eq!(done.expect("stream"), Some(json!({"count": 5})));
    }

    // A tool call in flight on /mcp keeps its place: the one place is taken for 8 s.
    let client = crate::support::mcp::connect(
        &format!("http://{}/mcp", app.mcp_addr),
        ProtocolVersion::V_2025_06_18,
    )
    .await;
    let hanging = tokio::spawn(async move {
        crate::support::mcp::call(
            &client,
            "proxy_request",
            json!({ "server": "streams", "method": "tools/call",
                "params": { "name": "hang", "arguments": { "secs": 8 } } }),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refused = app
        .http
        .post(app.url("/api/v1/servers"))
        .json(&json!({ "name": "starved", "url": "http://127.0.0.1:9/mcp" }))
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"], "audit_unavailable");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("saturated") && !message.contains("unreachable"),
        "{message}"
    );
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert!(
        ready["checks"]["audit"]
            .as_str()
            .is_some_and(|a| a.contains("saturated")),
        "{ready}"
    );
    let (status, _) = app.get("/api/v1/servers/starved").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the refused request did not run"
    );
    hanging.await.expect("the call ends");
    assert_eq!(
        register_as(&app, "after", "after").await,
        StatusCode::CREATED
    );
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{ready}");
}

/// `mreg serve` in `dir` on free ports, with none of mreg's variables inherited; returns the
/// child and the REST API's base URL once `/healthz` answers.
async fn serve_binary(dir: &TempDir) -> (std::process::Child, String) {
    let port = || {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port().to_string()
    };
    let (api, mcp) = (port(), port());
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mreg"));
    command
        .arg("serve")
        .current_dir(&dir.0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for setting in mreg::config::settings::SETTINGS {
        command.env_remove(setting.env);
    }
    command
        .env("MREG_API_PORT", &api)
        .env("FASTMCP_SERVER_PORT", &mcp)
        .env("MREG_HEALTH_ENABLED", "false");
    let mut child = command.spawn().expect("spawn mreg serve");
    let base = format!("http://127.0.0.1:{api}");
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return (child, base);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("mreg serve did not answer /healthz");
}

/// `kill -9` under a stream of registrations: every registration that was answered has its
/// audit row after the restart (rows of changes are kept before the answer), exactly once.
#[tokio::test]
async fn a_killed_gateway_loses_no_audit_row_of_an_answered_change() {
    let dir = TempDir::new();
    let (mut child, base) = serve_binary(&dir).await;
    let answered = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..8 {
        let (base, answered, stop) = (base.clone(), answered.clone(), stop.clone());
        clients.spawn(async move {
            let http = reqwest::Client::new();
            for i in 0.. {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                let id = format!("kill-{client}-{i}");
                let sent = http
                    .post(format!("{base}/api/v1/servers"))
                    .header("x-request-id", &id)
                    .json(&json!({ "name": id, "url": "http://127.0.0.1:9/mcp" }))
                    .send()
                    .await;
                match sent {
                    Ok(reply) if reply.status() == StatusCode::CREATED => {
                        answered.lock().expect("lock").push(id);
                    }
                    // The process is gone: this one was not answered.
                    _ => return,
                }
            }
        });
    }
    // Kill it in the middle of the stream, once some have been answered.
    let deadline = Instant::now() + Duration::from_secs(20);
    while answered.lock().expect("lock").len() < 150 {
        assert!(Instant::now() < deadline, "the load did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().expect("kill -9");
    let _ = child.wait();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    while clients.join_next().await.is_some() {}
    let answered = answered.lock().expect("lock").clone();

    // The next run replays the spool (if the crash left anything there), then stops.
    let (mut child, base) = serve_binary(&dir).await;
    let ready = reqwest::Client::new();
    for _ in 0..100 {
        let body: Value = ready
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("readyz")
            .json()
            .await
            .expect("json");
        if body["checks"]["audit"] == "ok" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let rows = sqlite_rows(&dir.0).await;
    let mut per_request: HashMap<&str, usize> = HashMap::new();
    for row in &rows {
        *per_request
            .entry(row.event.request_id.as_str())
            .or_default() += 1;
    }
    let missing: Vec<&String> = answered
        .iter()
        .filter(|id| per_request.get(id.as_str()) != Some(&1))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} answered registrations have no row (or more than one): {missing:?}",
        missing.len(),
        answered.len()
    );
}

/// Refusals by the rate limit keep the method too: see
/// `policy::a_budget_counts_json_rpc_requests_only`, which needs authentication on.
#[tokio::test]
async fn refused_mcp_requests_keep_their_json_rpc_method_in_the_audit_log() {
    let app = TestApp::spawn().await;
    let upstream = Upstream::start(true).await;
    app.register("off", json!({ "url": upstream.url, "status": "disabled" }))
        .await;
    let echo = |id: usize| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "x"}}})
    };
    assert_eq!(
        proxy_post(&app, "nope", "refused-unknown", echo(1)).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        proxy_post(&app, "off", "refused-disabled", echo(2)).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let rows = until(
        |rows| {
            rows.iter()
                .any(|r| r.event.request_id == "refused-disabled")
        },
        || sqlite_rows(&app.dir.0),
    )
    .await;
    for (request_id, server, decision) in [
        ("refused-unknown", "nope", "allow"),
        ("refused-disabled", "off", "allow"),
    ] {
        let row = rows
            .iter()
            .find(|r| r.event.request_id == request_id)
            .unwrap_or_else(|| panic!("no row for {request_id}"));
        assert_eq!(row.event.operation, "tools/call", "{request_id}: {row:?}");
        assert_eq!(row.event.tool.as_deref(), Some("echo"), "{request_id}");
        assert_eq!(row.event.server.as_deref(), Some(server), "{request_id}");
        assert_eq!(row.event.decision, decision, "{request_id}");
        assert_eq!(row.event.outcome, "error", "{request_id}");
    }
    assert_eq!(
        upstream.count("POST tools/call"),
        0,
        "nothing refused reached the server"
    );
    app.stop().await;
}

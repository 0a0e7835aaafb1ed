//! The health monitor against real MCP servers: probes by protocol version, classified failures,
//! history and uptime, the circuit breaker, the tool catalog, and leases shared by replicas.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::mcp::{call, connect, text};
use crate::support::upstream::{Options, Upstream};
use crate::support::{TestApp, TestAppBuilder, TestDb};

/// Polls the health report of `server` until `done` holds (or fails after `within`).
async fn wait_for(
    app: &TestApp,
    server: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let (status, report) = app.get(&format!("/api/v1/servers/{server}/health")).await;
        assert_eq!(status, StatusCode::OK, "{report}");
        if done(&report) {
            return report;
        }
        assert!(
            started.elapsed() < within,
            "{server} did not reach the expected health: {report}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A gateway whose monitor probes every `interval` (each probe 2 s at most; unhealthy after two
/// failures in a row).
fn monitored(interval: Duration) -> TestAppBuilder {
    TestApp::builder().with_config(move |c| {
        c.health.enabled = true;
        c.health.interval = interval;
        c.health.timeout = Duration::from_secs(2);
        c.health.unhealthy_after = 2;
    })
}

#[tokio::test]
async fn a_server_that_goes_down_and_recovers_shows_it_in_status_and_history() {
    let app = monitored(Duration::from_millis(200)).spawn().await;
    let upstream = Upstream::start(true).await;
    app.register("flaky", json!({ "url": upstream.url })).await;
    let report = wait_for(&app, "flaky", Duration::from_secs(10), |r| {
        r["current"]["status"] == "healthy"
    })
    .await;
    assert_eq!(report["current"]["last_check"]["outcome"], "ok");

    upstream.kill();
    let report = wait_for(&app, "flaky", Duration::from_secs(10), |r| {
        r["current"]["status"] == "unhealthy"
    })
    .await;
    assert_eq!(
        report["current"]["last_check"]["outcome"], "refused",
        "{report}"
    );
    assert!(
        report["current"]["last_check"]["detail"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );
    assert!(report["current"]["consecutive_failures"].as_u64() >= Some(2));

    // The circuit breaker: callers are turned away at once with the reason.
    let started = Instant::now();
    let response = app
        .http
        .post(format!("http://{}/servers/flaky/mcp", app.mcp_addr))
        .header("accept", "application/json, text/event-stream")
        .json(&json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list" }))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("unhealthy"),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));

    let revived = Upstream::start_with(Options {
        addr: upstream.addr,
        ..Options::default()
    })
    .await;
    let report = wait_for(&app, "flaky", Duration::from_secs(15), |r| {
        r["current"]["status"] == "healthy"
    })
    .await;
    let outcomes: Vec<&str> = report["history"]
        .as_array()
        .expect("history")
        .iter()
        .rev()
        .filter_map(|c| c["outcome"].as_str())
        .collect();
    let first_failure = outcomes
        .iter()
        .position(|o| *o == "refused")
        .expect("a failure in the history");
    let recovery = outcomes
        .iter()
        .rposition(|o| *o == "ok")
        .expect("a recovery in the history");
    assert!(
        outcomes[..first_failure].contains(&"ok") && recovery > first_failure,
        "{outcomes:?}"
    );
    let ratio = report["uptime"]["ratio"].as_f64().expect("uptime");
    assert!(ratio > 0.0 && ratio < 1.0, "{ratio}");
    drop(revived);
    app.stop().await;
}

#[tokio::test]
async fn probes_use_discover_for_2026_servers_and_end_the_sessions_of_older_ones() {
    let app = TestApp::spawn().await;
    let modern = Upstream::start(false).await;
    let legacy = Upstream::start_with(Options {
        legacy_only: true,
        ..Options::default()
    })
    .await;
    app.register("modern", json!({ "url": modern.url })).await;
    app.register("legacy", json!({ "url": legacy.url })).await;
    for _ in 0..3 {
        for server in ["modern", "legacy"] {
            let (status, report) = app
                .post(&format!("/api/v1/servers/{server}/health/check"), json!({}))
                .await;
            assert_eq!(status, StatusCode::OK, "{report}");
            assert_eq!(report["current"]["status"], "healthy", "{report}");
        }
    }
    let (_, modern_report) = app.get("/api/v1/servers/modern/health").await;
    assert_eq!(
        modern_report["current"]["last_check"]["protocol_version"],
        "2026-07-28"
    );
    assert_eq!(
        modern.count("POST initialize"),
        0,
        "a 2026 server is probed without a session"
    );
    assert_eq!(modern.count("POST server/discover"), 3);

    let (_, legacy_report) = app.get("/api/v1/servers/legacy/health").await;
    assert_eq!(
        legacy_report["current"]["last_check"]["protocol_version"],
        "2025-11-25"
    );
    assert_eq!(legacy.count("POST initialize"), 3);
    assert_eq!(legacy.count("DELETE"), 3, "every probe session is ended");
    assert_eq!(legacy_report["uptime"]["checks"], 3);
    app.stop().await;
}

#[tokio::test]
async fn probe_failures_are_classified_and_401_counts_as_reachable() {
    let app = TestApp::builder()
        .with_config(|c| c.health.timeout = std::time::Duration::from_secs(1))
        .spawn()
        .await;
    let spawn = |router: axum::Router| async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, router).await });
        addr
    };
    let guarded = spawn(axum::Router::new().route(
        "/mcp",
        axum::routing::post(|| async { StatusCode::UNAUTHORIZED }),
    ))
    .await;
    let broken = spawn(axum::Router::new().route(
        "/mcp",
        axum::routing::post(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
    ))
    .await;
    let not_mcp = spawn(axum::Router::new().route(
        "/mcp",
        axum::routing::post(|| async { "<html>hello</html>" }),
    ))
    .await;
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");

    for (name, url, status, outcome) in [
        (
            "guarded",
            format!("http://{guarded}/mcp"),
            "healthy",
            "auth_required",
        ),
        ("broken", format!("http://{broken}/mcp"), "degraded", "http"),
        (
            "not-mcp",
            format!("http://{not_mcp}/mcp"),
            "degraded",
            "protocol",
        ),
        (
            "silent",
            format!("http://{silent_addr}/mcp"),
            "degraded",
            "timeout",
        ),
        (
            "closed",
            format!("http://{closed}/mcp"),
            "degraded",
            "refused",
        ),
        ("tls", format!("https://{not_mcp}/mcp"), "degraded", "tls"),
    ] {
        app.register(name, json!({ "url": url })).await;
        let (code, report) = app
            .post(&format!("/api/v1/servers/{name}/health/check"), json!({}))
            .await;
        assert_eq!(code, StatusCode::OK, "{report}");
        assert_eq!(report["current"]["status"], status, "{name}: {report}");
        assert_eq!(
            report["current"]["last_check"]["outcome"], outcome,
            "{name}: {report}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn successful_probes_fill_the_tool_catalog_with_health_for_rest_and_mcp() {
    let app = TestApp::spawn().await;
    let up = Upstream::start(true).await;
    app.register("alive", json!({ "url": up.url })).await;
    app.register("dead", json!({ "url": "http://127.0.0.1:9/mcp" }))
        .await;
    let (_, unprobed) = app.get("/api/v1/tools?q=echo").await;
    assert_eq!(
        unprobed["tools"],
        json!([]),
        "nothing is known before a probe"
    );
    for server in ["alive", "dead", "dead", "dead"] {
        app.post(&format!("/api/v1/servers/{server}/health/check"), json!({}))
            .await;
    }
    let (status, found) = app.get("/api/v1/tools?q=ECHO").await;
    assert_eq!(status, StatusCode::OK);
    let hits = found["tools"].as_array().expect("tools");
    assert_eq!(hits.len(), 1, "{found}");
    assert_eq!(hits[0]["server"], "alive");
    assert_eq!(hits[0]["health"], "healthy");
    assert_eq!(hits[0]["tool"]["name"], "echo");
    assert_eq!(
        hits[0]["tool"]["input_schema"]["properties"]["text"]["type"],
        "string"
    );
    let (_, none) = app.get("/api/v1/tools?q=echo&health=unhealthy").await;
    assert_eq!(none["tools"], json!([]));
    let (status, error) = app.get("/api/v1/tools?health=sickly").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["field"], "health");

    let (_, healthy) = app.get("/api/v1/servers?health=healthy").await;
    assert_eq!(healthy["servers"].as_array().map(Vec::len), Some(1));
    assert_eq!(healthy["servers"][0]["name"], "alive");
    let (_, unhealthy) = app.get("/api/v1/servers?health=unhealthy").await;
    assert_eq!(unhealthy["servers"][0]["name"], "dead");
    app.register("never-probed", json!({})).await;
    let (status, first) = app.get("/api/v1/servers?sort=health&limit=2").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let names = |page: &Value| -> Vec<String> {
        page["servers"]
            .as_array()
            .map(|s| {
                s.iter()
                    .map(|s| s["name"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(names(&first), ["alive", "never-probed"]);
    let cursor = first["next_cursor"].as_str().expect("another page");
    let (_, second) = app
        .get(&format!(
            "/api/v1/servers?sort=health&limit=2&cursor={cursor}"
        ))
        .await;
    assert_eq!(names(&second), ["dead"], "unhealthy last");
    let (status, error) = app.get(&format!("/api/v1/servers?cursor={cursor}")).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a health cursor does not continue a name-ordered list"
    );
    assert_eq!(error["field"], "cursor");
    let (status, error) = app.get("/api/v1/servers?sort=mood").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["field"], "sort");

    let client = connect(
        &format!("http://{}/mcp", app.mcp_addr),
        rmcp::model::ProtocolVersion::V_2025_11_25,
    )
    .await;
    let searched = call(&client, "search_tools", json!({ "query": "progress" })).await;
    assert!(
        text(&searched).contains("- count on alive (healthy)"),
        "{}",
        text(&searched)
    );
    let health = call(&client, "get_server_health", json!({ "name": "dead" })).await;
    assert!(
        text(&health).starts_with("dead is unhealthy; last probe refused"),
        "{}",
        text(&health)
    );
    assert_eq!(
        health
            .structured_content
            .map(|v| v["uptime"]["checks"].clone()),
        Some(json!(3))
    );
    let listed = call(&client, "list_servers", json!({ "health": "healthy" })).await;
    assert!(text(&listed).contains("- alive"), "{}", text(&listed));
    assert!(!text(&listed).contains("- dead"), "{}", text(&listed));
    client.cancel().await.expect("close");

    app.patch("/api/v1/servers/alive", json!({ "status": "disabled" }))
        .await;
    let (_, hidden) = app.get("/api/v1/tools?q=echo").await;
    assert_eq!(
        hidden["tools"],
        json!([]),
        "a disabled server's tools are not offered"
    );
    app.stop().await;
}

#[tokio::test]
async fn two_instances_on_one_database_probe_each_server_once_per_interval() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let upstreams = [
        Upstream::start(false).await,
        Upstream::start(false).await,
        Upstream::start(false).await,
    ];
    let interval_ms: u64 = 400;
    let replica = |id: &'static str| {
        monitored(Duration::from_millis(interval_ms))
            .with_postgres(&db.url)
            .with_config(move |c| c.instance_id = id.to_owned())
    };
    let a = replica("replica-a").spawn().await;
    let b = replica("replica-b").spawn().await;
    for (i, upstream) in upstreams.iter().enumerate() {
        a.register(&format!("shared-{i}"), json!({ "url": upstream.url }))
            .await;
    }
    // At least six intervals, and until both instances have taken a lease: which one wins each
    // lease is up to the jitter, so over six intervals one of them may win all (seen on CI).
    let started = Instant::now();
    let checkers = sqlx::PgPool::connect(&db.url).await.expect("connect");
    loop {
        tokio::time::sleep(Duration::from_millis(interval_ms)).await;
        let by: Vec<(String,)> =
            sqlx::query_as("SELECT DISTINCT checked_by FROM health_checks ORDER BY 1")
                .fetch_all(&checkers)
                .await
                .expect("instances");
        if by.len() == 2 && started.elapsed() >= Duration::from_millis(interval_ms * 6) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "both instances take part within 30 s: {by:?}"
        );
    }
    checkers.close().await;
    let intervals = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX) / interval_ms;
    let (_, report) = b.get("/api/v1/servers/shared-0/health").await;
    a.stop().await;
    b.stop().await;
    assert_eq!(report["current"]["status"], "healthy", "{report}");

    let mut instances = std::collections::BTreeSet::new();
    for i in 0..upstreams.len() {
        let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
        let rows: Vec<(time::OffsetDateTime, String)> = sqlx::query_as(
            "SELECT c.checked_at, c.checked_by FROM health_checks c JOIN servers s ON s.id = c.server_id \
             WHERE s.name = $1 ORDER BY c.checked_at",
        )
        .bind(format!("shared-{i}"))
        .fetch_all(&pool)
        .await
        .expect("history");
        pool.close().await;
        assert!(
            rows.len() >= 3,
            "shared-{i} was probed {} times",
            rows.len()
        );
        assert!(
            rows.len() as u64 <= intervals + 2,
            "shared-{i} was probed {} times in {intervals} intervals",
            rows.len()
        );
        for pair in rows.windows(2) {
            let gap = (pair[1].0 - pair[0].0).whole_milliseconds();
            assert!(
                gap >= i128::from(interval_ms) / 2,
                "shared-{i} was probed twice within {gap} ms: {rows:?}"
            );
        }
        instances.extend(rows.into_iter().map(|(_, by)| by));
    }
    assert_eq!(
        instances.into_iter().collect::<Vec<_>>(),
        ["replica-a", "replica-b"],
        "both instances took part"
    );
    db.drop_db().await;
}

/// Half-open breaker: a call to an unhealthy server that has come back triggers a probe, so
/// calls go through again at once rather than after the monitor's back-off (here the monitor is
/// off altogether: only traffic can revive the server).
#[tokio::test]
async fn traffic_to_an_unhealthy_server_that_came_back_probes_it_and_goes_through() {
    let app = TestApp::builder()
        .with_config(|c| c.health.unhealthy_after = 1)
        .spawn()
        .await;
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    app.register("phoenix", json!({ "url": format!("http://{addr}/mcp") }))
        .await;
    let (_, report) = app
        .post("/api/v1/servers/phoenix/health/check", json!({}))
        .await;
    assert_eq!(report["current"]["status"], "unhealthy", "{report}");
    let _revived = Upstream::start_with(Options {
        addr,
        ..Options::default()
    })
    .await;
    let send = || {
        app.http
            .post(format!("http://{}/servers/phoenix/mcp", app.mcp_addr))
            .header("accept", "application/json, text/event-stream")
            .json(
                &json!({ "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": { "name": "t", "version": "0" } } }),
            )
            .send()
    };
    let first = send().await.expect("send");
    assert_eq!(
        first.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "still marked unhealthy"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = send().await.expect("send").status();
        if status == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server stayed shut off: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, report) = app.get("/api/v1/servers/phoenix/health").await;
    assert_eq!(report["current"]["status"], "healthy", "{report}");
    app.stop().await;
}

/// The `health` object of a server as REST shows it.
async fn rest_health(app: &TestApp, name: &str) -> Value {
    let (status, server) = app.get(&format!("/api/v1/servers/{name}")).await;
    assert_eq!(status, StatusCode::OK, "{server}");
    server["health"].clone()
}

#[tokio::test]
async fn a_servers_health_travels_with_it_through_rest_the_registry_api_and_the_mcp_tools() {
    let app = monitored(Duration::from_millis(200)).spawn().await;
    let upstream = Upstream::start(true).await;
    let created = app.register("flaky", json!({ "url": upstream.url })).await;
    assert!(
        ["unknown", "healthy"].contains(&created["health"]["state"].as_str().unwrap_or("")),
        "a new server carries its health from the start: {created}"
    );
    let gateway_url = format!("http://{}/servers/flaky/mcp", app.mcp_addr);
    assert_eq!(created["gateway_url"], gateway_url.as_str(), "{created}");
    wait_for(&app, "flaky", Duration::from_secs(10), |r| {
        r["current"]["status"] == "healthy"
    })
    .await;

    let health = rest_health(&app, "flaky").await;
    assert_eq!(health["state"], "healthy", "{health}");
    assert_eq!(health["reason"], "answered as an MCP server", "{health}");
    assert_eq!(health["last_probe"]["outcome"], "ok", "{health}");
    assert!(health["last_probe"]["latency_ms"].is_u64(), "{health}");
    let healthy_since = health["since"].as_str().expect("since").to_owned();
    let (_, list) = app.get("/api/v1/servers").await;
    assert_eq!(list["servers"][0]["health"]["state"], "healthy", "{list}");
    assert_eq!(list["servers"][0]["gateway_url"], gateway_url.as_str());
    let (_, official) = app.get("/v0.1/servers").await;
    assert_eq!(
        official["servers"][0]["_meta"]["io.github.mreg/server"]["health"]["state"], "healthy",
        "{official}"
    );

    let client = connect(
        &format!("http://{}/mcp", app.mcp_addr),
        rmcp::model::ProtocolVersion::V_2025_06_18,
    )
    .await;
    let listed = call(&client, "list_servers", json!({})).await;
    let structured = listed.structured_content.clone().expect("structured");
    assert_eq!(structured["servers"][0]["health"]["state"], "healthy");
    assert!(
        text(&listed).contains("health healthy"),
        "{}",
        text(&listed)
    );
    let got = call(&client, "get_server", json!({ "name": "flaky" })).await;
    let structured = got.structured_content.clone().expect("structured");
    assert_eq!(structured["health"]["state"], "healthy", "{structured}");
    assert_eq!(structured["gateway_url"], gateway_url.as_str());
    assert!(text(&got).contains(&gateway_url), "{}", text(&got));

    upstream.kill();
    let report = wait_for(&app, "flaky", Duration::from_secs(10), |r| {
        r["current"]["status"] == "unhealthy"
    })
    .await;
    let health = rest_health(&app, "flaky").await;
    assert_eq!(health["state"], "unhealthy", "{health}");
    assert_eq!(health["last_probe"]["outcome"], "refused", "{health}");
    assert!(
        health["reason"]
            .as_str()
            .is_some_and(|r| r.contains("failed probe(s) in a row")),
        "{health}"
    );
    // Unhealthy since the second failure in a row (MREG_HEALTH_UNHEALTHY_AFTER=2).
    let failures: Vec<&Value> = report["history"]
        .as_array()
        .expect("history")
        .iter()
        .take_while(|c| c["outcome"] != "ok")
        .collect();
    let second = failures[failures.len() - 2]["checked_at"].clone();
    assert_eq!(health["since"], second, "{health} {report}");
    let parse = |t: &str| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .expect("RFC 3339")
    };
    assert!(
        parse(health["since"].as_str().unwrap_or("")) > parse(&healthy_since),
        "{health}"
    );
    let _ = client.cancel().await;
    app.stop().await;
}

#[tokio::test]
async fn metrics_show_each_servers_health_and_its_calls_errors_and_latency_per_tool() {
    let app = monitored(Duration::from_millis(200)).spawn().await;
    let upstream = Upstream::start(true).await;
    app.register("metered", json!({ "url": upstream.url }))
        .await;
    wait_for(&app, "metered", Duration::from_secs(10), |r| {
        r["current"]["status"] == "healthy"
    })
    .await;
    let client = connect(
        &format!("http://{}/servers/metered/mcp", app.mcp_addr),
        rmcp::model::ProtocolVersion::V_2025_06_18,
    )
    .await;
    for text in ["one", "two"] {
        let echoed = call(&client, "echo", json!({ "text": text })).await;
        assert_eq!(echoed.is_error, Some(false));
    }
    let _ = client.cancel().await;
    let metrics = app.metrics().await;
    let line = |prefix: &str| metric_line(&metrics, prefix);
    assert!(
        line(r#"mreg_server_health{server="metered",state="healthy"}"#).ends_with(" 1"),
        "{metrics}"
    );
    assert!(
        line(r#"mreg_server_health{server="metered",state="unhealthy"}"#).ends_with(" 0"),
        "{metrics}"
    );
    assert!(
        line(
            r#"mreg_server_calls_total{server="metered",method="tools/call",tool="echo",outcome="ok"}"#
        )
        .ends_with(" 2"),
        "{metrics}"
    );
    assert!(
        line(
            r#"mreg_server_call_duration_seconds_count{server="metered",method="tools/call",tool="echo"}"#
        )
        .ends_with(" 2"),
        "{metrics}"
    );
    line(r#"mreg_server_calls_total{server="metered",method="initialize",tool="",outcome="ok"}"#);

    // A server that is down: its calls fail, and the gauge follows the monitor.
    upstream.kill();
    wait_for(&app, "metered", Duration::from_secs(10), |r| {
        r["current"]["status"] == "unhealthy"
    })
    .await;
    let response = app
        .http
        .post(format!("http://{}/servers/metered/mcp", app.mcp_addr))
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "x"}}}))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let metrics = app.metrics().await;
    let line = |prefix: &str| metric_line(&metrics, prefix);
    assert!(
        line(r#"mreg_server_health{server="metered",state="unhealthy"}"#).ends_with(" 1"),
        "{metrics}"
    );
    assert!(
        line(r#"mreg_server_call_errors_total{server="metered",method="tools/call",tool="echo"}"#)
            .ends_with(" 1"),
        "{metrics}"
    );
    assert!(
        line(
            r#"mreg_server_calls_total{server="metered",method="tools/call",tool="echo",outcome="error"}"#
        )
        .ends_with(" 1"),
        "{metrics}"
    );

    // A name nobody registered makes no series, whoever calls it; a deleted server's health
    // series goes with it.
    let unknown = app
        .http
        .post(format!("http://{}/servers/nosuch/mcp", app.mcp_addr))
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "secret_tool", "arguments": {}}}))
        .send()
        .await
        .expect("answered");
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let (status, _) = app.delete("/api/v1/servers/metered").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let metrics = app.metrics().await;
    assert!(
        !metrics.contains(r#"server="nosuch""#) && !metrics.contains("secret_tool"),
        "{metrics}"
    );
    assert!(
        !metrics.contains(r#"mreg_server_health{server="metered""#),
        "{metrics}"
    );
    app.stop().await;
}

/// Probes on demand: a burst of concurrent `POST …/health/check` makes one probe (the others wait
/// for it and share its result), and a disabled server is not probed at all.
#[tokio::test]
async fn a_burst_of_checks_makes_one_probe_and_a_disabled_server_none() {
    let app = std::sync::Arc::new(
        TestApp::builder()
            .with_config(|c| c.health.enabled = false)
            .spawn()
            .await,
    );
    let upstream = Upstream::start(false).await;
    app.register("burst", json!({ "url": upstream.url })).await;
    let mut checks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let app = app.clone();
        checks.spawn(async move {
            app.post("/api/v1/servers/burst/health/check", json!({}))
                .await
                .0
        });
    }
    while let Some(status) = checks.join_next().await {
        assert_eq!(status.expect("task"), StatusCode::OK);
    }
    // Every request a probe makes (discover or initialize, then tools/list) is a POST.
    let posts = || -> usize {
        upstream
            .requests
            .lock()
            .map(|counts| {
                counts
                    .iter()
                    .filter(|(key, _)| key.starts_with("POST"))
                    .map(|(_, n)| *n)
                    .sum()
            })
            .unwrap_or(0)
    };
    let one = {
        let before = posts();
        let (status, _) = app
            .post("/api/v1/servers/burst/health/check", json!({}))
            .await;
        assert_eq!(status, StatusCode::OK);
        posts() - before
    };
    let probes = (posts() - one) / one.max(1);
    assert!(
        (1..=6).contains(&probes),
        "20 concurrent checks made {probes} probes ({one} requests each)"
    );

    let (status, body) = app
        .patch("/api/v1/servers/burst", json!({ "status": "disabled" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let before = posts();
    let (status, body) = app
        .post("/api/v1/servers/burst/health/check", json!({}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("disabled")),
        "{body}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(posts(), before, "no request reached the disabled server");
}

/// The line of `metrics` that starts with `prefix` (a series and its labels).
fn metric_line(metrics: &str, prefix: &str) -> String {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("{prefix} missing: {metrics}"))
}

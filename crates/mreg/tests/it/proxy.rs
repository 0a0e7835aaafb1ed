//! `/servers/{name}/mcp`: real MCP servers behind the gateway, reached by the official Rust SDK
//! client and by plain HTTP where the test must see the wire.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use rmcp::model::ProtocolVersion;
use serde_json::{Value, json};

use crate::support::TestApp;
use crate::support::mcp::{call, connect, text};
use crate::support::upstream::Upstream;

const ACCEPT: &str = "application/json, text/event-stream";

fn initialize(version: &str) -> Value {
    json!({ "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": {}, "clientInfo": { "name": "raw-test", "version": "0" } } })
}

/// One POST through the gateway; returns status, session header and body text.
async fn post(
    app: &TestApp,
    server: &str,
    session: Option<&str>,
    body: &Value,
) -> (StatusCode, Option<String>, String) {
    let mut request = app
        .http
        .post(format!("http://{}/servers/{server}/mcp", app.mcp_addr))
        .header("accept", ACCEPT)
        .json(body);
    if let Some(session) = session {
        request = request
            .header("mcp-session-id", session)
            .header("mcp-protocol-version", "2025-11-25");
    }
    let response = request.send().await.expect("send");
    let status = response.status();
    let session = response
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, session, response.text().await.expect("body"))
}

/// The JSON-RPC messages in a JSON or SSE body.
fn messages(body: &str) -> Vec<Value> {
    if let Ok(value) = serde_json::from_str::<Value>(body) {
        return vec![value];
    }
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str(d.trim()).ok())
        .collect()
}

/// Opens a session through the gateway and returns the gateway's session token.
async fn open_session(app: &TestApp, server: &str) -> String {
    let (status, session, body) = post(app, server, None, &initialize("2025-11-25")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let session = session.expect("a session token");
    let (status, _, _) = post(
        app,
        server,
        Some(&session),
        &json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    session
}

/// One POST in `session` through the gateway, its answer unread (to watch it arrive).
async fn send_in_session(
    app: &TestApp,
    server: &str,
    session: &str,
    body: &Value,
) -> reqwest::Response {
    app.http
        .post(format!("http://{}/servers/{server}/mcp", app.mcp_addr))
        .header("accept", ACCEPT)
        .header("mcp-session-id", session)
        .header("mcp-protocol-version", "2025-11-25")
        .json(body)
        .send()
        .await
        .expect("send")
}

/// Opens the server-to-client event stream (`GET`) of a session through the gateway.
async fn open_stream(app: &TestApp, server: &str, session: &str) -> reqwest::Response {
    let stream = app
        .http
        .get(format!("http://{}/servers/{server}/mcp", app.mcp_addr))
        .header("accept", "text/event-stream")
        .header("mcp-session-id", session)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .expect("a GET stream");
    assert_eq!(stream.status(), StatusCode::OK);
    stream
}

/// The audit row of the call of `tool` (waits for the writer, at most 15 s).
async fn audit_row_of(app: &TestApp, tool: &str) -> domain::audit::AuditRecord {
    let of_tool = |r: &domain::audit::AuditRecord| r.event.tool.as_deref() == Some(tool);
    let rows = crate::support::audit::until(
        |rows| rows.iter().any(of_tool),
        || crate::support::audit::sqlite_rows(&app.dir.0),
    )
    .await;
    rows.into_iter()
        .find(of_tool)
        .unwrap_or_else(|| panic!("no audit row for the call of {tool}"))
}

async fn whoami(app: &TestApp, server: &str, session: Option<&str>) -> (StatusCode, Value) {
    let (status, _, body) = post(app, server, session, &json!({ "jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": { "name": "whoami", "arguments": {} } })).await;
    let structured = messages(&body)
        .into_iter()
        .find(|m| m["id"] == 9)
        .map(|m| {
            if m.get("error").is_some() {
                m
            } else {
                m["result"]["structuredContent"].clone()
            }
        })
        .unwrap_or(Value::Null);
    (status, structured)
}

#[tokio::test]
async fn tool_calls_pass_through_on_every_protocol_version_to_stateful_and_stateless_servers() {
    let app = TestApp::spawn().await;
    let stateful = Upstream::start(true).await;
    let stateless = Upstream::start(false).await;
    app.register("stateful", json!({ "url": stateful.url }))
        .await;
    app.register("stateless", json!({ "url": stateless.url }))
        .await;
    for server in ["stateful", "stateless"] {
        for version in [
            ProtocolVersion::V_2025_06_18,
            ProtocolVersion::V_2025_11_25,
            ProtocolVersion::V_2026_07_28,
        ] {
            let client = connect(
                &format!("http://{}/servers/{server}/mcp", app.mcp_addr),
                version.clone(),
            )
            .await;
            assert_eq!(
                client.peer_info().map(|p| p.protocol_version.clone()),
                Some(version.clone())
            );
            assert_eq!(
                client
                    .peer_info()
                    .and_then(|p| p.server_info.clone())
                    .map(|i| i.name),
                Some("test-upstream".to_owned()),
                "the upstream answers, not the gateway"
            );
            let tools = client.list_all_tools().await.expect("tools/list");
            assert!(tools.iter().any(|t| t.name == "echo"), "{server} {version}");
            let echoed = call(
                &client,
                "echo",
                json!({ "text": format!("hi {server} {version}") }),
            )
            .await;
            assert_eq!(text(&echoed), format!("hi {server} {version}"));
            let unknown = client
                .call_tool(rmcp::model::CallToolRequestParams::new("nope"))
                .await;
            assert!(
                unknown.is_err() || unknown.as_ref().is_ok_and(|r| r.is_error == Some(true)),
                "{unknown:?}"
            );
            client.cancel().await.expect("close");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn upstream_sessions_are_sealed_bound_and_never_shared() {
    let app = TestApp::spawn().await;
    let upstream = Upstream::start(true).await;
    app.register("up", json!({ "url": upstream.url })).await;
    app.register("same-upstream", json!({ "url": upstream.url }))
        .await;

    let first = open_session(&app, "up").await;
    let second = open_session(&app, "up").await;
    let (_, first_seen) = whoami(&app, "up", Some(&first)).await;
    let (_, second_seen) = whoami(&app, "up", Some(&second)).await;
    let (raw_first, raw_second) = (
        first_seen["session"].as_str().expect("session"),
        second_seen["session"].as_str().expect("session"),
    );
    assert_ne!(raw_first, "none");
    assert_ne!(
        raw_first, raw_second,
        "two clients get two upstream sessions"
    );
    assert!(
        !first.contains(raw_first),
        "the upstream session id is not exposed"
    );

    let (status, error) = whoami(&app, "up", Some(raw_first)).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a raw upstream id is not accepted: {error}"
    );
    assert_eq!(error["error"]["code"], -32001);
    let (status, _) = whoami(&app, "same-upstream", Some(&first)).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a token for one server does not open another"
    );
    let mut forged = first.clone();
    forged.replace_range(10..11, if &forged[10..11] == "A" { "B" } else { "A" });
    let (status, _) = whoami(&app, "up", Some(&forged)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a forged token is refused");

    let response = app
        .http
        .delete(format!("http://{}/servers/up/mcp", app.mcp_addr))
        .header("mcp-session-id", &first)
        .send()
        .await
        .expect("delete");
    assert!(response.status().is_success(), "{}", response.status());
    let (status, _) = whoami(&app, "up", Some(&first)).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the ended upstream session is gone"
    );
    let (status, still) = whoami(&app, "up", Some(&second)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        still["session"], raw_second,
        "the other client's session is untouched"
    );
    app.stop().await;
}

#[tokio::test]
async fn upstream_credentials_reach_the_upstream_and_the_callers_authorization_does_not() {
    let app = TestApp::spawn().await;
    let upstream = Upstream::start(false).await;
    app.register(
        "keyed",
        json!({ "url": upstream.url, "upstream_headers": { "X-Api-Key": "k-123" } }),
    )
    .await;
    let response = app
        .http
        .post(format!("http://{}/servers/keyed/mcp", app.mcp_addr))
        .header("accept", ACCEPT)
        .header("authorization", "Bearer the-callers-token")
        .header("x-api-key", "callers-attempt")
        .json(&json!({ "jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": { "name": "whoami", "arguments": {} } }))
        .send()
        .await
        .expect("send");
    let body = response.text().await.expect("body");
    let seen = messages(&body)
        .into_iter()
        .find(|m| m["id"] == 9)
        .expect("answer")["result"]["structuredContent"]
        .clone();
    assert_eq!(seen["api_key"], "k-123");
    assert_eq!(seen["authorization"], "none", "no token passthrough");
    app.stop().await;
}

#[tokio::test]
async fn sse_answers_stream_through_as_they_are_produced() {
    let app = TestApp::spawn().await;
    let upstream = Upstream::start(true).await;
    app.register("streamer", json!({ "url": upstream.url }))
        .await;
    let session = open_session(&app, "streamer").await;
    let started = Instant::now();
    let call = json!({ "jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {
        "name": "count", "arguments": { "n": 3, "delay_ms": 400 }, "_meta": { "progressToken": "p1" } } });
    let mut response = send_in_session(&app, "streamer", &session, &call).await;
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/event-stream")
    );
    let (mut first_progress, mut result_at, mut seen) = (None, None, String::new());
    while let Some(chunk) = response.chunk().await.expect("chunk") {
        seen.push_str(&String::from_utf8_lossy(&chunk));
        if first_progress.is_none() && seen.contains("notifications/progress") {
            first_progress = Some(started.elapsed());
        }
        if seen.contains("counted 3") {
            result_at = Some(started.elapsed());
            break;
        }
    }
    let (first_progress, result_at) = (
        first_progress.expect("progress arrived"),
        result_at.expect("result arrived"),
    );
    assert!(
        result_at - first_progress >= Duration::from_millis(600),
        "the first progress event reached the client before the upstream finished ({first_progress:?} vs {result_at:?})"
    );
    assert_eq!(
        messages(&seen)
            .iter()
            .filter(|m| m["method"] == "notifications/progress")
            .count(),
        3
    );
    // The audit row is completed when the stream ends: its duration covers the whole stream.
    let row = audit_row_of(&app, "count").await;
    assert_eq!(row.event.outcome, "ok", "{row:?}");
    assert!(row.event.duration_us >= 1_000_000, "{row:?}");
    app.stop().await;
}

/// An SSE answer whose first message is the response reaches a client that takes JSON as JSON,
/// so that the official Python SDK client, which closes an event stream as soon as its response
/// has come (and so its connection), keeps one connection for all its calls.
#[tokio::test]
async fn a_single_sse_answer_reaches_the_client_as_json_and_the_python_sdk_keeps_its_connection() {
    let app = TestApp::spawn().await;
    let upstream = Upstream::start(true).await;
    app.register("sse", json!({ "url": upstream.url })).await;
    let session = open_session(&app, "sse").await;
    let answer = send_in_session(
        &app,
        "sse",
        &session,
        &json!({ "jsonrpc": "2.0", "id": 9, "method": "tools/call",
            "params": { "name": "echo", "arguments": { "text": "hi" } } }),
    )
    .await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(
        answer.headers()["content-type"],
        "application/json",
        "{:?}",
        answer.headers()
    );
    assert!(
        answer.headers().contains_key("content-length"),
        "{:?}",
        answer.headers()
    );
    let body: Value = answer.json().await.expect("one JSON message");
    assert_eq!(body["id"], 9, "{body}");
    assert_eq!(body["result"]["content"][0]["text"], "hi", "{body}");
    let row = audit_row_of(&app, "echo").await;
    assert_eq!(row.event.outcome, "ok", "{row:?}");
    // A call that takes longer than a second is relayed as a stream, whose headers (and
    // keep-alive comments) come at once.
    let started = Instant::now();
    let slow = send_in_session(
        &app,
        "sse",
        &session,
        &json!({ "jsonrpc": "2.0", "id": 10, "method": "tools/call",
            "params": { "name": "count", "arguments": { "n": 1, "delay_ms": 2500 } } }),
    )
    .await;
    let headers_after = started.elapsed();
    assert!(
        headers_after < Duration::from_millis(2000),
        "headers after {headers_after:?}"
    );
    assert!(
        slow.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/event-stream"),
        "{:?}",
        slow.headers()
    );
    let streamed = slow.text().await.expect("answer");
    assert!(
        messages(&streamed)
            .iter()
            .any(|m| m["id"] == 10 && m["result"]["structuredContent"]["count"] == 1),
        "{streamed}"
    );

    let Some(python) = crate::support::peers::python_peers() else {
        return;
    };
    let door = crate::support::ChaosProxy::start(app.mcp_addr).await;
    let url = format!("http://{}/servers/sse/mcp", door.addr);
    let (ok, bench) = crate::support::peers::py_client(
        &python,
        &url,
        &["--mode", "legacy"],
        &[
            "bench",
            "echo",
            r#"{"text":"hi"}"#,
            "--calls",
            "20",
            "--warmup",
            "0",
        ],
    )
    .await;
    assert!(ok, "{bench}");
    assert_eq!(bench["calls"], 20, "{bench}");
    // The session's POSTs share a connection; its GET stream holds one more.
    let accepted = door.accepted.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        accepted <= 4,
        "the Python SDK client opened {accepted} connections for 20 calls"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_upstream_killed_mid_call_fails_that_call_clearly_and_the_next_one_fast() {
    let app = TestApp::spawn().await;
    let upstream = Upstream::start(true).await;
    app.register("fragile", json!({ "url": upstream.url }))
        .await;
    let session = open_session(&app, "fragile").await;
    let pending = {
        let (http, url, session) = (
            app.http.clone(),
            format!("http://{}/servers/fragile/mcp", app.mcp_addr),
            session.clone(),
        );
        tokio::spawn(async move {
            let response = http
                .post(url)
                .header("accept", ACCEPT)
                .header("mcp-session-id", session)
                .header("mcp-protocol-version", "2025-11-25")
                .json(&json!({ "jsonrpc": "2.0", "id": 77, "method": "tools/call", "params": { "name": "hang", "arguments": { "secs": 60 } } }))
                .send()
                .await
                .expect("send");
            response.text().await.unwrap_or_default()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    upstream.kill();
    let body = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("the pending call ends instead of hanging")
        .expect("task");
    let answer = messages(&body)
        .into_iter()
        .find(|m| m["id"] == 77)
        .expect("an answer for the pending call");
    assert_eq!(answer["error"]["code"], -32000, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("fragile"),
        "{answer}"
    );

    let started = Instant::now();
    let (status, _, body) = post(&app, "fragile", None, &initialize("2025-11-25")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("cannot be reached"), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a dead upstream fails fast"
    );
    // The streamed call's audit row says that it failed, and why.
    let row = audit_row_of(&app, "hang").await;
    assert_eq!(row.event.outcome, "error", "{row:?}");
    assert!(
        row.event
            .error
            .as_deref()
            .is_some_and(|e| e.contains("server 'fragile'") && e.contains("before answering")),
        "{row:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_slow_upstream_times_out_with_504_after_its_own_timeout() {
    let app = TestApp::spawn().await;
    let upstream = Upstream::start(false).await;
    app.register("slow", json!({ "url": upstream.url, "timeout_secs": 1 }))
        .await;
    let started = Instant::now();
    let (status, _, body) = post(&app, "slow", None, &json!({ "jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": { "name": "hang", "arguments": { "secs": 5 } } })).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    let error: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(error["id"], 3);
    assert_eq!(
        error["error"]["message"],
        "server 'slow' did not answer within 1 s"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    app.stop().await;
}

#[tokio::test]
async fn bad_messages_and_bad_targets_get_clear_json_rpc_errors() {
    let app = TestApp::spawn().await;
    let upstream = Upstream::start(true).await;
    app.register("target", json!({ "url": upstream.url })).await;
    app.register("off", json!({ "url": upstream.url, "status": "disabled" }))
        .await;
    app.register("nobody-home", json!({ "url": "http://127.0.0.1:9/mcp" }))
        .await;
    let plain_as_tls = upstream.url.replace("http://", "https://");
    app.register("wrong-tls", json!({ "url": plain_as_tls }))
        .await;
    let url = format!("http://{}/servers/target/mcp", app.mcp_addr);
    let raw = |body: &'static str| {
        app.http
            .post(&url)
            .header("accept", ACCEPT)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let response = raw("{not json").await.expect("send");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["error"]["code"], -32700);

    let response = raw(r#"{"id":1,"method":"tools/list"}"#)
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.json::<Value>().await.expect("json")["error"]["code"],
        -32600
    );

    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{{"pad":"{}"}}}}"#,
        "x".repeat(5 * 1024 * 1024)
    );
    let response = app
        .http
        .post(&url)
        .header("accept", ACCEPT)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let response = app
        .http
        .post(&url)
        .header("accept", ACCEPT)
        .header("mcp-method", "tools/list")
        .json(&json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": { "name": "echo" } }))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.json::<Value>().await.expect("json")["error"]["code"],
        -32020
    );

    let session = open_session(&app, "target").await;
    let (status, _, body) = post(
        &app,
        "target",
        Some(&session),
        &json!({ "jsonrpc": "2.0", "id": 4, "method": "no/such/method" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer = messages(&body)
        .into_iter()
        .find(|m| m["id"] == 4)
        .expect("answer");
    assert_eq!(
        answer["error"]["code"], -32601,
        "the upstream's own error passes through: {answer}"
    );

    for (server, expected, fragment) in [
        (
            "unregistered",
            StatusCode::NOT_FOUND,
            "no server named 'unregistered'",
        ),
        ("off", StatusCode::SERVICE_UNAVAILABLE, "disabled"),
        ("nobody-home", StatusCode::BAD_GATEWAY, "cannot be reached"),
        ("wrong-tls", StatusCode::BAD_GATEWAY, "cannot be reached"),
    ] {
        let (status, _, body) = post(&app, server, None, &initialize("2025-11-25")).await;
        assert_eq!(status, expected, "{server}: {body}");
        assert!(body.contains(fragment), "{server}: {body}");
    }
    let response = app.http.put(&url).body("{}").send().await.expect("send");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    app.stop().await;
}

#[tokio::test]
async fn an_upstream_that_demands_credentials_is_reported_not_passed_through() {
    let app = TestApp::spawn().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let guarded = axum::Router::new().route(
        "/mcp",
        axum::routing::post(|| async {
            (
                StatusCode::UNAUTHORIZED,
                [(
                    "www-authenticate",
                    "Bearer resource_metadata=\"https://elsewhere.example/x\"",
                )],
                "",
            )
        }),
    );
    tokio::spawn(async move { axum::serve(listener, guarded).await });
    app.register("guarded", json!({ "url": format!("http://{addr}/mcp") }))
        .await;
    let response = app
        .http
        .post(format!("http://{}/servers/guarded/mcp", app.mcp_addr))
        .header("accept", ACCEPT)
        .json(&initialize("2025-11-25"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert!(
        response.headers().get("www-authenticate").is_none(),
        "the upstream's challenge is not relayed"
    );
    let body: Value = response.json().await.expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("credentials"),
        "{body}"
    );
    app.stop().await;
}

/// The median of 30 sequential `tools/call`s of `tool` in one session at `url`, over one
/// keep-alive connection, with SSE answers: each call asks for progress, so that an upstream
/// that reports it answers in several pieces, which the proxy relays as they come.
async fn median_call_over_keep_alive(url: &str, tool: &str, arguments: Value) -> Duration {
    // One connection for every request, as an SDK client keeps it.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .expect("client");
    let send = |body: Value, session: Option<String>| {
        let mut request = http.post(url).header("accept", ACCEPT).json(&body);
        if let Some(session) = session {
            request = request
                .header("mcp-session-id", session)
                .header("mcp-protocol-version", "2025-11-25");
        }
        request.send()
    };
    let opened = send(initialize("2025-11-25"), None)
        .await
        .expect("initialize");
    assert_eq!(opened.status(), StatusCode::OK);
    let session = opened
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    opened.text().await.expect("initialize answer");
    let initialized = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
    send(initialized, session.clone())
        .await
        .expect("initialized");
    let mut times = Vec::new();
    for id in 1..=30 {
        let call = json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": { "name": tool, "arguments": arguments, "_meta": { "progressToken": id } } });
        let started = Instant::now();
        let answer = send(call, session.clone()).await.expect("call");
        assert!(
            answer
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream")),
            "the answer is an SSE stream, the case that stalled"
        );
        let body = answer.text().await.expect("answer");
        times.push(started.elapsed());
        let messages = messages(&body);
        assert!(
            messages
                .iter()
                .any(|m| m["id"] == id && m.get("result").is_some()),
            "{body}"
        );
    }
    times.sort();
    times[times.len() / 2]
}

/// A guard against a known stall, not a performance claim: without `TCP_NODELAY` on accepted
/// sockets, an answer written in pieces waits for the client's delayed ACK (about 40 ms a call).
#[tokio::test]
async fn sequential_keep_alive_calls_with_sse_answers_do_not_stall() {
    let app = TestApp::spawn().await;
    let upstream = Upstream::start(true).await;
    app.register("sse", json!({ "url": upstream.url })).await;
    let proxied = median_call_over_keep_alive(
        &format!("http://{}/servers/sse/mcp", app.mcp_addr),
        "count",
        json!({ "n": 1, "delay_ms": 0 }),
    )
    .await;
    let own = median_call_over_keep_alive(
        &format!("http://{}/mcp", app.mcp_addr),
        "list_servers",
        json!({}),
    )
    .await;
    for (path, median) in [("/servers/sse/mcp", proxied), ("/mcp", own)] {
        assert!(
            median < Duration::from_millis(10),
            "{path}: median {median:?} per call over keep-alive (the Nagle stall is ~40 ms)"
        );
    }
    app.stop().await;
}

/// The DNS-rebinding and cross-site attacks of a web page against a gateway without
/// authentication: each is refused, and nothing happens (no change, no upstream request).
#[tokio::test]
async fn foreign_hosts_and_origins_are_refused_on_every_listener_and_route() {
    let app = TestApp::builder()
        .with_config(|c| {
            c.public_url = Some(url::Url::parse("https://mcp.example.com").expect("url"));
            c.allowed_hosts = vec!["lb.example.com".to_owned()];
        })
        .spawn()
        .await;
    let upstream = Upstream::start(true).await;
    app.register(
        "vault",
        json!({ "url": upstream.url, "upstream_headers": { "x-api-key": "secret" } }),
    )
    .await;
    let http = reqwest::Client::new();
    let rest = format!("http://{}/api/v1/servers/vault", app.addr);
    let proxied = format!("http://{}/servers/vault/mcp", app.mcp_addr);
    let own = format!("http://{}/mcp", app.mcp_addr);
    let attacks: [(&str, Option<&str>); 3] = [
        ("rebound.evil.example:8000", None),
        ("127.0.0.1", Some("https://evil.example")),
        ("127.0.0.1", Some("null")),
    ];
    for (host, origin) in attacks {
        let with = |request: reqwest::RequestBuilder| {
            let request = request.header("host", host);
            match origin {
                Some(origin) => request.header("origin", origin),
                None => request,
            }
        };
        let patch = with(http.patch(&rest))
            .json(&json!({ "url": "https://evil.example/mcp" }))
            .send()
            .await
            .expect("patch");
        assert_eq!(patch.status(), StatusCode::FORBIDDEN, "{host} {origin:?}");
        let body: Value = patch.json().await.expect("REST error body");
        assert_eq!(body["error"], "forbidden", "{body}");
        for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
            let read = with(http.request(method.clone(), &rest))
                .send()
                .await
                .expect("read");
            assert_eq!(read.status(), StatusCode::FORBIDDEN, "{method} {host}");
        }
        for url in [&proxied, &own] {
            let call = with(http.post(url.as_str()))
                .header("accept", ACCEPT)
                .json(&initialize("2025-11-25"))
                .send()
                .await
                .expect("mcp");
            assert_eq!(call.status(), StatusCode::FORBIDDEN, "{url} {host}");
            let body: Value = call.json().await.expect("JSON-RPC error body");
            assert_eq!(body["error"]["code"], -32003, "{body}");
        }
    }
    // A cross-site "simple" POST (text/plain, no preflight) never reaches a tool.
    let simple = http
        .post(&proxied)
        .header("content-type", "text/plain")
        .body(initialize("2025-11-25").to_string())
        .send()
        .await
        .expect("text/plain");
    assert_eq!(simple.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        upstream.count("POST initialize"),
        0,
        "nothing reached the upstream"
    );
    let (_, server) = app.get("/api/v1/servers/vault").await;
    assert_eq!(server["url"], upstream.url.as_str(), "nothing changed");
    // The gateway's own names pass: loopback, the public URL's host, the allowed hosts, and a
    // page served from loopback (a local inspector).
    for (host, origin) in [
        ("mcp.example.com", None),
        ("lb.example.com:443", None),
        ("127.0.0.1", Some("http://localhost:6274")),
    ] {
        let mut request = http.get(&rest).header("host", host);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        assert_eq!(
            request.send().await.expect("read").status(),
            StatusCode::OK,
            "{host} {origin:?}"
        );
    }
    // Raw requests a browser cannot send but a proxy in front might pass: two Host headers
    // (400), or an absolute request target naming another host (403), on both listeners.
    for addr in [app.addr, app.mcp_addr] {
        for (raw, status) in [
            (
                "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n",
                "HTTP/1.1 400",
            ),
            (
                "GET http://evil.example/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                "HTTP/1.1 403",
            ),
        ] {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            tcp.write_all(raw.as_bytes()).await.expect("write");
            let mut answer = vec![0_u8; 1024];
            let n = tcp.read(&mut answer).await.expect("read");
            let answer = String::from_utf8_lossy(&answer[..n]);
            assert!(answer.starts_with(status), "{addr} {raw:?}: {answer}");
        }
    }
    app.stop().await;
}

/// Server-side request forgery through registration: what a caller may make the gateway
/// connect to, with and without authentication, and the gateway itself in a loop.
#[tokio::test]
async fn registration_refuses_metadata_link_local_and_the_gateway_itself() {
    let app = TestApp::spawn().await;
    let own = format!("http://{}/servers/loop/mcp", app.mcp_addr);
    let api = format!("http://{}/api/v1/servers", app.addr);
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://100.100.100.200/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[fe80::1]/mcp",
        own.as_str(),
        api.as_str(),
        &format!("http://localhost:{}/mcp", app.mcp_addr.port()),
    ] {
        let (status, body) = app
            .post("/api/v1/servers", json!({ "name": "x", "url": url }))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
        assert_eq!(body["field"], "url", "{body}");
    }
    // Metadata request headers cannot be stored as "credentials".
    for name in ["Metadata", "Metadata-Flavor", "X-aws-ec2-metadata-token"] {
        let (status, body) = app
            .post(
                "/api/v1/servers",
                json!({ "name": "x", "url": "https://x.example.com/mcp",
                    "upstream_headers": { name: "true" } }),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{name}: {body}");
    }
    let (_, listed) = app.get("/api/v1/servers").await;
    assert_eq!(listed["servers"], json!([]), "nothing was registered");
    // Without authentication the local operator may use loopback servers.
    let upstream = Upstream::start(true).await;
    app.register("local", json!({ "url": upstream.url })).await;
    app.stop().await;
}

#[tokio::test]
async fn a_request_loop_through_another_path_ends_at_once() {
    let app = TestApp::spawn().await;
    let upstream = Upstream::start(true).await;
    app.register("loop", json!({ "url": upstream.url })).await;
    // A way back in the registration check cannot see: a TCP relay (as a reverse proxy in front
    // of the gateway would be) on another port.
    let relay = crate::support::ChaosProxy::start(app.mcp_addr).await;
    let through_relay = format!("http://{}/servers/loop/mcp", relay.addr);
    let (status, body) = app
        .patch("/api/v1/servers/loop", json!({ "url": through_relay }))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a relay is not the gateway's own address: {body}"
    );
    let started = Instant::now();
    let (status, _, answer) = post(&app, "loop", None, &initialize("2025-11-25")).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the loop ended at once"
    );
    assert_eq!(status, StatusCode::LOOP_DETECTED, "{answer}");
    let body: Value = serde_json::from_str(&answer).expect("a JSON-RPC error");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("request loop")),
        "{body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_get_relays_only_an_event_stream() {
    let app = TestApp::spawn().await;
    // An "upstream" that answers GET with a JSON document, as a metadata service would.
    let router = axum::Router::new().route(
        "/mcp",
        axum::routing::get(|| async {
            axum::Json(json!({ "access_token": "the-hosts-identity-token" }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    app.register("doc", json!({ "url": format!("http://{addr}/mcp") }))
        .await;
    let answer = app
        .http
        .get(format!("http://{}/servers/doc/mcp", app.mcp_addr))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("get");
    assert_eq!(answer.status(), StatusCode::BAD_GATEWAY);
    let text = answer.text().await.expect("body");
    assert!(!text.contains("identity-token"), "{text}");
    assert!(text.contains("only text/event-stream is relayed"), "{text}");
    app.stop().await;
}

/// An upstream that answers `initialize` and then breaks every tool call off in the middle of
/// its SSE event (`data: {"jsonrpc":"2.0","id":7,"res` and the end of the stream).
async fn broken_off_upstream() -> String {
    let router = axum::Router::new().route(
        "/mcp",
        axum::routing::post(|body: axum::Json<Value>| async move {
            use axum::response::IntoResponse;
            let id = body.0["id"].clone();
            match body.0["method"].as_str() {
                Some("initialize") => axum::Json(json!({ "jsonrpc": "2.0", "id": id, "result": {
                    "protocolVersion": "2025-11-25", "capabilities": { "tools": {} },
                    "serverInfo": { "name": "broken", "version": "0" } } }))
                .into_response(),
                Some("tools/call") => (
                    [("content-type", "text/event-stream")],
                    format!("event: message\ndata: {{\"jsonrpc\":\"2.0\",\"id\":{id},\"res"),
                )
                    .into_response(),
                Some(_) if id.is_null() => StatusCode::ACCEPTED.into_response(),
                Some(_) => axum::Json(json!({ "jsonrpc": "2.0", "id": id,
                    "error": { "code": -32601, "message": "method not found" } }))
                .into_response(),
                None => StatusCode::BAD_REQUEST.into_response(),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}/mcp")
}

#[tokio::test]
async fn sdk_clients_see_the_gateways_error_after_an_event_broken_off_mid_json() {
    let app = TestApp::spawn().await;
    app.register("broken", json!({ "url": broken_off_upstream().await }))
        .await;
    let url = format!("http://{}/servers/broken/mcp", app.mcp_addr);
    let command = ["call", "echo", r#"{"text":"hi"}"#];
    let mut answers = Vec::new();
    if let Some(python) = crate::support::peers::python_peers() {
        answers.push((
            "python",
            crate::support::peers::py_client(&python, &url, &["--mode", "legacy"], &command).await,
        ));
    }
    if crate::support::peers::peers_available() {
        answers.push((
            "typescript",
            crate::support::peers::ts_client(&url, &[], &command).await,
        ));
    }
    for (sdk, (ok, answer)) in answers {
        assert!(!ok, "{sdk}: {answer}");
        let message = answer["error"].as_str().unwrap_or_default();
        assert!(
            message.contains("server 'broken' ended the stream before answering"),
            "{sdk} shows {answer}"
        );
    }
    app.stop().await;
}

/// A session's token is sealed once: an upstream that repeats its session id on every answer
/// gets the client's own token back (each new seal spends a random AES-GCM nonce).
#[tokio::test]
async fn a_session_token_is_sealed_once_not_on_every_answer() {
    let app = TestApp::spawn().await;
    let router = axum::Router::new().route(
        "/mcp",
        axum::routing::post(|body: axum::Json<Value>| async move {
            let id = body.0["id"].clone();
            (
                [("mcp-session-id", "upstream-session-1")],
                axum::Json(json!({ "jsonrpc": "2.0", "id": id, "result": {
                    "protocolVersion": "2025-11-25", "capabilities": {},
                    "serverInfo": { "name": "repeating", "version": "0" } } })),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    app.register("repeating", json!({ "url": format!("http://{addr}/mcp") }))
        .await;
    let (status, token, _) = post(&app, "repeating", None, &initialize("2025-11-25")).await;
    assert_eq!(status, StatusCode::OK);
    let token = token.expect("a session token");
    for id in 1..=3 {
        let (status, again, body) = post(
            &app,
            "repeating",
            Some(&token),
            &json!({ "jsonrpc": "2.0", "id": id, "method": "ping" }),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            again.as_deref(),
            Some(token.as_str()),
            "the same token comes back"
        );
    }
    // A new session gets a new token.
    let (_, other, _) = post(&app, "repeating", None, &initialize("2025-11-25")).await;
    assert_ne!(other.as_deref(), Some(token.as_str()));
    app.stop().await;
}

/// At shutdown, a tool call in flight on `/mcp` gets its answer (sessions end only after the
/// drain), an open proxied `GET` stream ends at once instead of holding the drain, and a call
/// still running when the grace period ends is cut and audited as cancelled by the shutdown.
#[tokio::test]
async fn shutdown_answers_calls_in_flight_ends_streams_and_records_what_it_cuts() {
    let mut app = TestApp::builder()
        .with_config(|c| c.shutdown_grace = Duration::from_secs(3))
        .spawn()
        .await;
    let upstream = Upstream::start(true).await;
    app.register("slow", json!({ "url": upstream.url })).await;
    let session = open_session(&app, "slow").await;
    let stream = open_stream(&app, "slow", &session).await;

    let client = std::sync::Arc::new(
        connect(
            &format!("http://{}/mcp", app.mcp_addr),
            ProtocolVersion::V_2025_11_25,
        )
        .await,
    );
    let hang = |secs: u64| {
        let client = client.clone();
        tokio::spawn(async move {
            let arguments = json!({ "server": "slow", "method": "tools/call",
                "params": { "name": "hang", "arguments": { "secs": secs } } });
            client
                .call_tool(
                    rmcp::model::CallToolRequestParams::new("proxy_request")
                        .with_arguments(arguments.as_object().cloned().unwrap_or_default()),
                )
                .await
        })
    };
    let (short, long) = (hang(1), hang(30));
    // And one straight through the proxy, answered as a stream (it takes longer than a second).
    let direct = {
        let request = app
            .http
            .post(format!("http://{}/servers/slow/mcp", app.mcp_addr))
            .header("accept", ACCEPT)
            .header("mcp-session-id", &session)
            .header("mcp-protocol-version", "2025-11-25")
            .json(&json!({ "jsonrpc": "2.0", "id": 9, "method": "tools/call",
                "params": { "name": "hang", "arguments": { "secs": 30 } } }));
        tokio::spawn(async move { request.send().await?.text().await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    let running = app.take_running();
    let started = Instant::now();
    running.shutdown_token().cancel();
    tokio::time::timeout(Duration::from_secs(2), stream.bytes())
        .await
        .expect("the open GET stream ends as shutdown starts")
        .ok();
    let answered = short
        .await
        .expect("task")
        .expect("the call in flight is answered");
    assert_ne!(answered.is_error, Some(true), "{}", text(&answered));
    assert_eq!(
        answered.structured_content.expect("structured")["result"]["structuredContent"]["slept"],
        1
    );
    tokio::time::timeout(Duration::from_secs(10), running.wait())
        .await
        .expect("stops after the grace period")
        .expect("clean stop");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2_900) && took < Duration::from_secs(6),
        "the 30 s call held the drain for the grace period (3 s), no longer: {took:?}"
    );
    // The calls cut off are told so, in a JSON-RPC error, before their connections close.
    let cut = tokio::time::timeout(Duration::from_secs(5), long)
        .await
        .expect("the cut call ends")
        .expect("task");
    let cut = format!("{cut:?}");
    assert!(cut.contains("mreg is stopping"), "{cut}");
    let direct = tokio::time::timeout(Duration::from_secs(5), direct)
        .await
        .expect("the proxied stream ends")
        .expect("task")
        .expect("a whole answer");
    assert!(
        direct.contains("server 'slow' had not answered when mreg stopped")
            && direct.contains("\"id\":9"),
        "{direct}"
    );

    let rows = crate::support::audit::sqlite_rows(&app.dir.0).await;
    let calls: Vec<_> = rows
        .iter()
        .filter(|r| r.event.tool.as_deref() == Some("proxy_request"))
        .map(|r| (r.event.outcome.as_str(), r.event.error.as_deref()))
        .collect();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls.contains(&("ok", None)), "{calls:?}");
    let direct_row: Vec<_> = rows
        .iter()
        .filter(|r| r.event.tool.as_deref() == Some("hang") && r.event.operation == "tools/call")
        .map(|r| {
            (
                r.event.outcome.as_str(),
                r.event.error.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        direct_row
            .iter()
            .any(|(outcome, error)| *outcome == "error" && error.contains("when mreg stopped")),
        "{direct_row:?}"
    );
    assert!(
        calls.contains(&("cancelled", Some(mreg::audit::SHUTDOWN_CUT))),
        "{calls:?}"
    );
}

/// A proxied event stream that stays quiet gets a comment line every `MREG_SSE_KEEPALIVE`, so
/// that proxies in front of mreg do not cut it; the events themselves pass untouched.
#[tokio::test]
async fn quiet_event_streams_are_kept_alive_with_comments() {
    let app = TestApp::builder()
        .with_config(|c| c.sse_keepalive = Duration::from_secs(1))
        .spawn()
        .await;
    let upstream = Upstream::start(true).await;
    app.register("quiet", json!({ "url": upstream.url })).await;
    let session = open_session(&app, "quiet").await;
    let mut stream = open_stream(&app, "quiet", &session).await;
    let started = Instant::now();
    let mut received = String::new();
    while started.elapsed() < Duration::from_millis(2_600) {
        match tokio::time::timeout(Duration::from_millis(200), stream.chunk()).await {
            Ok(Ok(Some(chunk))) => received.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(_) => break,
            Err(_) => {}
        }
    }
    let comments = received.matches(": keep-alive\n\n").count();
    assert!(
        (2..=3).contains(&comments),
        "one comment a second of quiet: {received:?}"
    );
}

/// Every error of the MCP listener says its HTTP status in `data`; a path with no endpoint is
/// an invalid request naming the endpoints, not an unknown session.
#[tokio::test]
async fn errors_carry_their_status_and_unknown_paths_name_the_endpoints() {
    let app = TestApp::spawn().await;
    let call = json!({ "jsonrpc": "2.0", "id": 5, "method": "tools/list" });
    for (path, status, code, says) in [
        ("/nope", 404, -32600, "no MCP endpoint at this path"),
        (
            "/servers/nosuch/mcp",
            404,
            -32600,
            "no server named 'nosuch'",
        ),
    ] {
        let reply = app
            .http
            .post(format!("http://{}{path}", app.mcp_addr))
            .header("accept", ACCEPT)
            .json(&call)
            .send()
            .await
            .expect("send");
        assert_eq!(reply.status().as_u16(), status, "{path}");
        let body: Value = reply.json().await.expect("a JSON-RPC error");
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
        assert_eq!(body["error"]["data"]["status"], status, "{path}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(says)),
            "{path}: {body}"
        );
    }
}

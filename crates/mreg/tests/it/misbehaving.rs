//! An upstream that misbehaves in every way the proxy must survive, one mode per path
//! (`/{mode}/mcp`), and what a client of the gateway sees of each: garbage, HTML error pages,
//! plain text, a 10 MB JSON answer, a 40 MB SSE event, SSE without event separators, silence
//! after the headers, a body trickled a byte at a time, and (mode `pieces`, otherwise a
//! well-behaved server) SSE answers in 5-byte pieces that end inside characters; and, below HTTP,
//! bytes that are not HTTP, headers sent a byte at a time, and a request never answered.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::TestApp;

async fn answer(Path(mode): Path<String>, body: axum::Json<Value>) -> Response {
    let id = body.0["id"].clone();
    let sse = [("content-type", "text/event-stream")];
    match mode.as_str() {
        "garbage" => ([("content-type", "application/json")], "this is not json").into_response(),
        "html500" => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "text/html")],
            "<html><body>Internal Server Error: stack trace here</body></html>",
        )
            .into_response(),
        "plain" => ([("content-type", "text/plain")], "hello").into_response(),
        // What FastMCP answers a notification or a response: 202, empty, labelled JSON.
        "accepted" => (
            StatusCode::ACCEPTED,
            [("content-type", "application/json")],
            "",
        )
            .into_response(),
        "redirect" => (
            StatusCode::TEMPORARY_REDIRECT,
            [("location", "http://169.254.169.254/latest/meta-data/")],
        )
            .into_response(),
        "bigjson" => axum::Json(json!({ "jsonrpc": "2.0", "id": id,
            "result": { "text": "x".repeat(10 * 1024 * 1024) } }))
        .into_response(),
        "bigsse" => {
            let event = format!(
                "event: message\ndata: {}\n\n",
                json!({ "jsonrpc": "2.0", "id": id, "result": { "text": "y".repeat(40 * 1024 * 1024) } })
            );
            let chunks: Vec<Result<Bytes, std::io::Error>> = event
                .into_bytes()
                .chunks(64 * 1024)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            (sse, Body::from_stream(futures_util::stream::iter(chunks))).into_response()
        }
        "noseparator" => {
            let line =
                Bytes::from_static(b"data: zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz\n");
            let lines = futures_util::stream::iter(
                std::iter::repeat_n(line, 20 * 1024 * 1024 / 57).map(Ok::<_, std::io::Error>),
            );
            (sse, Body::from_stream(lines)).into_response()
        }
        "silence" => (
            sse,
            Body::from_stream(futures_util::stream::pending::<Result<Bytes, std::io::Error>>()),
        )
            .into_response(),
        "trickle" => {
            let text = json!({ "jsonrpc": "2.0", "id": id, "result": {} }).to_string();
            let bytes: Vec<u8> = text.into_bytes();
            let slow = futures_util::stream::iter(bytes).then(|b| async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok::<_, std::io::Error>(Bytes::from(vec![b]))
            });
            (
                [("content-type", "application/json")],
                Body::from_stream(slow),
            )
                .into_response()
        }
        "pieces" => pieces(&body.0),
        "lingers" => lingers(&body.0),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The description of the `pieces` server's tool: characters of 2 to 4 bytes in UTF-8.
const PIECES_DESCRIPTION: &str = "Ünïcödé — Ελληνικά — кириллица — 日本語の説明 🚀 ";

/// A well-behaved MCP server without sessions whose every SSE answer comes in 5-byte pieces, so
/// that pieces end inside multi-byte characters of its tool's description.
fn pieces(request: &Value) -> Response {
    let id = request["id"].clone();
    let message = match request["method"].as_str() {
        Some("initialize") => json!({ "jsonrpc": "2.0", "id": id, "result": {
            "protocolVersion": "2025-11-25", "capabilities": { "tools": {} },
            "serverInfo": { "name": "pieces", "version": "1" } } }),
        Some("tools/list") => json!({ "jsonrpc": "2.0", "id": id, "result": { "tools": [{
            "name": "describe", "description": PIECES_DESCRIPTION.repeat(20),
            "inputSchema": { "type": "object" } }] } }),
        _ if id.is_null() => return StatusCode::ACCEPTED.into_response(),
        _ => json!({ "jsonrpc": "2.0", "id": id,
            "error": { "code": -32601, "message": "method not found" } }),
    };
    let event = format!("event: message\ndata: {message}\n\n").into_bytes();
    let chunks: Vec<Result<Bytes, std::io::Error>> = event
        .chunks(5)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    (
        [("content-type", "text/event-stream")],
        Body::from_stream(futures_util::stream::iter(chunks)),
    )
        .into_response()
}

/// A server that answers a call with a stream: a log message at once, the response 200 ms
/// later, and then keeps the stream open without ending it.
fn lingers(request: &Value) -> Response {
    let log = json!({ "jsonrpc": "2.0", "method": "notifications/message",
        "params": { "level": "info", "data": "working" } });
    let answer = json!({ "jsonrpc": "2.0", "id": request["id"].clone(),
        "result": { "content": [{ "type": "text", "text": "done" }] } });
    let events =
        futures_util::stream::iter([(Duration::ZERO, log), (Duration::from_millis(200), answer)])
            .then(|(after, message)| async move {
                tokio::time::sleep(after).await;
                Ok::<_, std::io::Error>(Bytes::from(format!("event: message\ndata: {message}\n\n")))
            })
            .chain(futures_util::stream::pending());
    (
        [("content-type", "text/event-stream")],
        Body::from_stream(events),
    )
        .into_response()
}

/// Starts the misbehaving upstream on loopback.
async fn start() -> SocketAddr {
    let router = axum::Router::new().route("/{mode}/mcp", axum::routing::post(answer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

async fn call(app: &TestApp, server: &str) -> (StatusCode, String, Duration) {
    let started = Instant::now();
    let response = app
        .http
        .post(format!("http://{}/servers/{server}/mcp", app.mcp_addr))
        .header("accept", "application/json, text/event-stream")
        .json(&json!({ "jsonrpc": "2.0", "id": 41, "method": "tools/call",
            "params": { "name": "echo", "arguments": {} } }))
        .send()
        .await
        .expect("send");
    let status = response.status();
    let text = response.text().await.expect("body");
    (status, text, started.elapsed())
}

async fn app_with_every_mode() -> TestApp {
    let app = TestApp::spawn().await;
    let upstream = start().await;
    for mode in [
        "garbage",
        "html500",
        "plain",
        "accepted",
        "redirect",
        "bigjson",
        "bigsse",
        "noseparator",
        "silence",
        "trickle",
    ] {
        // Short timeouts where the timeout is the point; room for the large answers.
        let timeout = if mode.starts_with("big") || mode == "noseparator" {
            120
        } else {
            2
        };
        app.register(
            mode,
            json!({ "url": format!("http://{upstream}/{mode}/mcp"), "timeout_secs": timeout }),
        )
        .await;
    }
    app
}

#[tokio::test]
async fn garbage_html_and_plain_text_become_json_rpc_errors_naming_the_server() {
    let app = app_with_every_mode().await;
    for (server, says) in [
        ("garbage", "a body that is not JSON"),
        ("html500", "answered HTTP 500 with text/html"),
        ("plain", "answered HTTP 200 with text/plain"),
        ("redirect", "redirects are not followed"),
    ] {
        let (status, text, _) = call(&app, server).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{server}: {text}");
        let body: Value = serde_json::from_str(&text).expect("a JSON-RPC error");
        assert_eq!(body["id"], 41, "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("server '{server}'")) && message.contains(says),
            "{server}: {message}"
        );
        assert!(
            !text.contains("stack trace"),
            "the page is not relayed: {text}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn large_answers_pass_whole_and_endless_events_stay_bounded() {
    let app = app_with_every_mode().await;
    let (status, text, _) = call(&app, "bigjson").await;
    assert_eq!(status, StatusCode::OK);
    let body: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(
        body["result"]["text"].as_str().map(str::len),
        Some(10 * 1024 * 1024)
    );
    // A guard against the quadratic scan the watch once did (about 25 s of CPU for 40 MB).
    let (status, text, took) = call(&app, "bigsse").await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.len() > 40 * 1024 * 1024, "{}", text.len());
    assert!(!text.contains("before answering"), "the answer was seen");
    assert!(took < Duration::from_secs(20), "40 MB took {took:?}");
    // Data lines without an event separator: passed through; the watch gives up, not memory.
    let (status, text, _) = call(&app, "noseparator").await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.len() >= 20 * 1024 * 1024 - 64, "{}", text.len());
    app.stop().await;
}

/// A client's answer to a server's request (sampling, elicitation) reaches the server and its
/// 202 comes back: an empty 202 labelled JSON (FastMCP's) was read as a JSON answer and became
/// a 502.
#[tokio::test]
async fn an_empty_202_to_a_response_or_a_notification_is_relayed_as_it_is() {
    let app = app_with_every_mode().await;
    for message in [
        json!({ "jsonrpc": "2.0", "id": 5, "result": {} }),
        json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }),
    ] {
        let response = app
            .http
            .post(format!("http://{}/servers/accepted/mcp", app.mcp_addr))
            .header("accept", "application/json, text/event-stream")
            .json(&message)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{message}");
        assert_eq!(response.text().await.expect("body"), "", "{message}");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_servers_timeout_covers_the_whole_answer() {
    let app = app_with_every_mode().await;
    // SSE headers, then silence: the client gets an error event for its request.
    let (status, text, took) = call(&app, "silence").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        text.contains("server 'silence' did not answer within 2 s\""),
        "{text}"
    );
    assert!(took < Duration::from_secs(6), "{took:?}");
    // A JSON body at a byte every 200 ms: 504 at the timeout.
    let (status, text, took) = call(&app, "trickle").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{text}");
    assert!(text.contains("server 'trickle'"), "{text}");
    assert!(took < Duration::from_secs(6), "{took:?}");
    app.stop().await;
}

/// Upstreams that fail below HTTP, each on a listener of its own: `raw` answers bytes that are
/// not HTTP and closes; `slowheaders` sends a status line, then a header byte every 300 ms for
/// ever; `hang` reads the request and never answers.
async fn start_raw(mode: &'static str) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0_u8; 4096];
                let _ = tcp.read(&mut request).await;
                match mode {
                    "raw" => {
                        let _ = tcp
                            .write_all(b"\x00\x01\x02 SSH-2.0-not-http\r\n\r\n")
                            .await;
                    }
                    "slowheaders" => {
                        let _ = tcp.write_all(b"HTTP/1.1 200 OK\r\nX-Slow: ").await;
                        loop {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            if tcp.write_all(b"a").await.is_err() {
                                break;
                            }
                        }
                    }
                    _ => tokio::time::sleep(Duration::from_secs(3600)).await,
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn upstreams_that_fail_below_http_get_a_clear_error_within_the_timeout() {
    let app = TestApp::spawn().await;
    for mode in ["raw", "slowheaders", "hang"] {
        let upstream = start_raw(mode).await;
        app.register(
            mode,
            json!({ "url": format!("http://{upstream}/mcp"), "timeout_secs": 2 }),
        )
        .await;
    }
    let (status, text, took) = call(&app, "raw").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{text}");
    let body: Value = serde_json::from_str(&text).expect("a JSON-RPC error");
    assert_eq!(body["id"], 41, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("server 'raw'")),
        "{body}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    for server in ["slowheaders", "hang"] {
        let (status, text, took) = call(&app, server).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{server}: {text}");
        let body: Value = serde_json::from_str(&text).expect("a JSON-RPC error");
        assert_eq!(body["id"], 41, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("server '{server}'"))),
            "{body}"
        );
        assert!(
            took >= Duration::from_millis(1_900) && took < Duration::from_secs(5),
            "{server}: {took:?}"
        );
    }
    app.stop().await;
}

/// An answer whose pieces end inside characters reaches the tool catalog (through the health
/// probe) and a client (through the proxy) with every character whole.
#[tokio::test]
async fn characters_cut_between_chunks_stay_whole_in_the_catalog_and_through_the_proxy() {
    let app = TestApp::spawn().await;
    let upstream = start().await;
    app.register(
        "pieces",
        json!({ "url": format!("http://{upstream}/pieces/mcp") }),
    )
    .await;
    let description = PIECES_DESCRIPTION.repeat(20);
    let (status, report) = app
        .post("/api/v1/servers/pieces/health/check", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["current"]["status"], "healthy", "{report}");
    let (_, found) = app.get("/api/v1/tools?q=describe").await;
    assert_eq!(
        found["tools"][0]["tool"]["description"], description,
        "{found}"
    );

    // A client that takes JSON gets the one message as JSON; one that takes only a stream gets
    // the pieces relayed as they come.
    for (accept, sse) in [
        ("application/json, text/event-stream", false),
        ("text/event-stream", true),
    ] {
        let response = app
            .http
            .post(format!("http://{}/servers/pieces/mcp", app.mcp_addr))
            .header("accept", accept)
            .json(&json!({ "jsonrpc": "2.0", "id": 5, "method": "tools/list" }))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::OK);
        let kind = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = response.text().await.expect("body");
        let data = if sse {
            assert!(kind.starts_with("text/event-stream"), "{kind}");
            text.lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap_or_default()
        } else {
            assert!(kind.starts_with("application/json"), "{kind}");
            &text
        };
        let listed: Value = serde_json::from_str(data).unwrap_or_default();
        assert_eq!(
            listed["result"]["tools"][0]["description"], description,
            "{accept}: {text}"
        );
    }
    app.stop().await;
}

/// A client may close an answer's stream as soon as its response has come, before the upstream
/// ends the stream (the Python SDK does): the call is audited as answered. A client that goes
/// before the response came is audited as gone.
#[tokio::test]
async fn a_stream_closed_by_the_client_after_its_response_is_audited_as_answered() {
    let app = TestApp::spawn().await;
    let addr = start().await;
    app.register(
        "lingers",
        json!({ "url": format!("http://{addr}/lingers/mcp") }),
    )
    .await;
    for (tool, waits_for) in [("answered", "\"done\""), ("abandoned", "working")] {
        let mut response = app
            .http
            .post(format!("http://{}/servers/lingers/mcp", app.mcp_addr))
            .header("accept", "application/json, text/event-stream")
            .json(&json!({ "jsonrpc": "2.0", "id": 3, "method": "tools/call",
                "params": { "name": tool, "arguments": {} } }))
            .send()
            .await
            .expect("send");
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "a message comes before the response: relayed as a stream"
        );
        let mut seen = String::new();
        while !seen.contains(waits_for) {
            let chunk = tokio::time::timeout(Duration::from_secs(5), response.chunk())
                .await
                .expect("the stream goes on")
                .expect("chunk")
                .expect("not the end");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert_eq!(seen.contains("\"done\""), tool == "answered", "{seen}");
        // Closes the connection, with the stream still open upstream.
        drop(response);
    }
    let outcome = |rows: &[domain::audit::AuditRecord], tool: &str| {
        rows.iter()
            .find(|r| r.event.tool.as_deref() == Some(tool))
            .map(|r| (r.event.outcome.clone(), r.event.error.clone()))
    };
    let rows = crate::support::audit::until(
        |rows| outcome(rows, "answered").is_some() && outcome(rows, "abandoned").is_some(),
        || crate::support::audit::sqlite_rows(&app.dir.0),
    )
    .await;
    assert_eq!(
        outcome(&rows, "answered"),
        Some(("ok".to_owned(), None)),
        "{rows:?}"
    );
    let (abandoned, why) = outcome(&rows, "abandoned").expect("a row");
    assert_eq!(abandoned, "cancelled");
    assert!(why.is_some_and(|w| w.contains("went away")), "{rows:?}");
    app.stop().await;
}

//! Interoperability with peers nobody here wrote: the official TypeScript SDK's client drives
//! `/mcp` and `/servers/{name}/mcp`, and servers built with the TypeScript SDK stand behind the
//! gateway (see `interop/`). `./scripts/test` installs them with `npm ci`; without Node.js the
//! tests are skipped, unless `MREG_TEST_REQUIRE_SERVICES=1` (CI) makes that a failure.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::TestApp;
use crate::support::peers::{
    FastMcpServer, TsServer, peers_available, py_client, python_peers, ts_client,
};

const VERSIONS: [&str; 2] = ["2025-06-18", "2025-11-25"];

#[tokio::test]
async fn the_typescript_client_uses_the_registry_tools_on_each_protocol_version() {
    if !peers_available() {
        return;
    }
    let app = TestApp::spawn().await;
    let url = format!("http://{}/mcp", app.mcp_addr);
    for (i, version) in VERSIONS.iter().enumerate() {
        let (ok, tools) = ts_client(&url, &["--protocol-version", version], &["tools"]).await;
        assert!(ok, "{tools}");
        assert_eq!(tools["protocolVersion"], *version);
        for name in [
            "register_server",
            "delete_server",
            "list_servers",
            "get_server",
            "get_server_health",
            "search_tools",
            "proxy_request",
        ] {
            assert!(
                tools["tools"]
                    .as_array()
                    .is_some_and(|t| t.contains(&json!(name))),
                "{name}: {tools}"
            );
        }
        let name = format!("ts-{i}");
        let args = json!({ "name": name, "url": "https://ts.example.com/mcp", "tags": ["ts"] })
            .to_string();
        let (ok, created) = ts_client(
            &url,
            &["--protocol-version", version],
            &["call", "register_server", &args],
        )
        .await;
        assert!(ok, "{created}");
        assert_eq!(created["structuredContent"]["name"], name.as_str());
        let (_, invalid) = ts_client(
            &url,
            &["--protocol-version", version],
            &["call", "register_server", r#"{"name":"Bad","url":"x"}"#],
        )
        .await;
        assert_eq!(invalid["isError"], true, "{invalid}");
        assert!(
            invalid["content"][0]["text"]
                .as_str()
                .unwrap_or_default()
                .starts_with("name:"),
            "{invalid}"
        );
    }
    let (_, listed) = ts_client(&url, &[], &["call", "list_servers", r#"{"tag":"ts"}"#]).await;
    assert_eq!(
        listed["structuredContent"]["servers"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "{listed}"
    );
    app.stop().await;
}

#[tokio::test]
async fn typescript_servers_behind_the_gateway_serve_the_typescript_client() {
    if !peers_available() {
        return;
    }
    let app = TestApp::spawn().await;
    let stateful = TsServer::start(false).await;
    let stateless = TsServer::start(true).await;
    app.register("ts-stateful", json!({ "url": stateful.url }))
        .await;
    app.register("ts-stateless", json!({ "url": stateless.url }))
        .await;
    for server in ["ts-stateful", "ts-stateless"] {
        let url = format!("http://{}/servers/{server}/mcp", app.mcp_addr);
        for version in VERSIONS {
            let options = ["--protocol-version", version];
            let (ok, tools) = ts_client(&url, &options, &["tools"]).await;
            assert!(ok, "{server} {version}: {tools}");
            assert_eq!(tools["protocolVersion"], version);
            let (ok, sum) = ts_client(&url, &options, &["call", "add", r#"{"a":2,"b":40}"#]).await;
            assert!(ok, "{sum}");
            assert_eq!(sum["structuredContent"]["sum"], 42);
            let (ok, read) = ts_client(&url, &options, &["read", "demo://hello"]).await;
            assert!(ok, "{read}");
            assert_eq!(read["contents"][0]["text"], "hello");
        }
    }
    // The server's own JSON-RPC error at an HTTP error status (registered at a path it does not
    // serve) reaches the client naming the server, as the gateway's own errors do.
    app.register(
        "ts-wrongpath",
        json!({ "url": stateful.url.replace("/mcp", "/notmcp") }),
    )
    .await;
    let url = format!("http://{}/servers/ts-wrongpath/mcp", app.mcp_addr);
    let (ok, refused) = ts_client(&url, &[], &["tools"]).await;
    assert!(!ok, "{refused}");
    assert!(
        refused
            .to_string()
            .contains("server 'ts-wrongpath' answered HTTP 404: "),
        "{refused}"
    );
    // Progress notifications travel on the SSE answer of the stateful server, through the gateway.
    let url = format!("http://{}/servers/ts-stateful/mcp", app.mcp_addr);
    let (ok, counted) = ts_client(
        &url,
        &[],
        &["call", "slow_count", r#"{"n":4,"delayMs":50}"#],
    )
    .await;
    assert!(ok, "{counted}");
    assert_eq!(counted["content"][0]["text"], "counted 4");
    assert_eq!(
        counted["progress"].as_array().map(Vec::len),
        Some(4),
        "{counted}"
    );
    app.stop().await;
}

#[tokio::test]
async fn two_typescript_clients_never_share_an_upstream_session() {
    if !peers_available() {
        return;
    }
    let app = TestApp::spawn().await;
    let upstream = TsServer::start(false).await;
    app.register("ts", json!({ "url": upstream.url })).await;
    let url = format!("http://{}/servers/ts/mcp", app.mcp_addr);
    let (_, first) = ts_client(&url, &[], &["call", "whoami", "{}"]).await;
    let (_, second) = ts_client(&url, &[], &["call", "whoami", "{}"]).await;
    let (upstream_first, upstream_second) = (
        first["structuredContent"]["session"]
            .as_str()
            .expect("session")
            .to_owned(),
        second["structuredContent"]["session"]
            .as_str()
            .expect("session")
            .to_owned(),
    );
    assert_ne!(upstream_first, "none");
    assert_ne!(upstream_first, upstream_second);
    let token = first["sessionId"].as_str().expect("gateway session");
    assert_ne!(
        token, upstream_first,
        "the client holds the gateway's token, not the upstream id"
    );
    let (ok, refused) = ts_client(
        &url,
        &["--header", &format!("Mcp-Session-Id: {upstream_first}")],
        &["tools"],
    )
    .await;
    assert!(!ok, "a raw upstream session id must not work: {refused}");
    assert_eq!(refused["code"], 404, "{refused}");
    app.stop().await;
}

#[tokio::test]
async fn a_typescript_upstream_killed_mid_call_fails_the_call_instead_of_hanging_it() {
    if !peers_available() {
        return;
    }
    let app = TestApp::spawn().await;
    let mut upstream = TsServer::start(false).await;
    app.register("doomed", json!({ "url": upstream.url })).await;
    let url = format!("http://{}/servers/doomed/mcp", app.mcp_addr);
    let call = tokio::spawn(async move {
        ts_client(
            &url,
            &[],
            &["call", "slow_count", r#"{"n":100,"delayMs":100}"#],
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed_at = Instant::now();
    upstream.kill().await;
    let (ok, answer) = tokio::time::timeout(Duration::from_secs(15), call)
        .await
        .expect("the call ends")
        .expect("task");
    assert!(!ok, "{answer}");
    assert!(
        killed_at.elapsed() < Duration::from_secs(10),
        "it failed promptly"
    );
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("doomed"),
        "the error names the server: {answer}"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_health_monitor_probes_typescript_servers_with_initialize_and_reads_their_tools() {
    if !peers_available() {
        return;
    }
    let app = TestApp::spawn().await;
    let stateful = TsServer::start(false).await;
    let stateless = TsServer::start(true).await;
    app.register("ts-a", json!({ "url": stateful.url })).await;
    app.register("ts-b", json!({ "url": stateless.url })).await;
    for server in ["ts-a", "ts-b"] {
        let (_, report) = app
            .post(&format!("/api/v1/servers/{server}/health/check"), json!({}))
            .await;
        assert_eq!(report["current"]["status"], "healthy", "{report}");
        assert_eq!(
            report["current"]["last_check"]["protocol_version"], "2025-11-25",
            "{report}"
        );
    }
    let (_, tools) = app.get("/api/v1/tools?q=slow_count").await;
    let servers: Vec<&str> = tools["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["server"].as_str())
        .collect();
    assert_eq!(servers, ["ts-a", "ts-b"]);
    app.stop().await;
}

#[tokio::test]
async fn the_sdk_clients_see_each_servers_health_and_gateway_url_in_the_registry_tools() {
    if !peers_available() {
        return;
    }
    let app = TestApp::spawn().await;
    let upstream = crate::support::upstream::Upstream::start(true).await;
    app.register("probed", json!({ "url": upstream.url })).await;
    let (status, _) = app
        .post("/api/v1/servers/probed/health/check", json!({}))
        .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    let url = format!("http://{}/mcp", app.mcp_addr);
    let gateway_url = format!("http://{}/servers/probed/mcp", app.mcp_addr);
    let mut answers = vec![
        ts_client(&url, &[], &["call", "list_servers", "{}"]).await,
        ts_client(&url, &[], &["call", "get_server", r#"{"name":"probed"}"#]).await,
    ];
    if let Some(python) = python_peers() {
        answers.push(py_client(&python, &url, &[], &["call", "list_servers", "{}"]).await);
        answers.push(
            py_client(
                &python,
                &url,
                &[],
                &["call", "get_server", r#"{"name":"probed"}"#],
            )
            .await,
        );
    }
    for (ok, answer) in answers {
        assert!(ok, "{answer}");
        let structured = &answer["structuredContent"];
        let server = if structured["servers"].is_array() {
            &structured["servers"][0]
        } else {
            structured
        };
        assert_eq!(server["health"]["state"], "healthy", "{answer}");
        assert_eq!(server["health"]["last_probe"]["outcome"], "ok", "{answer}");
        assert!(server["health"]["since"].is_string(), "{answer}");
        assert_eq!(server["gateway_url"], gateway_url.as_str(), "{answer}");
    }
    app.stop().await;
}

/// FastMCP in its default mode (stateful sessions, SSE answers) behind the gateway, with 40 tools
/// described in several scripts: its `tools/list` answer (about 250 KB) reaches the tool catalog
/// through the health probe, and both SDK clients through `/servers/{name}/mcp`, character for
/// character; a tool call with such characters goes through. (Answers cut inside characters:
/// `misbehaving::characters_cut_between_chunks_stay_whole_in_the_catalog_and_through_the_proxy`.)
#[tokio::test]
async fn a_fastmcp_servers_multibyte_tool_descriptions_reach_the_catalog_and_clients_intact() {
    if !peers_available() {
        return;
    }
    let Some(python) = python_peers() else {
        return;
    };
    let upstream = FastMcpServer::start(&python, &["--unicode-tools", "40"]).await;
    // What the server says, asked directly by the Python SDK's client.
    let (ok, direct) = py_client(&python, &upstream.url, &[], &["tools"]).await;
    assert!(ok, "{direct}");
    let expected = direct["descriptions"].clone();
    let glossary = expected["glossary_40"].as_str().unwrap_or_default();
    assert!(
        glossary.contains("日本語の説明文と中文说明 🚀") && glossary.chars().count() == 3000,
        "{glossary}"
    );

    let app = TestApp::spawn().await;
    app.register("glossary", json!({ "url": upstream.url }))
        .await;
    let (status, report) = app
        .post("/api/v1/servers/glossary/health/check", json!({}))
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{report}");
    assert_eq!(report["current"]["status"], "healthy", "{report}");
    let (status, found) = app.get("/api/v1/tools?q=glossary&limit=100").await;
    assert_eq!(status, reqwest::StatusCode::OK, "{found}");
    let hits = found["tools"].as_array().cloned().unwrap_or_default();
    assert_eq!(hits.len(), 40, "{found}");
    for hit in &hits {
        let name = hit["tool"]["name"].as_str().unwrap_or_default();
        assert_eq!(
            hit["tool"]["description"], expected[name],
            "{name} as the catalog holds it"
        );
    }

    let gateway = format!("http://{}/servers/glossary/mcp", app.mcp_addr);
    let listed = [
        py_client(&python, &gateway, &[], &["tools"]).await,
        ts_client(&gateway, &[], &["tools"]).await,
    ];
    for (ok, listed) in listed {
        assert!(ok, "{listed}");
        assert_eq!(listed["descriptions"], expected, "through the gateway");
    }
    let (ok, called) = py_client(
        &python,
        &gateway,
        &[],
        &["call", "glossary_7", r#"{"term":"café 日本"}"#],
    )
    .await;
    assert!(ok, "{called}");
    assert!(
        called.to_string().contains("entry 7: café 日本"),
        "{called}"
    );
    app.stop().await;
}

/// A FastMCP tool that logs to its caller before it answers is relayed as a stream (the log
/// first, then the response), and the official Python SDK client, which closes the stream once
/// its response has come, leaves audit rows of answered calls, not cancelled ones. A tool that
/// only answers comes back as JSON, and is audited the same.
#[tokio::test]
async fn python_sdk_calls_through_a_fastmcp_server_are_answered_and_audited_as_answered() {
    if !peers_available() {
        return;
    }
    let Some(python) = python_peers() else {
        return;
    };
    let upstream = FastMcpServer::start(&python, &[]).await;
    let app = TestApp::spawn().await;
    app.register("fast", json!({ "url": upstream.url })).await;
    let gateway = format!("http://{}/servers/fast/mcp", app.mcp_addr);
    for tool in ["chatty", "echo", "chatty", "echo", "chatty"] {
        let (ok, called) = py_client(
            &python,
            &gateway,
            &[],
            &["call", tool, r#"{"text":"héllo"}"#],
        )
        .await;
        assert!(ok, "{called}");
        assert_eq!(called["content"][0]["text"], "héllo", "{called}");
    }
    let calls = |rows: &[domain::audit::AuditRecord]| {
        rows.iter()
            .filter(|r| r.event.operation == "tools/call")
            .map(|r| {
                (
                    r.event.tool.clone().unwrap_or_default(),
                    r.event.outcome.clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    let rows = crate::support::audit::until(
        |rows| calls(rows).len() == 5,
        || crate::support::audit::sqlite_rows(&app.dir.0),
    )
    .await;
    let calls = calls(&rows);
    assert_eq!(calls.len(), 5, "{rows:?}");
    assert!(
        calls.iter().all(|(_, outcome)| outcome == "ok"),
        "{calls:?}"
    );
    app.stop().await;
}

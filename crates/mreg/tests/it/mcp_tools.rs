//! The gateway's own MCP server at `/mcp`, driven by the official Rust SDK's client on each
//! protocol version it speaks.

use rmcp::model::ProtocolVersion;
use serde_json::{Value, json};

use crate::support::TestApp;
use crate::support::mcp::{call, connect, text};

async fn registry_tools_work_on(version: ProtocolVersion) {
    let app = TestApp::spawn().await;
    let client = connect(&format!("http://{}/mcp", app.mcp_addr), version.clone()).await;
    let negotiated = client.peer_info().map(|p| p.protocol_version.clone());
    assert_eq!(negotiated, Some(version.clone()));
    assert_eq!(
        client
            .peer_info()
            .and_then(|p| p.server_info.clone())
            .map(|i| i.name),
        Some("mreg".to_owned())
    );

    let tools = client.list_all_tools().await.expect("tools/list");
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    for expected in [
        "register_server",
        "delete_server",
        "list_servers",
        "get_server",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let register = tools
        .iter()
        .find(|t| t.name == "register_server")
        .expect("register_server");
    let schema = serde_json::to_value(&register.input_schema).expect("schema");
    assert_eq!(schema["required"], json!(["name", "url"]), "{schema}");

    let created = call(&client, "register_server", json!({ "name": "weather", "url": "https://weather.example.com/mcp", "tags": ["geo"], "description": "Forecasts" })).await;
    assert_ne!(created.is_error, Some(true), "{}", text(&created));
    assert!(
        text(&created).contains("Registered weather"),
        "{}",
        text(&created)
    );
    let structured = created
        .structured_content
        .clone()
        .expect("structured content");
    assert_eq!(structured["name"], "weather");
    assert_eq!(structured["tags"], json!(["geo"]));

    let (status, via_rest) = app.get("/api/v1/servers/weather").await;
    assert_eq!(
        status,
        reqwest::StatusCode::OK,
        "the tool wrote through the same registry"
    );
    assert_eq!(via_rest["id"], structured["id"]);

    let listed = call(&client, "list_servers", json!({ "query": "forecast" })).await;
    assert_eq!(
        listed
            .structured_content
            .as_ref()
            .map(|v| v["servers"][0]["name"].clone()),
        Some(json!("weather"))
    );
    assert!(
        text(&listed).contains("- weather (active"),
        "{}",
        text(&listed)
    );

    let got = call(&client, "get_server", json!({ "name": "weather" })).await;
    assert_eq!(
        got.structured_content.map(|v| v["url"].clone()),
        Some(json!("https://weather.example.com/mcp"))
    );

    let duplicate = call(
        &client,
        "register_server",
        json!({ "name": "weather", "url": "https://x.example.com" }),
    )
    .await;
    assert_eq!(duplicate.is_error, Some(true));
    assert_eq!(text(&duplicate), "server 'weather' already exists");

    let invalid = call(
        &client,
        "register_server",
        json!({ "name": "ok", "url": "ftp://x" }),
    )
    .await;
    assert_eq!(invalid.is_error, Some(true));
    assert!(
        text(&invalid).starts_with("url: scheme 'ftp' is not allowed"),
        "{}",
        text(&invalid)
    );

    let wrong_type = call(&client, "list_servers", json!({ "limit": "many" })).await;
    assert_eq!(wrong_type.is_error, Some(true), "{wrong_type:?}");

    let deleted = call(&client, "delete_server", json!({ "name": "weather" })).await;
    assert_ne!(deleted.is_error, Some(true), "{}", text(&deleted));
    let missing = call(&client, "get_server", json!({ "name": "weather" })).await;
    assert_eq!(missing.is_error, Some(true));
    assert_eq!(text(&missing), "server 'weather' not found");

    client.cancel().await.expect("close");
    app.stop().await;
}

#[tokio::test]
async fn registry_tools_work_on_2025_06_18() {
    registry_tools_work_on(ProtocolVersion::V_2025_06_18).await;
}

#[tokio::test]
async fn registry_tools_work_on_2025_11_25() {
    registry_tools_work_on(ProtocolVersion::V_2025_11_25).await;
}

#[tokio::test]
async fn registry_tools_work_on_the_stateless_2026_07_28() {
    registry_tools_work_on(ProtocolVersion::V_2026_07_28).await;
}

#[tokio::test]
async fn the_mcp_listener_refuses_foreign_host_headers_but_accepts_the_public_url() {
    let app = TestApp::builder()
        .with_config(|c| {
            c.public_url = Some(url::Url::parse("https://mcp.example.com").expect("url"))
        })
        .spawn()
        .await;
    let http = reqwest::Client::new();
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": { "name": "t", "version": "0" } } });
    let send = |host: &'static str| {
        http.post(format!("http://{}/mcp", app.mcp_addr))
            .header("host", host)
            .header("accept", "application/json, text/event-stream")
            .json(&body)
            .send()
    };
    assert_eq!(
        send("evil.example.net").await.expect("send").status(),
        reqwest::StatusCode::FORBIDDEN
    );
    assert_eq!(
        send("mcp.example.com").await.expect("send").status(),
        reqwest::StatusCode::OK
    );
    app.stop().await;
}

#[tokio::test]
async fn proxy_request_forwards_one_request_to_a_registered_server() {
    let app = TestApp::spawn().await;
    let stateful = crate::support::upstream::Upstream::start(true).await;
    let stateless = crate::support::upstream::Upstream::start(false).await;
    app.register(
        "stateful",
        json!({ "url": stateful.url, "upstream_headers": { "x-api-key": "key-1" } }),
    )
    .await;
    app.register("stateless", json!({ "url": stateless.url }))
        .await;
    app.register("gone", json!({ "url": "http://127.0.0.1:9/mcp" }))
        .await;
    for version in [ProtocolVersion::V_2025_11_25, ProtocolVersion::V_2026_07_28] {
        let client = connect(&format!("http://{}/mcp", app.mcp_addr), version).await;
        for server in ["stateful", "stateless"] {
            let listed = call(
                &client,
                "proxy_request",
                json!({ "server": server, "method": "tools/list" }),
            )
            .await;
            assert_ne!(listed.is_error, Some(true), "{}", text(&listed));
            let structured = listed.structured_content.clone().expect("structured");
            let names: Vec<&str> = structured["result"]["tools"]
                .as_array()
                .map(|t| t.iter().filter_map(|t| t["name"].as_str()).collect())
                .unwrap_or_default();
            assert!(names.contains(&"echo"), "{structured}");

            let echoed = call(&client, "proxy_request", json!({ "server": server, "method": "tools/call", "params": { "name": "echo", "arguments": { "text": "through" } } })).await;
            let structured = echoed.structured_content.clone().expect("structured");
            assert_eq!(
                structured["result"]["content"][0]["text"], "through",
                "{structured}"
            );
            assert!(
                text(&echoed).starts_with(&format!("{server} answered tools/call:")),
                "{}",
                text(&echoed)
            );
        }
        let keyed = call(
            &client,
            "proxy_request",
            json!({ "server": "stateful", "method": "tools/call", "params": { "name": "whoami" } }),
        )
        .await;
        assert_eq!(
            keyed
                .structured_content
                .map(|v| v["result"]["structuredContent"]["api_key"].clone()),
            Some(json!("key-1"))
        );

        for (args, expected) in [
            (
                json!({ "server": "nobody", "method": "tools/list" }),
                "server 'nobody' not found",
            ),
            (
                json!({ "server": "stateful", "method": "initialize" }),
                "method: 'initialize' cannot be forwarded",
            ),
            (
                json!({ "server": "stateful", "method": "no/such/method" }),
                "answered with error -32601",
            ),
            (
                json!({ "server": "gone", "method": "tools/list" }),
                "server 'gone' (connecting failed",
            ),
        ] {
            let failed = call(&client, "proxy_request", args.clone()).await;
            assert_eq!(failed.is_error, Some(true), "{args}");
            assert!(
                text(&failed).contains(expected),
                "{args}: {}",
                text(&failed)
            );
        }
        client.cancel().await.expect("close");
    }
    app.stop().await;
}

#[tokio::test]
async fn resources_and_prompts_list_empty_and_a_session_ends_with_204() {
    let app = TestApp::spawn().await;
    let url = format!("http://{}/mcp", app.mcp_addr);
    let client = connect(&url, ProtocolVersion::V_2025_11_25).await;
    assert!(
        client
            .list_all_resources()
            .await
            .expect("resources/list")
            .is_empty()
    );
    assert!(
        client
            .list_all_prompts()
            .await
            .expect("prompts/list")
            .is_empty()
    );
    assert!(
        client
            .list_all_resource_templates()
            .await
            .expect("resources/templates/list")
            .is_empty()
    );
    client.cancel().await.expect("close");

    // The end of a session: 200 or 204 is what SDK clients take for success (the Python SDK
    // logs "Session termination failed: 202").
    let opened = app
        .http
        .post(&url)
        .header("accept", "application/json, text/event-stream")
        .json(
            &json!({ "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": { "name": "t", "version": "0" } } }),
        )
        .send()
        .await
        .expect("initialize");
    let session = opened.headers()["mcp-session-id"]
        .to_str()
        .expect("session")
        .to_owned();
    let ended = app
        .http
        .delete(&url)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .expect("delete");
    assert_eq!(ended.status(), reqwest::StatusCode::NO_CONTENT);
    // The session is gone: a JSON-RPC error naming it, not a plain-text 404.
    let after = app
        .http
        .post(&url)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-11-25")
        .json(&json!({ "jsonrpc": "2.0", "id": 5, "method": "tools/list" }))
        .send()
        .await
        .expect("after the end");
    assert_eq!(after.status(), reqwest::StatusCode::NOT_FOUND);
    let body: Value = after.json().await.expect("a JSON-RPC error body");
    assert_eq!(body["id"], 5, "{body}");
    assert_eq!(body["error"]["code"], -32001, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn browser_clients_of_a_configured_origin_get_cors_and_others_are_refused() {
    let app = TestApp::builder()
        .with_config(|c| c.cors_origins = vec!["https://inspector.example.com".to_owned()])
        .spawn()
        .await;
    let url = format!("http://{}/mcp", app.mcp_addr);
    let preflight = |origin: &'static str| {
        app.http
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,mcp-session-id,mcp-protocol-version,authorization",
            )
            .send()
    };
    let allowed = preflight("https://inspector.example.com")
        .await
        .expect("preflight");
    assert!(allowed.status().is_success(), "{}", allowed.status());
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    assert_eq!(
        header(&allowed, "access-control-allow-origin"),
        "https://inspector.example.com"
    );
    assert!(header(&allowed, "access-control-allow-headers").contains("mcp-session-id"));
    let refused = preflight("https://evil.example.net")
        .await
        .expect("preflight");
    assert_eq!(refused.status(), reqwest::StatusCode::FORBIDDEN);
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );

    let answer = app
        .http
        .post(&url)
        .header("origin", "https://inspector.example.com")
        .header("accept", "application/json, text/event-stream")
        .json(
            &json!({ "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": { "name": "browser", "version": "0" } } }),
        )
        .send()
        .await
        .expect("initialize");
    assert_eq!(answer.status(), reqwest::StatusCode::OK);
    assert_eq!(
        header(&answer, "access-control-allow-origin"),
        "https://inspector.example.com"
    );
    assert!(
        header(&answer, "access-control-expose-headers").contains("mcp-session-id"),
        "a browser client can read its session id"
    );
    app.stop().await;
}

/// The gateway's own server takes one message per request; a batch is told so (it got the
/// SDK's 415 "fail to deserialize request body").
#[tokio::test]
async fn a_batch_to_the_gateways_own_server_is_refused_in_words() {
    let app = TestApp::spawn().await;
    let batch = serde_json::json!([
        { "jsonrpc": "2.0", "id": 1, "method": "ping" },
        { "jsonrpc": "2.0", "id": 2, "method": "ping" },
    ]);
    let reply = app
        .http
        .post(format!("http://{}/mcp", app.mcp_addr))
        .header("accept", "application/json, text/event-stream")
        .json(&batch)
        .send()
        .await
        .expect("send");
    assert_eq!(reply.status(), reqwest::StatusCode::BAD_REQUEST);
    let body: serde_json::Value = reply.json().await.expect("a JSON-RPC error");
    assert_eq!(body["error"]["code"], -32600, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("one message per request")),
        "{body}"
    );
    // And a message nested deeper than its reader goes is a parse error, not 415.
    let deep = format!(
        r#"{{"jsonrpc":"2.0","id":3,"method":"ping","params":{{"x":{}{}}}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let reply = app
        .http
        .post(format!("http://{}/mcp", app.mcp_addr))
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .expect("send");
    assert_eq!(reply.status(), reqwest::StatusCode::BAD_REQUEST);
    let body: serde_json::Value = reply.json().await.expect("a JSON-RPC error");
    assert_eq!(body["error"]["code"], -32700, "{body}");
    app.stop().await;
}

//! The policy chain: roles (the seed mapping and a policy file) on REST operations, the
//! gateway's tools and proxied servers, and GCRA rate limits — on one instance, on two sharing
//! Redis, and falling back to per-instance limits when Redis is cut off. Callers are Entra-shaped
//! tokens signed by the local identity provider.

use std::sync::Arc;

use reqwest::StatusCode;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

use crate::support::idp::{
    ALICE_OID, BOB_OID, Setup, TENANT, mcp_initialize, setup, setup_with, whoami,
};
use crate::support::upstream::Upstream;
use crate::support::{RedisBehindProxy, TempDir, TestApp, TestAppBuilder, redis_available};

/// Tokens for an admin (alice), a user (bob) and someone without roles (carol): delegated
/// provider access tokens (`scp`), as Entra issues them to a user of mreg's app.
struct Callers {
    alice: String,
    bob: String,
    carol: String,
}

async fn callers(s: &Setup) -> Callers {
    let token = |oid: &str, roles: Value| {
        let mut claims = s.idp.claims(TENANT);
        claims["oid"] = json!(oid);
        claims["roles"] = roles;
        claims["scp"] = json!("access_as_user");
        claims["idtyp"] = json!("user");
        s.idp.sign(claims)
    };
    Callers {
        alice: token(ALICE_OID, json!(["admin"])).await,
        bob: token(BOB_OID, json!(["user"])).await,
        carol: token("cccccccc-cccc-4ccc-8ccc-cccccccccccc", json!([])).await,
    }
}

/// A gateway whose Entra app admits two tenants (multi-tenant mode), configured further by
/// `configure`.
async fn two_tenants(configure: impl FnOnce(TestAppBuilder) -> TestAppBuilder) -> Option<Setup> {
    setup_with(|app| {
        configure(app.with_allowed_tenants(&[TENANT, crate::support::idp::OTHER_TENANT]))
    })
    .await
}

/// A token of Dave, an admin of the other tenant.
async fn other_tenant_admin(s: &Setup) -> String {
    let mut other = s.idp.claims(crate::support::idp::OTHER_TENANT);
    other["oid"] = json!("dddddddd-dddd-4ddd-8ddd-dddddddddddd");
    other["roles"] = json!(["admin"]);
    s.idp.sign(other).await
}

/// A policy file holding `text`, in a directory kept as long as the value.
struct PolicyFile {
    dir: TempDir,
    /// Its path, for MREG_POLICY_FILE.
    path: String,
}

fn policy_file(text: &str) -> PolicyFile {
    let dir = TempDir::new();
    let path = dir.0.join("policy.toml");
    std::fs::write(&path, text).expect("policy file");
    PolicyFile {
        path: path.to_str().expect("path").to_owned(),
        dir,
    }
}

type Client = rmcp::service::RunningService<rmcp::RoleClient, ClientConfig>;

async fn mcp_client(url: &str, token: &str) -> Client {
    let config = StreamableHttpClientTransportConfig::with_uri(url).auth_header(token.to_owned());
    let transport = StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
    ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("policy-tests", "0"),
    )
    .serve(transport)
    .await
    .expect("an MCP session")
}

async fn tool_names(client: &Client) -> Vec<String> {
    client
        .list_all_tools()
        .await
        .expect("tools/list")
        .into_iter()
        .map(|t| t.name.to_string())
        .collect()
}

async fn call(
    client: &Client,
    tool: &str,
    args: Value,
) -> Result<rmcp::model::CallToolResult, rmcp::ServiceError> {
    client
        .call_tool(
            CallToolRequestParams::new(tool.to_owned())
                .with_arguments(args.as_object().cloned().unwrap_or_default()),
        )
        .await
}

async fn rest(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut request = app.http.request(method, app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let reply = request.send().await.expect("request");
    let (status, headers) = (reply.status(), reply.headers().clone());
    (status, headers, reply.json().await.unwrap_or(Value::Null))
}

fn error_code(error: &rmcp::ServiceError) -> (i32, String, Option<Value>) {
    match error {
        rmcp::ServiceError::McpError(e) => (e.code.0, e.message.to_string(), e.data.clone()),
        other => panic!("expected a JSON-RPC error, got {other}"),
    }
}

#[tokio::test]
async fn roles_decide_rest_operations_and_gateway_tools() {
    let Some(s) = setup().await else { return };
    let c = callers(&s).await;
    // REST: the seed mapping.
    let body = json!({"name": "weather", "url": "https://weather.example.com/mcp"});
    let (status, _, refused) = rest(
        &s.app,
        reqwest::Method::POST,
        "/api/v1/servers",
        &c.bob,
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .expect("message")
            .contains("requires the role admin"),
        "{refused}"
    );
    let (status, _, _) = rest(
        &s.app,
        reqwest::Method::POST,
        "/api/v1/servers",
        &c.alice,
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        rest(
            &s.app,
            reqwest::Method::GET,
            "/api/v1/servers",
            &c.carol,
            None
        )
        .await
        .0,
        StatusCode::OK,
        "reads are open"
    );
    let (status, _, refused) = rest(
        &s.app,
        reqwest::Method::GET,
        "/api/v1/servers/weather/health",
        &c.carol,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        refused["message"]
            .as_str()
            .expect("message")
            .contains("user or admin"),
        "{refused}"
    );
    assert_eq!(
        rest(
            &s.app,
            reqwest::Method::GET,
            "/api/v1/servers/weather/health",
            &c.bob,
            None
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(
        rest(
            &s.app,
            reqwest::Method::DELETE,
            "/api/v1/servers/weather",
            &c.bob,
            None
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );

    // MCP: the same rules for the tools; listings show only what the caller may call.
    let endpoint = format!("{}/mcp", s.mcp);
    let bob = mcp_client(&endpoint, &c.bob).await;
    let listed = tool_names(&bob).await;
    assert!(
        listed.contains(&"list_servers".to_owned()) && listed.contains(&"proxy_request".to_owned()),
        "{listed:?}"
    );
    assert!(
        !listed.contains(&"register_server".to_owned())
            && !listed.contains(&"delete_server".to_owned()),
        "{listed:?}"
    );
    let refused = call(&bob, "delete_server", json!({"name": "weather"}))
        .await
        .expect_err("refused");
    let (code, message, _) = error_code(&refused);
    assert_eq!(code, -32003);
    assert!(
        message.contains("delete_server requires the role admin"),
        "{message}"
    );
    assert!(
        call(&bob, "list_servers", json!({}))
            .await
            .expect("allowed")
            .is_error
            != Some(true)
    );
    let carol = mcp_client(&endpoint, &c.carol).await;
    assert!(
        !tool_names(&carol)
            .await
            .contains(&"proxy_request".to_owned())
    );
    let alice = mcp_client(&endpoint, &c.alice).await;
    assert!(
        tool_names(&alice)
            .await
            .contains(&"register_server".to_owned())
    );
    let deleted = call(&alice, "delete_server", json!({"name": "weather"}))
        .await
        .expect("allowed");
    assert_ne!(deleted.is_error, Some(true), "{deleted:?}");

    let metrics = s.app.metrics().await;
    let denied = metrics
        .lines()
        .find(|l| l.starts_with("mreg_policy_refusals_total{reason=\"denied\"}"))
        .unwrap_or_else(|| panic!("no refusal counter in {metrics}"));
    let count: f64 = denied
        .rsplit(' ')
        .next()
        .expect("value")
        .parse()
        .expect("number");
    assert!(
        count >= 4.0,
        "REST bob POST, carol health, bob DELETE, MCP delete_server: {denied}"
    );

    // Every decision is audited: refusals name the missing role; admins read the log.
    let rows =
        crate::support::audit::at_least(7, || crate::support::audit::sqlite_rows(&s.app.dir.0))
            .await;
    let denied: Vec<(&str, &str, Option<&str>)> = rows
        .iter()
        .filter(|r| r.event.decision == "deny")
        .map(|r| {
            (
                r.event.actor_subject.as_str(),
                r.event.operation.as_str(),
                r.event.server.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        denied,
        [
            (BOB_OID, "POST /api/v1/servers", None),
            (
                "cccccccc-cccc-4ccc-8ccc-cccccccccccc",
                "GET /api/v1/servers/{name}/health",
                Some("weather")
            ),
            (BOB_OID, "DELETE /api/v1/servers/{name}", Some("weather")),
            (BOB_OID, "delete_server", Some("weather")),
        ]
    );
    assert!(rows.iter().filter(|r| r.event.decision == "deny").all(|r| {
        r.event.outcome == "error"
            && r.event
                .error
                .as_deref()
                .is_some_and(|e| e.contains("requires the role"))
            && r.event.actor_tenant.as_deref() == Some(TENANT)
    }));
    let allowed: Vec<&str> = rows
        .iter()
        .filter(|r| r.event.decision == "allow")
        .map(|r| r.event.operation.as_str())
        .collect();
    assert_eq!(
        allowed,
        ["POST /api/v1/servers", "list_servers", "delete_server"]
    );
    let (status, _, body) = rest(&s.app, reqwest::Method::GET, "/api/v1/audit", &c.bob, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // The refused audit read is itself audited.
    crate::support::audit::until(
        |rows| {
            rows.iter()
                .any(|r| r.event.operation == "GET /api/v1/audit" && r.event.decision == "deny")
        },
        || crate::support::audit::sqlite_rows(&s.app.dir.0),
    )
    .await;
    let (status, _, page) = rest(
        &s.app,
        reqwest::Method::GET,
        &format!("/api/v1/audit?actor={BOB_OID}&decision=deny"),
        &c.alice,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let operations: Vec<&str> = page["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["operation"].as_str())
        .collect();
    assert_eq!(
        operations,
        [
            "GET /api/v1/audit",
            "delete_server",
            "DELETE /api/v1/servers/{name}",
            "POST /api/v1/servers"
        ]
    );
}

#[tokio::test]
async fn a_policy_file_guards_servers_and_their_tools_through_every_path() {
    let policy = policy_file(
        "[servers.echo]\ntools = { echo = [\"admin\"] }\n\n[servers.stateful]\ntools = { echo = [\"admin\"] }\n\n[servers.vault]\nroles = [\"admin\"]\n",
    );
    let Some(s) = setup_with(|app| app.with_policy_file(&policy.path)).await else {
        return;
    };
    let c = callers(&s).await;
    let stateless = Upstream::start(false).await;
    let stateful = Upstream::start(true).await;
    for (name, url) in [
        ("echo", &stateless.url),
        ("stateful", &stateful.url),
        ("vault", &stateless.url),
    ] {
        let (status, _, body) = rest(
            &s.app,
            reqwest::Method::POST,
            "/api/v1/servers",
            &c.alice,
            Some(json!({"name": name, "url": url})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // Through /servers/{name}/mcp, JSON (stateless) and SSE (stateful) answers alike.
    for server in ["echo", "stateful"] {
        let bob = mcp_client(&format!("{}/servers/{server}/mcp", s.mcp), &c.bob).await;
        let listed = tool_names(&bob).await;
        assert!(
            !listed.contains(&"echo".to_owned()) && listed.contains(&"whoami".to_owned()),
            "{server}: {listed:?}"
        );
        let refused = call(&bob, "echo", json!({"text": "hi"}))
            .await
            .expect_err("refused");
        let (_, message, _) = error_code(&refused);
        assert!(message.contains("tool 'echo' of server"), "{message}");
        assert!(call(&bob, "whoami", json!({})).await.is_ok());
        let alice = mcp_client(&format!("{}/servers/{server}/mcp", s.mcp), &c.alice).await;
        assert!(
            tool_names(&alice).await.contains(&"echo".to_owned()),
            "{server}"
        );
        let echoed = call(&alice, "echo", json!({"text": "hi"}))
            .await
            .expect("allowed");
        assert_ne!(echoed.is_error, Some(true));
    }
    let (status, _) = mcp_initialize(&format!("{}/servers/vault/mcp", s.mcp), Some(&c.bob)).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the whole server needs admin"
    );
    assert_eq!(
        mcp_initialize(&format!("{}/servers/vault/mcp", s.mcp), Some(&c.alice))
            .await
            .0,
        StatusCode::OK
    );

    // A batch cannot carry a refused call past the chain: every message in it is admitted.
    let batch = s
        .app
        .http
        .post(format!("{}/servers/echo/mcp", s.mcp))
        .bearer_auth(&c.bob)
        .header("accept", "application/json, text/event-stream")
        .json(&json!([
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "x"}}},
        ]))
        .send()
        .await
        .expect("batch");
    assert_eq!(batch.status(), StatusCode::FORBIDDEN);
    let body: Value = batch.json().await.expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("tool 'echo' of server"),
        "{body}"
    );

    // Through proxy_request, the same rules.
    let bob = mcp_client(&format!("{}/mcp", s.mcp), &c.bob).await;
    let refused = call(&bob, "proxy_request", json!({"server": "echo", "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "x"}}})).await.expect("a tool result");
    assert_eq!(refused.is_error, Some(true));
    assert!(
        format!("{refused:?}").contains("requires the role admin"),
        "{refused:?}"
    );
    let listing = call(
        &bob,
        "proxy_request",
        json!({"server": "echo", "method": "tools/list"}),
    )
    .await
    .expect("a tool result");
    let structured = listing.structured_content.expect("structured");
    let names: Vec<&str> = structured["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        !names.contains(&"echo") && names.contains(&"whoami"),
        "{names:?}"
    );
    let vault = call(
        &bob,
        "proxy_request",
        json!({"server": "vault", "method": "tools/list"}),
    )
    .await
    .expect("a tool result");
    assert_eq!(vault.is_error, Some(true));

    // Each refusal is one audit row naming the tool and server, whichever path it came by.
    let rows = crate::support::audit::until(
        |rows| {
            rows.iter()
                .any(|r| r.event.server.as_deref() == Some("vault") && r.event.tool.is_some())
        },
        || crate::support::audit::sqlite_rows(&s.app.dir.0),
    )
    .await;
    let denied = |operation: &str, tool: Option<&str>, server: &str| {
        rows.iter()
            .filter(|r| {
                r.event.decision == "deny"
                    && r.event.actor_subject == BOB_OID
                    && r.event.operation == operation
                    && r.event.tool.as_deref() == tool
                    && r.event.server.as_deref() == Some(server)
            })
            .count()
    };
    assert_eq!(denied("tools/call", Some("echo"), "echo"), 1);
    assert_eq!(denied("tools/call", Some("echo"), "stateful"), 1);
    assert_eq!(denied("initialize", None, "vault"), 1);
    assert_eq!(denied("batch", None, "echo"), 1);
    assert_eq!(
        denied("proxy_request", Some("proxy_request"), "echo"),
        1,
        "the forwarded call was refused, so the tool's row says deny"
    );
    assert_eq!(denied("proxy_request", Some("proxy_request"), "vault"), 1);
    let batch = rows
        .iter()
        .find(|r| r.event.operation == "batch")
        .expect("the batch row");
    let arguments: Value =
        serde_json::from_str(batch.event.arguments.as_deref().expect("arguments")).expect("json");
    assert_eq!(arguments[1]["name"], "echo");
    assert_eq!(arguments[1]["arguments"]["text"], "x");
    let allowed = rows
        .iter()
        .filter(|r| {
            r.event.operation == "tools/call"
                && r.event.decision == "allow"
                && r.event.actor_subject == ALICE_OID
        })
        .count();
    assert_eq!(allowed, 2, "alice's echo on both servers");
}

#[tokio::test]
async fn rate_limits_admit_exactly_the_budget_and_say_when_to_retry() {
    let policy = policy_file("[rate_limits]\ntools = { list_servers = 3 }\n");
    let Some(s) = setup_with(|app| app.with_rate_limit(10).with_policy_file(&policy.path)).await
    else {
        return;
    };
    let c = callers(&s).await;
    let app = Arc::new(s.app);
    let tasks: Vec<_> = (0..25)
        .map(|_| {
            let app = app.clone();
            let token = c.bob.clone();
            tokio::spawn(async move { whoami(&app, &token).await })
        })
        .collect();
    let mut ok = 0;
    let mut limited = 0;
    for task in tasks {
        let (status, headers, body) = task.await.expect("task");
        match status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                limited += 1;
                let retry: u64 = headers
                    .get("retry-after")
                    .expect("Retry-After")
                    .to_str()
                    .expect("text")
                    .parse()
                    .expect("seconds");
                assert!((1..=60).contains(&retry), "{retry}");
                assert_eq!(body["error"], "rate_limited");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(
        (ok, limited),
        (10, 15),
        "exactly the budget under concurrent load"
    );
    // Another principal has its own budget.
    assert_eq!(whoami(&app, &c.alice).await.0, StatusCode::OK);

    // Per principal × tool: the fourth list_servers in a minute is refused with the delay.
    let alice = mcp_client(&format!("{}/mcp", s.mcp), &c.alice).await;
    for _ in 0..3 {
        assert!(call(&alice, "list_servers", json!({})).await.is_ok());
    }
    let refused = call(&alice, "list_servers", json!({}))
        .await
        .expect_err("limited");
    let (code, message, data) = error_code(&refused);
    assert_eq!(code, -32029);
    assert!(message.contains("rate limit"), "{message}");
    let wait = data.expect("data")["retry_after_ms"]
        .as_u64()
        .expect("retry_after_ms");
    assert!(wait > 0 && wait <= 20_000, "{wait}");

    // The first refusal of a caller and operation is a row; the next ones in the window
    // (MREG_AUDIT_REFUSAL_WINDOW, 60 s) are counted, and the count is written when it ends — at
    // the latest when mreg stops.
    let rows =
        crate::support::audit::at_least(2 + 3, || crate::support::audit::sqlite_rows(&app.dir.0))
            .await;
    let limited: Vec<&domain::audit::AuditRecord> = rows
        .iter()
        .filter(|r| r.event.decision == "rate_limited")
        .collect();
    assert_eq!(limited.len(), 2, "{limited:#?}");
    let first = limited
        .iter()
        .find(|r| r.event.operation == "GET /api/v1/whoami" && r.event.actor_subject == BOB_OID)
        .expect("bob's first refusal");
    let first_id = first.event.id.clone();
    let mut app = Arc::into_inner(app).expect("the only reference");
    app.take_running().stop().await.expect("clean shutdown");
    let rows = crate::support::audit::sqlite_rows(&app.dir.0).await;
    let summary: Vec<_> = rows
        .iter()
        .filter(|r| {
            r.event.decision == "rate_limited"
                && r.event.actor_subject == BOB_OID
                && r.event.id != first_id
        })
        .collect();
    assert_eq!(summary.len(), 1, "{summary:#?}");
    let counted: Value =
        serde_json::from_str(summary[0].event.arguments.as_deref().unwrap_or_default())
            .expect("json");
    assert_eq!(
        counted["refusals"], 14,
        "15 refusals: the first row and 14 counted"
    );
    assert_eq!(counted["first_id"], first_id.as_str());
    assert_eq!(summary[0].event.operation, "GET /api/v1/whoami");
    let tool = limited
        .iter()
        .find(|r| r.event.tool.as_deref() == Some("list_servers"))
        .expect("the refused tool call");
    assert_eq!(tool.event.actor_subject, ALICE_OID);
    assert!(
        tool.event
            .error
            .as_deref()
            .is_some_and(|e| e.contains("rate limit exceeded"))
    );
}

#[tokio::test]
async fn two_instances_on_one_redis_share_one_budget() {
    let Some(redis) = redis_available().await else {
        return;
    };
    let prefix = format!("mreg-test-{}:", uuid::Uuid::new_v4().simple());
    let shared = |app: TestAppBuilder| {
        app.with_rate_limit(10)
            .with_redis(&redis)
            .with_redis_prefix(&prefix)
    };
    let Some(s) = setup_with(shared).await else {
        return;
    };
    let other = shared(TestApp::builder().with_oauth(&s.idp)).spawn().await;
    let c = callers(&s).await;
    let (a, b) = (Arc::new(s.app), Arc::new(other));
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let app = if i % 2 == 0 { a.clone() } else { b.clone() };
            let token = c.bob.clone();
            tokio::spawn(async move { whoami(&app, &token).await.0 })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        if task.await.expect("task") == StatusCode::OK {
            ok += 1;
        }
    }
    assert_eq!(ok, 10, "one budget across both instances");
}

#[tokio::test]
async fn when_redis_is_cut_off_limits_hold_per_instance_and_readyz_says_so() {
    let Some(RedisBehindProxy { proxy, url, prefix }) = RedisBehindProxy::start().await else {
        return;
    };
    let Some(s) = setup_with(|app| {
        app.with_rate_limit(5)
            .with_redis(&url)
            .with_redis_prefix(&prefix)
    })
    .await
    else {
        return;
    };
    let c = callers(&s).await;
    assert_eq!(whoami(&s.app, &c.alice).await.0, StatusCode::OK);
    proxy.cut();
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(whoami(&s.app, &c.bob).await.0);
    }
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(
        (ok, limited),
        (5, 2),
        "per-instance limits, not all-or-nothing: {statuses:?}"
    );
    let ready: Value = s
        .app
        .http
        .get(s.app.url("/readyz"))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    let text = ready.to_string();
    assert!(text.contains("per instance"), "{text}");
    proxy.restore();
}

/// Requests during a Redis outage (connections reset, then a silent partition) cost no extra
/// seconds: the first command that finds Redis gone opens the breaker, later ones skip it and use
/// this instance's memory. Once Redis is back, `/readyz` says so within seconds and the
/// connections are already live again (no request fails on a stale one).
#[tokio::test]
async fn a_redis_outage_costs_requests_no_seconds_and_ends_within_seconds() {
    let Some(RedisBehindProxy { proxy, url, prefix }) = RedisBehindProxy::start().await else {
        return;
    };
    let Some(s) = setup_with(|app| {
        app.with_rate_limit(100000)
            .with_redis(&url)
            .with_redis_prefix(&prefix)
    })
    .await
    else {
        return;
    };
    let c = callers(&s).await;
    let app = Arc::new(s.app);
    assert_eq!(whoami(&app, &c.bob).await.0, StatusCode::OK);
    // A cut, a partition, and a partition whose held connections never answer again (only new
    // connections do): a running replica once stayed on its stuck connections for good.
    for (partition, held) in [(false, false), (true, false), (true, true)] {
        if partition {
            proxy.partition();
        } else {
            proxy.cut();
        }
        // Four clients, 25 requests each, through the outage.
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let (app, token) = (app.clone(), c.bob.clone());
            tasks.spawn(async move {
                let mut seen = Vec::new();
                for _ in 0..25 {
                    let started = std::time::Instant::now();
                    let status = whoami(&app, &token).await.0;
                    seen.push((status, started.elapsed()));
                }
                seen
            });
        }
        let mut seen = Vec::new();
        while let Some(done) = tasks.join_next().await {
            seen.extend(done.expect("client"));
        }
        assert!(
            seen.iter().all(|(status, _)| *status == StatusCode::OK),
            "partition={partition}: {seen:?}"
        );
        let mut took: Vec<_> = seen.iter().map(|(_, took)| *took).collect();
        took.sort();
        let (median, slowest) = (took[took.len() / 2], took[took.len() - 1]);
        eprintln!("partition={partition}: median {median:?}, slowest {slowest:?}");
        // Before the breaker, every request waited for Redis's timeout (2 s) at least once.
        assert!(
            median < std::time::Duration::from_millis(250),
            "partition={partition}: median {median:?}"
        );
        // Only requests that met the outage first wait, once, for the command timeout.
        assert!(
            slowest < std::time::Duration::from_millis(1_500),
            "partition={partition}: slowest {slowest:?}"
        );
        let (_, ready) = readyz(&app).await;
        assert!(ready.to_string().contains("cache"), "{ready}");
        // Changes during the outage are made, and audited.
        for i in 0..5 {
            let name = format!("outage-{partition}-{held}-{i}");
            let (status, _, body) = rest(
                &app,
                reqwest::Method::POST,
                "/api/v1/servers",
                &c.alice,
                Some(json!({ "name": name, "url": "http://127.0.0.1:9/mcp" })),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }

        if held {
            proxy.restore_new_only();
        } else {
            proxy.restore();
        }
        let restored = std::time::Instant::now();
        loop {
            let (status, ready) = readyz(&app).await;
            if status == StatusCode::OK && ready["status"] == "ready" {
                // Shared again from the first decision after the cache answers; no request
                // is needed to make /readyz say so.
                assert!(!ready.to_string().contains("per instance"), "{ready}");
                break;
            }
            assert!(
                restored.elapsed() < std::time::Duration::from_secs(5),
                "partition={partition}: /readyz still failing 5 s after Redis came back"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        // Every pooled connection is live again: a burst of requests meets no error and no
        // command timeout.
        for _ in 0..20 {
            let started = std::time::Instant::now();
            assert_eq!(whoami(&app, &c.bob).await.0, StatusCode::OK);
            assert!(started.elapsed() < std::time::Duration::from_millis(400));
        }
        let (status, ready) = readyz(&app).await;
        assert_eq!(status, StatusCode::OK, "{ready}");
        assert!(!ready.to_string().contains("per instance"), "{ready}");
    }
    // Each change has exactly one row, and the chain verifies.
    let mut app = Arc::into_inner(app).expect("the only reference");
    app.take_running().stop().await.expect("clean shutdown");
    let rows = crate::support::audit::sqlite_rows(&app.dir.0).await;
    for (partition, held) in [(false, false), (true, false), (true, true)] {
        for i in 0..5 {
            let name = format!("outage-{partition}-{held}-{i}");
            let of = rows
                .iter()
                .filter(|r| r.event.server.as_deref() == Some(name.as_str()))
                .count();
            assert_eq!(of, 1, "{name}");
        }
    }
    let store = mreg::store::SqliteStore::open(&app.dir.0.join("mreg.db"), 1)
        .await
        .expect("open");
    let verified = mreg::audit::verify(&store).await.expect("verify");
    assert_eq!(verified.broken, None);
    assert_eq!(verified.rows as usize, rows.len());
}

async fn readyz(app: &TestApp) -> (StatusCode, Value) {
    let reply = app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    let status = reply.status();
    (status, reply.json().await.expect("json"))
}

#[tokio::test]
async fn tenants_neither_see_nor_reach_each_others_servers_unless_shared() {
    let policy = policy_file("[rest]\n\"POST /api/v1/servers\" = [\"user\", \"admin\"]\n");
    let Some(s) = two_tenants(|app| app.with_policy_file(&policy.path)).await else {
        return;
    };
    let c = callers(&s).await;
    let dave = other_tenant_admin(&s).await;
    let upstream = Upstream::start(false).await;
    let (status, _, body) = rest(
        &s.app,
        reqwest::Method::POST,
        "/api/v1/servers",
        &c.alice,
        Some(json!({"name": "contoso-only", "url": upstream.url})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["tenant"], TENANT);
    assert_eq!(body["shared"], false);
    let (status, _, _) = rest(
        &s.app,
        reqwest::Method::POST,
        "/api/v1/servers/contoso-only/health/check",
        &c.alice,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "the probe fills the tool catalog");
    // /metrics answers anyone: with authentication on it names no server (names are private
    // to their tenant) unless the operator asks for per-server series.
    let metrics = s.app.metrics().await;
    assert!(metrics.contains("mreg_http_requests"), "{metrics}");
    assert!(!metrics.contains("contoso-only"), "{metrics}");

    // The other tenant's admin sees nothing of it, through any API.
    let (_, _, list) = rest(&s.app, reqwest::Method::GET, "/api/v1/servers", &dave, None).await;
    assert_eq!(
        list["servers"].as_array().expect("servers").len(),
        0,
        "{list}"
    );
    for path in [
        "/api/v1/servers/contoso-only",
        "/api/v1/servers/contoso-only/health",
        "/v0.1/servers/local.mreg%2Fcontoso-only/versions/latest",
    ] {
        assert_eq!(
            rest(&s.app, reqwest::Method::GET, path, &dave, None)
                .await
                .0,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    let (_, _, v0) = rest(&s.app, reqwest::Method::GET, "/v0.1/servers", &dave, None).await;
    assert_eq!(v0["servers"].as_array().expect("servers").len(), 0, "{v0}");
    let (_, _, tools) = rest(
        &s.app,
        reqwest::Method::GET,
        "/api/v1/tools?q=echo",
        &dave,
        None,
    )
    .await;
    assert_eq!(
        tools["tools"].as_array().expect("tools").len(),
        0,
        "{tools}"
    );
    let (_, _, tools) = rest(
        &s.app,
        reqwest::Method::GET,
        "/api/v1/tools?q=echo",
        &c.alice,
        None,
    )
    .await;
    assert!(
        !tools["tools"].as_array().expect("tools").is_empty(),
        "the owner finds its tools"
    );
    assert_eq!(
        rest(
            &s.app,
            reqwest::Method::PATCH,
            "/api/v1/servers/contoso-only",
            &dave,
            Some(json!({"description": "mine"}))
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        rest(
            &s.app,
            reqwest::Method::DELETE,
            "/api/v1/servers/contoso-only",
            &dave,
            None
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        mcp_initialize(&format!("{}/servers/contoso-only/mcp", s.mcp), Some(&dave))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let mcp = mcp_client(&format!("{}/mcp", s.mcp), &dave).await;
    let listed = call(&mcp, "list_servers", json!({})).await.expect("list");
    assert!(
        !format!("{listed:?}").contains("contoso-only"),
        "{listed:?}"
    );
    for (tool, args) in [
        ("get_server", json!({"name": "contoso-only"})),
        ("get_server_health", json!({"name": "contoso-only"})),
        ("delete_server", json!({"name": "contoso-only"})),
        (
            "proxy_request",
            json!({"server": "contoso-only", "method": "tools/list"}),
        ),
    ] {
        let result = call(&mcp, tool, args).await.expect("a tool result");
        assert_eq!(result.is_error, Some(true), "{tool}");
        assert!(
            format!("{result:?}").contains("not found")
                || format!("{result:?}").contains("No server"),
            "{tool}: {result:?}"
        );
    }

    // Only an admin may share; once shared, every tenant sees and reaches it.
    let (status, _, refused) = rest(
        &s.app,
        reqwest::Method::POST,
        "/api/v1/servers",
        &c.bob,
        Some(json!({"name": "bobs", "url": upstream.url, "shared": true})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .expect("message")
            .contains("only an admin can share")
    );
    let (status, _, shared) = rest(
        &s.app,
        reqwest::Method::PATCH,
        "/api/v1/servers/contoso-only",
        &c.alice,
        Some(json!({"shared": true})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{shared}");
    assert_eq!(shared["shared"], true);
    assert_eq!(
        rest(
            &s.app,
            reqwest::Method::GET,
            "/api/v1/servers/contoso-only",
            &dave,
            None
        )
        .await
        .0,
        StatusCode::OK
    );
    let (status, _) =
        mcp_initialize(&format!("{}/servers/contoso-only/mcp", s.mcp), Some(&dave)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a shared server is reachable from every tenant"
    );

    // The audit log is partitioned the same way: each tenant's admin reads its own actors' rows.
    crate::support::audit::at_least(4, || crate::support::audit::sqlite_rows(&s.app.dir.0)).await;
    let actors = |token: String| {
        let app = &s.app;
        async move {
            let (status, _, page) = rest(
                app,
                reqwest::Method::GET,
                "/api/v1/audit?limit=500",
                &token,
                None,
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{page}");
            page["entries"]
                .as_array()
                .expect("entries")
                .iter()
                .map(|e| e["actor"]["tenant"].as_str().unwrap_or("-").to_owned())
                .collect::<Vec<_>>()
        }
    };
    let seen_by_alice = actors(c.alice.clone()).await;
    assert!(!seen_by_alice.is_empty() && seen_by_alice.iter().all(|t| t == TENANT));
    let seen_by_dave = actors(dave.clone()).await;
    assert!(
        !seen_by_dave.is_empty()
            && seen_by_dave
                .iter()
                .all(|t| t == crate::support::idp::OTHER_TENANT),
        "{seen_by_dave:?}"
    );
}

/// One raw MCP POST with a bearer token; returns status, headers and the JSON body.
async fn mcp_post(
    url: &str,
    token: Option<&str>,
    session: Option<&str>,
    body: &Value,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    let reply = request.send().await.expect("request");
    let (status, headers) = (reply.status(), reply.headers().clone());
    let text = reply.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or_else(|_| {
        // An SSE answer: its last data line.
        text.lines()
            .rev()
            .filter_map(|l| l.strip_prefix("data:"))
            .find_map(|d| serde_json::from_str(d.trim()).ok())
            .unwrap_or(Value::Null)
    });
    (status, headers, json)
}

fn rpc_request(id: u64, method: &str, params: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params })
}

fn initialize_params() -> Value {
    json!({ "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": { "name": "budget-test", "version": "0" } })
}

/// Asserts a JSON-RPC error answer: the status, `application/json`, the request's id, the code,
/// and a message naming the cause.
fn assert_rpc_error(
    (status, headers, body): &(StatusCode, reqwest::header::HeaderMap, Value),
    expected: StatusCode,
    id: Value,
    code: i64,
    says: &str,
) {
    assert_eq!(*status, expected, "{body}");
    assert!(
        headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json")),
        "{headers:?}"
    );
    assert_eq!(body["jsonrpc"], "2.0", "{body}");
    assert_eq!(body["id"], id, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(says)),
        "the message names the cause ({says}): {body}"
    );
}

/// Opens a GET stream of `session` on `url` and returns the answer unread (the stream stays
/// open while it is held).
async fn open_stream(url: &str, token: &str, session: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .header("accept", "text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .header("mcp-session-id", session)
        .send()
        .await
        .expect("GET")
}

/// A session of `token` on `url`, initialized.
async fn own_session(url: &str, token: &str) -> String {
    let opened = mcp_post(
        url,
        Some(token),
        None,
        &rpc_request(1, "initialize", initialize_params()),
    )
    .await;
    assert_eq!(opened.0, StatusCode::OK, "{}", opened.2);
    let session = opened.1["mcp-session-id"]
        .to_str()
        .expect("session")
        .to_owned();
    let initialized = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
    let (status, _, _) = mcp_post(url, Some(token), Some(&session), &initialized).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    session
}

/// A caller, even one without a role, holds at most 32 GET streams at once: each is a connection
/// of the gateway's for as long as the caller likes, and 20,000 of them left both listeners
/// unable to accept connections.
#[tokio::test]
async fn a_caller_holds_a_bounded_number_of_open_streams() {
    let Some(s) = setup().await else { return };
    let c = callers(&s).await;
    let url = format!("{}/mcp", s.mcp);
    let sessions = [
        own_session(&url, &c.carol).await,
        own_session(&url, &c.carol).await,
    ];
    let mut held = Vec::new();
    for i in 0..32 {
        let stream = open_stream(&url, &c.carol, &sessions[i % 2]).await;
        assert_eq!(stream.status(), StatusCode::OK, "stream {i}");
        held.push(stream);
    }
    let refused = open_stream(&url, &c.carol, &sessions[0]).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = refused.json().await.expect("a JSON-RPC error");
    assert_eq!(body["error"]["code"], -32029, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("too many open streams") && m.contains("32")),
        "{body}"
    );
    // Another caller is not held back by Carol's streams.
    let bobs = own_session(&url, &c.bob).await;
    assert_eq!(
        open_stream(&url, &c.bob, &bobs).await.status(),
        StatusCode::OK
    );
    // A stream that ends gives its place back.
    drop(held.pop());
    let mut reopened = StatusCode::TOO_MANY_REQUESTS;
    for _ in 0..50 {
        reopened = open_stream(&url, &c.carol, &sessions[1]).await.status();
        if reopened == StatusCode::OK {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(reopened, StatusCode::OK);
    let rows = crate::support::audit::until(
        |rows| rows.iter().any(|r| r.event.operation == "stream"),
        || crate::support::audit::sqlite_rows(&s.app.dir.0),
    )
    .await;
    let refused: Vec<_> = rows
        .iter()
        .filter(|r| r.event.operation == "stream")
        .collect();
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!(refused[0].event.decision, "rate_limited");
    assert_eq!(
        refused[0].event.actor_subject,
        "cccccccc-cccc-4ccc-8ccc-cccccccccccc"
    );
}

/// A stream is free when admitted; refused, it spends the caller's budget like a request, so a
/// caller without the server's role cannot ask again and again at no cost.
#[tokio::test]
async fn refused_streams_spend_the_budget() {
    let Some(s) = setup_with(|app| app.with_rate_limit(4)).await else {
        return;
    };
    let c = callers(&s).await;
    let upstream = Upstream::start(true).await;
    let (status, _, body) = rest(
        &s.app,
        reqwest::Method::POST,
        "/api/v1/servers",
        &c.alice,
        Some(json!({"name": "echo", "url": upstream.url})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let url = format!("{}/servers/echo/mcp", s.mcp);
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(open_stream(&url, &c.carol, "any").await.status().as_u16());
    }
    assert_eq!(statuses, [403, 403, 403, 403, 429, 429, 429, 429]);
    assert_eq!(upstream.count("GET"), 0, "nothing reached the upstream");
    // So do the other free messages refused: notifications, a session's end, and anything to
    // a server that does not exist (Erin, a user, has a budget of her own).
    let initialized = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
    let nowhere = format!("{}/servers/nope/mcp", s.mcp);
    let mut statuses = Vec::new();
    for i in 0..6 {
        let status = match i % 3 {
            0 => mcp_post(&url, Some(&c.carol), None, &initialized).await.0,
            1 => reqwest::Client::new()
                .delete(&url)
                .bearer_auth(&c.carol)
                .send()
                .await
                .expect("DELETE")
                .status(),
            _ => {
                mcp_post(&nowhere, Some(&c.carol), None, &initialized)
                    .await
                    .0
            }
        };
        statuses.push(status.as_u16());
    }
    assert!(statuses.iter().all(|s| *s == 429), "{statuses:?}");
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            mcp_post(&nowhere, Some(&c.bob), None, &initialized)
                .await
                .0
                .as_u16(),
        );
    }
    assert_eq!(statuses, [404, 404, 404, 404, 429, 429], "Bob's own budget");
    // A free message the server itself refuses spends one too: Alice may use the server, but
    // ends no session (it names none), 3 times over what is left of her budget.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let ended = reqwest::Client::new()
            .delete(&url)
            .bearer_auth(&c.alice)
            .header("mcp-protocol-version", "2025-11-25")
            .send()
            .await
            .expect("DELETE");
        statuses.push(ended.status().as_u16());
    }
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert!(
        refused >= 3
            && statuses
                .iter()
                .all(|s| !(200..300).contains(s) && *s != 405),
        "{statuses:?}"
    );
    let carol = "cccccccc-cccc-4ccc-8ccc-cccccccccccc";
    let rows = crate::support::audit::until(
        |rows| {
            rows.iter()
                .filter(|r| r.event.actor_subject == carol && r.event.decision == "rate_limited")
                .count()
                >= 4
        },
        || crate::support::audit::sqlite_rows(&s.app.dir.0),
    )
    .await;
    let carols: Vec<(&str, &str, Option<&str>)> = rows
        .iter()
        .filter(|r| r.event.actor_subject == carol)
        .map(|r| {
            (
                r.event.decision.as_str(),
                r.event.operation.as_str(),
                r.event.server.as_deref(),
            )
        })
        .collect();
    // One row per refusal within the budget, then one per kind of message and server: the
    // rest are folded into those.
    assert_eq!(
        carols,
        [
            ("deny", "stream", Some("echo")),
            ("deny", "stream", Some("echo")),
            ("deny", "stream", Some("echo")),
            ("deny", "stream", Some("echo")),
            ("rate_limited", "stream", Some("echo")),
            ("rate_limited", "notifications/initialized", Some("echo")),
            ("rate_limited", "session/end", Some("echo")),
            ("rate_limited", "notifications/initialized", Some("nope")),
        ]
    );
}

#[tokio::test]
async fn a_budget_counts_json_rpc_requests_only() {
    let policy = policy_file("[rate_limits]\nroles = { admin = 100 }\n");
    let Some(s) = setup_with(|app| app.with_rate_limit(4).with_policy_file(&policy.path)).await
    else {
        return;
    };
    let c = callers(&s).await;
    let upstream = Upstream::start(true).await;
    let body = json!({ "name": "echo", "url": upstream.url });
    let (status, _, created) = rest(
        &s.app,
        reqwest::Method::POST,
        "/api/v1/servers",
        &c.alice,
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let url = format!("{}/servers/echo/mcp", s.mcp);
    let initialized = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
    let echo = json!({ "name": "echo", "arguments": { "text": "hi" } });
    // Two sessions of one call each: initialize and tools/call count, the notification and the
    // session's end do not. Four requests: exactly bob's budget.
    for round in 0..2 {
        let opened = mcp_post(
            &url,
            Some(&c.bob),
            None,
            &rpc_request(1, "initialize", initialize_params()),
        )
        .await;
        assert_eq!(opened.0, StatusCode::OK, "round {round}: {}", opened.2);
        let session = opened.1["mcp-session-id"]
            .to_str()
            .expect("session")
            .to_owned();
        let (status, _, _) = mcp_post(&url, Some(&c.bob), Some(&session), &initialized).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let called = mcp_post(
            &url,
            Some(&c.bob),
            Some(&session),
            &rpc_request(2, "tools/call", echo.clone()),
        )
        .await;
        assert_eq!(called.0, StatusCode::OK, "round {round}: {}", called.2);
        let ended = reqwest::Client::new()
            .delete(&url)
            .bearer_auth(&c.bob)
            .header("mcp-session-id", &session)
            .header("mcp-protocol-version", "2025-11-25")
            .send()
            .await
            .expect("delete");
        assert!(
            matches!(ended.status(), StatusCode::OK | StatusCode::NO_CONTENT),
            "the end of a session answers 200 or 204, as SDK clients expect: {}",
            ended.status()
        );
    }
    let calls_before = upstream.count("POST tools/call");
    // The fifth request is refused: a JSON-RPC error with the request's id, the delay in data,
    // and Retry-After; nothing reaches the upstream.
    let refused = mcp_post(
        &url,
        Some(&c.bob),
        None,
        &rpc_request(9, "initialize", initialize_params()),
    )
    .await;
    assert_rpc_error(
        &refused,
        StatusCode::TOO_MANY_REQUESTS,
        json!(9),
        -32029,
        "rate limit exceeded; retry in",
    );
    assert!(refused.1.contains_key("retry-after"), "{:?}", refused.1);
    let wait = refused.2["error"]["data"]["retry_after_ms"]
        .as_u64()
        .expect("retry_after_ms");
    assert!((1..=15_000).contains(&wait), "{wait}");
    let refused_call = mcp_post(
        &url,
        Some(&c.bob),
        None,
        &rpc_request(10, "tools/call", echo.clone()),
    )
    .await;
    assert_eq!(refused_call.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(upstream.count("POST tools/call"), calls_before);
    // The refusals' audit rows keep the JSON-RPC method (and tool), not just the route.
    let rows = crate::support::audit::until(
        |rows| {
            rows.iter()
                .filter(|r| r.event.decision == "rate_limited")
                .count()
                >= 2
        },
        || crate::support::audit::sqlite_rows(&s.app.dir.0),
    )
    .await;
    let limited: Vec<_> = rows
        .iter()
        .filter(|r| r.event.decision == "rate_limited" && r.event.actor_subject == BOB_OID)
        .map(|r| {
            (
                r.event.operation.as_str(),
                r.event.tool.as_deref(),
                r.event.server.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        limited,
        [
            ("initialize", None, Some("echo")),
            ("tools/call", Some("echo"), Some("echo")),
        ]
    );
}

/// The refusals an SDK user meets, each named in what the SDK shows: `(who, server, command,
/// what the message says)`. Run against `client`, which returns (succeeded, its JSON output).
async fn each_refusal_names_its_cause<F, Fut>(client: F)
where
    F: Fn(String, Option<String>, Vec<String>) -> Fut,
    Fut: std::future::Future<Output = (bool, Value)>,
{
    let policy = policy_file(
        "[rate_limits]\nroles = { admin = 100 }\n[servers.payroll]\nroles = [\"finance\"]\n",
    );
    let Some(s) = setup_with(|app| {
        app.with_rate_limit(3)
            .with_policy_file(&policy.path)
            .with_config(|c| c.health.unhealthy_after = 1)
    })
    .await
    else {
        return;
    };
    let c = callers(&s).await;
    let upstream = Upstream::start(true).await;
    for (name, url) in [
        ("echo", upstream.url.as_str()),
        ("payroll", upstream.url.as_str()),
        ("dead", "http://127.0.0.1:1/mcp"),
    ] {
        let body = json!({ "name": name, "url": url });
        let (status, _, created) = rest(
            &s.app,
            reqwest::Method::POST,
            "/api/v1/servers",
            &c.alice,
            Some(body),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
    }
    let (_, _, report) = rest(
        &s.app,
        reqwest::Method::POST,
        "/api/v1/servers/dead/health/check",
        &c.alice,
        None,
    )
    .await;
    assert_eq!(report["current"]["status"], "unhealthy", "{report}");
    let large = policy.dir.0.join("large.json");
    std::fs::write(
        &large,
        json!({ "text": "x".repeat(5 * 1024 * 1024) }).to_string(),
    )
    .expect("large arguments");
    let at = |server: &str| format!("{}/servers/{server}/mcp", s.mcp);
    let tools = || vec!["tools".to_owned()];
    let cases = [
        (
            Some(&c.carol),
            at("payroll"),
            tools(),
            "requires the role finance",
        ),
        (
            Some(&c.alice),
            at("nope"),
            tools(),
            "no server named 'nope'",
        ),
        (Some(&c.alice), at("dead"), tools(), "unhealthy"),
        (
            Some(&c.alice),
            at("echo"),
            vec![
                "call".to_owned(),
                "echo".to_owned(),
                format!("@{}", large.display()),
            ],
            "larger than",
        ),
        (None, at("echo"), tools(), "bearer token is required"),
        (
            None,
            format!("{}/mcp", s.mcp),
            tools(),
            "bearer token is required",
        ),
    ];
    for (token, url, command, says) in cases {
        let (ok, answer) = client(url.clone(), token.cloned(), command).await;
        assert!(!ok, "{url}: {answer}");
        let message = answer["error"].as_str().unwrap_or_default();
        assert!(
            message.contains(says),
            "{url}: the SDK shows {answer}, not '{says}'"
        );
    }
    // Bob's budget of 3: one listing is initialize + tools/list; the second listing's
    // tools/list is the fourth request.
    let (ok, first) = client(at("echo"), Some(c.bob.clone()), tools()).await;
    assert!(ok, "{first}");
    let (ok, refused) = client(at("echo"), Some(c.bob.clone()), tools()).await;
    assert!(!ok, "{refused}");
    let message = refused["error"].as_str().unwrap_or_default();
    assert!(
        message.contains("rate limit exceeded; retry in"),
        "the SDK shows {refused}"
    );
}

#[tokio::test]
async fn the_typescript_sdk_shows_the_cause_of_every_refusal() {
    each_refusal_names_its_cause(|url, token, command| async move {
        let header = token.map(|t| format!("Authorization: Bearer {t}"));
        let mut options = Vec::new();
        if let Some(header) = &header {
            options.extend(["--header", header.as_str()]);
        }
        let command: Vec<&str> = command.iter().map(String::as_str).collect();
        crate::support::peers::ts_client(&url, &options, &command).await
    })
    .await;
}

#[tokio::test]
async fn the_python_sdk_shows_the_cause_of_every_refusal() {
    let Some(python) = crate::support::peers::python_peers() else {
        return;
    };
    let python = &python;
    each_refusal_names_its_cause(|url, token, command| async move {
        let mut options = Vec::new();
        if let Some(token) = &token {
            options.extend(["--bearer", token.as_str()]);
        }
        let command: Vec<&str> = command.iter().map(String::as_str).collect();
        crate::support::peers::py_client(python, &url, &options, &command).await
    })
    .await;
}

#[tokio::test]
async fn a_caller_without_a_role_reaches_no_server_through_either_path() {
    let Some(s) = setup().await else { return };
    let c = callers(&s).await;
    let upstream = Upstream::start(true).await;
    let (status, _, body) = rest(
        &s.app,
        reqwest::Method::POST,
        "/api/v1/servers",
        &c.alice,
        Some(json!({"name": "echo", "url": upstream.url})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let url = format!("{}/servers/echo/mcp", s.mcp);
    let before = upstream.count("POST initialize");
    // Carol is signed in but holds no app role: servers need the roles of proxy_request.
    let refused = mcp_post(
        &url,
        Some(&c.carol),
        None,
        &rpc_request(3, "initialize", initialize_params()),
    )
    .await;
    assert_rpc_error(
        &refused,
        StatusCode::FORBIDDEN,
        json!(3),
        -32003,
        "server 'echo' requires the role user or admin",
    );
    assert_eq!(
        refused.2["error"]["data"]["required_roles"],
        json!(["user", "admin"])
    );
    assert_eq!(
        upstream.count("POST initialize"),
        before,
        "nothing reached the upstream"
    );
    let carol = mcp_client(&format!("{}/mcp", s.mcp), &c.carol).await;
    let through_tool = call(
        &carol,
        "proxy_request",
        json!({"server": "echo", "method": "tools/list"}),
    )
    .await;
    let refused = match through_tool {
        Err(e) => error_code(&e).1,
        Ok(result) => format!("{result:?}"),
    };
    assert!(refused.contains("requires the role"), "{refused}");
    assert_eq!(upstream.count("POST initialize"), before);
    // Bob (user) reaches it both ways.
    let (status, headers) = mcp_initialize(&url, Some(&c.bob)).await;
    assert_eq!(status, StatusCode::OK);
    let bobs_session = headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .expect("a session")
        .to_owned();
    // A tool call of Carol's is refused as the server is, 403, with a session (Bob's) or
    // without: what she lacks is the server, not one of its tools.
    for session in [None, Some(bobs_session.as_str())] {
        let refused = mcp_post(
            &url,
            Some(&c.carol),
            session,
            &rpc_request(
                4,
                "tools/call",
                json!({"name": "echo", "arguments": {"text": "x"}}),
            ),
        )
        .await;
        assert_rpc_error(
            &refused,
            StatusCode::FORBIDDEN,
            json!(4),
            -32003,
            "server 'echo' requires the role user or admin",
        );
    }
    assert_eq!(
        upstream.count("POST tools/call"),
        0,
        "nothing reached the upstream"
    );
    let bob = mcp_client(&format!("{}/mcp", s.mcp), &c.bob).await;
    let listing = call(
        &bob,
        "proxy_request",
        json!({"server": "echo", "method": "tools/list"}),
    )
    .await
    .expect("a tool result");
    assert_ne!(listing.is_error, Some(true), "{listing:?}");
}

/// Registers `phoenix` (as Alice, an admin) at a free loopback port where nothing listens yet,
/// and returns the port's address, for the server to come back on.
async fn register_phoenix(s: &Setup, c: &Callers) -> std::net::SocketAddr {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let (status, _, body) = rest(
        &s.app,
        reqwest::Method::POST,
        "/api/v1/servers",
        &c.alice,
        Some(json!({"name": "phoenix", "url": format!("http://{addr}/mcp")})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    addr
}

/// The breaker comes after the roles: a caller without a role for an unhealthy server is told
/// about the role, not the server's health, and its calls set off no half-open probe; a caller
/// with the role is told the server is unhealthy, and its call does probe it.
#[tokio::test]
async fn a_caller_without_a_role_learns_nothing_of_a_servers_health_and_wakes_no_probe() {
    let Some(s) = setup_with(|app| app.with_config(|c| c.health.unhealthy_after = 1)).await else {
        return;
    };
    let c = callers(&s).await;
    let addr = register_phoenix(&s, &c).await;
    let (_, _, report) = rest(
        &s.app,
        reqwest::Method::POST,
        "/api/v1/servers/phoenix/health/check",
        &c.alice,
        Some(json!({})),
    )
    .await;
    assert_eq!(report["current"]["status"], "unhealthy", "{report}");
    // The server comes back: from now on a probe would reach it and be counted.
    let upstream = Upstream::start_with(crate::support::upstream::Options {
        addr,
        ..Default::default()
    })
    .await;
    let seen = || -> usize {
        upstream
            .requests
            .lock()
            .map(|r| r.values().sum())
            .unwrap_or(0)
    };
    let url = format!("{}/servers/phoenix/mcp", s.mcp);
    let refused = mcp_post(
        &url,
        Some(&c.carol),
        None,
        &rpc_request(7, "initialize", initialize_params()),
    )
    .await;
    assert_rpc_error(
        &refused,
        StatusCode::FORBIDDEN,
        json!(7),
        -32003,
        "server 'phoenix' requires the role user or admin",
    );
    let carol = mcp_client(&format!("{}/mcp", s.mcp), &c.carol).await;
    let through_tool = match call(
        &carol,
        "proxy_request",
        json!({"server": "phoenix", "method": "tools/list"}),
    )
    .await
    {
        Err(e) => error_code(&e).1,
        Ok(result) => format!("{result:?}"),
    };
    assert!(
        through_tool.contains("requires the role") && !through_tool.contains("unhealthy"),
        "{through_tool}"
    );
    // A probe set off would have arrived by now (it is spawned at once).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(seen(), 0, "no probe reached the upstream");
    let (_, _, health) = rest(
        &s.app,
        reqwest::Method::GET,
        "/api/v1/servers/phoenix/health",
        &c.alice,
        None,
    )
    .await;
    assert_eq!(health["current"]["status"], "unhealthy", "{health}");

    // Bob holds the role: he is told of the server's health, and his call probes it.
    let unavailable = mcp_post(
        &url,
        Some(&c.bob),
        None,
        &rpc_request(8, "initialize", initialize_params()),
    )
    .await;
    assert_rpc_error(
        &unavailable,
        StatusCode::SERVICE_UNAVAILABLE,
        json!(8),
        -32000,
        "server 'phoenix' (unhealthy",
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while seen() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the admitted call set off no probe"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The circuit breaker comes before the tool budgets: calls refused because the server is
/// unhealthy spend none, so the caller has its whole budget when the server is back.
#[tokio::test]
async fn a_call_refused_as_unavailable_spends_no_tool_budget() {
    let policy = policy_file("[rate_limits]\ntools = { \"phoenix/echo\" = 2 }\n");
    let Some(s) = setup_with(|app| {
        app.with_policy_file(&policy.path)
            .with_config(|c| c.health.unhealthy_after = 1)
    })
    .await
    else {
        return;
    };
    let c = callers(&s).await;
    let addr = register_phoenix(&s, &c).await;
    let check = || {
        rest(
            &s.app,
            reqwest::Method::POST,
            "/api/v1/servers/phoenix/health/check",
            &c.alice,
            Some(json!({})),
        )
    };
    assert_eq!(check().await.2["current"]["status"], "unhealthy");
    let url = format!("{}/servers/phoenix/mcp", s.mcp);
    let echo = |id: u64| {
        rpc_request(
            id,
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "hi"}}),
        )
    };
    for id in 1..=3 {
        let refused = mcp_post(&url, Some(&c.bob), None, &echo(id)).await;
        assert_eq!(refused.0, StatusCode::SERVICE_UNAVAILABLE, "{}", refused.2);
    }
    let _back = Upstream::start_with(crate::support::upstream::Options {
        addr,
        stateful: false,
        ..Default::default()
    })
    .await;
    assert_eq!(check().await.2["current"]["status"], "healthy");
    for id in 4..=5 {
        let (status, _, body) = mcp_post(&url, Some(&c.bob), None, &echo(id)).await;
        assert_eq!(status, StatusCode::OK, "the budget is whole: {body}");
        assert_eq!(body["result"]["content"][0]["text"], "hi", "{body}");
    }
    // The third call that reached the server is over the budget (a tools/call refusal is a
    // JSON-RPC error, which SDKs show their user).
    let spent = mcp_post(&url, Some(&c.bob), None, &echo(6)).await;
    assert_eq!(spent.2["error"]["code"], -32029, "{}", spent.2);
    assert!(
        spent.2["error"]["data"]["retry_after_ms"].is_u64(),
        "{}",
        spent.2
    );
}

#[tokio::test]
async fn head_is_decided_as_get() {
    let Some(s) = setup().await else { return };
    let c = callers(&s).await;
    for path in [
        "/api/v1/audit",
        "/api/v1/audit?actor=alice@contoso.com&limit=1",
    ] {
        let head = s
            .app
            .http
            .head(s.app.url(path))
            .bearer_auth(&c.bob)
            .send()
            .await
            .expect("HEAD");
        assert_eq!(head.status(), StatusCode::FORBIDDEN, "{path}");
        let (status, _, body) = rest(&s.app, reqwest::Method::GET, path, &c.bob, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }
    let head = s
        .app
        .http
        .head(s.app.url("/api/v1/audit"))
        .bearer_auth(&c.alice)
        .send()
        .await
        .expect("HEAD");
    assert_eq!(head.status(), StatusCode::OK, "admins may");
}

#[tokio::test]
async fn each_tenant_has_its_own_server_names_and_rules_name_their_tenant() {
    use crate::support::idp::OTHER_TENANT;
    let policy = policy_file(&format!(
        "[servers.\"{OTHER_TENANT}/payroll\"]\nroles = [\"finance\"]\n"
    ));
    let Some(s) = two_tenants(|app| {
        app.with_policy_file(&policy.path)
            .setting("MREG_METRICS_PER_SERVER", "true")
    })
    .await
    else {
        return;
    };
    let c = callers(&s).await;
    let dave = other_tenant_admin(&s).await;
    let upstream = Upstream::start(false).await;
    let register = |token: &str, body: Value| {
        let (app, token) = (&s.app, token.to_owned());
        async move {
            rest(
                app,
                reqwest::Method::POST,
                "/api/v1/servers",
                &token,
                Some(body),
            )
            .await
        }
    };
    // Both tenants register "payroll": neither collides with, nor learns of, the other's.
    for (token, key) in [(&c.alice, "contoso-key"), (&dave, "fabrikam-key")] {
        let (status, _, body) = register(
            token,
            json!({"name": "payroll", "url": upstream.url, "upstream_headers": {"x-api-key": key}}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, _, again) = register(&dave, json!({"name": "payroll", "url": upstream.url})).await;
    assert_eq!(status, StatusCode::CONFLICT, "twice in one tenant: {again}");
    for (token, tenant) in [(&c.alice, TENANT), (&dave, OTHER_TENANT)] {
        let (_, _, one) = rest(
            &s.app,
            reqwest::Method::GET,
            "/api/v1/servers/payroll",
            token,
            None,
        )
        .await;
        assert_eq!(one["tenant"], tenant, "{one}");
        let (_, _, list) = rest(&s.app, reqwest::Method::GET, "/api/v1/servers", token, None).await;
        let listed = list["servers"].as_array().expect("servers");
        assert_eq!(listed.len(), 1, "{list}");
        assert_eq!(listed[0]["tenant"], tenant, "{list}");
    }
    // Each tenant's /servers/payroll/mcp reaches its own registration, with its own credentials.
    let alices = mcp_client(&format!("{}/servers/payroll/mcp", s.mcp), &c.alice).await;
    let seen = call(&alices, "whoami", json!({}))
        .await
        .expect("alice's payroll");
    assert!(
        crate::support::mcp::text(&seen).contains("contoso-key"),
        "{seen:?}"
    );
    // The other tenant's payroll needs the role its qualified rule names, which Dave lacks;
    // Alice's payroll is not governed by that rule.
    let refused = rmcp::ServiceExt::serve(
        ClientConfig::new(ClientCapabilities::default(), Implementation::new("t", "0")),
        StreamableHttpClientTransport::with_client(
            reqwest::Client::new(),
            StreamableHttpClientTransportConfig::with_uri(format!("{}/servers/payroll/mcp", s.mcp))
                .auth_header(dave.clone()),
        ),
    )
    .await;
    assert!(
        refused.is_err(),
        "dave lacks finance for his tenant's payroll"
    );
    let calls_before = upstream.count("POST tools/call");
    let mut finance = s.idp.claims(OTHER_TENANT);
    finance["oid"] = json!("eeeeeeee-eeee-4eee-8eee-eeeeeeeeeeee");
    finance["roles"] = json!(["finance", "user"]);
    let erin = s.idp.sign(finance).await;
    let erins = mcp_client(&format!("{}/servers/payroll/mcp", s.mcp), &erin).await;
    let seen = call(&erins, "whoami", json!({}))
        .await
        .expect("erin's payroll");
    assert!(
        crate::support::mcp::text(&seen).contains("fabrikam-key"),
        "{seen:?}"
    );
    assert_eq!(upstream.count("POST tools/call"), calls_before + 1);
    // Per-server metrics (asked for) keep each tenant's payroll apart.
    let metrics = s.app.metrics().await;
    for tenant in [TENANT, OTHER_TENANT] {
        assert!(
            metrics.contains(&format!("server=\"{tenant}/payroll\"")),
            "{tenant}: {metrics}"
        );
    }
    // proxy_request, the same capability through the gateway's own tool, resolves alike.
    let gateway = mcp_client(&format!("{}/mcp", s.mcp), &erin).await;
    let proxied = call(
        &gateway,
        "proxy_request",
        json!({"server": "payroll", "method": "tools/call", "params": {"name": "whoami", "arguments": {}}}),
    )
    .await
    .expect("proxy_request");
    assert!(
        format!("{proxied:?}").contains("fabrikam-key"),
        "{proxied:?}"
    );
    // Dave deletes his tenant's payroll; Alice's stays.
    let (status, _, _) = rest(
        &s.app,
        reqwest::Method::DELETE,
        "/api/v1/servers/payroll",
        &dave,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, kept) = rest(
        &s.app,
        reqwest::Method::GET,
        "/api/v1/servers/payroll",
        &c.alice,
        None,
    )
    .await;
    assert_eq!(
        (status, kept["tenant"].clone()),
        (StatusCode::OK, json!(TENANT))
    );
    let (status, _, _) = rest(
        &s.app,
        reqwest::Method::GET,
        "/api/v1/servers/payroll",
        &dave,
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "no other tenant's payroll shows through"
    );

    // A public name never keeps a tenant from its own server of that name, in either order:
    // Dave's own "ledger" stays his when Alice later shares one (sharing neither fails, which
    // would tell of Dave's, nor takes the name from his users); and his own "weather",
    // registered after Alice shared hers, is what his users reach from then on.
    let described = |token: &str, name: &str| {
        let (app, token, path) = (&s.app, token.to_owned(), format!("/api/v1/servers/{name}"));
        async move {
            let (status, _, one) = rest(app, reqwest::Method::GET, &path, &token, None).await;
            assert_eq!(status, StatusCode::OK, "{path}: {one}");
            one["description"].as_str().unwrap_or_default().to_owned()
        }
    };
    for (token, name, shared, description) in [
        (&dave, "ledger", false, "dave's"),
        (&c.alice, "ledger", true, "alice's"),
        (&c.alice, "weather", true, "alice's"),
        (&dave, "weather", false, "dave's"),
    ] {
        let (status, _, body) = register(
            token,
            json!({"name": name, "url": upstream.url, "shared": shared, "description": description}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{name}: {body}");
    }
    for name in ["ledger", "weather"] {
        assert_eq!(described(&dave, name).await, "dave's", "{name}");
        assert_eq!(described(&c.alice, name).await, "alice's", "{name}");
    }
    let (_, _, list) = rest(&s.app, reqwest::Method::GET, "/api/v1/servers", &dave, None).await;
    let mut listed: Vec<(&str, &str)> = list["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().expect("name"),
                s["description"].as_str().expect("description"),
            )
        })
        .collect();
    listed.sort_unstable();
    assert_eq!(
        listed,
        [("ledger", "dave's"), ("weather", "dave's")],
        "his own, each once: {list}"
    );
    // Once Dave deletes his, the name means Alice's shared one; he may take it back.
    let (status, _, _) = rest(
        &s.app,
        reqwest::Method::DELETE,
        "/api/v1/servers/weather",
        &dave,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(described(&dave, "weather").await, "alice's");
    let (status, _, body) = register(
        &dave,
        json!({"name": "weather", "url": upstream.url, "description": "dave's again"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(described(&dave, "weather").await, "dave's again");
    // Twice in one tenant, or two public servers of one name, stays a conflict.
    let (status, _, _) = register(&dave, json!({"name": "weather", "url": upstream.url})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _, body) = rest(
        &s.app,
        reqwest::Method::PATCH,
        "/api/v1/servers/weather",
        &dave,
        Some(json!({"shared": true})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("a shared or tenantless server called 'weather'")),
        "{body}"
    );

    // Every audit row of a server reached or changed says which tenant's server its name
    // meant: the proxy's, proxy_request's and the REST changes' (a refused registration
    // reached none).
    let rows = crate::support::audit::until(
        |rows| {
            rows.iter()
                .any(|r| r.event.operation == "DELETE /api/v1/servers/{name}")
        },
        || crate::support::audit::sqlite_rows(&s.app.dir.0),
    )
    .await;
    let meant = |actor: &str, operation: &str, server: &str| -> Vec<Option<String>> {
        rows.iter()
            .filter(|r| {
                r.event.actor_tenant.as_deref() == Some(actor)
                    && r.event.outcome == "ok"
                    && r.event.operation == operation
                    && r.event.server.as_deref() == Some(server)
            })
            .map(|r| r.event.server_tenant.clone())
            .collect()
    };
    for (actor, operation, server, tenant) in [
        (TENANT, "tools/call", "payroll", TENANT),
        (OTHER_TENANT, "tools/call", "payroll", OTHER_TENANT),
        (OTHER_TENANT, "proxy_request", "payroll", OTHER_TENANT),
        (TENANT, "POST /api/v1/servers", "payroll", TENANT),
        (
            OTHER_TENANT,
            "POST /api/v1/servers",
            "payroll",
            OTHER_TENANT,
        ),
        (
            OTHER_TENANT,
            "DELETE /api/v1/servers/{name}",
            "payroll",
            OTHER_TENANT,
        ),
        (
            OTHER_TENANT,
            "DELETE /api/v1/servers/{name}",
            "weather",
            OTHER_TENANT,
        ),
    ] {
        let found = meant(actor, operation, server);
        assert!(!found.is_empty(), "{actor} {operation} {server}: no row");
        assert!(
            found.iter().all(|t| t.as_deref() == Some(tenant)),
            "{actor} {operation} {server}: {found:?}"
        );
    }
    let verified = mreg::audit::verify(
        &mreg::store::SqliteStore::open(&s.app.dir.0.join("mreg.db"), 1)
            .await
            .expect("open"),
    )
    .await
    .expect("verify");
    assert_eq!(verified.broken, None, "the rows with a server tenant chain");
}

#[tokio::test]
async fn only_the_owning_tenant_changes_or_deletes_a_shared_server() {
    let Some(s) = two_tenants(|app| app).await else {
        return;
    };
    let c = callers(&s).await;
    let dave = other_tenant_admin(&s).await;
    let upstream = Upstream::start(false).await;
    let (status, _, created) = rest(
        &s.app,
        reqwest::Method::POST,
        "/api/v1/servers",
        &c.alice,
        Some(
            json!({"name": "payments", "url": upstream.url, "shared": true,
            "description": "contoso's", "upstream_headers": {"x-api-key": "contoso-secret"}}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let path = "/api/v1/servers/payments";
    // Dave, an admin of the other tenant, sees the shared server but cannot change it.
    for patch in [
        json!({"url": "https://attacker.example.com/mcp"}),
        json!({"description": "mine"}),
        json!({"status": "disabled"}),
        json!({"shared": false}),
    ] {
        let (status, _, refused) = rest(
            &s.app,
            reqwest::Method::PATCH,
            path,
            &dave,
            Some(patch.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{patch}: {refused}");
        assert!(
            refused["message"]
                .as_str()
                .is_some_and(|m| m.contains("belongs to another tenant")),
            "{refused}"
        );
    }
    let (status, _, _) = rest(&s.app, reqwest::Method::DELETE, path, &dave, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let mcp = mcp_client(&format!("{}/mcp", s.mcp), &dave).await;
    let deleted = call(&mcp, "delete_server", json!({"name": "payments"}))
        .await
        .expect("a tool result");
    assert_eq!(deleted.is_error, Some(true), "{deleted:?}");
    // Nothing changed.
    let (status, _, kept) = rest(&s.app, reqwest::Method::GET, path, &c.alice, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(kept["url"], upstream.url.as_str());
    assert_eq!(kept["description"], "contoso's");
    assert_eq!(kept["shared"], true);
    assert_eq!(kept["status"], created["status"]);
    assert_eq!(kept["has_upstream_credentials"], true);
    // Each attempt is on record as what it was: refused (`deny`), not admitted and failed.
    let rows = crate::support::audit::until(
        |rows| rows.iter().any(|r| r.event.operation == "delete_server"),
        || crate::support::audit::sqlite_rows(&s.app.dir.0),
    )
    .await;
    let attempts: Vec<(&str, &str, &str)> = rows
        .iter()
        .filter(|r| r.event.server.as_deref() == Some("payments") && r.event.outcome == "error")
        .map(|r| {
            (
                r.event.operation.as_str(),
                r.event.decision.as_str(),
                r.event.error.as_deref().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        attempts.len(),
        6,
        "four changes, a deletion, a tool: {attempts:#?}"
    );
    assert!(
        attempts
            .iter()
            .all(|(_, decision, error)| *decision == "deny"
                && error.contains("belongs to another tenant")),
        "{attempts:#?}"
    );
    assert!(
        rows.iter()
            .filter(|r| r.event.outcome == "ok")
            .all(|r| r.event.decision == "allow"),
        "what was admitted stays allow"
    );

    // The owner moves it: the credentials given for the old host do not follow the URL...
    let other_upstream = Upstream::start(false).await;
    let (status, _, moved) = rest(
        &s.app,
        reqwest::Method::PATCH,
        path,
        &c.alice,
        Some(json!({"url": other_upstream.url})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(moved["has_upstream_credentials"], false, "{moved}");
    // ...unless the same request gives them again.
    let (status, _, moved) = rest(
        &s.app,
        reqwest::Method::PATCH,
        path,
        &c.alice,
        Some(json!({"url": upstream.url, "upstream_headers": {"x-api-key": "again"}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(moved["has_upstream_credentials"], true, "{moved}");
    let (status, _, _) = rest(&s.app, reqwest::Method::DELETE, path, &c.alice, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn with_authentication_on_internal_upstreams_need_the_operators_allow_list() {
    let Some(s) = setup_with(|app| app.with_config(|c| c.upstream_allow.clear())).await else {
        return;
    };
    let c = callers(&s).await;
    let upstream = Upstream::start(true).await;
    for url in [
        upstream.url.as_str(),
        "http://10.0.0.8/mcp",
        "http://192.168.1.20:8080/mcp",
        "http://[::1]:9/mcp",
    ] {
        let (status, _, body) = rest(
            &s.app,
            reqwest::Method::POST,
            "/api/v1/servers",
            &c.alice,
            Some(json!({"name": "internal", "url": url})),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("MREG_UPSTREAM_ALLOW")),
            "{body}"
        );
    }
    let (_, _, listed) = rest(
        &s.app,
        reqwest::Method::GET,
        "/api/v1/servers",
        &c.alice,
        None,
    )
    .await;
    assert_eq!(listed["servers"], json!([]), "nothing was registered");
    assert_eq!(upstream.count("POST initialize"), 0);
}

#[tokio::test]
async fn a_gateway_session_serves_only_the_caller_that_opened_it() {
    let Some(s) = setup().await else { return };
    let c = callers(&s).await;
    let url = format!("{}/mcp", s.mcp);
    let opened = mcp_post(
        &url,
        Some(&c.alice),
        None,
        &rpc_request(1, "initialize", initialize_params()),
    )
    .await;
    assert_eq!(opened.0, StatusCode::OK, "{}", opened.2);
    let session = opened.1["mcp-session-id"]
        .to_str()
        .expect("session")
        .to_owned();
    let initialized = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
    let (status, _, _) = mcp_post(&url, Some(&c.alice), Some(&session), &initialized).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let list = rpc_request(2, "tools/list", json!({}));
    let mine = mcp_post(&url, Some(&c.alice), Some(&session), &list).await;
    assert_eq!(mine.0, StatusCode::OK, "{}", mine.2);
    assert!(mine.2["result"]["tools"].is_array(), "{}", mine.2);
    // Bob presents Alice's session: it does not exist for him.
    let stolen = mcp_post(&url, Some(&c.bob), Some(&session), &list).await;
    assert_rpc_error(
        &stolen,
        StatusCode::NOT_FOUND,
        json!(2),
        -32001,
        "session not found",
    );
    let call = rpc_request(
        3,
        "tools/call",
        json!({ "name": "list_servers", "arguments": {} }),
    );
    let stolen = mcp_post(&url, Some(&c.bob), Some(&session), &call).await;
    assert_eq!(stolen.0, StatusCode::NOT_FOUND, "{}", stolen.2);
    // Alice's session still serves her.
    let again = mcp_post(&url, Some(&c.alice), Some(&session), &list).await;
    assert_eq!(again.0, StatusCode::OK, "{}", again.2);
}

#[tokio::test]
async fn the_tool_catalog_shows_only_tools_the_caller_may_call() {
    let policy = policy_file(
        "[servers.open]\ntools = { echo = [\"admin\"] }\n\n[servers.vault]\nroles = [\"admin\"]\n",
    );
    let Some(s) = setup_with(|app| app.with_policy_file(&policy.path)).await else {
        return;
    };
    let c = callers(&s).await;
    let upstream = Upstream::start(false).await;
    for name in ["open", "vault"] {
        let (status, _, body) = rest(
            &s.app,
            reqwest::Method::POST,
            "/api/v1/servers",
            &c.alice,
            Some(json!({"name": name, "url": upstream.url})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, _, _) = rest(
            &s.app,
            reqwest::Method::POST,
            &format!("/api/v1/servers/{name}/health/check"),
            &c.alice,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    let found = |token: String| {
        let app = &s.app;
        async move {
            let (_, _, hits) = rest(
                app,
                reqwest::Method::GET,
                "/api/v1/tools?limit=100",
                &token,
                None,
            )
            .await;
            let mut pairs: Vec<String> = hits["tools"]
                .as_array()
                .expect("tools")
                .iter()
                .map(|h| {
                    format!(
                        "{}/{}",
                        h["server"].as_str().unwrap_or("?"),
                        h["tool"]["name"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            pairs.sort();
            pairs
        }
    };
    let alice = found(c.alice.clone()).await;
    assert!(
        alice.contains(&"vault/echo".to_owned()) && alice.contains(&"open/echo".to_owned()),
        "{alice:?}"
    );
    let bob = found(c.bob.clone()).await;
    assert!(!bob.is_empty(), "bob sees the tools he may call");
    assert!(
        bob.iter()
            .all(|p| p.starts_with("open/") && p != "open/echo"),
        "no tool of the admin-only server, and not open's admin-only echo: {bob:?}"
    );
    // The search_tools tool shows the same.
    let mcp = mcp_client(&format!("{}/mcp", s.mcp), &c.bob).await;
    let searched = call(&mcp, "search_tools", json!({"query": "echo"}))
        .await
        .expect("search");
    let text = format!("{searched:?}");
    assert!(
        !text.contains("on vault") && !text.contains("echo on open"),
        "{text}"
    );
}

//! The REST API as a client sees it: every success and error case, through real HTTP.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{ChaosProxy, TestApp, TestDb, assert_error, redis_available};

#[tokio::test]
async fn a_server_is_created_read_updated_and_deleted() {
    let app = TestApp::spawn().await;
    let (status, headers, created) = app
        .send(
            Method::POST,
            "/api/v1/servers",
            Some(json!({
                "name": "weather",
                "url": "https://weather.example.com/mcp",
                "description": "Forecasts",
                "tags": ["Weather", "api", "weather"],
                "version": "1.2.0",
                "metadata": { "team": "geo" }
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(headers["location"], "/api/v1/servers/weather");
    assert_eq!(created["tags"], json!(["api", "weather"]));
    assert_eq!(created["transport"], "streamable-http");
    assert_eq!(created["status"], "active");
    assert_eq!(created["registered_by"], "anonymous");
    assert_eq!(created["revision"], 1);

    let (status, read) = app.get("/api/v1/servers/weather").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read, created);

    let (status, updated) = app
        .patch(
            "/api/v1/servers/weather",
            json!({ "description": null, "status": "deprecated", "transport": "streamable-http" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["description"], "");
    assert_eq!(updated["status"], "deprecated");
    assert_eq!(updated["transport"], "streamable-http");
    // The legacy SSE transport is refused until the gateway can bridge it, saying so.
    let (status, refused) = app
        .patch("/api/v1/servers/weather", json!({ "transport": "sse" }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["field"], "transport");
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("not supported yet")),
        "{refused}"
    );
    assert_eq!(
        updated["tags"], created["tags"],
        "fields not sent stay as they were"
    );
    assert_eq!(updated["metadata"], created["metadata"]);
    assert_eq!(updated["created_at"], created["created_at"]);
    assert_ne!(updated["updated_at"], created["updated_at"]);
    assert_eq!(updated["revision"], 2);

    let (status, body) = app.delete("/api/v1/servers/weather").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(body, Value::Null);
    let (status, body) = app.get("/api/v1/servers/weather").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, "not_found");
    app.stop().await;
}

#[tokio::test]
async fn a_duplicate_name_is_409() {
    let app = TestApp::spawn().await;
    app.register("dup", json!({})).await;
    let (status, headers, body) = app
        .send(
            Method::POST,
            "/api/v1/servers",
            Some(json!({ "name": "dup", "url": "https://other.example.com" })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_error(&body, "already_exists");
    assert!(body["message"].as_str().unwrap_or_default().contains("dup"));
    assert_eq!(
        headers["x-request-id"].to_str().ok(),
        body["request_id"].as_str()
    );
    app.stop().await;
}

#[tokio::test]
async fn invalid_fields_are_422_naming_the_field() {
    let app = TestApp::spawn().await;
    let cases = [
        (
            json!({ "name": "Bad Name", "url": "https://x.example.com" }),
            "name",
        ),
        (json!({ "name": "ok", "url": "ftp://x.example.com" }), "url"),
        (
            json!({ "name": "ok", "url": "https://user:pw@x.example.com" }),
            "url",
        ),
        (json!({ "name": "ok", "url": "not a url" }), "url"),
        (
            json!({ "name": "ok", "url": "https://x.example.com", "transport": "stdio" }),
            "transport",
        ),
        (
            json!({ "name": "ok", "url": "https://x.example.com", "tags": ["fine", "not fine"] }),
            "tags[1]",
        ),
        (
            json!({ "name": "ok", "url": "https://x.example.com", "tags": [5] }),
            "tags[0]",
        ),
        (
            json!({ "name": "ok", "url": "https://x.example.com", "version": "^1.0" }),
            "version",
        ),
        (
            json!({ "name": "ok", "url": "https://x.example.com", "status": "gone" }),
            "status",
        ),
        (
            json!({ "name": "ok", "url": "https://x.example.com", "metadata": [1] }),
            "metadata",
        ),
        (
            json!({ "name": "ok", "url": "https://x.example.com", "description": "x".repeat(1001) }),
            "description",
        ),
        (
            json!({ "name": "ok", "url": "https://x.example.com", "colour": "red" }),
            "colour",
        ),
        (json!({ "name": "ok" }), "url"),
    ];
    for (body, field) in cases {
        let (status, error) = app.post("/api/v1/servers", body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body} -> {error}"
        );
        assert_error(&error, "invalid");
        assert_eq!(error["field"], field, "{body} -> {error}");
    }
    app.register("ok", json!({})).await;
    for (patch, field) in [
        (json!({ "url": null }), "url"),
        (json!({ "url": "gopher://x" }), "url"),
        (json!({ "tags": ["UPPER ok?"] }), "tags[0]"),
        (json!({ "name": "renamed" }), "name"),
    ] {
        let (status, error) = app.patch("/api/v1/servers/ok", patch.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{patch} -> {error}"
        );
        assert_eq!(error["field"], field, "{patch} -> {error}");
    }
    // A body that is JSON but not an object is refused, not read as an empty change.
    for body in [json!([]), json!([null]), json!("x"), json!(7)] {
        let (status, error) = app.patch("/api/v1/servers/ok", body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body} -> {error}"
        );
        assert_eq!(error["field"], "body", "{body} -> {error}");
        let (status, error) = app.post("/api/v1/servers", body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body} -> {error}"
        );
    }
    let (_, listed) = app.get("/api/v1/servers").await;
    assert_eq!(
        listed["servers"].as_array().map(Vec::len),
        Some(1),
        "no refused body registered anything: {listed}"
    );
    let (_, unchanged) = app.get("/api/v1/servers/ok").await;
    assert_eq!(unchanged["revision"], 1, "a rejected patch changes nothing");
    app.stop().await;
}

#[tokio::test]
async fn unknown_servers_are_404_for_every_verb() {
    let app = TestApp::spawn().await;
    for (method, body) in [
        (Method::GET, None),
        (Method::PATCH, Some(json!({ "description": "x" }))),
        (Method::DELETE, None),
    ] {
        for name in ["nobody", "Not-A-Valid-Name"] {
            let (status, _, error) = app
                .send(
                    method.clone(),
                    &format!("/api/v1/servers/{name}"),
                    body.clone(),
                )
                .await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {name}");
            assert_error(&error, "not_found");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn malformed_oversized_and_untyped_bodies_are_rejected_clearly() {
    let app = TestApp::builder()
        .with_config(|c| c.max_body_bytes = 2048)
        .spawn()
        .await;
    let url = app.url("/api/v1/servers");
    let response = app
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_error(
        &response.json::<Value>().await.expect("json"),
        "bad_request",
    );

    let response = app.http.post(&url).body("{}").send().await.expect("send");
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_error(
        &response.json::<Value>().await.expect("json"),
        "unsupported_media_type",
    );

    let big =
        json!({ "name": "big", "url": "https://x.example.com", "description": "x".repeat(4096) });
    let (status, error) = app.post("/api/v1/servers", big.clone()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error(&error, "payload_too_large");

    // Without a Content-Length the limit still holds while the body streams in.
    let body = big.to_string();
    let raw = format!(
        "POST /api/v1/servers HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        app.addr,
        body.len()
    );
    let response = raw_request(app.addr, raw.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("payload_too_large"), "{response}");
    let (_, missing) = app.get("/api/v1/servers/big").await;
    assert_error(&missing, "not_found");

    // A broken chunked encoding is a bad request, not a body too large, on both listeners.
    let broken = |host: std::net::SocketAddr, path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n"
        )
    };
    let response = raw_request(app.addr, broken(app.addr, "/api/v1/servers").as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    for path in ["/mcp", "/servers/big/mcp"] {
        let response = raw_request(app.mcp_addr, broken(app.mcp_addr, path).as_bytes()).await;
        assert!(response.starts_with("HTTP/1.1 400"), "{path}: {response}");
        assert!(
            response.contains("\"jsonrpc\":\"2.0\""),
            "{path}: {response}"
        );
    }
    app.stop().await;
}

/// Writes `request` on a new connection and reads until the server closes it.
async fn raw_request(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn lists_filter_and_page_in_a_stable_order() {
    let app = TestApp::spawn().await;
    for i in 0..7 {
        let tags = if i % 2 == 0 {
            json!(["even"])
        } else {
            json!(["odd"])
        };
        let status = if i == 3 { "deprecated" } else { "active" };
        app.register(
            &format!("srv-{i}"),
            json!({ "tags": tags, "status": status, "description": format!("Server number {i}") }),
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut path = "/api/v1/servers?limit=3".to_owned();
    let mut pages = 0;
    loop {
        let (status, page) = app.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        let items = page["servers"].as_array().expect("servers");
        assert!(items.len() <= 3);
        seen.extend(
            items
                .iter()
                .map(|s| s["name"].as_str().unwrap_or_default().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/servers?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..7).map(|i| format!("srv-{i}")).collect();
    assert_eq!(seen, expected);

    let names = |page: &Value| -> Vec<String> {
        page["servers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| s["name"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let (_, even) = app.get("/api/v1/servers?tag=even").await;
    assert_eq!(names(&even), ["srv-0", "srv-2", "srv-4", "srv-6"]);
    let (_, deprecated) = app.get("/api/v1/servers?status=deprecated").await;
    assert_eq!(names(&deprecated), ["srv-3"]);
    let (_, text) = app.get("/api/v1/servers?q=NUMBER%205").await;
    assert_eq!(names(&text), ["srv-5"]);
    let (_, odd_active) = app
        .get("/api/v1/servers?tag=odd&status=active&q=server")
        .await;
    assert_eq!(names(&odd_active), ["srv-1", "srv-5"]);

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=many", "limit"),
        ("status=gone", "status"),
        ("tag=not%20a%20tag", "tag"),
        ("cursor=garbage", "cursor"),
    ] {
        let (status, error) = app.get(&format!("/api/v1/servers?{query}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {error}");
        assert_error(&error, "invalid");
        assert_eq!(error["field"], field, "{query}: {error}");
    }
    app.stop().await;
}

#[tokio::test]
async fn concurrent_patches_to_one_server_are_all_applied() {
    let app = TestApp::spawn().await;
    app.register("busy", json!({})).await;
    let patches = [
        json!({ "description": "d" }),
        json!({ "version": "2.0.0" }),
        json!({ "tags": ["t"] }),
        json!({ "status": "deprecated" }),
        json!({ "metadata": { "k": 1 } }),
    ];
    let tasks: Vec<_> = patches
        .into_iter()
        .map(|patch| {
            let (http, url) = (app.http.clone(), app.url("/api/v1/servers/busy"));
            tokio::spawn(async move {
                http.patch(url)
                    .json(&patch)
                    .send()
                    .await
                    .map(|r| r.status())
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task").expect("send"), StatusCode::OK);
    }
    let (_, server) = app.get("/api/v1/servers/busy").await;
    assert_eq!(server["description"], "d");
    assert_eq!(server["version"], "2.0.0");
    assert_eq!(server["tags"], json!(["t"]));
    assert_eq!(server["status"], "deprecated");
    assert_eq!(server["metadata"], json!({ "k": 1 }));
    assert_eq!(server["revision"], 6);
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_shape() {
    let app = TestApp::spawn().await;
    let (status, body) = app.get("/api/v2/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, "not_found");
    let (status, _, body) = app
        .send(Method::PUT, "/api/v1/servers", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_error(&body, "method_not_allowed");
    app.stop().await;
}

#[tokio::test]
async fn request_ids_are_echoed_when_sane_and_replaced_otherwise() {
    let app = TestApp::spawn().await;
    let response = app
        .http
        .get(app.url("/api/v1/servers/none"))
        .header("x-request-id", "trace-abc.123")
        .send()
        .await
        .expect("send");
    assert_eq!(response.headers()["x-request-id"], "trace-abc.123");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["request_id"], "trace-abc.123");

    let response = app
        .http
        .get(app.url("/api/v1/servers/none"))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .expect("send");
    let id = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_ne!(id, "bad id with spaces");
    assert_eq!(id.len(), 32);
    app.stop().await;
}

#[tokio::test]
async fn health_readiness_and_metrics_report_on_the_process() {
    let app = TestApp::spawn().await;
    let (status, body) = app.get("/healthz").await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "status": "ok" })));
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["database"], "ok");
    assert_eq!(body["checks"]["database_backend"], "sqlite");
    assert_eq!(body["checks"]["cache_backend"], "memory");

    app.get("/api/v1/servers").await;
    app.get("/api/v1/servers/missing").await;
    let text = app.metrics().await;
    assert!(
        text.contains(
            r#"mreg_http_requests_total{method="GET",route="/api/v1/servers",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"mreg_http_requests_total{method="GET",route="/api/v1/servers/{name}",status="404"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("mreg_http_request_duration_seconds_bucket{"),
        "{text}"
    );
    assert!(
        text.contains(r#"{le="+Inf",method="GET",route="/api/v1/servers",status="200"} 1"#),
        "{text}"
    );
    app.stop().await;
}

#[tokio::test]
async fn made_up_http_methods_do_not_grow_the_metrics() {
    let app = TestApp::spawn().await;
    let mcp = format!("http://{}", app.mcp_addr);
    for i in 0..40 {
        let method =
            reqwest::Method::from_bytes(format!("XMETH{i:03}{}", "A".repeat(200)).as_bytes())
                .expect("a token");
        let (base, path) = if i % 2 == 0 {
            (app.base.as_str(), "/api/v1/servers")
        } else {
            (mcp.as_str(), "/servers/anything/mcp")
        };
        let response = app
            .http
            .request(method, format!("{base}{path}"))
            .send()
            .await
            .expect("answered");
        assert!(response.status().is_client_error(), "{}", response.status());
    }
    let text = app.metrics().await;
    assert!(!text.contains("XMETH"), "no series per made-up method");
    let other: u64 = text
        .lines()
        .filter(|l| l.starts_with(r#"mreg_http_requests_total{method="other","#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(other, 40, "each counted as `other`:\n{text}");
    app.stop().await;
}

#[tokio::test]
async fn an_mcp_path_asked_of_the_rest_api_is_told_where_the_mcp_listener_is() {
    let app = TestApp::spawn().await;
    for path in [
        "/mcp",
        "/servers/weather/mcp",
        "/.well-known/oauth-authorization-server",
    ] {
        let (status, _, body) = app.send(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        let expected = format!(
            "served by its MCP listener, at http://{}{path}",
            app.mcp_addr
        );
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains(&expected)),
            "{path}: {body}"
        );
    }
    let (status, _, body) = app.send(Method::GET, "/nothing", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "no such endpoint");
    app.stop().await;
}

#[tokio::test]
async fn readiness_names_the_dependency_that_is_down() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let Some(redis) = redis_available().await else {
        return;
    };
    let pg_target = url::Url::parse(&db.url).expect("url");
    let pg_addr = format!(
        "{}:{}",
        pg_target.host_str().unwrap_or("127.0.0.1"),
        pg_target.port().unwrap_or(5432)
    );
    let redis_target = url::Url::parse(&redis).expect("url");
    let redis_addr = format!(
        "{}:{}",
        redis_target.host_str().unwrap_or("127.0.0.1"),
        redis_target.port().unwrap_or(6379)
    );
    let pg_proxy = ChaosProxy::start(
        tokio::net::lookup_host(pg_addr)
            .await
            .expect("pg")
            .next()
            .expect("addr"),
    )
    .await;
    let redis_proxy = ChaosProxy::start(
        tokio::net::lookup_host(redis_addr)
            .await
            .expect("redis")
            .next()
            .expect("addr"),
    )
    .await;
    let mut db_url = url::Url::parse(&db.url).expect("url");
    db_url.set_port(Some(pg_proxy.addr.port())).expect("port");
    let _ = db_url.set_host(Some("127.0.0.1"));
    let mut cache_url = redis_target.clone();
    cache_url
        .set_port(Some(redis_proxy.addr.port()))
        .expect("port");
    let _ = cache_url.set_host(Some("127.0.0.1"));
    let app = TestApp::builder()
        .with_postgres(db_url.as_str())
        .with_redis(cache_url.as_str())
        .spawn()
        .await;
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checks"]["database_backend"], "postgres");
    assert_eq!(body["checks"]["cache_backend"], "redis");

    // The cache is shared by every replica and mreg serves without it: degraded, still ready
    // (a 503 would take every replica out of its load balancer at once).
    redis_proxy.cut();
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    assert!(
        body["degraded"]
            .as_str()
            .is_some_and(|m| m.contains("cache") && !m.contains("database")),
        "{body}"
    );
    assert_ne!(body["checks"]["cache"], "ok", "{body}");
    assert_eq!(app.get("/api/v1/servers").await.0, StatusCode::OK, "served");
    redis_proxy.restore();
    let mut back = false;
    for _ in 0..100 {
        let (_, body) = app.get("/readyz").await;
        if body["status"] == "ready" {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "ready again once Redis answers");

    pg_proxy.cut();
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("database"),
        "{body}"
    );
    let (status, body) = app.get("/api/v1/servers").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_error(&body, "unavailable");
    pg_proxy.restore();

    let mut ready = false;
    for _ in 0..50 {
        let (status, _) = app.get("/readyz").await;
        if status == StatusCode::OK {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "readiness recovers once both dependencies are back");
    app.register("after-outage", json!({})).await;
    app.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn the_openapi_document_is_generated_and_the_docs_page_works_offline() {
    let app = TestApp::spawn().await;
    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    for path in [
        "/api/v1/servers",
        "/api/v1/servers/{name}",
        "/v0.1/servers",
        "/v0.1/servers/{serverName}/versions/{version}",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the document"
        );
    }
    assert!(doc["paths"]["/api/v1/servers"]["post"]["responses"]["409"].is_object());
    assert!(doc["components"]["schemas"]["ServerDraft"].is_object());
    let summary = &doc["components"]["schemas"]["HealthSummary"];
    for field in ["state", "since", "last_probe", "reason"] {
        assert!(
            summary["properties"][field].is_object(),
            "HealthSummary.{field}: {summary}"
        );
    }
    let view = doc["components"]["schemas"]["ServerView"].to_string();
    assert!(
        view.contains("#/components/schemas/HealthSummary") && view.contains("gateway_url"),
        "every server representation documents its health: {view}"
    );
    let listed = doc["components"]["schemas"]["ServerList"].to_string();
    assert!(
        listed.contains("#/components/schemas/ServerView"),
        "{listed}"
    );

    let page = app.http.get(app.url("/docs/")).send().await.expect("docs");
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.expect("html");
    for line in html
        .lines()
        .filter(|l| l.contains("src=") || l.contains("href="))
    {
        assert!(
            !line.contains("http://") && !line.contains("https://"),
            "external asset: {line}"
        );
    }
    for asset in [
        "/docs/swagger-ui-bundle.js",
        "/docs/swagger-ui.css",
        "/docs/swagger-initializer.js",
    ] {
        let response = app.http.get(app.url(asset)).send().await.expect("asset");
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
        let body = response.text().await.expect("asset body");
        assert!(body.len() > 10, "{asset} is empty");
        if asset.ends_with("initializer.js") {
            assert!(body.contains("/openapi.json"), "{body}");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests_and_then_stops_accepting() {
    let mut app = TestApp::spawn().await;
    let body = json!({ "name": "late", "url": "https://late.example.com" }).to_string();
    let (head, tail) = body.split_at(10);
    let mut stream = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    let request_head = format!(
        "POST /api/v1/servers HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{head}",
        app.addr,
        body.len()
    );
    stream
        .write_all(request_head.as_bytes())
        .await
        .expect("write head");
    tokio::time::sleep(Duration::from_millis(100)).await;

    let running = app.take_running();
    running.shutdown_token().cancel();
    let stopped = tokio::spawn(running.wait());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        tokio::net::TcpStream::connect(app.addr).await.is_err(),
        "no new connections after shutdown began"
    );
    stream.write_all(tail.as_bytes()).await.expect("write tail");
    let mut response = vec![0_u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut response))
        .await
        .expect("response in time")
        .expect("read");
    let response = String::from_utf8_lossy(&response[..n]);
    assert!(
        response.starts_with("HTTP/1.1 201"),
        "the in-flight request completes: {response}"
    );
    tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .expect("stops within the grace period")
        .expect("task")
        .expect("clean stop");
}

#[tokio::test]
async fn shutdown_gives_up_on_stuck_requests_after_the_grace_period() {
    let mut app = TestApp::builder()
        .with_config(|c| c.shutdown_grace = std::time::Duration::from_secs(1))
        .spawn()
        .await;
    let mut stream = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /api/v1/servers HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
        app.addr
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let running = app.take_running();
    running.shutdown_token().cancel();
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), running.wait())
        .await
        .expect("shutdown does not wait forever for a stuck client")
        .expect("clean stop");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "it waited for the grace period"
    );
}

#[tokio::test]
async fn upstream_credentials_are_write_only_and_encrypted_at_rest() {
    let app = TestApp::spawn().await;
    let created = app
        .register(
            "secure",
            json!({ "upstream_headers": { "X-Api-Key": "sk-live-0123456789" }, "timeout_secs": 5, "description": "plain-marker-42" }),
        )
        .await;
    assert_eq!(created["has_upstream_credentials"], true);
    assert_eq!(created["timeout_secs"], 5);
    for path in [
        "/api/v1/servers/secure",
        "/api/v1/servers",
        "/v0.1/servers",
        "/v0.1/servers/secure/versions/latest",
    ] {
        let (status, body) = app.get(path).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            !body.to_string().contains("sk-live"),
            "{path} leaked the credential: {body}"
        );
    }
    let mut at_rest = Vec::new();
    for file in ["mreg.db", "mreg.db-wal"] {
        if let Ok(bytes) = std::fs::read(app.dir.0.join(file)) {
            at_rest.extend(bytes);
        }
    }
    let contains = |needle: &[u8]| at_rest.windows(needle.len()).any(|w| w == needle);
    assert!(
        contains(b"plain-marker-42"),
        "the check reads the database files"
    );
    assert!(
        !contains(b"sk-live-0123456789"),
        "the credential is stored in the clear"
    );

    let (status, error) = app
        .patch(
            "/api/v1/servers/secure",
            json!({ "upstream_headers": { "Host": "evil" } }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["field"], "upstream_headers.host");
    let (status, cleared) = app
        .patch(
            "/api/v1/servers/secure",
            json!({ "upstream_headers": null, "timeout_secs": null }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cleared}");
    assert_eq!(cleared["has_upstream_credentials"], false);
    assert_eq!(cleared["timeout_secs"], Value::Null);
    let (status, error) = app
        .post(
            "/api/v1/servers",
            json!({ "name": "slow", "url": "https://x.example.com", "timeout_secs": 0 }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["field"], "timeout_secs");
    app.stop().await;
}

#[tokio::test]
async fn nul_characters_in_filters_are_refused_by_name() {
    let app = TestApp::spawn().await;
    app.register("weather", json!({})).await;
    for (path, field) in [
        ("/api/v1/servers?q=%00", "q"),
        ("/api/v1/servers?tag=a%00b", "tag"),
        ("/api/v1/tools?q=x%00", "q"),
        ("/api/v1/audit?actor=%00", "actor"),
        ("/v0.1/servers?search=%00", "search"),
    ] {
        let (status, body) = app.get(path).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {body}");
        assert_eq!(body["field"], field, "{body}");
    }
    let (status, body) = app.get("/api/v1/servers?q=weather").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["servers"].as_array().map(Vec::len), Some(1));
    app.stop().await;
}

/// A connection that trickles its headers (slowloris) or sits idle between requests is closed
/// once `MREG_HEADER_TIMEOUT` has passed, on both listeners; an answer that streams for longer
/// than that (progress events over SSE, a slow tool) is not cut.
#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed_but_long_answers_are_not() {
    let app = TestApp::builder()
        .with_config(|c| c.header_timeout = std::time::Duration::from_secs(1))
        .spawn()
        .await;
    for addr in [app.addr, app.mcp_addr] {
        // Headers, one line every 300 ms, never finished.
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let started = std::time::Instant::now();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .expect("write");
        let closed = loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let wrote = tcp.write_all(b"X-Trickle: 1\r\n").await;
            let mut byte = [0_u8; 512];
            let read = tokio::time::timeout(Duration::from_millis(10), tcp.read(&mut byte)).await;
            if wrote.is_err() || matches!(read, Ok(Ok(_) | Err(_))) {
                break started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{addr}: a trickling client is still connected after 5 s"
            );
        };
        assert!(closed >= Duration::from_millis(900), "{addr}: {closed:?}");

        // One request answered, then silence: the keep-alive connection is closed.
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .expect("write");
        let mut answer = vec![0_u8; 4096];
        let n = tcp.read(&mut answer).await.expect("answer");
        assert!(
            String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 "),
            "{addr}"
        );
        let idle = std::time::Instant::now();
        let end = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut answer))
            .await
            .expect("closed within 5 s");
        assert!(matches!(end, Ok(0) | Err(_)), "{addr}: {end:?}");
        assert!(idle.elapsed() >= Duration::from_millis(900), "{addr}");
    }

    // Headers, then a body that never comes: answered (not run) and closed after the limit.
    for (addr, path) in [
        (app.addr, "/api/v1/servers"),
        (app.mcp_addr, "/mcp"),
        (app.mcp_addr, "/servers/none/mcp"),
    ] {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let started = std::time::Instant::now();
        tcp.write_all(
            format!(
                "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
                 Accept: application/json, text/event-stream\r\nContent-Length: 100\r\n\r\n{{"
            )
            .as_bytes(),
        )
        .await
        .expect("write");
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer))
            .await
            .expect("closed within 5 s")
            .ok();
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(900), "{path}: {took:?}");
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
            "{path}: {answer}"
        );
    }
    let (_, listed) = app.get("/api/v1/servers").await;
    assert_eq!(listed["servers"], json!([]), "nothing ran");

    // A proxied tool call answering over SSE for about 2.4 s, with progress on the way, and a
    // tool that sleeps 2 s: both complete.
    let upstream = crate::support::upstream::Upstream::start(true).await;
    app.register("slow", json!({ "url": upstream.url })).await;
    let client = crate::support::mcp::connect(
        &format!("http://{}/servers/slow/mcp", app.mcp_addr),
        rmcp::model::ProtocolVersion::V_2025_06_18,
    )
    .await;
    let counted =
        crate::support::mcp::call(&client, "count", json!({"n": 4, "delay_ms": 600})).await;
    assert_eq!(counted.structured_content, Some(json!({"count": 4})));
    let slept = crate::support::mcp::call(&client, "hang", json!({"secs": 2})).await;
    assert_eq!(slept.structured_content, Some(json!({"slept": 2})));
}

#[tokio::test]
async fn the_api_documentation_covers_the_mcp_listener_and_the_gateway_tools() {
    let app = TestApp::spawn().await;
    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let mcp = format!("http://{}", app.mcp_addr);
    for path in ["/mcp", "/servers/{name}/mcp"] {
        let item = &doc["paths"][path];
        assert_eq!(item["servers"][0]["url"], mcp.as_str(), "{path}: {item}");
        for method in ["post", "get", "delete"] {
            assert_eq!(
                item[method]["tags"][0], "MCP gateway (port 8001)",
                "{path} {method}"
            );
        }
    }
    assert!(
        doc["tags"]
            .as_array()
            .expect("tags")
            .iter()
            .any(|t| t["name"] == "MCP gateway (port 8001)")
    );
    // Every tool `tools/list` shows is documented with the schema of its arguments.
    let client = crate::support::mcp::connect(
        &format!("{mcp}/mcp"),
        rmcp::model::ProtocolVersion::V_2025_06_18,
    )
    .await;
    let tools = client.list_all_tools().await.expect("tools/list");
    let _ = client.cancel().await;
    assert!(tools.len() >= 7, "{tools:?}");
    let description = doc["paths"]["/mcp"]["post"]["description"]
        .as_str()
        .expect("description")
        .to_owned();
    for tool in &tools {
        let name = tool.name.as_ref();
        let documented = &doc["components"]["schemas"][format!("tool.{name}.arguments")];
        let mut listed = Value::Object((*tool.input_schema).clone());
        if let Some(object) = listed.as_object_mut() {
            object.remove("$schema");
        }
        assert_eq!(documented, &listed, "{name}");
        assert!(description.contains(&format!("`{name}`")), "{description}");
        assert!(
            doc["paths"]["/mcp"]["post"]["requestBody"]["content"]["application/json"]["schema"]
                ["oneOf"]
                .to_string()
                .contains(&format!("tool.{name}.call")),
            "{name}"
        );
    }
    assert!(
        doc["components"]["schemas"]["tool.register_server.arguments"]["properties"]["url"]
            .is_object()
    );
    assert!(
        doc["paths"]["/token"].is_null(),
        "no OAuth endpoints without authentication"
    );
    app.stop().await;
}

//! The official MCP registry API (`/v0.1`), served from the same rows as `/api/v1`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestApp, assert_error};

fn names(page: &Value) -> Vec<String> {
    page["servers"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s["server"]["name"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn servers_are_listed_in_the_server_json_shape_with_mreg_extras_in_meta() {
    let app = TestApp::builder()
        .with_config(|c| c.registry_namespace = "com.example".to_owned())
        .spawn()
        .await;
    let created = app
        .register(
            "weather",
            json!({ "description": "Forecasts", "tags": ["geo"], "version": "1.2.0", "transport": "streamable-http", "metadata": { "team": "geo" } }),
        )
        .await;
    app.register("disabled", json!({ "status": "disabled" }))
        .await;

    let (status, page) = app.get("/v0.1/servers").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["metadata"]["count"], 2);
    assert!(page["metadata"].get("nextCursor").is_none());
    let weather = &page["servers"][1];
    assert_eq!(weather["server"]["name"], "com.example/weather");
    assert_eq!(weather["server"]["description"], "Forecasts");
    assert_eq!(weather["server"]["version"], "1.2.0");
    assert_eq!(
        weather["server"]["remotes"],
        json!([{ "type": "streamable-http", "url": format!("http://{}/servers/weather/mcp", app.mcp_addr) }]),
        "clients that discover servers here reach them through the gateway"
    );
    assert!(
        !page.to_string().contains("weather.example.com"),
        "the upstream's own address is not handed out: {page}"
    );
    assert!(
        weather["server"]["$schema"]
            .as_str()
            .is_some_and(|s| s.contains("server.schema.json"))
    );
    let official = &weather["_meta"]["io.modelcontextprotocol.registry/official"];
    assert_eq!(official["status"], "active");
    assert_eq!(official["isLatest"], true);
    assert_eq!(official["publishedAt"], created["created_at"]);
    let extras = &weather["_meta"]["io.github.mreg/server"];
    assert_eq!(extras["tags"], json!(["geo"]));
    assert_eq!(extras["metadata"], json!({ "team": "geo" }));
    assert_eq!(extras["registered_by"], "anonymous");
    let disabled = &page["servers"][0];
    assert_eq!(
        disabled["_meta"]["io.modelcontextprotocol.registry/official"]["status"],
        "deprecated"
    );
    assert_eq!(disabled["server"]["version"], "unversioned");
    app.stop().await;
}

#[tokio::test]
async fn the_official_list_pages_searches_and_filters_by_update_time() {
    let app = TestApp::spawn().await;
    for name in ["alpha", "bravo", "charlie", "delta", "echo"] {
        app.register(name, json!({ "description": format!("The {name} server") }))
            .await;
    }
    let (_, first) = app.get("/v0.1/servers?limit=2").await;
    assert_eq!(names(&first), ["local.mreg/alpha", "local.mreg/bravo"]);
    let cursor = first["metadata"]["nextCursor"]
        .as_str()
        .expect("a next cursor");
    let (_, second) = app
        .get(&format!("/v0.1/servers?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(names(&second), ["local.mreg/charlie", "local.mreg/delta"]);

    let (_, found) = app.get("/v0.1/servers?search=CHARLIE").await;
    assert_eq!(names(&found), ["local.mreg/charlie"]);

    let (_, all) = app
        .get("/v0.1/servers?updated_since=2000-01-01T00:00:00Z")
        .await;
    assert_eq!(all["metadata"]["count"], 5);
    let (_, none) = app
        .get("/v0.1/servers?updated_since=2999-01-01T00:00:00Z")
        .await;
    assert_eq!(none["metadata"]["count"], 0);
    let (_, latest) = app.get("/v0.1/servers?version=latest").await;
    assert_eq!(latest["metadata"]["count"], 5);

    for (query, field) in [
        ("limit=101", "limit"),
        ("updated_since=yesterday", "updated_since"),
        ("cursor=nonsense", "cursor"),
        ("version=1.0.0", "version"),
    ] {
        let (status, error) = app.get(&format!("/v0.1/servers?{query}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {error}");
        assert_eq!(error["field"], field);
    }
    app.stop().await;
}

#[tokio::test]
async fn one_server_is_found_by_namespaced_or_bare_name_and_version() {
    let app = TestApp::spawn().await;
    app.register("weather", json!({ "version": "2.1.0" })).await;
    for path in [
        "/v0.1/servers/local.mreg%2Fweather/versions/latest",
        "/v0.1/servers/weather/versions/latest",
        "/v0.1/servers/local.mreg%2Fweather/versions/2.1.0",
    ] {
        let (status, body) = app.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(body["server"]["name"], "local.mreg/weather");
        assert_eq!(body["server"]["version"], "2.1.0");
    }
    let (status, versions) = app.get("/v0.1/servers/local.mreg%2Fweather/versions").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(versions["metadata"]["count"], 1);
    for path in [
        "/v0.1/servers/local.mreg%2Fweather/versions/9.9.9",
        "/v0.1/servers/local.mreg%2Fnobody/versions/latest",
        "/v0.1/servers/other.ns%2Fweather/versions/latest",
    ] {
        let (status, body) = app.get(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_error(&body, "not_found");
    }
    app.stop().await;
}

//! The `mreg` binary as a user runs it: client commands against a live gateway, configuration
//! errors, `check-config`, `migrate`, and `serve` stopped by SIGTERM.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use mreg::config::settings::SETTINGS;
use serde_json::Value;

use crate::support::{TempDir, TestApp, TestDb, redis_available};

/// `mreg` with `args`, run in `dir` with none of mreg's variables inherited, plus `env`.
fn mreg(dir: &TempDir, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mreg"));
    command.args(args).current_dir(&dir.0).stdin(Stdio::null());
    for setting in SETTINGS {
        command.env_remove(setting.env);
    }
    command.env_remove("MREG_CONFIG").env_remove("MREG_URL");
    for (k, v) in env {
        command.env(k, v);
    }
    command
}

async fn run(dir: &TempDir, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = mreg(dir, args, env);
    tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("mreg runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

async fn client_commands_manage_the_registry(app: &TestApp) {
    let dir = TempDir::new();
    let url = app.base.as_str();
    let out = run(
        &dir,
        &[
            "servers",
            "--url",
            url,
            "add",
            "weather",
            "https://weather.example.com/mcp",
            "-d",
            "Forecasts",
            "-t",
            "geo",
            "-t",
            "api",
            "--server-version",
            "1.0.0",
        ],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "registered weather");
    let out = run(
        &dir,
        &[
            "servers",
            "add",
            "files",
            "https://files.example.com/mcp",
            "--transport",
            "sse",
            "--metadata",
            r#"{"team":"storage"}"#,
        ],
        &[("MREG_URL", url)],
    )
    .await;
    assert!(!out.status.success(), "sse is refused until it is bridged");
    assert!(
        stderr(&out).contains("legacy HTTP+SSE transport (sse) is not supported yet"),
        "{}",
        stderr(&out)
    );
    let out = run(
        &dir,
        &[
            "servers",
            "add",
            "files",
            "https://files.example.com/mcp",
            "--transport",
            "streamable-http",
            "--metadata",
            r#"{"team":"storage"}"#,
        ],
        &[("MREG_URL", url)],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));

    let out = run(&dir, &["servers", "--url", url, "list"], &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{table}");
    assert!(
        lines[1].starts_with("files ") && lines[1].contains("streamable-http"),
        "{table}"
    );
    assert!(
        lines[2].starts_with("weather ") && lines[2].contains("api,geo"),
        "{table}"
    );

    let out = run(
        &dir,
        &["servers", "--url", url, "--json", "get", "files"],
        &[],
    )
    .await;
    let files: Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(files["metadata"]["team"], "storage");

    let out = run(
        &dir,
        &[
            "servers",
            "--url",
            url,
            "update",
            "weather",
            "--status",
            "deprecated",
            "--clear-tags",
            "--server-url",
            "https://weather2.example.com/mcp",
        ],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&dir, &["servers", "--url", url, "get", "weather"], &[]).await;
    let shown = stdout(&out);
    assert!(shown.contains("status:        deprecated"), "{shown}");
    assert!(
        shown.contains("https://weather2.example.com/mcp"),
        "{shown}"
    );
    assert!(
        shown.lines().any(|l| l.trim_end() == "tags:"),
        "--clear-tags leaves no tags: {shown}"
    );

    let out = run(
        &dir,
        &["servers", "--url", url, "--json", "list", "-q", "forecast"],
        &[],
    )
    .await;
    let found: Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(found["servers"].as_array().map(Vec::len), Some(1));

    let out = run(
        &dir,
        &[
            "servers",
            "--url",
            url,
            "add",
            "weather",
            "https://x.example.com",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("server 'weather' already exists (HTTP 409, request id "),
        "{}",
        stderr(&out)
    );
    let out = run(
        &dir,
        &["servers", "--url", url, "add", "Bad", "ftp://x"],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("name: contains 'B'"),
        "{}",
        stderr(&out)
    );
    let out = run(&dir, &["servers", "--url", url, "update", "weather"], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("nothing to change"),
        "{}",
        stderr(&out)
    );

    let out = run(&dir, &["servers", "--url", url, "rm", "weather"], &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&dir, &["servers", "--url", url, "rm", "weather"], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("server 'weather' not found (HTTP 404"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn client_commands_work_against_the_embedded_defaults() {
    let app = TestApp::spawn().await;
    client_commands_manage_the_registry(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn client_commands_work_against_postgres_parts_and_redis() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let Some(redis) = redis_available().await else {
        return;
    };
    let url = url::Url::parse(&db.url).expect("db url");
    let port = url.port().unwrap_or(5432).to_string();
    let prefix = format!("mreg-test-{}:", uuid::Uuid::new_v4().simple());
    let app = TestApp::spawn_with(&[
        ("MREG_POSTGRES_HOST", url.host_str().unwrap_or("127.0.0.1")),
        ("MREG_POSTGRES_PORT", &port),
        ("MREG_POSTGRES_USER", url.username()),
        ("MREG_POSTGRES_PASSWORD", url.password().unwrap_or("")),
        ("MREG_POSTGRES_DB", url.path().trim_start_matches('/')),
        ("MREG_REDIS_URL", &redis),
        ("MREG_REDIS_PREFIX", &prefix),
    ])
    .await;
    let (_, ready) = app.get("/readyz").await;
    assert_eq!(ready["checks"]["database_backend"], "postgres", "{ready}");
    assert_eq!(ready["checks"]["cache_backend"], "redis", "{ready}");
    client_commands_manage_the_registry(&app).await;
    app.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn an_unreachable_gateway_is_reported_with_its_own_exit_code() {
    let dir = TempDir::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let out = run(
        &dir,
        &[
            "servers",
            "--url",
            &format!("http://127.0.0.1:{port}"),
            "list",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(69));
    assert!(
        stderr(&out).contains("cannot reach mreg at"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn a_bad_setting_stops_start_up_with_exit_code_64_and_one_line() {
    let dir = TempDir::new();
    for (var, value, expected) in [
        (
            "MREG_API_PORT",
            "http",
            "MREG_API_PORT: 'http' is not a port number",
        ),
        (
            "AZURE_CLOCK_SKEW",
            "five",
            "AZURE_CLOCK_SKEW: 'five' is not a whole number",
        ),
        (
            "MREG_DATABASE_URL",
            "mysql://db/x",
            "MREG_DATABASE_URL: scheme 'mysql' is not supported",
        ),
    ] {
        let out = run(&dir, &["serve"], &[(var, value)]).await;
        assert_eq!(out.status.code(), Some(64), "{var}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(expected), "{err}");
    }
    std::fs::write(dir.0.join(".env"), "FASTMCP_SERVER_PORT=abc\n").expect("write .env");
    let out = run(&dir, &["migrate"], &[]).await;
    assert_eq!(out.status.code(), Some(64));
    assert!(
        stderr(&out).contains("FASTMCP_SERVER_PORT (in .env): 'abc'"),
        "{}",
        stderr(&out)
    );
    assert!(
        !dir.0.join("mreg.db").exists(),
        "nothing is created before the configuration is valid"
    );
}

#[tokio::test]
async fn check_config_shows_sources_and_hides_secrets() {
    let dir = TempDir::new();
    std::fs::write(dir.0.join("mreg.toml"), "[api]\nport = 9100\n").expect("write toml");
    std::fs::write(
        dir.0.join(".env"),
        "MREG_LOG_FORMAT=json\nAZURE_CLIENT_SECRET=dotenv-secret\n",
    )
    .expect("write .env");
    let out = run(
        &dir,
        &["check-config", "--config", "mreg.toml"],
        &[
            ("AZURE_TENANT_ID", "organizations"),
            (
                "AZURE_ALLOWED_TENANTS",
                "08541b6e-646d-43de-a0eb-834e6713d6d5",
            ),
            ("AZURE_CLIENT_ID", "835f09b6-0f0f-40cc-85cb-f32c5829a149"),
            ("MREG_DATABASE_URL", "postgres://u:db-secret@h/db"),
            ("MREG_REDIS_URL", "redis://:redis-secret@127.0.0.1:6379"),
            (
                "MREG_ENCRYPTION_KEY",
                "a2V5LXNlY3JldC1rZXktc2VjcmV0LWtleS1zZWNyZXQ=",
            ),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for secret in [
        "dotenv-secret",
        "db-secret",
        "redis-secret",
        "a2V5LXNlY3JldC1rZXktc2VjcmV0LWtleS1zZWNyZXQ=",
    ] {
        assert!(!text.contains(secret), "{secret} shown: {text}");
    }
    let line = |var: &str| {
        text.lines()
            .find(|l| l.starts_with(var))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        line("MREG_API_PORT").contains("9100")
            && line("MREG_API_PORT").contains("(file mreg.toml)"),
        "{text}"
    );
    assert!(
        line("MREG_LOG_FORMAT").contains("json") && line("MREG_LOG_FORMAT").ends_with("(.env)"),
        "{text}"
    );
    assert!(
        line("AZURE_CLIENT_SECRET").contains("(set, hidden)"),
        "{text}"
    );
    assert!(line("AZURE_TENANT_ID").ends_with("(environment)"), "{text}");
    assert!(
        line("FASTMCP_SERVER_PORT").contains("8001")
            && line("FASTMCP_SERVER_PORT").ends_with("(default)"),
        "{text}"
    );
    assert!(text.contains("database: postgres://u:***@h/db"), "{text}");
}

#[tokio::test]
async fn migrate_creates_the_embedded_database() {
    let dir = TempDir::new();
    let out = run(&dir, &["migrate"], &[("MREG_DATA_DIR", "state")]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("is up to date"));
    assert!(dir.0.join("state/mreg.db").exists());
}

#[tokio::test]
async fn serve_runs_until_sigterm_and_exits_cleanly() {
    let dir = TempDir::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port().to_string();
    drop(listener);
    let mut child = mreg(&dir, &["serve"], &[("MREG_API_PORT", &port)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..100 {
        if client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "mreg serve answers /healthz");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let output = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return Some((status, err));
            }
            if started.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .expect("join");
    let (status, log) = output.expect("mreg exits after SIGTERM");
    assert!(status.success(), "{log}");
    assert!(
        log.contains("received SIGTERM") && log.contains("stopped"),
        "{log}"
    );
}

#[tokio::test]
async fn audit_verify_never_creates_a_database() {
    let dir = TempDir::new();
    let out = run(&dir, &["audit", "verify"], &[]).await;
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stderr(&out).contains("no database at"), "{}", stderr(&out));
    assert!(
        !dir.0.join("mreg.db").exists(),
        "the wrong directory stays as it was"
    );
}

#[tokio::test]
async fn servers_show_their_health_and_settings_and_can_be_probed_and_searched_on_demand() {
    let app = TestApp::spawn().await;
    let upstream = crate::upstream::Upstream::start(true).await;
    let dir = TempDir::new();
    let url = app.base.as_str();
    let servers = |args: &[&str]| {
        let mut all = vec!["servers", "--url", url];
        all.extend_from_slice(args);
        all.into_iter().map(str::to_owned).collect::<Vec<String>>()
    };
    let run_servers = |args: Vec<String>| {
        let dir = &dir;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(dir, &args, &[]).await
        }
    };

    // A malformed header is refused before anything is sent, and never echoed.
    let out = run_servers(servers(&[
        "add",
        "up",
        &upstream.url,
        "--header",
        "s3cret-without-a-name",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--header expects NAME=VALUE"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("s3cret"), "{}", stderr(&out));
    let (status, _) = app.get("/api/v1/servers/up").await;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND, "nothing registered");

    let out = run_servers(servers(&[
        "add",
        "up",
        &upstream.url,
        "--header",
        "x-api-key=s3cret",
        "--timeout",
        "12",
        "--shared",
    ]))
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).contains("s3cret"));

    let out = run_servers(servers(&["list"])).await;
    let table = stdout(&out);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("HEALTH"),
        "{table}"
    );
    assert!(lines[1].contains(" unknown "), "not probed yet: {table}");

    let out = run_servers(servers(&["get", "up"])).await;
    let shown = stdout(&out);
    let gateway_url = format!("http://{}/servers/up/mcp", app.mcp_addr);
    for expected in [
        "health:        unknown since ".to_owned(),
        "the health monitor is off".to_owned(),
        format!("gateway url:   {gateway_url}"),
        "timeout:       12 s".to_owned(),
        "shared:        yes".to_owned(),
        "credentials:   stored (never shown)".to_owned(),
    ] {
        assert!(shown.contains(&expected), "{expected} missing: {shown}");
    }
    assert!(!shown.contains("s3cret"), "{shown}");
    let out = run_servers(servers(&["--json", "get", "up"])).await;
    assert!(!stdout(&out).contains("s3cret"), "{}", stdout(&out));

    // Probe now: healthy, exit 0; the list and the catalog follow.
    let out = run_servers(servers(&["check", "up"])).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("up: healthy; probe ok in "),
        "{}",
        stdout(&out)
    );
    let out = run_servers(servers(&["list"])).await;
    assert!(
        stdout(&out)
            .lines()
            .nth(1)
            .is_some_and(|l| l.contains(" healthy ")),
        "{}",
        stdout(&out)
    );
    let out = run_servers(servers(&["get", "up"])).await;
    assert!(
        stdout(&out).contains("health:        healthy since "),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("last probe:"), "{}", stdout(&out));

    let out = run(
        &dir,
        &["tools", "--url", url, "search", "echo", "TEXT"],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let found = stdout(&out);
    assert!(found.starts_with("SERVER"), "{found}");
    assert!(
        found.lines().any(|l| l.starts_with("up ")
            && l.contains(" echo ")
            && l.contains(" healthy ")
            && l.ends_with("Echo the text back")),
        "{found}"
    );
    let out = run(
        &dir,
        &["tools", "--url", url, "search", "no-such-words"],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("no tools match"), "{}", stdout(&out));

    // The stored header reaches the server through the gateway.
    let client =
        crate::mcp_tools::connect(&gateway_url, rmcp::model::ProtocolVersion::V_2025_06_18).await;
    let seen = crate::mcp_tools::call(&client, "whoami", serde_json::json!({})).await;
    assert_eq!(
        seen.structured_content
            .as_ref()
            .map(|v| v["api_key"].clone()),
        Some(Value::from("s3cret"))
    );
    let _ = client.cancel().await;

    // A server that is down fails the check.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let down_url = format!("http://127.0.0.1:{port}/mcp");
    let out = run_servers(servers(&["add", "down", &down_url])).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run_servers(servers(&["check", "down"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).starts_with("down: degraded; probe refused in "),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("down is not healthy"),
        "{}",
        stderr(&out)
    );

    // update: new settings, headers cleared.
    let out = run_servers(servers(&[
        "update",
        "up",
        "--timeout",
        "20",
        "--shared=false",
        "--clear-headers",
    ]))
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run_servers(servers(&["get", "up"])).await;
    let shown = stdout(&out);
    for expected in [
        "timeout:       20 s",
        "shared:        no",
        "credentials:   none",
    ] {
        assert!(shown.contains(expected), "{expected} missing: {shown}");
    }
    app.stop().await;
}

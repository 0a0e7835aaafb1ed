//! The `mreg` binary as a user runs it: client commands against a live gateway, configuration
//! errors, `check-config`, `migrate`, and `serve` stopped by SIGTERM.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use mreg::config::settings::SETTINGS;
use serde_json::Value;

use crate::support::{TempDir, TestApp, TestDb, redis_available};

/// `mreg` with `args`, run in `dir` with none of mreg's variables inherited, plus `env`. Saved
/// logins are kept apart (`MREG_CREDENTIALS` in `dir`).
fn mreg(dir: &TempDir, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mreg"));
    command.args(args).current_dir(&dir.0).stdin(Stdio::null());
    for setting in SETTINGS {
        command.env_remove(setting.env);
    }
    for old in [
        "MREG_CONFIG",
        "MREG_URL",
        "MREG_MCP_URL",
        "MREG_MCP_ENDPOINT",
        "MREG_TOKEN",
    ] {
        command.env_remove(old);
    }
    command.env("MREG_CREDENTIALS", dir.0.join("credentials.json"));
    for (k, v) in env {
        command.env(k, v);
    }
    command
}

/// [`run`], killed after `limit` (`None` then): for a command that must end on its own.
async fn run_within(
    dir: &TempDir,
    args: &[&str],
    env: &[(&str, &str)],
    limit: Duration,
) -> Option<Output> {
    let mut command = mreg(dir, args, env);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = std::time::Instant::now();
    tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().expect("spawn");
        loop {
            if child.try_wait().expect("wait").is_some() {
                return Some(child.wait_with_output().expect("output"));
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .expect("join")
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
            "--gateway",
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
        &[("MREG_GATEWAY_URL", url)],
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
        &[("MREG_GATEWAY_URL", url)],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));

    let out = run(&dir, &["servers", "--gateway", url, "list"], &[]).await;
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
        &["servers", "--gateway", url, "--json", "get", "files"],
        &[],
    )
    .await;
    let files: Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(files["metadata"]["team"], "storage");

    let out = run(
        &dir,
        &[
            "servers",
            "--gateway",
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
    let out = run(&dir, &["servers", "--gateway", url, "get", "weather"], &[]).await;
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
        &[
            "servers",
            "--gateway",
            url,
            "--json",
            "list",
            "-q",
            "forecast",
        ],
        &[],
    )
    .await;
    let found: Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(found["servers"].as_array().map(Vec::len), Some(1));

    let out = run(
        &dir,
        &[
            "servers",
            "--gateway",
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
        &["servers", "--gateway", url, "add", "Bad", "ftp://x"],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("name: contains 'B'"),
        "{}",
        stderr(&out)
    );
    let out = run(
        &dir,
        &["servers", "--gateway", url, "update", "weather"],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("nothing to change"),
        "{}",
        stderr(&out)
    );

    let out = run(&dir, &["servers", "--gateway", url, "rm", "weather"], &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&dir, &["servers", "--gateway", url, "rm", "weather"], &[]).await;
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
    // The operator's PostgreSQL settings, by name: their parsing is what this test is about.
    let app = TestApp::builder()
        .settings(&[
            ("MREG_POSTGRES_HOST", url.host_str().unwrap_or("127.0.0.1")),
            ("MREG_POSTGRES_PORT", &port),
            ("MREG_POSTGRES_USER", url.username()),
            ("MREG_POSTGRES_PASSWORD", url.password().unwrap_or("")),
            ("MREG_POSTGRES_DB", url.path().trim_start_matches('/')),
            ("MREG_REDIS_URL", &redis),
            ("MREG_REDIS_PREFIX", &prefix),
        ])
        .spawn()
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
            "--gateway",
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

/// A PostgreSQL that takes connections and never answers (a partition) ends `migrate`,
/// `audit verify` and `serve` with a line naming it, instead of hanging them without a word.
#[tokio::test]
async fn a_database_that_never_answers_ends_start_up_in_seconds() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let target = url::Url::parse(&db.url).expect("url");
    let addr = tokio::net::lookup_host(format!(
        "{}:{}",
        target.host_str().unwrap_or("127.0.0.1"),
        target.port().unwrap_or(5432)
    ))
    .await
    .expect("resolve")
    .next()
    .expect("an address");
    let proxy = crate::support::ChaosProxy::start(addr).await;
    proxy.partition();
    let mut through = target.clone();
    through.set_port(Some(proxy.addr.port())).expect("port");
    let _ = through.set_host(Some("127.0.0.1"));
    let dir = TempDir::new();
    for args in [&["migrate"][..], &["audit", "verify"], &["serve"]] {
        let started = std::time::Instant::now();
        let env = [("MREG_DATABASE_URL", through.as_str())];
        let out = run_within(&dir, args, &env, Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("{args:?} still running after 30 s"));
        assert!(!out.status.success(), "{args:?}");
        assert!(
            stderr(&out).contains("no answer within 5 s"),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(started.elapsed() < Duration::from_secs(20), "{args:?}");
    }
    proxy.restore();
}

/// A replica (or a restart) with another MREG_ENCRYPTION_KEY than the one the database's
/// secrets were sealed with does not start: it started and said it was ready, then could not
/// open the signing keys, the upstream credentials or its peers' sessions.
#[tokio::test]
async fn a_different_encryption_key_stops_start_up() {
    let dir = TempDir::new();
    let first = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let other = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
    let with = |key| {
        [
            ("FASTMCP_SERVER_PORT", "0"),
            ("MREG_HEALTH_ENABLED", "false"),
            ("MREG_ENCRYPTION_KEY", key),
        ]
    };
    let (status, log) = serve_until_up(&dir, &with(first)).await;
    assert!(status.success(), "{log}");
    let refused = run_within(&dir, &["serve"], &with(other), Duration::from_secs(30))
        .await
        .expect("serve ends on its own");
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains(
            "MREG_ENCRYPTION_KEY is not the key this database's secrets were sealed with"
        ),
        "{}",
        stderr(&refused)
    );
    let (status, log) = serve_until_up(&dir, &with(first)).await;
    assert!(status.success(), "the right key still starts: {log}");
}

/// Secrets in a database URL's parameters stay out of what `migrate` prints, mreg's lines and
/// the database client's alike (it warned of each parameter it does not know, with its value).
#[tokio::test]
async fn database_url_parameters_do_not_leak_their_secrets() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = TempDir::new();
    let separator = if db.url.contains('?') { '&' } else { '?' };
    let url = format!("{}{separator}sslpassword=SSLPW8&PASSWORD=QPW3", db.url);
    let out = run(&dir, &["migrate"], &[("MREG_DATABASE_URL", &url)]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = format!("{}{}", stdout(&out), stderr(&out));
    for secret in ["SSLPW8", "QPW3"] {
        assert!(!printed.contains(secret), "{secret} printed: {printed}");
    }
    assert!(stdout(&out).contains("is up to date"), "{printed}");
}

#[tokio::test]
async fn a_failed_start_is_said_once() {
    let dir = TempDir::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let url = format!("postgres://postgres@127.0.0.1:{port}/nothing");
    let out = run(&dir, &["migrate"], &[("MREG_DATABASE_URL", &url)]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let said: Vec<&str> = err.lines().filter(|l| l.contains("127.0.0.1")).collect();
    assert_eq!(said.len(), 1, "once, as the mreg: line: {err}");
    assert!(said[0].starts_with("mreg: "), "{err}");
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
    assert!(
        text.contains("database:     postgres://u:***@h/db"),
        "{text}"
    );
}

#[tokio::test]
async fn migrate_creates_the_embedded_database() {
    let dir = TempDir::new();
    let out = run(&dir, &["migrate"], &[("MREG_DATA_DIR", "state")]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("is up to date"));
    assert!(dir.0.join("state/mreg.db").exists());
}

/// Runs `mreg serve` in `dir` with `env` until it answers `/healthz`, then stops it with SIGTERM;
/// its exit status and what it wrote to standard error.
async fn serve_until_up(dir: &TempDir, env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    serve_with_stderr(dir, env, true).await
}

/// [`serve_until_up`]; with `read_stderr` false, the pipe of its standard error is closed as it
/// starts (a log shipper that died): every log line it writes then fails.
async fn serve_with_stderr(
    dir: &TempDir,
    env: &[(&str, &str)],
    read_stderr: bool,
) -> (std::process::ExitStatus, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port().to_string();
    drop(listener);
    let mut env = env.to_vec();
    env.push(("MREG_API_PORT", &port));
    let mut child = mreg(dir, &["serve"], &env)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    if !read_stderr {
        drop(child.stderr.take());
    }
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
    assert!(up, "mreg serve answers /healthz: {log}");
    (status, log)
}

#[tokio::test]
async fn serve_runs_until_sigterm_and_exits_cleanly() {
    let dir = TempDir::new();
    let (status, log) = serve_until_up(&dir, &[]).await;
    assert!(status.success(), "{log}");
    assert!(
        log.contains("received SIGTERM") && log.contains("stopped"),
        "{log}"
    );
}

/// A gateway whose log cannot be written (its standard error is a pipe nobody reads any more)
/// still starts, serves and stops on SIGTERM: a failed log line panicked, at start-up (exit 101
/// before binding) or in the signal handler (SIGTERM then ignored until SIGKILL).
#[tokio::test]
async fn serve_keeps_running_and_stops_on_sigterm_when_its_log_pipe_is_closed() {
    let dir = TempDir::new();
    let (status, _) = serve_with_stderr(&dir, &[], false).await;
    assert!(status.success(), "exit status {status:?}");
}

/// A policy rule naming no tenant (`[servers.payroll]`) governed every tenant's `payroll` before
/// server names were per tenant; in a gateway admitting several tenants it governs only the home
/// tenant's and tenantless ones. `serve` names each registered server it leaves to the default
/// rule, and the rule that would govern it; servers the rule governs, or that a rule of their
/// own governs, are not named.
#[tokio::test]
async fn serve_names_the_servers_a_rule_without_a_tenant_no_longer_governs() {
    const HOME: &str = "11111111-1111-1111-1111-111111111111";
    const OTHER: &str = "44444444-4444-4444-4444-444444444444";
    const GONE: &str = "55555555-5555-5555-5555-555555555555";
    let dir = TempDir::new();
    {
        let store = mreg::store::SqliteStore::open(&dir.0.join("mreg.db"), 2)
            .await
            .expect("open");
        for (name, tenant) in [
            ("payroll", None),
            ("payroll", Some(HOME)),
            ("payroll", Some(OTHER)),
            ("weather", Some(OTHER)),
            // From an earlier configuration: a tenant this one no longer admits.
            ("payroll", Some(GONE)),
        ] {
            let server = domain::ServerDraft {
                name: name.to_owned(),
                url: format!("https://{name}.example.com/mcp"),
                ..domain::ServerDraft::default()
            }
            .validate()
            .expect("valid")
            .into_server("alice", tenant, domain::now());
            domain::ServerStore::insert(&store, &server, None)
                .await
                .expect("insert");
        }
    }
    let policy = dir.0.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[servers.payroll]\nroles = [\"finance\"]\n[servers.weather]\nroles = [\"ops\"]\n\
             [servers.\"{OTHER}/weather\"]\nroles = [\"their-ops\"]\n"
        ),
    )
    .expect("policy");
    let key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let (status, log) = serve_until_up(
        &dir,
        &[
            ("FASTMCP_SERVER_PORT", "0"),
            ("MREG_HEALTH_ENABLED", "false"),
            ("AZURE_TENANT_ID", HOME),
            ("AZURE_CLIENT_ID", "22222222-2222-2222-2222-222222222222"),
            ("AZURE_CLIENT_SECRET", "secret"),
            ("AZURE_ALLOWED_TENANTS", &format!("{HOME},{OTHER}")),
            ("MREG_ENCRYPTION_KEY", key),
            ("MREG_POLICY_FILE", policy.to_str().expect("utf-8")),
        ],
    )
    .await;
    assert!(status.success(), "{log}");
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("policy: [servers."))
        .collect();
    assert_eq!(warnings.len(), 2, "{log}");
    let about = |tenant: &str| {
        warnings
            .iter()
            .find(|w| w.contains(&format!("tenant {tenant}'s server 'payroll'")))
            .copied()
            .unwrap_or_default()
    };
    assert!(
        about(OTHER)
            .contains("[servers.payroll] governs tenantless servers and the home tenant's only")
            && about(OTHER).contains("follows the default rule")
            && about(OTHER).contains(&format!("add [servers.\"{OTHER}/payroll\"]")),
        "{log}"
    );
    // Advice to name a tenant the gateway does not admit would stop it from starting.
    assert!(
        about(GONE).contains("this gateway does not admit that tenant, so no rule can name it")
            && !about(GONE).contains("add [servers."),
        "{log}"
    );
}

#[tokio::test]
async fn a_line_of_dotenv_that_is_not_a_setting_is_quoted_not_counted() {
    let dir = TempDir::new();
    std::fs::write(
        dir.0.join(".env"),
        "MREG_API_PORT=18000\n# a comment\n\nGARBAGE LINE\n",
    )
    .expect(".env");
    let out = run(&dir, &["check-config"], &[]).await;
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            ".env: cannot read the line 'GARBAGE LINE': each line is NAME=VALUE (or a # comment)"
        ),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn audit_verify_never_creates_a_database() {
    let dir = TempDir::new();
    let out = run(&dir, &["audit", "verify"], &[]).await;
    // Not 1, which says the chain is broken: nothing was checked.
    assert_eq!(out.status.code(), Some(64), "{}", stdout(&out));
    assert!(stderr(&out).contains("no database at"), "{}", stderr(&out));
    // A database that cannot be reached is 69, not 1 either.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let url = format!("postgres://postgres@127.0.0.1:{port}/nothing");
    let out = run(&dir, &["audit", "verify"], &[("MREG_DATABASE_URL", &url)]).await;
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(
        !dir.0.join("mreg.db").exists(),
        "the wrong directory stays as it was"
    );
}

#[tokio::test]
async fn servers_show_their_health_and_settings_and_can_be_probed_and_searched_on_demand() {
    let app = TestApp::spawn().await;
    let upstream = crate::support::upstream::Upstream::start(true).await;
    let dir = TempDir::new();
    let url = app.base.as_str();
    let servers = |args: &[&str]| {
        let mut all = vec!["servers", "--gateway", url];
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
    let out = run_servers(servers(&["list", "--health", "healthy"])).await;
    assert_eq!(stdout(&out).lines().count(), 2, "{}", stdout(&out));
    let out = run_servers(servers(&["list", "--health", "sick"])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("health: unknown health 'sick'"),
        "{}",
        stderr(&out)
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
        &["tools", "--gateway", url, "search", "echo", "TEXT"],
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
        &["tools", "--gateway", url, "search", "no-such-words"],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("no tools match"), "{}", stdout(&out));

    // The stored header reaches the server through the gateway.
    let client =
        crate::support::mcp::connect(&gateway_url, rmcp::model::ProtocolVersion::V_2025_06_18)
            .await;
    let seen = crate::support::mcp::call(&client, "whoami", serde_json::json!({})).await;
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
    let out = run_servers(servers(&["list", "--sort", "health"])).await;
    let sorted = stdout(&out);
    let names: Vec<&str> = sorted
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["up", "down"], "healthiest first: {sorted}");

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

/// Lines of `out`'s stderr that are deprecation notes.
fn notes(out: &Output) -> Vec<String> {
    stderr(out)
        .lines()
        .filter(|l| l.contains("deprecated"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn client_commands_find_the_gateway_through_the_same_configuration_as_serve() {
    let app = TestApp::spawn().await;
    let upstream = crate::support::upstream::Upstream::start(true).await;
    app.register("up", serde_json::json!({ "url": upstream.url }))
        .await;
    let (api_port, mcp_port) = (app.addr.port(), app.mcp_addr.port());

    // A project directory whose .env sets the ports: no flag needed, REST or MCP.
    let project = TempDir::new();
    std::fs::write(
        project.0.join(".env"),
        format!("MREG_API_PORT={api_port}\nFASTMCP_SERVER_PORT={mcp_port}\n"),
    )
    .expect("write .env");
    let out = run(&project, &["servers", "list"], &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("up "), "{}", stdout(&out));
    assert!(notes(&out).is_empty(), "{}", stderr(&out));
    let out = run(&project, &["call", "get_server", "name=up"], &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("up (active"), "{}", stdout(&out));
    let out = run(
        &project,
        &["call", "--server", "up", "echo", "text=through the gateway"],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("through the gateway"),
        "{}",
        stdout(&out)
    );

    // The same from a TOML file, named by --config or MREG_CONFIG.
    let elsewhere = TempDir::new();
    std::fs::write(
        elsewhere.0.join("gw.toml"),
        format!("[api]\nport = {api_port}\n[mcp]\nport = {mcp_port}\n"),
    )
    .expect("write toml");
    let out = run(
        &elsewhere,
        &["servers", "--config", "gw.toml", "check", "up"],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(
        &elsewhere,
        &["tools", "--config", "gw.toml", "search", "echo"],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(" echo "), "{}", stdout(&out));
    let out = run(
        &elsewhere,
        &["servers", "get", "up"],
        &[("MREG_CONFIG", "gw.toml")],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));

    // One name for the gateway: --gateway or MREG_GATEWAY_URL (the REST API); MCP commands
    // learn the MCP listener from it.
    let empty = TempDir::new();
    let out = run(
        &empty,
        &["call", "--gateway", &app.base, "list_servers", "query=up"],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("1 server(s)"), "{}", stdout(&out));
    let out = run(
        &empty,
        &["servers", "get", "up"],
        &[("MREG_GATEWAY_URL", &app.base)],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let (status, discovery) = app.get("/.well-known/mreg").await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert_eq!(
        discovery["mcp_url"],
        format!("http://{}", app.mcp_addr).as_str()
    );

    // A project configuration that names no reachable port is a configuration error (64);
    // naming the gateway needs no configuration.
    let broken = TempDir::new();
    std::fs::write(broken.0.join(".env"), "MREG_API_PORT=http\n").expect("write .env");
    let out = run(&broken, &["servers", "list"], &[]).await;
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("MREG_API_PORT: 'http'"),
        "{}",
        stderr(&out)
    );
    let out = run(&broken, &["servers", "--gateway", &app.base, "list"], &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));

    // The old names still work, each with one line saying so.
    let mcp_endpoint = format!("http://{}/mcp", app.mcp_addr);
    for (args, env, old) in [
        (
            vec!["servers", "--url", app.base.as_str(), "list"],
            vec![],
            "--url is deprecated; use --gateway",
        ),
        (
            vec!["servers", "list"],
            vec![("MREG_URL", app.base.as_str())],
            "MREG_URL is deprecated; use MREG_GATEWAY_URL",
        ),
        (
            vec!["call", "list_servers"],
            vec![("MREG_MCP_ENDPOINT", mcp_endpoint.as_str())],
            "MREG_MCP_ENDPOINT is deprecated; use MREG_GATEWAY_URL",
        ),
        (
            vec!["call", "--endpoint", mcp_endpoint.as_str(), "list_servers"],
            vec![],
            "--endpoint is deprecated",
        ),
    ] {
        let out = run(&empty, &args, &env).await;
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let notes = notes(&out);
        assert_eq!(notes.len(), 1, "{args:?}: {}", stderr(&out));
        assert!(notes[0].contains(old), "{args:?}: {notes:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn call_passes_plain_values_as_text_and_colon_equals_values_as_json() {
    let app = TestApp::spawn().await;
    let dir = TempDir::new();
    let gateway = app.base.as_str();
    let out = run(
        &dir,
        &[
            "call",
            "--gateway",
            gateway,
            "register_server",
            "name=numbers",
            "url=https://numbers.example.com/mcp",
            "description=2024",
            "tags:=[\"geo\", \"2024\"]",
        ],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let (_, server) = app.get("/api/v1/servers/numbers").await;
    assert_eq!(
        server["description"], "2024",
        "a number-like value stays text"
    );
    assert_eq!(server["tags"], serde_json::json!(["2024", "geo"]));

    // Bad JSON after := is refused before anything is sent.
    let out = run(
        &dir,
        &[
            "call",
            "--gateway",
            gateway,
            "register_server",
            "name=broken",
            "url=https://broken.example.com/mcp",
            "tags:=[geo",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("argument 'tags': '[geo' is not JSON"),
        "{}",
        stderr(&out)
    );
    let (status, _) = app.get("/api/v1/servers/broken").await;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND, "nothing registered");

    // Failures are told in words, never in the SDK's type names.
    let out = run(
        &dir,
        &["call", "--gateway", gateway, "get_server", "name:=5"],
        &[],
    )
    .await;
    assert!(!out.status.success());
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let unreachable = run(
        &dir,
        &[
            "call",
            "--endpoint",
            &format!("http://127.0.0.1:{port}/mcp"),
            "list_servers",
        ],
        &[],
    )
    .await;
    assert_eq!(unreachable.status.code(), Some(69));
    // A number written as text gets the hint to write it as JSON.
    let text_number = run(
        &dir,
        &["call", "--gateway", gateway, "list_servers", "limit=5"],
        &[],
    )
    .await;
    assert_eq!(
        text_number.status.code(),
        Some(1),
        "{}",
        stderr(&text_number)
    );
    assert!(
        stderr(&text_number).contains("write KEY:=JSON for a number"),
        "{}",
        stderr(&text_number)
    );
    // A server the gateway does not know is the gateway answering, not a gateway that is down:
    // exit 1, naming the server (69 is for "cannot be reached" only).
    let unknown = run(
        &dir,
        &[
            "call",
            "--gateway",
            gateway,
            "--server",
            "nosuch",
            "echo",
            "text=x",
        ],
        &[],
    )
    .await;
    assert_eq!(unknown.status.code(), Some(1), "{}", stderr(&unknown));
    assert!(
        stderr(&unknown).contains("no server named 'nosuch'"),
        "{}",
        stderr(&unknown)
    );
    // The CLI pointed at the MCP listener instead of the REST API says so.
    let wrong_port = run(
        &dir,
        &[
            "servers",
            "--gateway",
            &format!("http://{}", app.mcp_addr),
            "list",
        ],
        &[],
    )
    .await;
    assert_eq!(wrong_port.status.code(), Some(1), "{}", stderr(&wrong_port));
    assert!(
        stderr(&wrong_port).contains("answers as an MCP endpoint, not as mreg's REST API")
            && stderr(&wrong_port).contains("MREG_API_PORT"),
        "{}",
        stderr(&wrong_port)
    );
    // Signing in to a gateway without authentication says so, instead of an empty error.
    let login = run(&dir, &["login", "--no-browser", "--gateway", gateway], &[]).await;
    assert_eq!(login.status.code(), Some(1), "{}", stderr(&login));
    assert!(
        stderr(&login).contains("authentication is off on that gateway"),
        "{}",
        stderr(&login)
    );
    assert!(!dir.0.join("credentials.json").exists(), "nothing saved");
    for failed in [&out, &unreachable, &unknown, &wrong_port, &login] {
        let err = stderr(failed);
        assert!(err.contains("mreg: "), "{err}");
        for rust in ["rmcp::", "Transport [", "Error {", "Some(", "::"] {
            assert!(!err.contains(rust), "{rust} in {err}");
        }
    }
    assert!(
        stderr(&unreachable).contains("cannot open an MCP session at"),
        "{}",
        stderr(&unreachable)
    );
    app.stop().await;
}

#[tokio::test]
async fn completions_and_manual_pages_are_generated_from_the_command_definition() {
    let dir = TempDir::new();
    for (shell, marker) in [
        ("bash", "_mreg()"),
        ("zsh", "#compdef mreg"),
        ("fish", "complete -c mreg"),
        ("powershell", "Register-ArgumentCompleter"),
        ("elvish", "edit:completion:arg-completer[mreg]"),
    ] {
        let out = run(&dir, &["completions", shell], &[]).await;
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(
            script.contains("--gateway") && script.contains("check"),
            "{shell} completes the current commands"
        );
    }
    let out = run(&dir, &["completions", "bash"], &[]).await;
    std::fs::write(dir.0.join("mreg.bash"), &out.stdout).expect("write");
    if let Ok(check) = Command::new("bash")
        .arg("-n")
        .arg(dir.0.join("mreg.bash"))
        .output()
    {
        assert!(check.status.success(), "{}", stderr(&check));
    }
    let out = run(&dir, &["completions", "tcsh"], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid value 'tcsh'"),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());

    let out = run(&dir, &["man"], &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let page = stdout(&out);
    assert!(page.contains(".TH mreg 1"), "{page}");
    assert!(page.contains("mreg \\- The MCP Registry Gateway"), "{page}");
    assert!(page.contains("mreg\\-servers(1)"), "{page}");

    // A reader that stops reading (`mreg completions bash | head -3`) ends the command quietly:
    // generating a completion script into a closed pipe panicked (exit 101, a backtrace).
    for args in [
        &["completions", "bash"][..],
        &["completions", "fish"],
        &["man"],
    ] {
        let mut command = mreg(&dir, args, &[]);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let out = tokio::task::spawn_blocking(move || {
            let mut child = command.spawn().expect("spawn");
            drop(child.stdout.take());
            child.wait_with_output()
        })
        .await
        .expect("join")
        .expect("mreg runs");
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert_eq!(stderr(&out), "", "{args:?}");
    }

    let out = run(&dir, &["man", "--dir", "pages"], &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let check = std::fs::read_to_string(dir.0.join("pages/mreg-servers-check.1"))
        .expect("a page per command");
    assert!(check.contains("Probe a server now"), "{check}");
    assert!(dir.0.join("pages/mreg-tools-search.1").exists());
}

#[tokio::test]
async fn mcp_config_prints_a_configuration_that_an_mcp_client_can_use() {
    let app = TestApp::spawn().await;
    let upstream = crate::support::upstream::Upstream::start(true).await;
    app.register("up", serde_json::json!({ "url": upstream.url }))
        .await;
    let dir = TempDir::new();
    let gateway = app.base.as_str();
    let config = |out: &Output| -> Value {
        assert!(out.status.success(), "{}", stderr(out));
        serde_json::from_slice(&out.stdout).expect("JSON on stdout")
    };

    let out = run(&dir, &["mcp-config", "--gateway", gateway], &[]).await;
    let claude = config(&out);
    let own = format!("http://{}/mcp", app.mcp_addr);
    assert_eq!(
        claude,
        serde_json::json!({ "mcpServers": { "mreg": { "type": "http", "url": own } } })
    );
    let out = run(
        &dir,
        &[
            "mcp-config",
            "--gateway",
            gateway,
            "--client",
            "vscode",
            "up",
        ],
        &[],
    )
    .await;
    let vscode = config(&out);
    let url = vscode["servers"]["up"]["url"]
        .as_str()
        .expect("url")
        .to_owned();
    assert_eq!(url, format!("http://{}/servers/up/mcp", app.mcp_addr));
    assert_eq!(vscode["servers"]["up"]["type"], "http");
    let out = run(
        &dir,
        &[
            "mcp-config",
            "--gateway",
            gateway,
            "--client",
            "cursor",
            "up",
        ],
        &[],
    )
    .await;
    assert_eq!(
        config(&out),
        serde_json::json!({ "mcpServers": { "up": { "url": url } } })
    );

    // The printed URLs work with the official SDK's client.
    for endpoint in [&own, &url] {
        let client =
            crate::support::mcp::connect(endpoint, rmcp::model::ProtocolVersion::V_2025_06_18)
                .await;
        let tools = client.list_all_tools().await.expect("tools/list");
        assert!(!tools.is_empty(), "{endpoint}");
        let _ = client.cancel().await;
    }

    // A server that does not exist, or a name that cannot be one, prints no configuration.
    let out = run(&dir, &["mcp-config", "--gateway", gateway, "nope"], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("server 'nope' not found"),
        "{}",
        stderr(&out)
    );
    let out = run(&dir, &["mcp-config", "--gateway", gateway, "Bad_Name"], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("name: contains 'B'"),
        "{}",
        stderr(&out)
    );
    let out = run(&dir, &["mcp-config", "--client", "emacs"], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    app.stop().await;
}

#[tokio::test]
async fn check_config_warns_about_variables_it_does_not_read_and_shows_auth_and_the_mcp_endpoint() {
    let dir = TempDir::new();
    std::fs::write(dir.0.join(".env"), "MREG_API_PROT=9000\n").expect("write .env");
    let out = run(
        &dir,
        &["check-config"],
        &[
            ("FASTMCP_LOG_LEVEL", "DEBUG"),
            ("MREG_URL", "http://127.0.0.1:8000"),
            ("FASTMCP_SERVER_PORT", "9101"),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let warnings = stderr(&out);
    for expected in [
        "mreg: warning: MREG_API_PROT (.env): not an mreg setting, ignored (did you mean MREG_API_PORT?)",
        "mreg: warning: FASTMCP_LOG_LEVEL (environment): a FastMCP setting mreg does not use",
        "mreg: warning: MREG_URL (environment): deprecated; use MREG_GATEWAY_URL",
    ] {
        assert!(
            warnings.contains(expected),
            "{expected} missing: {warnings}"
        );
    }
    assert!(
        !warnings.contains("warning: FASTMCP_SERVER_PORT"),
        "a setting is not warned about: {warnings}"
    );
    let text = stdout(&out);
    assert!(
        text.contains("auth:         none (every caller is an administrator; loopback only)"),
        "{text}"
    );
    assert!(
        text.contains("MCP endpoint: http://127.0.0.1:9101/mcp"),
        "{text}"
    );

    let out = run(
        &dir,
        &["check-config"],
        &[
            ("AZURE_TENANT_ID", "08541b6e-646d-43de-a0eb-834e6713d6d5"),
            ("AZURE_CLIENT_ID", "835f09b6-0f0f-40cc-85cb-f32c5829a149"),
            ("AZURE_CLIENT_SECRET", "s3cret"),
            (
                "MREG_ENCRYPTION_KEY",
                "a2V5LXNlY3JldC1rZXktc2VjcmV0LWtleS1zZWNyZXQ=",
            ),
            ("MREG_PUBLIC_URL", "https://mreg.example.com"),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("auth:         oauth, Entra ID tenant 08541b6e-646d-43de-a0eb-834e6713d6d5"),
        "{text}"
    );
    assert!(
        text.contains("MCP endpoint: https://mreg.example.com/mcp"),
        "{text}"
    );
    assert!(!text.contains("s3cret") && !stderr(&out).contains("s3cret"));
}

#[tokio::test]
async fn configuration_errors_are_one_line_with_exit_64_from_serve_and_check_config() {
    let dir = TempDir::new();
    let policy = dir.0.join("policy.toml");
    std::fs::write(&policy, "[servers.payroll]\nroles = [\"finance\"]\n").expect("policy");
    let policy = policy.to_str().expect("path").to_owned();
    for (env, expected) in [
        (
            // Two tenants, neither the home tenant: `payroll` could be either's.
            vec![
                ("AZURE_TENANT_ID", "organizations"),
                ("AZURE_CLIENT_ID", "22222222-2222-2222-2222-222222222222"),
                ("AZURE_CLIENT_SECRET", "secret"),
                (
                    "AZURE_ALLOWED_TENANTS",
                    "11111111-1111-1111-1111-111111111111,44444444-4444-4444-4444-444444444444",
                ),
                ("MREG_POLICY_FILE", policy.as_str()),
            ],
            "MREG_POLICY_FILE: [servers.payroll] names no tenant, and this gateway admits several tenants",
        ),
        (
            vec![("MREG_HEALTH_INTERVAL", "30")],
            "MREG_HEALTH_INTERVAL: '30' needs a unit: write 30s, 30ms, 30m or 30h",
        ),
        (
            vec![("AZURE_TENANT_ID", "08541b6e-646d-43de-a0eb-834e6713d6d5")],
            "AZURE_CLIENT_ID and AZURE_CLIENT_SECRET: missing: AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET are set together",
        ),
        (
            vec![("MREG_OIDC_CLIENT_ID", "mreg")],
            "MREG_OIDC_ISSUER and MREG_OIDC_CLIENT_SECRET: missing:",
        ),
        (
            vec![("MREG_API_HOST", "0.0.0.0")],
            "MREG_API_HOST: '0.0.0.0' is not a loopback address, and authentication is off",
        ),
        (
            vec![("FASTMCP_SERVER_HOST", "0.0.0.0"), ("MREG_AUTH", "none")],
            "FASTMCP_SERVER_HOST: '0.0.0.0' is not a loopback address",
        ),
        (
            vec![("MREG_HEALTH_ENABLED", "nope")],
            "MREG_HEALTH_ENABLED: 'nope' is not a yes or no: write true or false (also yes/no, on/off, 1/0)",
        ),
        (
            // One port for both listeners failed only at bind time, after the database was
            // made, as "address already in use" (another process, it seemed).
            vec![("MREG_API_PORT", "18050"), ("FASTMCP_SERVER_PORT", "18050")],
            "FASTMCP_SERVER_PORT: 18050 is the REST API's port too",
        ),
        (
            vec![
                ("MREG_API_PORT", "18050"),
                ("FASTMCP_SERVER_PORT", "18050"),
                ("FASTMCP_SERVER_HOST", "localhost"),
            ],
            "the REST API and the MCP listener need a port each",
        ),
    ] {
        for command in ["serve", "check-config"] {
            let out = run(&dir, &[command], &env).await;
            assert_eq!(
                out.status.code(),
                Some(64),
                "{command} {env:?}: {}",
                stderr(&out)
            );
            let err = stderr(&out);
            let errors: Vec<&str> = err.lines().filter(|l| !l.contains("warning")).collect();
            assert_eq!(errors.len(), 1, "{command} {env:?}: {err}");
            assert!(errors[0].contains(expected), "{command}: {err}");
        }
        assert!(
            !dir.0.join("mreg.db").exists(),
            "nothing is created before the configuration is valid"
        );
    }
    // The same gateway takes rules that say whose server they mean: one tenant's, or the one
    // registered without a tenant.
    std::fs::write(
        &policy,
        "[servers.\"/payroll\"]\nroles = [\"finance\"]\n\
         [servers.\"44444444-4444-4444-4444-444444444444/payroll\"]\nroles = [\"finance\"]\n",
    )
    .expect("policy");
    let out = run(
        &dir,
        &["check-config"],
        &[
            ("AZURE_TENANT_ID", "organizations"),
            ("AZURE_CLIENT_ID", "22222222-2222-2222-2222-222222222222"),
            ("AZURE_CLIENT_SECRET", "secret"),
            (
                "AZURE_ALLOWED_TENANTS",
                "11111111-1111-1111-1111-111111111111,44444444-4444-4444-4444-444444444444",
            ),
            (
                "MREG_ENCRYPTION_KEY",
                "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
            ),
            ("MREG_POLICY_FILE", policy.as_str()),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test]
async fn json_logs_carry_numbers_as_numbers_and_strings_quoted_once() {
    let dir = TempDir::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port().to_string();
    drop(listener);
    let mut child = mreg(
        &dir,
        &["serve"],
        &[
            ("MREG_API_PORT", &port),
            ("FASTMCP_SERVER_PORT", "0"),
            ("MREG_LOG_FORMAT", "json"),
            ("MREG_HEALTH_INTERVAL", "200ms"),
            ("MREG_HEALTH_INTERVALL", "1s"),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn");
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..100 {
        if client
            .get(format!("{base}/healthz"))
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
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let down = format!(
        "http://127.0.0.1:{}/mcp",
        closed.local_addr().expect("addr").port()
    );
    drop(closed);
    let created = client
        .post(format!("{base}/api/v1/servers"))
        .json(&serde_json::json!({ "name": "down", "url": down }))
        .send()
        .await
        .expect("register");
    assert_eq!(created.status(), reqwest::StatusCode::CREATED);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let log = tokio::task::spawn_blocking(move || {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        let _ = child.wait();
        err
    })
    .await
    .expect("join");
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let field = |message: &str, key: &str| {
        lines
            .iter()
            .find(|l| l["message"] == message)
            .map(|l| l[key].clone())
            .unwrap_or_else(|| panic!("no '{message}' line: {log}"))
    };
    assert_eq!(field("health monitor started", "interval_ms"), 200, "{log}");
    assert_eq!(field("health changed", "server"), "down", "{log}");
    assert!(
        lines.iter().any(|l| l["level"] == "WARN"
            && l["message"]
                == "MREG_HEALTH_INTERVALL (environment): not an mreg setting, ignored (did you mean MREG_HEALTH_INTERVAL?)"),
        "serve warns about a mistyped variable too: {log}"
    );
    assert!(field("shutting down: draining in-flight requests", "grace_secs").is_u64());
    fn strings(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::String(s) => out.push(s.clone()),
            Value::Array(items) => items.iter().for_each(|i| strings(i, out)),
            Value::Object(map) => map.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    lines.iter().for_each(|l| strings(l, &mut all));
    for s in &all {
        assert!(
            !s.starts_with('"')
                && !s.starts_with("Some(")
                && !s.chars().all(|c| c.is_ascii_digit()),
            "a value quoted twice, or a number as text: {s:?} in {log}"
        );
    }
}

/// What [`FakeGateway`] received: each request's path and `Authorization` header.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, Option<String>)>>>;

/// A stand-in gateway on port 0 for what the real one cannot be made to do (be someone else's
/// server, answer hostile text): it answers `GET /.well-known/mreg` with itself as the MCP
/// listener and every other path with the canned JSON given for it (404 otherwise), and records
/// each request's path and `Authorization` header.
struct FakeGateway {
    base: String,
    seen: Seen,
    task: tokio::task::JoinHandle<()>,
}

impl FakeGateway {
    async fn start(routes: Vec<(&'static str, u16, Value)>) -> Self {
        use axum::extract::{Request, State};
        use axum::response::IntoResponse;
        type Shared = (
            Seen,
            std::sync::Arc<Vec<(&'static str, u16, Value)>>,
            String,
        );
        async fn answer(
            State((seen, routes, base)): State<Shared>,
            request: Request,
        ) -> impl IntoResponse {
            let path = request.uri().path().to_owned();
            let auth = request
                .headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap_or("(not text)").to_owned());
            seen.lock().expect("lock").push((path.clone(), auth));
            if path == "/.well-known/mreg" {
                return (
                    reqwest::StatusCode::OK,
                    axum::Json(serde_json::json!({ "mcp_url": base })),
                );
            }
            match routes.iter().find(|(p, _, _)| *p == path) {
                Some((_, status, body)) => (
                    reqwest::StatusCode::from_u16(*status).expect("status"),
                    axum::Json(body.clone()),
                ),
                None => (
                    reqwest::StatusCode::NOT_FOUND,
                    axum::Json(
                        serde_json::json!({ "error": "not_found", "message": "no such route" }),
                    ),
                ),
            }
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let seen = std::sync::Arc::default();
        let router = axum::Router::new().fallback(answer).with_state((
            std::sync::Arc::clone(&seen),
            std::sync::Arc::new(routes),
            base.clone(),
        ));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { base, seen, task }
    }

    /// The `Authorization` headers received so far, one per request.
    fn authorizations(&self) -> Vec<Option<String>> {
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .map(|(_, auth)| auth.clone())
            .collect()
    }

    fn stop(self) {
        self.task.abort();
    }
}

/// Writes a saved login as `mreg login` would, for the issuer `issuer` and (unless `None`, as
/// older versions saved it) the REST API `gateway`.
fn save_login(dir: &TempDir, issuer: &str, gateway: Option<&str>, token: &str) {
    let mut saved = serde_json::json!({
        "issuer": issuer,
        "client_id": "cli",
        "access_token": token,
        "refresh_token": null,
        "expires_at": time::OffsetDateTime::now_utc().unix_timestamp() + 3600,
    });
    if let Some(gateway) = gateway {
        saved["gateway"] = Value::from(gateway);
    }
    std::fs::write(dir.0.join("credentials.json"), saved.to_string()).expect("save login");
}

#[tokio::test]
async fn a_saved_login_is_sent_only_to_the_gateway_it_was_made_for() {
    let empty_list = || {
        vec![(
            "/api/v1/servers",
            200,
            serde_json::json!({ "servers": [], "next_cursor": null }),
        )]
    };
    let gateway = FakeGateway::start(empty_list()).await;
    let issuer = FakeGateway::start(vec![]).await;
    let stranger = FakeGateway::start(empty_list()).await;
    let token = "saved-admin-token";
    let bearer = Some(format!("Bearer {token}"));
    let dir = TempDir::new();
    save_login(&dir, &issuer.base, Some(&gateway.base), token);

    // The gateway logged in to gets the token.
    let out = run(&dir, &["servers", "--gateway", &gateway.base, "list"], &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(gateway.authorizations(), std::slice::from_ref(&bearer));
    assert!(!stderr(&out).contains("not sending"), "{}", stderr(&out));

    // A cloned repository's .env names another server: it gets no token, and the user is told.
    std::fs::write(
        dir.0.join(".env"),
        format!("MREG_GATEWAY_URL={}\n", stranger.base),
    )
    .expect("write .env");
    let out = run(&dir, &["servers", "list"], &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "not sending your saved login to {}",
            stranger.base
        )) && err.contains(&gateway.base)
            && err.contains("mreg login --gateway")
            && err.contains("--token"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // `call` asks the stranger where its MCP listener is (itself): no token there either.
    let out = run(&dir, &["call", "list_servers"], &[]).await;
    assert!(!out.status.success(), "the stranger speaks no MCP");
    assert!(stderr(&out).contains("not sending"), "{}", stderr(&out));
    let seen = stranger.authorizations();
    assert!(
        seen.len() >= 3,
        "list, discovery and MCP requests: {seen:?}"
    );
    assert!(seen.iter().all(Option::is_none), "{seen:?}");
    assert!(!stdout(&out).contains(token) && !stderr(&out).contains(token));

    // A token given explicitly is sent as given.
    let out = run(
        &dir,
        &["servers", "list"],
        &[("MREG_TOKEN", "explicit-token")],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stranger
            .authorizations()
            .last()
            .cloned()
            .flatten()
            .as_deref(),
        Some("Bearer explicit-token")
    );

    // A login saved by an older version (no gateway recorded) goes to the issuer's origin only.
    let old = TempDir::new();
    save_login(&old, &issuer.base, None, token);
    let out = run(&old, &["servers", "--gateway", &gateway.base, "list"], &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(gateway.authorizations().last(), Some(&None));
    assert!(stderr(&out).contains("not sending"), "{}", stderr(&out));
    let out = run(
        &old,
        &[
            "call",
            "--endpoint",
            &format!("{}/mcp", issuer.base),
            "list_servers",
        ],
        &[],
    )
    .await;
    assert!(!out.status.success(), "the stand-in speaks no MCP");
    assert_eq!(issuer.authorizations().last(), Some(&bearer));
    for fake in [gateway, issuer, stranger] {
        fake.stop();
    }
}

#[tokio::test]
async fn a_password_in_the_gateway_url_is_never_printed() {
    let dir = TempDir::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let gateway = format!("http://alice:S3CRETPW@127.0.0.1:{port}");
    let shown = format!("http://alice:***@127.0.0.1:{port}");

    let mut outputs = Vec::new();
    let out = run(&dir, &["check-config"], &[("MREG_GATEWAY_URL", &gateway)]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let line = stdout(&out)
        .lines()
        .find(|l| l.starts_with("MREG_GATEWAY_URL"))
        .unwrap_or_default()
        .to_owned();
    assert!(line.contains(&shown), "{}", stdout(&out));

    outputs.push(out);
    let out = run(&dir, &["servers", "--gateway", &gateway, "list"], &[]).await;
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("cannot reach mreg at {shown} (")),
        "{}",
        stderr(&out)
    );
    outputs.push(out);
    let out = run(
        &dir,
        &["call", "list_servers"],
        &[("MREG_GATEWAY_URL", &gateway)],
    )
    .await;
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("cannot ask the gateway at {shown} ")),
        "{}",
        stderr(&out)
    );
    outputs.push(out);
    let out = run(
        &dir,
        &[
            "call",
            "--endpoint",
            &format!("{gateway}/mcp"),
            "list_servers",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("cannot open an MCP session at {shown}/mcp")),
        "{}",
        stderr(&out)
    );
    outputs.push(out);
    // Not a URL a client can use, password and all.
    let bad = run(
        &dir,
        &["servers", "--gateway", "alice:S3CRETPW@127.0.0.1:1", "list"],
        &[],
    )
    .await;
    assert!(!bad.status.success());
    outputs.push(bad);
    for out in &outputs {
        let (out_text, err_text) = (stdout(out), stderr(out));
        assert!(!out_text.contains("S3CRETPW"), "{out_text}");
        assert!(!err_text.contains("S3CRETPW"), "{err_text}");
    }
}

/// `mreg` with `args` whose reader closes its stdout before anything is printed, as
/// `mreg … | head -1` does once it has its line.
async fn run_with_stdout_closed(dir: &TempDir, args: &[&str]) -> Output {
    let mut command = mreg(dir, args, &[]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    tokio::task::spawn_blocking(move || {
        let mut child = command.spawn()?;
        drop(child.stdout.take());
        child.wait_with_output()
    })
    .await
    .expect("join")
    .expect("mreg runs")
}

#[tokio::test]
async fn client_commands_end_quietly_when_their_reader_stops_reading() {
    let app = TestApp::spawn().await;
    let upstream = crate::support::upstream::Upstream::start(true).await;
    app.register("up", serde_json::json!({ "url": upstream.url }))
        .await;
    let dir = TempDir::new();
    let gateway = app.base.as_str();
    let out = run(&dir, &["servers", "--gateway", gateway, "check", "up"], &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    for args in [
        vec!["servers", "--gateway", gateway, "list"],
        vec!["servers", "--gateway", gateway, "get", "up"],
        vec!["tools", "--gateway", gateway, "search", "echo"],
        vec!["servers", "--gateway", gateway, "--json", "list"],
        vec!["check-config"],
    ] {
        let out = run_with_stdout_closed(&dir, &args).await;
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(out.stderr.is_empty(), "{args:?}: {}", stderr(&out));
    }
    // The exit status still tells what happened.
    let out = run_with_stdout_closed(&dir, &["servers", "--gateway", gateway, "get", "nope"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    app.stop().await;
}

#[tokio::test]
async fn a_gateway_url_without_a_scheme_or_with_a_path_is_a_configuration_error_with_a_hint() {
    let dir = TempDir::new();
    for (args, hint) in [
        (
            vec!["servers", "--gateway", "127.0.0.1:18000", "list"],
            "--gateway 127.0.0.1:18000 has no scheme; write http://127.0.0.1:18000",
        ),
        (
            vec!["tools", "--gateway", "localhost:18000", "search", "x"],
            "write http://localhost:18000",
        ),
        (
            vec![
                "servers",
                "--gateway",
                "http://127.0.0.1:18000/api/v1",
                "list",
            ],
            "the gateway URL is the base of its REST API, without a path; write http://127.0.0.1:18000",
        ),
        (
            vec![
                "call",
                "--gateway",
                "http://127.0.0.1:18000/api/v1",
                "list_servers",
            ],
            "without a path; write http://127.0.0.1:18000",
        ),
    ] {
        let out = run(&dir, &args, &[]).await;
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(hint), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!err.contains("relative URL without a base"), "{err}");
    }
    std::fs::write(
        dir.0.join(".env"),
        "MREG_GATEWAY_URL=http://127.0.0.1:18000/api/v1/\n",
    )
    .expect("write .env");
    let out = run(&dir, &["servers", "list"], &[]).await;
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "MREG_GATEWAY_URL http://127.0.0.1:18000/api/v1: the gateway URL is the base"
        ),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn servers_check_tells_unhealthy_from_unknown_or_refused_by_its_exit_status() {
    let app = TestApp::spawn().await;
    let dir = TempDir::new();
    let out = run(
        &dir,
        &["servers", "--gateway", &app.base, "check", "nope"],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("server 'nope' not found (HTTP 404"),
        "{}",
        stderr(&out)
    );
    app.stop().await;

    let fake = FakeGateway::start(vec![
        (
            "/api/v1/servers/sick/health/check",
            200,
            serde_json::json!({ "current": { "status": "unhealthy" } }),
        ),
        (
            "/api/v1/servers/secret/health/check",
            403,
            serde_json::json!({ "error": "forbidden", "message": "you may not check secret" }),
        ),
    ])
    .await;
    let out = run(
        &dir,
        &["servers", "--gateway", &fake.base, "check", "sick"],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("sick: unhealthy"),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("sick is not healthy"),
        "{}",
        stderr(&out)
    );
    let out = run(
        &dir,
        &["servers", "--gateway", &fake.base, "check", "secret"],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("you may not check secret (HTTP 403"),
        "{}",
        stderr(&out)
    );
    fake.stop();

    let out = run(&dir, &["servers", "check", "--help"], &[]).await;
    assert!(
        stdout(&out).contains("2 when it could not be checked"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn a_bad_server_name_is_refused_as_typed_before_anything_is_sent() {
    let fake = FakeGateway::start(vec![]).await;
    let dir = TempDir::new();
    for (args, code) in [
        (vec!["get", "bad name"], 1),
        (vec!["rm", "bad name"], 1),
        (vec!["update", "bad name", "-d", "x"], 1),
        (vec!["check", "bad name"], 2),
    ] {
        let mut all = vec!["servers", "--gateway", fake.base.as_str()];
        all.extend_from_slice(&args);
        let out = run(&dir, &all, &[]).await;
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("invalid server name 'bad name': contains ' '"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("bad+name"), "{err}");
    }
    let out = run(
        &dir,
        &[
            "call",
            "--gateway",
            &fake.base,
            "--server",
            "bad name",
            "echo",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("invalid server name 'bad name'"),
        "{}",
        stderr(&out)
    );
    assert!(fake.authorizations().is_empty(), "nothing was sent");
    fake.stop();
}

#[tokio::test]
async fn text_from_the_gateway_cannot_drive_the_terminal() {
    let esc_bel = |s: &str| s.contains('\u{1b}') || s.contains('\u{7}') || s.contains('\r');
    let fake = FakeGateway::start(vec![
        (
            "/api/v1/tools",
            200,
            serde_json::json!({ "tools": [{
                "server": "evil",
                "health": "healthy",
                "tool": { "name": "wipe", "description": "\u{1b}[2Jcleared\u{7}" },
            }] }),
        ),
        (
            "/api/v1/servers/evil",
            200,
            serde_json::json!({
                "name": "evil",
                "description": "\u{1b}]8;;https://evil.example\u{7}docs\u{1b}]8;;\u{7}",
                "health": { "state": "degraded", "reason": "\r\u{1b}]52;c;aGk=\u{7}all good" },
            }),
        ),
        (
            "/api/v1/servers/evil/health/check",
            200,
            serde_json::json!({ "current": { "status": "healthy", "last_check": {
                "outcome": "ok", "latency_ms": 1, "detail": "\u{1b}[31mred\u{7}",
            } } }),
        ),
        (
            "/api/v1/servers/boom",
            500,
            serde_json::json!({ "error": "internal", "message": "\u{1b}[2Jfailed\u{7}" }),
        ),
    ])
    .await;
    let dir = TempDir::new();
    let gateway = fake.base.as_str();
    let out = run(
        &dir,
        &["tools", "--gateway", gateway, "search", "wipe"],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("\\x1b[2Jcleared\\x07"),
        "{}",
        stdout(&out)
    );
    let mut outputs = vec![out];
    let out = run(&dir, &["servers", "--gateway", gateway, "get", "evil"], &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("\\x0d\\x1b]52;c;aGk=\\x07all good"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("\\x1b]8;;https://evil.example\\x07docs"));
    outputs.push(out);
    let out = run(
        &dir,
        &["servers", "--gateway", gateway, "check", "evil"],
        &[],
    )
    .await;
    assert!(
        stdout(&out).contains("(\\x1b[31mred\\x07)"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    outputs.push(out);
    let out = run(&dir, &["servers", "--gateway", gateway, "get", "boom"], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("mreg: \\x1b[2Jfailed\\x07 (HTTP 500"),
        "{}",
        stderr(&out)
    );
    outputs.push(out);
    // JSON output escapes in its own way, and stays JSON.
    let out = run(
        &dir,
        &["tools", "--gateway", gateway, "--json", "search", "wipe"],
        &[],
    )
    .await;
    let found: Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(
        found["tools"][0]["tool"]["description"],
        "\u{1b}[2Jcleared\u{7}"
    );
    outputs.push(out);
    for out in &outputs {
        assert!(!esc_bel(&stdout(out)), "{:?}", stdout(out));
        assert!(!esc_bel(&stderr(out)), "{:?}", stderr(out));
    }
    fake.stop();
}

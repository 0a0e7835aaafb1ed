//! Test harness: the real app on port 0 with a fresh database, per-test PostgreSQL databases and
//! Redis prefixes, and a TCP proxy that a test can cut to simulate an outage.
//!
//! PostgreSQL and Redis are used when reachable (`MREG_TEST_DATABASE_URL`,
//! `MREG_TEST_REDIS_URL`, defaulting to the local services). With `MREG_TEST_REQUIRE_SERVICES=1`
//! (as in CI) an unreachable service fails the test instead of skipping it.

pub(crate) mod audit;
pub(crate) mod idp;
pub(crate) mod mcp;
pub(crate) mod peers;
pub(crate) mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mreg::app::{self, Running};
use mreg::config::{Config, RawConfig};
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::Connection;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// The PostgreSQL server tests create their databases on.
pub fn pg_admin_url() -> String {
    std::env::var("MREG_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The Redis tests use.
pub fn redis_url() -> String {
    std::env::var("MREG_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn services_required() -> bool {
    std::env::var("MREG_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1" || v == "true")
}

/// Handles a service that cannot be reached: fail in CI, skip (loudly) elsewhere.
fn unreachable_service(
    what: &str,
    error: impl std::fmt::Display,
) -> Option<std::convert::Infallible> {
    assert!(
        !services_required(),
        "{what} is required (MREG_TEST_REQUIRE_SERVICES=1) but unreachable: {error}"
    );
    eprintln!(
        "SKIPPED: {what} unreachable ({error}); set MREG_TEST_REQUIRE_SERVICES=1 to fail instead"
    );
    None
}

/// A PostgreSQL database of its own for one test, dropped by [`TestDb::drop_db`].
pub struct TestDb {
    /// Connection URL of the test database.
    pub url: String,
    name: String,
}

impl TestDb {
    /// Creates a fresh database, or `None` (skip) when PostgreSQL is unreachable and not required.
    pub async fn create() -> Option<Self> {
        let admin = pg_admin_url();
        let mut conn = match sqlx::PgConnection::connect(&admin).await {
            Ok(conn) => conn,
            Err(e) => {
                unreachable_service("PostgreSQL", e)?;
                unreachable!()
            }
        };
        let name = format!("mreg_t_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let mut url = url::Url::parse(&admin).expect("admin URL");
        url.set_path(&name);
        Some(Self {
            url: url.to_string(),
            name,
        })
    }

    /// Drops the database (every connection to it must be closed or is terminated).
    pub async fn drop_db(self) {
        if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_admin_url()).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&mut conn)
            .await;
        }
    }
}

/// Checks that Redis answers, or `None` (skip) when it does not and is not required.
pub async fn redis_available() -> Option<String> {
    let url = redis_url();
    let outcome = async {
        let client = redis::Client::open(url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(Duration::from_secs(3), outcome).await {
        Ok(Ok(_)) => Some(url),
        Ok(Err(e)) => {
            unreachable_service("Redis", e)?;
            unreachable!()
        }
        Err(_) => {
            unreachable_service("Redis", "timed out")?;
            unreachable!()
        }
    }
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new empty directory.
    pub fn new() -> Self {
        let path =
            std::env::temp_dir().join(format!("mreg-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Configuration for a test app: every listener on port 0, data in `dir`, plus `extra`.
pub fn test_config(dir: &TempDir, extra: &[(&str, &str)]) -> Config {
    let mut env = vec![
        ("MREG_API_PORT".to_owned(), "0".to_owned()),
        ("FASTMCP_SERVER_PORT".to_owned(), "0".to_owned()),
        ("MREG_DATA_DIR".to_owned(), dir.0.display().to_string()),
        ("MREG_LOG".to_owned(), "warn".to_owned()),
        ("MREG_SHUTDOWN_GRACE_SECS".to_owned(), "2".to_owned()),
        // Tests register made-up URLs; only the health tests turn the monitor on.
        ("MREG_HEALTH_ENABLED".to_owned(), "false".to_owned()),
        // Test upstreams listen on loopback, also behind a gateway with authentication on.
        (
            "MREG_UPSTREAM_ALLOW".to_owned(),
            "127.0.0.0/8,::1/128".to_owned(),
        ),
    ];
    // Authentication on (an identity provider configured) requires an external encryption key;
    // without one, the generated key is used, as on an operator's laptop.
    if extra.iter().any(|(k, v)| {
        (*k == "MREG_AUTH" && *v == "oauth") || matches!(*k, "AZURE_CLIENT_ID" | "MREG_OIDC_ISSUER")
    }) {
        env.push((
            "MREG_ENCRYPTION_KEY".to_owned(),
            "dGVzdC1rZXktZm9yLW1yZWctdGVzdHMtMzItYnl0ZXM=".to_owned(),
        ));
    }
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    RawConfig::collect(None, Vec::new(), env)
        .and_then(|raw| raw.parse())
        .expect("test configuration is valid")
}

/// A change a test makes to the parsed configuration.
type ConfigChange = Box<dyn FnOnce(&mut Config) + Send>;

/// How a test wants its gateway. Settings are the typed configuration ([`Self::with_config`]);
/// the backends and the identity provider have a method each, so that no test spells the
/// environment names they are set by. Only a test whose subject is a setting's own parsing uses
/// [`Self::setting`].
#[must_use]
pub struct TestAppBuilder {
    settings: Vec<(String, String)>,
    changes: Vec<ConfigChange>,
    listeners: app::Listeners,
}

impl TestAppBuilder {
    /// Changes the parsed configuration before the app starts (after the test defaults).
    pub fn with_config(mut self, change: impl FnOnce(&mut Config) + Send + 'static) -> Self {
        self.changes.push(Box::new(change));
        self
    }

    /// Stores in the PostgreSQL database at `url` instead of the embedded SQLite.
    pub fn with_postgres(self, url: &str) -> Self {
        self.setting("MREG_DATABASE_URL", url)
    }

    /// Shares the cache, rate limits and revocations through Redis at `url`.
    pub fn with_redis(self, url: &str) -> Self {
        self.setting("MREG_REDIS_URL", url)
    }

    /// Keys the cache, rate limits and revocations in Redis under `prefix` (so that two
    /// gateways of one test share them and other tests do not).
    pub fn with_redis_prefix(self, prefix: &str) -> Self {
        let prefix = prefix.to_owned();
        self.with_config(move |c| c.redis_prefix = prefix)
    }

    /// Loads the policy file at `path` (roles, tool rules, limits), as `mreg serve` does at start.
    pub fn with_policy_file(self, path: &str) -> Self {
        self.setting("MREG_POLICY_FILE", path)
    }

    /// Each caller may make `per_minute` requests a minute (the default of the policy file).
    pub fn with_rate_limit(self, per_minute: u32) -> Self {
        self.setting("MREG_RATE_LIMIT_PER_MINUTE", &per_minute.to_string())
    }

    /// Serves MCP on `listener`, bound by the test first (its port must be known before the
    /// gateway starts, e.g. by an identity provider that checks mreg's callback URL).
    pub fn with_mcp_listener(mut self, listener: TcpListener) -> Self {
        self.listeners.mcp = Some(listener);
        self
    }

    /// Sets a setting by its name, as an operator would (for tests of the parsing itself).
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets several settings by name: the identity-provider harness, which names them in one
    /// place ([`idp`]), and tests whose subject is the settings themselves.
    pub fn settings(mut self, pairs: &[(&str, &str)]) -> Self {
        for (name, value) in pairs {
            self = self.setting(name, value);
        }
        self
    }

    /// Starts the app.
    pub async fn spawn(self) -> TestApp {
        self.try_spawn()
            .await
            .unwrap_or_else(|e| panic!("app starts: {e:#}"))
    }

    /// Starts the app, or says why it did not start.
    pub async fn try_spawn(self) -> anyhow::Result<TestApp> {
        let dir = TempDir::new();
        let settings: Vec<(&str, &str)> = self
            .settings
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut config = test_config(&dir, &settings);
        for change in self.changes {
            change(&mut config);
        }
        let clock = config.clock.clone();
        let running = app::start_on(config, self.listeners).await?;
        let (addr, mcp_addr) = (running.api_addr, running.mcp_addr);
        Ok(TestApp {
            base: format!("http://{addr}"),
            addr,
            mcp_addr,
            http: reqwest::Client::new(),
            running: Some(running),
            dir,
            clock,
        })
    }
}

/// The real app, serving on an ephemeral port.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Where the REST API listens.
    pub addr: SocketAddr,
    /// Where the MCP listener listens.
    pub mcp_addr: SocketAddr,
    /// A client for it.
    pub http: reqwest::Client,
    running: Option<Running>,
    /// The app's data directory.
    pub dir: TempDir,
    /// The app's clock: a test moves it forward instead of waiting for something to expire
    /// (entries of the in-memory cache, sign-ins, codes, grants).
    pub clock: domain::Clock,
}

impl TestApp {
    /// An app on SQLite and the in-memory cache.
    pub async fn spawn() -> Self {
        Self::builder().spawn().await
    }

    /// An app to configure first ([`TestAppBuilder`]).
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            settings: Vec::new(),
            changes: Vec::new(),
            listeners: app::Listeners::default(),
        }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request with an optional JSON body; returns status, headers and the JSON body
    /// (`Null` when empty).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request reaches the app");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON body, got {text:?}"))
        };
        (status, headers, json)
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let response = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics");
        assert_eq!(response.status(), StatusCode::OK, "/metrics answers");
        assert!(
            response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/openmetrics-text")),
            "labelled as what it is: {:?}",
            response.headers().get("content-type")
        );
        let text = response.text().await.expect("text");
        assert!(
            text.ends_with("# EOF\n"),
            "OpenMetrics ends with # EOF: {text}"
        );
        text
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (status, _, body) = self.send(reqwest::Method::GET, path, None).await;
        (status, body)
    }

    /// POST `body` to `path`.
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let (status, _, body) = self.send(reqwest::Method::POST, path, Some(body)).await;
        (status, body)
    }

    /// PATCH `body` to `path`.
    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let (status, _, body) = self.send(reqwest::Method::PATCH, path, Some(body)).await;
        (status, body)
    }

    /// DELETE `path`.
    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let (status, _, body) = self.send(reqwest::Method::DELETE, path, None).await;
        (status, body)
    }

    /// Registers a server with `name`, `url` and extra fields; asserts it was created.
    pub async fn register(&self, name: &str, extra: Value) -> Value {
        let mut body =
            serde_json::json!({ "name": name, "url": format!("https://{name}.example.com/mcp") });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let (status, created) = self.post("/api/v1/servers", body).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        created
    }

    /// Stops the app (graceful shutdown) and waits for it.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.expect("clean shutdown");
        }
    }

    /// Takes the running app out, to wait for it by hand.
    pub fn take_running(&mut self) -> Running {
        self.running.take().expect("running")
    }
}

/// Asserts the standard error body: `error` code, a message, and a request id that matches the
/// response header when one is given.
pub fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(
        body["request_id"].as_str().is_some_and(|m| m.len() >= 8),
        "{body}"
    );
}

/// The local Redis behind a [`ChaosProxy`], with a key prefix of its own.
pub struct RedisBehindProxy {
    /// The proxy, to cut, partition and restore.
    pub proxy: ChaosProxy,
    /// `redis://` URL of the proxy.
    pub url: String,
    /// A fresh `MREG_REDIS_PREFIX`.
    pub prefix: String,
}

impl RedisBehindProxy {
    /// Starts the proxy, or `None` when Redis is not available (the test is skipped, loudly).
    pub async fn start() -> Option<Self> {
        let redis = redis_available().await?;
        let target: SocketAddr = redis
            .trim_start_matches("redis://")
            .split('/')
            .next()
            .expect("host:port")
            .parse()
            .expect("a socket address");
        let proxy = ChaosProxy::start(target).await;
        Some(Self {
            url: format!("redis://{}", proxy.addr),
            prefix: format!("mreg-test-{}:", uuid::Uuid::new_v4().simple()),
            proxy,
        })
    }
}

/// A TCP proxy in front of `target` that a test can cut (closing every connection and refusing
/// new ones), partition (holding every connection open and silent, and new ones too, as a
/// network that drops packets does) and restore.
pub struct ChaosProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub accepted: Arc<std::sync::atomic::AtomicUsize>,
    state: Arc<tokio::sync::watch::Sender<Link>>,
}

/// What the proxy does with traffic.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Link {
    Up,
    Cut,
    Silent,
    /// New connections pass; those the partition held stay open and silent for good.
    UpLeavingHeld,
}

/// Holds a partitioned connection until the link is up (or cut) for it too.
async fn held(link: &mut tokio::sync::watch::Receiver<Link>) {
    while link.changed().await.is_ok() {
        if matches!(*link.borrow_and_update(), Link::Up | Link::Cut) {
            return;
        }
    }
}

impl ChaosProxy {
    /// Starts a proxy to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (state, _) = tokio::sync::watch::channel(Link::Up);
        let state = Arc::new(state);
        let state2 = state.clone();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut link = state2.subscribe();
                let now = *link.borrow_and_update();
                match now {
                    Link::Cut => {
                        let _ = inbound.shutdown().await;
                        continue;
                    }
                    // Accepted, then never answered; dropped when the link changes.
                    Link::Silent => {
                        tokio::spawn(async move {
                            held(&mut link).await;
                            drop(inbound);
                        });
                        continue;
                    }
                    Link::Up | Link::UpLeavingHeld => {}
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = link.changed() => {
                            // A partition keeps both sockets open and silent until it ends.
                            if *link.borrow_and_update() == Link::Silent {
                                held(&mut link).await;
                            }
                        }
                    }
                });
            }
        });
        Self {
            addr,
            accepted,
            state,
        }
    }

    fn set(&self, link: Link) {
        self.state
            .send_if_modified(|now| std::mem::replace(now, link) != link);
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.set(Link::Cut);
    }

    /// Stops every byte in both directions, on open connections and new ones, without closing
    /// anything: what a network partition looks like to both ends. [`ChaosProxy::restore`] ends
    /// it by dropping the connections it held.
    pub fn partition(&self) {
        self.set(Link::Silent);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.set(Link::Up);
    }

    /// Ends a partition for new connections only: those it held stay open and silent, as
    /// after a network path that came back while the old flows' state was lost on the way (a
    /// load balancer or NAT that forgot them); only a client that opens new connections
    /// recovers.
    pub fn restore_new_only(&self) {
        self.set(Link::UpLeavingHeld);
    }
}

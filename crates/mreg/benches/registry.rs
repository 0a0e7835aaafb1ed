//! Registry benchmark: 100,000 servers in PostgreSQL; how long a page and a text search take,
//! through the store and through the REST API, as medians and p99 and as ratios against a
//! baseline (reading one server by name) measured in the same run.
//!
//! Run: `cargo bench --bench registry` (PostgreSQL from `MREG_BENCH_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`; a scratch database is created and dropped).
//! Options: `--servers N` (default 100000), `--iterations N` (default 300). The `returned`
//! column shows rows (store) or bytes (HTTP) of the last call, as a check that work was done.
#![allow(
    clippy::disallowed_methods,
    reason = "tests, benchmarks and examples run their own peers and load on tokio; the bans concern the gateway's code"
)]

/// The gateway binary's allocator (see `src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::future::Future;
use std::time::{Duration, Instant};

use domain::{Server, ServerDraft, ServerName, ServerQuery, ServerStore};
use mreg::config::RawConfig;
use mreg::store::PgStore;
use sqlx::Connection;

const ADJECTIVES: &[&str] = &[
    "fast",
    "secure",
    "internal",
    "legacy",
    "shared",
    "regional",
    "experimental",
    "managed",
];
const DOMAINS: &[&str] = &[
    "weather",
    "finance",
    "files",
    "search",
    "maps",
    "tickets",
    "calendar",
    "billing",
    "inventory",
    "analytics",
    "email",
    "chat",
    "docs",
    "hr",
    "security",
    "devops",
];
const TAGS: &[&str] = &[
    "prod", "staging", "dev", "eu", "us", "apac", "gpu", "readonly", "pii", "beta", "tier1",
    "tier2", "tier3", "public", "internal", "partner",
];

struct Args {
    servers: usize,
    iterations: usize,
}

fn args() -> Args {
    let mut args = Args {
        servers: 100_000,
        iterations: 300,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().and_then(|v| v.parse().ok());
        match arg.as_str() {
            "--servers" => args.servers = value().unwrap_or(args.servers),
            "--iterations" => args.iterations = value().unwrap_or(args.iterations),
            _ => {} // cargo bench passes --bench
        }
    }
    args
}

fn server(i: usize) -> Server {
    let domain_name = DOMAINS[i % DOMAINS.len()];
    let adjective = ADJECTIVES[(i / DOMAINS.len()) % ADJECTIVES.len()];
    let tags: Vec<String> = (0..1 + i % 3)
        .map(|k| TAGS[(i * 7 + k * 5) % TAGS.len()].to_owned())
        .collect();
    let status = if i.is_multiple_of(20) {
        "deprecated"
    } else {
        "active"
    };
    ServerDraft {
        name: format!("srv-{i:06}"),
        url: format!("https://srv-{i:06}.{domain_name}.example.com/mcp"),
        description: Some(format!("A {adjective} {domain_name} server, instance {i}")),
        tags: Some(tags),
        version: Some(format!("1.{}.{}", i % 10, i % 7)),
        status: Some(status.to_owned()),
        ..ServerDraft::default()
    }
    .validate()
    .expect("generated server is valid")
    .into_server(
        &format!("user-{}", i % 50),
        Some(&format!("tenant-{}", i % 5)),
        domain::now(),
    )
}

/// Loads `count` servers with multi-row inserts (the store's one-by-one insert would make the
/// set-up, not the measurement, dominate).
async fn seed(url: &str, count: usize) -> anyhow::Result<()> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    for chunk in (0..count).collect::<Vec<_>>().chunks(2_000) {
        let servers: Vec<Server> = chunk.iter().map(|i| server(*i)).collect();
        let mut sql = sqlx::QueryBuilder::<sqlx::Postgres>::new(
            "INSERT INTO servers (id, name, url, transport, description, tags, version, registered_by, \
             tenant, status, metadata, search_text, created_at, updated_at, revision) ",
        );
        sql.push_values(servers, |mut row, s| {
            let search_text = s.search_text();
            row.push_bind(s.id)
                .push_bind(s.name.as_str().to_owned())
                .push_bind(s.url.as_str().to_owned())
                .push_bind(s.transport.as_str())
                .push_bind(s.description)
                .push_bind(s.tags)
                .push_bind(s.version)
                .push_bind(s.registered_by)
                .push_bind(s.tenant)
                .push_bind(s.status.as_str())
                .push_bind(sqlx::types::Json(s.metadata))
                .push_bind(search_text)
                .push_bind(s.created_at)
                .push_bind(s.updated_at)
                .push_bind(s.revision);
        });
        sql.build().execute(&mut conn).await?;
    }
    sqlx::query("ANALYZE servers").execute(&mut conn).await?;
    Ok(())
}

struct Stats {
    median: Duration,
    p99: Duration,
    /// What the last call returned (rows or bytes), to show that it did real work.
    returned: usize,
}

async fn measure<F, Fut>(iterations: usize, mut op: F) -> Stats
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = usize>,
{
    for i in 0..iterations / 10 {
        op(i).await;
    }
    let mut samples = Vec::with_capacity(iterations);
    let mut returned = 0;
    for i in 0..iterations {
        let started = Instant::now();
        returned = op(i).await;
        samples.push(started.elapsed());
    }
    samples.sort();
    Stats {
        median: samples[samples.len() / 2],
        p99: samples[(samples.len() * 99 / 100).min(samples.len() - 1)],
        returned,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args();
    let admin = std::env::var("MREG_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let name = format!("mreg_bench_{}", uuid::Uuid::new_v4().simple());
    let mut admin_conn = sqlx::PgConnection::connect(&admin).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin_conn)
        .await?;
    let mut url = url::Url::parse(&admin)?;
    url.set_path(&name);
    let url = url.to_string();
    let outcome = run(&args, &url).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin_conn)
    .await?;
    outcome
}

async fn run(args: &Args, url: &str) -> anyhow::Result<()> {
    let store = PgStore::connect(&url.to_owned().into(), 8).await?;
    let started = Instant::now();
    seed(url, args.servers).await?;
    eprintln!(
        "seeded {} servers in {:.1} s",
        args.servers,
        started.elapsed().as_secs_f64()
    );

    let n = args.iterations;
    let count = args.servers;
    let query = |f: fn(&mut ServerQuery)| {
        let mut q = ServerQuery::default();
        f(&mut q);
        q
    };
    let mut rows: Vec<(&str, Stats)> = Vec::new();

    rows.push((
        "store: get one server by name (baseline)",
        measure(n, |i| {
            let store = store.clone();
            async move {
                let name =
                    ServerName::parse(&format!("srv-{:06}", (i * 7919) % count)).expect("name");
                store.named(&name).await.expect("named").len()
            }
        })
        .await,
    ));
    let first_page = query(|_| {});
    rows.push((
        "store: first page (50)",
        measure(n, |_| list(&store, &first_page)).await,
    ));
    let deep = query(|q| q.after = ServerName::parse("srv-050000").ok());
    rows.push((
        "store: page after srv-050000",
        measure(n, |_| list(&store, &deep)).await,
    ));
    let common = query(|q| q.text = Some("weather".into()));
    rows.push((
        "store: search 'weather' (1 in 16 match)",
        measure(n, |_| list(&store, &common)).await,
    ));
    let rare = query(|q| q.text = Some("instance 4242".into()));
    rows.push((
        "store: search 'instance 4242' (few match)",
        measure(n, |_| list(&store, &rare)).await,
    ));
    let tagged = query(|q| {
        q.tag = Some("gpu".into());
        q.text = Some("secure".into());
    });
    rows.push((
        "store: tag 'gpu' + search 'secure'",
        measure(n, |_| list(&store, &tagged)).await,
    ));

    let dir = std::env::temp_dir().join(format!("mreg-bench-{}", uuid::Uuid::new_v4().simple()));
    let config = RawConfig::collect(
        None,
        Vec::new(),
        [
            ("MREG_API_PORT", "0"),
            ("MREG_DATABASE_URL", url),
            ("MREG_LOG", "warn"),
            ("MREG_HEALTH_ENABLED", "false"),
            ("MREG_DATA_DIR", &dir.display().to_string()),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    )?
    .parse()?;
    let app = mreg::app::start(config).await?;
    let base = format!("http://{}", app.api_addr);
    let http = reqwest::Client::new();
    let get = |path: String| {
        let (http, url) = (http.clone(), format!("{base}{path}"));
        async move {
            let response = http.get(url).send().await.expect("request");
            assert!(response.status().is_success());
            response.bytes().await.expect("body").len()
        }
    };
    rows.push((
        "http: GET /api/v1/servers/{name} (HTTP baseline)",
        measure(n, |i| {
            get(format!("/api/v1/servers/srv-{:06}", (i * 7919) % count))
        })
        .await,
    ));
    rows.push((
        "http: GET /api/v1/servers?limit=50",
        measure(n, |_| get("/api/v1/servers?limit=50".into())).await,
    ));
    rows.push((
        "http: GET /api/v1/servers?q=weather",
        measure(n, |_| get("/api/v1/servers?q=weather".into())).await,
    ));
    rows.push((
        "http: GET /api/v1/servers?q=instance%204242",
        measure(n, |_| get("/api/v1/servers?q=instance%204242".into())).await,
    ));
    rows.push((
        "http: GET /v0.1/servers?search=weather",
        measure(n, |_| get("/v0.1/servers?search=weather".into())).await,
    ));
    app.stop().await?;
    let _ = std::fs::remove_dir_all(&dir);

    let store_base = rows[0].1.median;
    let http_base = rows[6].1.median;
    println!("\nregistry of {count} servers on PostgreSQL, {n} iterations each (times in ms)\n");
    println!(
        "{:52} {:>9} {:>9} {:>11} {:>10}",
        "operation", "median", "p99", "x baseline", "returned"
    );
    for (label, stats) in &rows {
        let base = if label.starts_with("http") {
            http_base
        } else {
            store_base
        };
        println!(
            "{label:52} {:>9} {:>9} {:>11} {:>10}",
            ms(stats.median),
            ms(stats.p99),
            format!("{:.2}", stats.median.as_secs_f64() / base.as_secs_f64()),
            stats.returned
        );
    }
    Ok(())
}

async fn list(store: &PgStore, query: &ServerQuery) -> usize {
    store.list_with_health(query).await.expect("list").len()
}

//! Policy chain benchmark, two parts in one run:
//!
//! 1. The same `tools/call` through `/servers/{name}/mcp` of two gateways on PostgreSQL: one with
//!    the chain fully on (an Entra-style bearer token validated against the local identity
//!    provider, GCRA rate limits per principal and per principal × tool, a policy file with
//!    server and tool roles, one audit row per request written to PostgreSQL), one with it off
//!    (`MREG_AUTH=none`, `MREG_AUDIT=false`). They take turns in one-second slices; the report
//!    gives p50/p99 and throughput of both and the throughput ratio, then checks that the audit
//!    table holds one row per request the chain-on gateway answered.
//! 2. Audit ingestion alone: rows per second through the audit queue and writer into
//!    PostgreSQL (hash chain, advisory lock, duplicate check), against a baseline of the same
//!    rows bulk-inserted into a plain table in batches of the same size, and the time to verify
//!    the chain.
//!
//! Run: `cargo bench --bench policy` (options: `-- --seconds N --concurrency N --rows N`, and
//! `--no-audit` to run the chain-on gateway without the audit log, telling its cost from the
//! rest; `--only on|off` to load one gateway alone for `--seconds`, for a profiler; `--log
//! FILTER` to install the binary's log subscriber, whose per-request spans the run then pays
//! for). Needs the local PostgreSQL (`MREG_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and the interop peers (`npm ci --prefix
//! interop`) for the identity provider.
#![allow(
    clippy::disallowed_methods,
    reason = "tests, benchmarks and examples run their own peers and load on tokio; the bans concern the gateway's code"
)]

/// The gateway binary's allocator (see `src/main.rs`), for every part of the run alike.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../tests/it/support/upstream.rs"]
#[expect(
    dead_code,
    reason = "the benchmark uses only part of the test upstream"
)]
mod upstream;

#[path = "common/load.rs"]
mod load;

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use load::{Samples, load, median_ratio, ms};

use mreg::config::RawConfig;
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::io::AsyncBufReadExt;

const CLIENT_ID: &str = "22222222-2222-2222-2222-222222222222";
const SECRET: &str = "mreg-test-secret";
const TENANT: &str = "11111111-1111-1111-1111-111111111111";
const USER_OID: &str = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb";

struct Args {
    /// Run the chain-on gateway without the audit log, to tell its cost from the rest.
    no_audit: bool,
    /// Load only this gateway (`on` or `off`) for `seconds`, for a profiler; skips part 2.
    only: Option<String>,
    /// Install the binary's log subscriber with this filter (as `MREG_LOG`).
    log: Option<String>,
    seconds: u64,
    concurrency: usize,
    rows: usize,
}

fn args() -> Args {
    let mut args = Args {
        no_audit: std::env::args().any(|a| a == "--no-audit"),
        only: None,
        log: None,
        seconds: 5,
        concurrency: 32,
        rows: 200_000,
    };
    let all: Vec<String> = std::env::args().skip(1).collect();
    for pair in all.windows(2) {
        match pair[0].as_str() {
            "--only" => args.only = Some(pair[1].clone()),
            "--log" => args.log = Some(pair[1].clone()),
            _ => {}
        }
        let Ok(value) = pair[1].parse::<usize>() else {
            continue; // cargo bench passes --bench
        };
        match pair[0].as_str() {
            "--seconds" => args.seconds = value as u64,
            "--concurrency" => args.concurrency = value,
            "--rows" => args.rows = value,
            _ => {}
        }
    }
    args
}

fn admin_url() -> String {
    std::env::var("MREG_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Creates a database of its own; returns its URL and name.
async fn database() -> anyhow::Result<(String, String)> {
    let mut conn = sqlx::PgConnection::connect(&admin_url()).await?;
    let name = format!("mreg_bench_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await?;
    let mut url = url::Url::parse(&admin_url())?;
    url.set_path(&name);
    Ok((url.to_string(), name))
}

async fn drop_database(name: &str) {
    if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url()).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
    }
}

/// The local OpenID Connect provider of the integration tests, standing in for Entra ID.
async fn identity_provider(mcp_port: u16) -> anyhow::Result<(tokio::process::Child, String)> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop/idp.mjs");
    let mut child = tokio::process::Command::new("node")
        .arg(script)
        .args(["--client-id", CLIENT_ID, "--client-secret", SECRET])
        .args([
            "--redirect-uri",
            &format!("http://127.0.0.1:{mcp_port}/auth/callback"),
        ])
        .args(["--tenant", TENANT])
        .args(["--users", "{}"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("stdout"))?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await??
        .ok_or_else(|| {
            anyhow::anyhow!("the identity provider did not start (npm ci --prefix interop?)")
        })?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let ready: Value = serde_json::from_str(&line)?;
    let authority = ready["authority"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no authority in {line}"))?
        .to_owned();
    Ok((child, authority))
}

async fn start(settings: &[(&str, &str)]) -> anyhow::Result<mreg::app::Running> {
    let mut env: Vec<(String, String)> = [
        ("MREG_API_PORT", "0"),
        ("MREG_LOG", "warn"),
        ("MREG_HEALTH_ENABLED", "false"),
        // The benchmark's upstream listens on loopback.
        ("MREG_UPSTREAM_ALLOW", "127.0.0.0/8"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    env.extend(
        settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let config = RawConfig::collect(None, Vec::new(), env)?.parse()?;
    mreg::app::start(config).await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args();
    load::log(args.log.as_deref());
    let dir = std::env::temp_dir().join(format!("mreg-bench-{}", uuid::Uuid::new_v4().simple()));
    let result = async {
        chain(&args, &dir).await?;
        if args.only.is_some() {
            return Ok(());
        }
        ingestion(&args, &dir).await
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Part 1: the chain on versus off.
async fn chain(args: &Args, dir: &std::path::Path) -> anyhow::Result<()> {
    let upstream = upstream::Upstream::start(false).await;
    let (on_url, on_db) = database().await?;
    let (off_url, off_db) = database().await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let (_idp, authority) = identity_provider(port).await?;
    let policy = dir.join("policy.toml");
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        &policy,
        "[servers.bench]\nroles = [\"user\", \"admin\"]\ntools = { echo = [\"user\"] }\n",
    )?;
    let (on_dir, off_dir) = (dir.join("on"), dir.join("off"));
    let port_text = port.to_string();
    let on = start(&[
        ("MREG_DATABASE_URL", &on_url),
        ("MREG_DATA_DIR", &on_dir.display().to_string()),
        ("FASTMCP_SERVER_PORT", &port_text),
        ("MREG_AUTH", "oauth"),
        // Authentication on requires an external key.
        (
            "MREG_ENCRYPTION_KEY",
            "YmVuY2gta2V5LWJlbmNoLWtleS1iZW5jaC1rZXktMzI=",
        ),
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_CLIENT_ID", CLIENT_ID),
        ("AZURE_CLIENT_SECRET", SECRET),
        ("AZURE_AUTHORITY_HOST", &authority),
        ("AZURE_GRAPH_URL", &authority),
        ("MREG_POLICY_FILE", &policy.display().to_string()),
        ("MREG_RATE_LIMIT_PER_MINUTE", "1000000"),
        ("MREG_AUDIT", if args.no_audit { "false" } else { "true" }),
    ])
    .await?;
    let off = start(&[
        ("MREG_DATABASE_URL", &off_url),
        ("MREG_DATA_DIR", &off_dir.display().to_string()),
        ("FASTMCP_SERVER_PORT", "0"),
        ("MREG_AUTH", "none"),
        ("MREG_AUDIT", "false"),
    ])
    .await?;

    let http = reqwest::Client::new();
    let sign = |roles: Value| {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = json!({
            "iss": format!("{authority}/{TENANT}/v2.0"), "aud": format!("api://{CLIENT_ID}"),
            "tid": TENANT, "oid": USER_OID, "sub": "bench", "roles": roles, "azp": CLIENT_ID,
            "iat": now, "nbf": now, "exp": now + 3600,
        });
        let (http, authority) = (http.clone(), authority.clone());
        async move {
            let reply: Value = http
                .post(format!("{authority}/_test/sign"))
                .json(&claims)
                .send()
                .await?
                .json()
                .await?;
            anyhow::Ok(reply["token"].as_str().unwrap_or_default().to_owned())
        }
    };
    let admin = sign(json!(["admin"])).await?;
    let user = sign(json!(["user"])).await?;
    for (running, token) in [(&on, Some(&admin)), (&off, None)] {
        let mut request = http
            .post(format!("http://{}/api/v1/servers", running.api_addr))
            .json(&json!({ "name": "bench", "url": upstream.url }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let created = request.send().await?;
        anyhow::ensure!(
            created.status().is_success(),
            "registering the upstream failed: {}",
            created.text().await?
        );
    }
    let on_target = format!("http://{}/servers/bench/mcp", on.mcp_addr);
    let off_target = format!("http://{}/servers/bench/mcp", off.mcp_addr);

    if let Some(only) = &args.only {
        let (url, token) = match only.as_str() {
            "on" => (&on_target, Some(user.as_str())),
            "off" => (&off_target, None),
            other => anyhow::bail!("--only takes on or off, not {other}"),
        };
        load::alone(
            only,
            url,
            token,
            args.concurrency,
            Duration::from_secs(args.seconds),
        )
        .await;
        on.stop().await?;
        off.stop().await?;
        drop_database(&on_db).await;
        drop_database(&off_db).await;
        return Ok(());
    }
    let short = Duration::from_secs(1);
    let mut warm = Samples::default();
    warm.add(load(&on_target, Some(&user), 4, short).await);
    load(&off_target, None, 4, short).await;
    let mut answered_on = warm.run().answered;
    let slice = Duration::from_secs(1);
    let mut rows = Vec::new();
    for (label, concurrency) in [("1 client", 1), ("many clients", args.concurrency)] {
        let (mut with, mut without) = (Samples::default(), Samples::default());
        // The order alternates, so that whatever one slice leaves behind (the database still
        // settling the audit rows just written) weighs on both alike.
        for i in 0..args.seconds.max(1) * 2 {
            if i % 2 == 0 {
                with.add(load(&on_target, Some(&user), concurrency, slice).await);
                without.add(load(&off_target, None, concurrency, slice).await);
            } else {
                without.add(load(&off_target, None, concurrency, slice).await);
                with.add(load(&on_target, Some(&user), concurrency, slice).await);
            }
        }
        let (with, without) = (with.run(), without.run());
        answered_on += with.answered;
        rows.push((label, concurrency, without, with));
    }
    let metrics = http
        .get(format!("http://{}/metrics", on.api_addr))
        .send()
        .await?
        .text()
        .await?;
    let audit_figures: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("mreg_audit_"))
        .collect();
    on.stop().await?;
    off.stop().await?;

    // One audit row per request the chain-on gateway answered (plus the registration).
    let store = mreg::store::PgStore::connect(&on_url.clone().into(), 2).await?;
    let verified = mreg::audit::verify(&store).await?;
    drop(store);
    drop_database(&on_db).await;
    drop_database(&off_db).await;

    println!(
        "\nPart 1: tools/call echo through /servers/{{name}}/mcp, policy chain off vs on, {} one-second slices each, taking turns in alternating order (times in ms)\n",
        args.seconds * 2
    );
    println!(
        "{:14} {:>5} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>7} {:>7} {:>6}",
        "load",
        "conc",
        "off p50",
        "on p50",
        "off p99",
        "on p99",
        "off rps",
        "on rps",
        "on/off",
        "median",
        "errors"
    );
    for (label, concurrency, off, on) in &rows {
        println!(
            "{label:14} {concurrency:>5} {:>8} {:>8} {:>8} {:>8} {:>9.0} {:>9.0} {:>7.3} {:>7.3} {:>6}",
            ms(off.p50),
            ms(on.p50),
            ms(off.p99),
            ms(on.p99),
            off.per_second,
            on.per_second,
            on.per_second / off.per_second,
            median_ratio(&on.rates, &off.rates),
            off.errors + on.errors
        );
    }
    println!(
        "\non/off: throughput ratio over all slices; median: the median of the ratios of slices run back to back"
    );
    println!(
        "audit rows written by the chain-on gateway: {} for {} requests answered (+1 registration); chain intact: {}",
        verified.rows,
        answered_on,
        verified.broken.is_none()
    );
    println!(
        "audit writer of the chain-on gateway: {}",
        audit_figures.join(", ")
    );
    Ok(())
}

/// Part 2: audit ingestion into PostgreSQL.
async fn ingestion(args: &Args, dir: &std::path::Path) -> anyhow::Result<()> {
    let (url, name) = database().await?;
    let store = Arc::new(mreg::store::PgStore::connect(&url.clone().into(), 4).await?);
    let n = args.rows;

    // Baseline: the same rows, bulk-inserted in batches of 1000 into a plain table.
    let pool = sqlx::PgPool::connect(&url).await?;
    sqlx::query("CREATE TABLE plain (LIKE audit_log INCLUDING ALL)")
        .execute(&pool)
        .await?;
    let started = Instant::now();
    for batch in 0..n.div_ceil(1000) {
        let count = 1000.min(n - batch * 1000);
        let seq: Vec<i64> = (0..count).map(|i| (batch * 1000 + i) as i64 + 1).collect();
        let ids: Vec<String> = seq
            .iter()
            .map(|_| uuid::Uuid::now_v7().to_string())
            .collect();
        let text: Vec<&str> = vec!["x"; count];
        let args_text: Vec<&str> = vec!["{\"text\":\"ping\"}"; count];
        let numbers: Vec<i64> = vec![1; count];
        sqlx::query(
            "INSERT INTO plain (seq, prev_hash, hash, id, at_us, request_id, actor_subject, \
             operation, arguments, decision, outcome, duration_us) \
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[], \
             $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::bigint[])",
        )
        .bind(&seq)
        .bind(&text)
        .bind(&text)
        .bind(&ids)
        .bind(&numbers)
        .bind(&text)
        .bind(&text)
        .bind(&text)
        .bind(&args_text)
        .bind(&text)
        .bind(&text)
        .bind(&numbers)
        .execute(&pool)
        .await?;
    }
    let baseline = started.elapsed();
    pool.close().await;

    // The audit path: producers open and finish entries as requests do; the writer batches.
    let (auditor, writer) = mreg::audit::writer::spawn(
        store.clone(),
        &mreg::audit::writer::WriterConfig {
            queue: 10_000,
            spool: dir.join("ingest.spool"),
            spool_max_bytes: 1 << 30,
            redact: Vec::new(),
            refusal_window: std::time::Duration::from_secs(60),
        },
    )?;
    let actor = domain::Principal::anonymous();
    let started = Instant::now();
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let (auditor, actor) = (auditor.clone(), actor.clone());
            tokio::spawn(async move {
                let mut waits = 0_u64;
                for i in 0..n / 4 + usize::from(p < n % 4) {
                    let mut entry = loop {
                        match auditor
                            .open(&actor, &format!("b{p}-{i}"), "tools/call")
                            .await
                        {
                            Ok(entry) => break entry,
                            Err(_) => {
                                waits += 1;
                                tokio::time::sleep(Duration::from_millis(1)).await;
                            }
                        }
                    };
                    entry.target(Some("echo"), Some("bench"));
                    entry.arguments(json!({ "text": "ping" }));
                    entry.finish(Ok(()));
                }
                waits
            })
        })
        .collect();
    let mut full = 0;
    for producer in producers {
        full += producer.await?;
    }
    drop(auditor);
    writer.close(Duration::from_secs(600)).await;
    let audited = started.elapsed();
    let started = Instant::now();
    let verified = mreg::audit::verify(store.as_ref()).await?;
    let verify = started.elapsed();
    drop(store);
    drop_database(&name).await;

    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!("\nPart 2: audit ingestion into PostgreSQL, {n} rows\n");
    println!(
        "plain bulk insert (baseline)   {:>9.0} rows/s",
        rate(baseline)
    );
    println!(
        "audit queue + writer (chained) {:>9.0} rows/s   {:.2}x baseline   (producers waited for a full queue {full} times)",
        rate(audited),
        baseline.as_secs_f64() / audited.as_secs_f64()
    );
    println!(
        "verify the chain               {:>9.0} rows/s   rows stored {}, intact: {}",
        rate(verify),
        verified.rows,
        verified.broken.is_none()
    );
    Ok(())
}

//! Gateway overhead benchmark: the same trivial `tools/call` sent straight to a local MCP server
//! and through mreg's `/servers/{name}/mcp`, in one run. Reports p50/p99 latency with one client
//! (the added latency) and throughput with many concurrent clients, and the ratios.
//!
//! Run: `cargo bench --bench gateway` (options: `-- --seconds N --concurrency N`; `--only
//! direct|gateway|floor` loads one target alone, for a profiler; `--log FILTER` installs the
//! binary's log subscriber, whose per-request span the run then pays for). The upstream is
//! the stateless rmcp server of the integration tests; gateway, upstream and load generator
//! share this machine, as they would the same two cores in both measurements. The audit log is
//! off: `cargo bench --bench policy` measures the policy chain, audit included.
//!
//! A third column, "floor", sends the same calls through a bare axum passthrough with the same
//! HTTP client (no parsing, sessions, credentials, health or middleware): the cost of the extra
//! HTTP hop alone, so that the gateway's own overhead is the difference between it and the floor.
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
#[expect(dead_code, reason = "this benchmark does not report answered counts")]
mod load;

use std::time::Duration;

use load::{Samples, load, median_ratio, ms};

use axum::response::IntoResponse;
use mreg::config::RawConfig;
use serde_json::json;

struct Args {
    seconds: u64,
    concurrency: usize,
    /// Load only this target (`direct`, `gateway` or `floor`) for `seconds`, for a profiler.
    only: Option<String>,
    /// Install the binary's log subscriber with this filter (as `MREG_LOG`), so that the run
    /// pays for per-request spans as `mreg serve` does.
    log: Option<String>,
}

fn args() -> Args {
    let mut args = Args {
        seconds: 5,
        concurrency: 32,
        only: None,
        log: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seconds" => {
                args.seconds = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(args.seconds)
            }
            "--concurrency" => {
                args.concurrency = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(args.concurrency);
            }
            "--only" => args.only = it.next(),
            "--log" => args.log = it.next(),
            _ => {} // cargo bench passes --bench
        }
    }
    args
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args();
    load::log(args.log.as_deref());
    let upstream = upstream::Upstream::start(false).await;
    let dir = std::env::temp_dir().join(format!("mreg-bench-{}", uuid::Uuid::new_v4().simple()));
    let config = RawConfig::collect(
        None,
        Vec::new(),
        [
            ("MREG_API_PORT", "0"),
            ("FASTMCP_SERVER_PORT", "0"),
            ("MREG_LOG", "warn"),
            ("MREG_HEALTH_ENABLED", "false"),
            // The proxy alone: `--bench policy` measures the policy chain and its audit log.
            ("MREG_AUDIT", "false"),
            ("MREG_DATA_DIR", &dir.display().to_string()),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    )?
    .parse()?;
    let app = mreg::app::start(config).await?;
    let http = reqwest::Client::new();
    let created = http
        .post(format!("http://{}/api/v1/servers", app.api_addr))
        .json(&json!({ "name": "bench", "url": upstream.url }))
        .send()
        .await?;
    anyhow::ensure!(
        created.status().is_success(),
        "registering the upstream failed"
    );
    let direct = upstream.url.clone();
    let gateway = format!("http://{}/servers/bench/mcp", app.mcp_addr);
    let floor = bare_passthrough(&direct).await;

    if let Some(only) = &args.only {
        let url = match only.as_str() {
            "direct" => &direct,
            "gateway" => &gateway,
            "floor" => &floor,
            other => anyhow::bail!("--only takes direct, gateway or floor, not {other}"),
        };
        load::alone(
            only,
            url,
            None,
            args.concurrency,
            Duration::from_secs(args.seconds),
        )
        .await;
        app.stop().await?;
        return Ok(());
    }
    let short = Duration::from_secs(1);
    load(&direct, None, 4, short).await;
    load(&gateway, None, 4, short).await;
    load(&floor, None, 4, short).await;
    // Targets take turns in short slices, so that drift in the machine's state affects all three
    // alike instead of whichever ran last.
    let slices = args.seconds.max(1);
    let slice = Duration::from_secs(1);
    let mut rows = Vec::new();
    for (label, concurrency) in [("1 client", 1), ("many clients", args.concurrency)] {
        let (mut d, mut g, mut f) = (Samples::default(), Samples::default(), Samples::default());
        for i in 0..slices {
            // The order rotates too, so that no target always follows the same one.
            let mut order = [0, 1, 2];
            order.rotate_left((i % 3) as usize);
            for target in order {
                let (url, samples) = match target {
                    0 => (&direct, &mut d),
                    1 => (&gateway, &mut g),
                    _ => (&floor, &mut f),
                };
                samples.add(load(url, None, concurrency, slice).await);
            }
        }
        rows.push((label, concurrency, d.run(), g.run(), f.run()));
    }
    app.stop().await?;
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "\ntools/call echo, direct vs through /servers/{{name}}/mcp, {} one-second slices each, taking turns (times in ms)\n",
        args.seconds
    );
    println!(
        "{:14} {:>5} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>8} {:>6} {:>7} {:>6} {:>6} {:>6}",
        "load",
        "conc",
        "d p50",
        "gw p50",
        "fl p50",
        "d p99",
        "gw p99",
        "fl p99",
        "d rps",
        "gw rps",
        "fl rps",
        "gw x",
        "floor x",
        "gw m",
        "fl m",
        "errors"
    );
    for (label, concurrency, d, g, f) in &rows {
        println!(
            "{label:14} {concurrency:>5} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8.0} {:>8.0} {:>8.0} {:>6.2} {:>7.2} {:>6.2} {:>6.2} {:>6}",
            ms(d.p50),
            ms(g.p50),
            ms(f.p50),
            ms(d.p99),
            ms(g.p99),
            ms(f.p99),
            d.per_second,
            g.per_second,
            f.per_second,
            g.per_second / d.per_second,
            f.per_second / d.per_second,
            median_ratio(&g.rates, &d.rates),
            median_ratio(&f.rates, &d.rates),
            d.errors + g.errors + f.errors
        );
    }
    println!(
        "
d = direct to the upstream, gw = through mreg, fl = through a bare passthrough (the floor)
gw x, floor x: throughput ratio to direct over all slices; gw m, fl m: the median of the ratios of slices run back to back"
    );
    if let Some((_, _, d, g, _)) = rows.first() {
        println!(
            "added latency with one client: p50 {} ms, p99 {} ms",
            ms(g.p50.saturating_sub(d.p50)),
            ms(g.p99.saturating_sub(d.p99))
        );
    }
    Ok(())
}

/// A bare HTTP passthrough to `upstream`: axum in, the gateway's own pooled client out, bodies
/// streamed as they are; no parsing, sessions, credentials, health or middleware.
async fn bare_passthrough(upstream: &str) -> String {
    use http_body_util::BodyExt;
    // The same client as the gateway's, with its egress guard (loopback allowed, as without
    // authentication).
    let egress = std::sync::Arc::new(mreg::egress::Egress::new(true, Vec::new(), None));
    let client = mreg::proxy::http_client::gateway_client(egress).expect("client");
    let target: axum::http::Uri = upstream.parse().expect("uri");
    let router = axum::Router::new().route(
        "/mcp",
        axum::routing::post(move |request: axum::extract::Request| {
            let (client, target) = (client.clone(), target.clone());
            async move {
                let (mut parts, body) = request.into_parts();
                parts.uri = target;
                parts.headers.remove("host");
                match client
                    .request(axum::http::Request::from_parts(parts, body))
                    .await
                {
                    Ok(response) => {
                        let (parts, body) = response.into_parts();
                        axum::http::Response::from_parts(
                            parts,
                            axum::body::Body::new(body.map_err(axum::Error::new)),
                        )
                        .into_response()
                    }
                    Err(_) => axum::http::StatusCode::BAD_GATEWAY.into_response(),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}/mcp")
}

//! The load generator both gateway benchmarks share: concurrent clients sending the same
//! `tools/call` for a while, and the figures of what they saw.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

/// What one target did over all its slices.
pub struct Run {
    /// Throughput of each slice, in order.
    pub rates: Vec<f64>,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Calls answered successfully per second.
    pub per_second: f64,
    /// Calls answered, successfully or not.
    pub answered: usize,
    /// Calls that failed.
    pub errors: usize,
}

/// What one target collected over its slices.
#[derive(Default)]
pub struct Samples {
    rates: Vec<f64>,
    latencies: Vec<Duration>,
    busy: Duration,
    errors: usize,
}

impl Samples {
    /// Adds one slice: its latencies, how long it ran, its failed calls.
    pub fn add(&mut self, (latencies, busy, errors): (Vec<Duration>, Duration, usize)) {
        self.rates.push(latencies.len() as f64 / busy.as_secs_f64());
        self.latencies.extend(latencies);
        self.busy += busy;
        self.errors += errors;
    }

    /// Percentiles and throughput over every slice.
    pub fn run(mut self) -> Run {
        self.latencies.sort();
        let at = |q: usize| {
            self.latencies
                .get((self.latencies.len() * q / 100).min(self.latencies.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        Run {
            rates: self.rates.clone(),
            p50: at(50),
            p99: at(99),
            per_second: self.latencies.len() as f64 / self.busy.as_secs_f64(),
            answered: self.latencies.len() + self.errors,
            errors: self.errors,
        }
    }
}

/// `concurrency` clients call `echo` at `url` (with `token`, if any) for `duration`.
pub async fn load(
    url: &str,
    token: Option<&str>,
    concurrency: usize,
    duration: Duration,
) -> (Vec<Duration>, Duration, usize) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("client");
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": { "name": "echo", "arguments": { "text": "ping" } } })
    .to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, url, body, stop) =
                (http.clone(), url.to_owned(), body.clone(), stop.clone());
            let token = token.map(str::to_owned);
            tokio::spawn(async move {
                let (mut samples, mut errors) = (Vec::new(), 0);
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let mut request = http
                        .post(&url)
                        .header("accept", "application/json, text/event-stream")
                        .header("content-type", "application/json")
                        .header("mcp-protocol-version", "2025-11-25")
                        .body(body.clone());
                    if let Some(token) = &token {
                        request = request.bearer_auth(token);
                    }
                    let ok = match request.send().await {
                        Ok(response) => {
                            let status = response.status();
                            let body = response.bytes().await;
                            if !status.is_success() && errors == 0 {
                                eprintln!(
                                    "{url}: HTTP {status}: {}",
                                    String::from_utf8_lossy(body.as_deref().unwrap_or_default())
                                );
                            }
                            status.is_success() && body.is_ok()
                        }
                        Err(e) => {
                            if errors == 0 {
                                eprintln!("{url}: {e}");
                            }
                            false
                        }
                    };
                    if ok {
                        samples.push(sent.elapsed());
                    } else {
                        errors += 1;
                    }
                }
                (samples, errors)
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let (mut samples, mut errors) = (Vec::new(), 0);
    for worker in workers {
        let (s, e) = worker.await.expect("worker");
        samples.extend(s);
        errors += e;
    }
    (samples, started.elapsed(), errors)
}

/// With `--log FILTER`: installs the binary's log subscriber with that filter, so that the run
/// pays for per-request spans as `mreg serve` does.
pub fn log(filter: Option<&str>) {
    if let Some(filter) = filter {
        mreg::telemetry::init(&mreg::config::LogConfig {
            filter: filter.to_owned(),
            format: mreg::config::LogFormat::Text,
        });
    }
}

/// Milliseconds with three decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

/// The median of the ratios of slices run back to back (`a[i] / b[i]`): less sensitive than the
/// ratio of totals to the machine speeding up or slowing down during the run.
pub fn median_ratio(a: &[f64], b: &[f64]) -> f64 {
    let mut ratios: Vec<f64> = a.iter().zip(b).map(|(a, b)| a / b).collect();
    ratios.sort_by(f64::total_cmp);
    ratios.get(ratios.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Loads one target alone (`label` names it) for `duration` and prints what it did: the
/// benchmarks' `--only`, for a profiler.
pub async fn alone(
    label: &str,
    url: &str,
    token: Option<&str>,
    concurrency: usize,
    duration: Duration,
) {
    let mut samples = Samples::default();
    samples.add(load(url, token, concurrency, duration).await);
    let run = samples.run();
    println!(
        "{label}: {concurrency} clients, {:.0} calls/s, p50 {} ms, p99 {} ms, {} errors",
        run.per_second,
        ms(run.p50),
        ms(run.p99),
        run.errors
    );
}

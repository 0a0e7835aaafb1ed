//! The health monitor: probes every registered server on an interval (with jitter), keeps the
//! history, moves servers between healthy, degraded and unhealthy, and refreshes the tool
//! catalog from each successful probe.
//!
//! Replicas share the work through leases in the database: each tick, an instance claims the
//! servers that are due and not leased by anyone else, so every server is probed once per
//! interval across the cluster. Each instance also keeps a [`HealthBoard`], the current status
//! of every server, synced from the database, that the proxy consults to turn callers of an
//! unhealthy server away at once (a circuit breaker) instead of making each wait for a timeout.

pub mod probe;
pub mod summary;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use domain::{Error, Health, HealthCheck, HealthPolicy, HealthStatus, Result, Server};
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::config::Config;
use crate::egress::Egress;
use crate::metrics::Metrics;
use crate::store::Stores;
use crate::tasks::Tasks;

/// The current health of every server, as this instance knows it.
#[derive(Clone, Default)]
pub struct HealthBoard {
    statuses: Arc<RwLock<HashMap<Uuid, HealthStatus>>>,
    /// When traffic last made this instance probe an unhealthy server.
    retried: Arc<std::sync::Mutex<HashMap<Uuid, std::time::Instant>>>,
    /// One lock per server for probes callers ask for: concurrent requests share one probe.
    on_demand: Arc<std::sync::Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>>,
}

/// How often traffic to an unhealthy server may trigger a probe of it.
const RETRY_EVERY: Duration = Duration::from_secs(5);

impl HealthBoard {
    /// The status of a server (unknown when never probed).
    pub fn get(&self, server: Uuid) -> HealthStatus {
        self.statuses
            .read()
            .map(|map| map.get(&server).copied().unwrap_or_default())
            .unwrap_or_default()
    }

    fn set(&self, server: Uuid, status: HealthStatus) {
        if let Ok(mut map) = self.statuses.write() {
            map.insert(server, status);
        }
    }

    /// The lock of the probes callers ask for on `server` (`POST …/health/check`): whoever
    /// takes it at once probes; whoever finds it taken waits for that probe and shares its
    /// result, so a burst of requests makes one probe, not one each.
    pub fn on_demand(&self, server: Uuid) -> Arc<tokio::sync::Mutex<()>> {
        let Ok(mut locks) = self.on_demand.lock() else {
            return Arc::new(tokio::sync::Mutex::new(()));
        };
        if locks.len() > 10_000 {
            locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        locks.entry(server).or_default().clone()
    }

    /// Whether traffic may trigger a probe of `server` now (at most every [`RETRY_EVERY`]).
    fn may_retry(&self, server: Uuid) -> bool {
        let Ok(mut retried) = self.retried.lock() else {
            return false;
        };
        let now = std::time::Instant::now();
        match retried.get(&server) {
            Some(at) if now.duration_since(*at) < RETRY_EVERY => false,
            _ => {
                if retried.len() > 10_000 {
                    retried.clear();
                }
                retried.insert(server, now);
                true
            }
        }
    }
}

/// The health service: the board the circuit breaker reads, the probes, the monitor's loop and
/// the reports. Built once and shared.
pub struct Monitor {
    board: HealthBoard,
    registry: domain::Registry,
    stores: Stores,
    upstream: reqwest::Client,
    egress: Arc<Egress>,
    config: Arc<Config>,
    metrics: Metrics,
    /// Where probes run: the monitor's loop, its probes, and the ones traffic starts.
    tasks: Tasks,
}

impl Monitor {
    /// The service over `stores`, probing through `upstream` where `egress` allows.
    pub fn new(
        registry: domain::Registry,
        stores: Stores,
        upstream: reqwest::Client,
        egress: Arc<Egress>,
        config: Arc<Config>,
        metrics: Metrics,
        tasks: Tasks,
    ) -> Self {
        Self {
            board: HealthBoard::default(),
            registry,
            stores,
            upstream,
            egress,
            config,
            metrics,
            tasks,
        }
    }

    /// The current status of every server, as this instance knows it.
    pub fn board(&self) -> &HealthBoard {
        &self.board
    }

    /// The policy the configuration describes.
    pub fn policy(&self) -> HealthPolicy {
        let health = &self.config.health;
        HealthPolicy {
            interval: health.interval,
            unhealthy_after: health.unhealthy_after,
            max_backoff: health.interval.saturating_mul(10),
        }
    }

    /// Whether the gateway may send `server` traffic now: not when it is disabled, and not when it
    /// is unhealthy (the circuit breaker). The one check of the proxy and `proxy_request`.
    pub fn ensure_reachable(self: &Arc<Self>, server: &Server) -> Result<()> {
        if server.status == domain::ServerStatus::Disabled {
            return Err(Error::Unavailable {
                what: format!("server '{}' (disabled in this gateway)", server.name),
                source: None,
            });
        }
        if self.board.get(server.id) == HealthStatus::Unhealthy {
            // Half-open: a call to a server that may have come back probes it now (rate-limited),
            // so that recovery does not wait out the monitor's back-off.
            if self.board.may_retry(server.id) {
                let (monitor, server) = (self.clone(), server.clone());
                self.tasks.spawn("health_retry", async move {
                    if let Err(e) = monitor.check_now(&server).await {
                        tracing::debug!(server = %server.name, error = %e, "on-demand probe failed");
                    }
                });
            }
            return Err(Error::Unavailable {
                what: format!(
                    "server '{}' (unhealthy: its last health checks failed; the gateway is probing it again and lets calls through once it answers)",
                    server.name
                ),
                source: None,
            });
        }
        Ok(())
    }

    /// Probes `server` now, records the result, refreshes its tools, and returns its health.
    pub async fn check_now(&self, server: &Server) -> Result<Health> {
        if let Ok(uri) = axum::http::Uri::try_from(server.url.as_str())
            && let Err(why) = self.egress.check_uri(&uri)
        {
            return Err(Error::unavailable(
                format!("server '{}' (egress refused: {why})", server.name),
                std::io::Error::other(why.clone()),
            ));
        }
        let credentials = self.registry.upstream_headers(server).await?;
        let timeout = self.config.health.timeout;
        let report = probe::probe(&self.upstream, server, credentials.as_ref(), timeout).await;
        let now = domain::now();
        let mut health = self
            .stores
            .health
            .health(server.id)
            .await?
            .unwrap_or_else(|| Health::unknown(server.id, now));
        let check = HealthCheck {
            checked_at: now,
            outcome: report.outcome,
            detail: report.detail,
            latency_ms: u64::try_from(report.latency.as_millis()).unwrap_or(u64::MAX),
            protocol_version: report.protocol_version,
            checked_by: self.config.instance_id.clone(),
        };
        let before = health.status;
        health.record(check, &self.policy(), jitter());
        // The gauge is set before the row is stored: a server deleted meanwhile either fails the
        // store below (and its series is dropped here) or is deleted after it (and its deletion
        // drops the series), so a deleted server never keeps a series.
        self.metrics.server_health(server, health.status.as_str());
        if !self.stores.health.record(&health).await? {
            self.metrics.forget_server(server);
            return Ok(health);
        }
        if let Some(tools) = &report.tools {
            self.stores.catalog.replace_tools(server.id, tools).await?;
        }
        self.board.set(server.id, health.status);
        if before != health.status {
            tracing::info!(server = %server.name, from = before.as_str(), to = health.status.as_str(), "health changed");
        }
        Ok(health)
    }

    /// Starts the monitor's loop as the `health_monitor` task; it stops with the driver.
    pub fn start(self: Arc<Self>, tasks: &Tasks) {
        let span = tracing::info_span!("health_monitor", instance = %self.config.instance_id);
        let stop = tasks.stopping();
        tasks.service(
            "health_monitor",
            tracing::Instrument::instrument(self.run(stop), span),
        );
    }

    async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let config = self.config.health.clone();
        let tick = (config.interval / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let lease = config.timeout * 2 + Duration::from_secs(5);
        let permits = Arc::new(Semaphore::new(config.concurrency));
        let mut synced_at = OffsetDateTime::UNIX_EPOCH;
        let mut pruned_at = OffsetDateTime::UNIX_EPOCH;
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(
            interval_ms = u64::try_from(config.interval.as_millis()).unwrap_or(u64::MAX),
            "health monitor started"
        );
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let now = domain::now();
            // What other instances found since the last look.
            match self
                .stores
                .health
                .changed_since(synced_at - Duration::from_secs(2))
                .await
            {
                Ok(changes) => {
                    for (server, status) in changes {
                        self.board.set(server, status);
                    }
                    synced_at = now;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read health changes");
                    self.tasks.record(
                        "health_monitor",
                        Err("cannot read health changes; the log says why"),
                    );
                }
            }
            if now - pruned_at > time::Duration::hours(1) {
                match self.stores.health.prune(now - config.retention).await {
                    Ok(removed) if removed > 0 => {
                        tracing::info!(removed, "pruned old health checks")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot prune health history"),
                }
                pruned_at = now;
            }
            let free = u32::try_from(permits.available_permits()).unwrap_or(u32::MAX);
            if free == 0 {
                continue;
            }
            let due = match self
                .stores
                .health
                .claim_due(&self.config.instance_id, now, lease, free)
                .await
            {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim servers to probe");
                    self.tasks.record(
                        "health_monitor",
                        Err("cannot claim servers to probe; the log says why"),
                    );
                    continue;
                }
            };
            self.tasks.record(
                "health_monitor",
                Ok(format!(
                    "{} server(s) due for a probe on the last tick",
                    due.len()
                )),
            );
            for (id, name) in due {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let monitor = self.clone();
                self.tasks.spawn("health_probe", async move {
                    let _permit = permit;
                    let outcome = match monitor.registry.get_by_id(id, &name).await {
                        Ok(server) => monitor.check_now(&server).await.map(|_| ()),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = outcome {
                        tracing::warn!(server = %name, error = %e, "health check failed to complete");
                    }
                });
            }
        }
        tracing::info!("health monitor stopped");
    }
}

fn jitter() -> f64 {
    let mut bytes = [0_u8; 4];
    if SystemRandom::new().fill(&mut bytes).is_err() {
        return 0.0;
    }
    f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX) * 2.0 - 1.0
}

/// Uptime over a window.
#[derive(Debug, Serialize, ToSchema)]
pub struct Uptime {
    /// The window, in hours.
    pub window_hours: u32,
    /// Probes in the window.
    pub checks: usize,
    /// Share of them that found the server up (absent without probes).
    pub ratio: Option<f64>,
}

/// A server's health, recent history and uptime.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthReport {
    /// The server's name.
    pub server: String,
    /// Its health now.
    pub current: Health,
    /// Uptime over the window.
    pub uptime: Uptime,
    /// Probes in the window, newest first (at most 100).
    pub history: Vec<HealthCheck>,
}

/// Most probes a report lists.
const HISTORY_LIMIT: u32 = 100;
/// Most probes counted for uptime.
const UPTIME_LIMIT: u32 = 100_000;

impl Monitor {
    /// The health report of `server` over the last `window_hours`.
    pub async fn report(&self, server: &Server, window_hours: u32) -> Result<HealthReport> {
        if !(1..=24 * 366).contains(&window_hours) {
            return Err(Error::invalid("window_hours", "must be between 1 and 8784"));
        }
        let now = domain::now();
        let since = now - time::Duration::hours(i64::from(window_hours));
        let current = self
            .stores
            .health
            .health(server.id)
            .await?
            .unwrap_or_else(|| Health::unknown(server.id, now));
        let all = self
            .stores
            .health
            .history(server.id, since, UPTIME_LIMIT)
            .await?;
        let uptime = Uptime {
            window_hours,
            checks: all.len(),
            ratio: domain::health::uptime(&all),
        };
        Ok(HealthReport {
            server: server.name.to_string(),
            current,
            uptime,
            history: all.into_iter().take(HISTORY_LIMIT as usize).collect(),
        })
    }
}

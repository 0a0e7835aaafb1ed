//! The short form of a server's health that travels with every representation of the server
//! (REST, the `list_servers`/`get_server` tools, `/v0.1` `_meta`, the CLI's HEALTH column):
//! where it stands, since when, what the last probe found, and why, in one small object.
//!
//! The store keeps the moment a probe changed the status (`status_since`). For a status recorded
//! before that was kept, `since` is read off the newest probes: the run of failures of a degraded
//! or unhealthy server is exactly its `consecutive_failures` newest probes; a healthy server's
//! run is scanned back at most [`SINCE_SCAN`] probes, and a run longer than that reports the
//! oldest probe scanned (the server has been healthy at least since then).

use domain::{Health, HealthCheck, HealthStatus, Outcome, Result, Server};
use futures_util::future::try_join_all;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::Monitor;

/// Most probes read back to find when a healthy server's run began.
pub const SINCE_SCAN: u32 = 100;
/// Most failures read back to find when a failing server's run began.
const FAILURE_SCAN: u32 = 1_000;

/// A server's health in short.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct HealthSummary {
    /// Where it stands: healthy, degraded, unhealthy or unknown (not probed yet).
    pub state: HealthStatus,
    /// When it entered this state (for a server never probed: when it was registered). For a
    /// status recorded before mreg kept its start, and a server healthy for longer than its
    /// 100 newest probes: the oldest of them.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub since: Option<OffsetDateTime>,
    /// The newest probe, if any.
    pub last_probe: Option<LastProbe>,
    /// Why it is in this state, for people.
    pub reason: String,
}

/// The newest probe of a server, in short.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct LastProbe {
    /// When it ran.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    /// What it found.
    pub outcome: Outcome,
    /// How long it took, in milliseconds.
    pub latency_ms: u64,
}

impl Monitor {
    /// The health summary of `server`.
    pub async fn summary(&self, server: &Server) -> Result<HealthSummary> {
        let health = self.stores.health.health(server.id).await?;
        self.summary_of(server, health.as_ref()).await
    }

    /// The health summaries of servers whose health was read with them
    /// ([`domain::Registry::list_with_health`]), in the same order.
    pub async fn summaries_of(
        &self,
        servers: &[(Server, Option<Health>)],
    ) -> Result<Vec<HealthSummary>> {
        try_join_all(
            servers
                .iter()
                .map(|(server, health)| self.summary_of(server, health.as_ref())),
        )
        .await
    }

    async fn summary_of(&self, server: &Server, health: Option<&Health>) -> Result<HealthSummary> {
        let since = match health {
            Some(health) if health.status != HealthStatus::Unknown => match health.status_since {
                Some(at) => Some(at),
                None => self.since(health).await?,
            },
            _ => Some(server.created_at),
        };
        Ok(self.summarize(health, since))
    }

    /// When the run of probes that put `health` in its state began.
    async fn since(&self, health: &Health) -> Result<Option<OffsetDateTime>> {
        let epoch = OffsetDateTime::UNIX_EPOCH;
        let history = |limit| self.stores.health.history(health.server_id, epoch, limit);
        Ok(match health.status {
            HealthStatus::Unknown => None,
            HealthStatus::Healthy => {
                let newest = history(SINCE_SCAN).await?;
                newest
                    .iter()
                    .take_while(|c| c.outcome.is_up())
                    .last()
                    .map(|c| c.checked_at)
            }
            HealthStatus::Degraded | HealthStatus::Unhealthy => {
                let failures = health.consecutive_failures.clamp(1, FAILURE_SCAN);
                let run = history(failures).await?;
                failing_since(
                    &run,
                    health.consecutive_failures,
                    health.status,
                    self.config.health.unhealthy_after.max(1),
                )
            }
        })
    }
}

/// When a failing server entered its state, given the kept part of its run of `failures`
/// failures, newest first: degraded at the first failure, unhealthy at the `unhealthy_after`-th.
/// Probes pruned from the history are the oldest of the run.
fn failing_since(
    run_newest_first: &[HealthCheck],
    failures: u32,
    status: HealthStatus,
    unhealthy_after: u32,
) -> Option<OffsetDateTime> {
    let oldest_first: Vec<&HealthCheck> = run_newest_first.iter().rev().collect();
    let missing = usize::try_from(failures)
        .unwrap_or(usize::MAX)
        .saturating_sub(oldest_first.len());
    let index = match status {
        HealthStatus::Unhealthy => usize::try_from(unhealthy_after.saturating_sub(1))
            .unwrap_or(0)
            .saturating_sub(missing),
        _ => 0,
    };
    oldest_first
        .get(index)
        .or_else(|| oldest_first.last())
        .map(|c| c.checked_at)
}

impl Monitor {
    fn summarize(&self, health: Option<&Health>, since: Option<OffsetDateTime>) -> HealthSummary {
        let status = health.map_or(HealthStatus::Unknown, |h| h.status);
        let last = health.and_then(|h| h.last_check.as_ref());
        let reason = match (status, last) {
            (HealthStatus::Unknown, _) if !self.config.health.enabled => {
                "not probed: the health monitor is off (MREG_HEALTH_ENABLED=false)".to_owned()
            }
            (HealthStatus::Unknown, _) | (_, None) => "not probed yet".to_owned(),
            (HealthStatus::Healthy, Some(check)) if check.outcome == Outcome::AuthRequired => {
                "reachable; it asks for authorization".to_owned()
            }
            (HealthStatus::Healthy, Some(_)) => "answered as an MCP server".to_owned(),
            (_, Some(check)) => {
                let failures = health.map_or(0, |h| h.consecutive_failures);
                let what = check
                    .detail
                    .clone()
                    .unwrap_or_else(|| check.outcome.as_str().to_owned());
                format!("{what} ({failures} failed probe(s) in a row)")
            }
        };
        HealthSummary {
            state: status,
            since,
            last_probe: last.map(|c| LastProbe {
                at: c.checked_at,
                outcome: c.outcome,
                latency_ms: c.latency_ms,
            }),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(seconds: i64) -> HealthCheck {
        HealthCheck {
            checked_at: OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(seconds),
            outcome: Outcome::Refused,
            detail: None,
            latency_ms: 1,
            protocol_version: None,
            checked_by: "test".into(),
        }
    }

    #[test]
    fn a_failing_server_is_degraded_since_its_first_failure_and_unhealthy_since_the_threshold() {
        let run = [failure(40), failure(30), failure(20), failure(10)];
        let at = |s| Some(OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(s));
        assert_eq!(failing_since(&run, 4, HealthStatus::Degraded, 3), at(10));
        assert_eq!(failing_since(&run, 4, HealthStatus::Unhealthy, 3), at(30));
        assert_eq!(
            failing_since(&run[..2], 4, HealthStatus::Unhealthy, 3),
            at(30),
            "the two oldest failures pruned: the third is still the first kept"
        );
        assert_eq!(
            failing_since(&run[..1], 4, HealthStatus::Unhealthy, 3),
            at(40),
            "the threshold pruned too: the oldest failure kept"
        );
        assert_eq!(failing_since(&[], 0, HealthStatus::Unhealthy, 3), None);
    }
}

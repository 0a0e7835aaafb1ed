//! Health of registered servers: what one probe found, how a run of probes moves a server
//! between healthy, degraded and unhealthy, and when it is probed next (backoff for servers
//! that stay down). Pure rules; probing and storage live at the edges.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{Error, Result};

/// Where a server stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Not probed yet.
    #[default]
    Unknown,
    /// The last probe succeeded (or the server is reachable and asks for authorization).
    Healthy,
    /// Recent probes failed, but fewer than the unhealthy threshold.
    Degraded,
    /// Enough consecutive probes failed that callers are turned away at once.
    Unhealthy,
}

impl HealthStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Unhealthy => "unhealthy",
        }
    }

    /// Parses the wire name, reporting problems against `field`.
    pub fn parse_field(raw: &str, field: &str) -> Result<Self> {
        match raw {
            "unknown" => Ok(Self::Unknown),
            "healthy" => Ok(Self::Healthy),
            "degraded" => Ok(Self::Degraded),
            "unhealthy" => Ok(Self::Unhealthy),
            other => Err(Error::invalid(
                field,
                format!("unknown health '{other}'; use healthy, degraded, unhealthy or unknown"),
            )),
        }
    }

    /// Sort rank: healthy first, unhealthy last.
    pub fn rank(self) -> u8 {
        match self {
            Self::Healthy => 0,
            Self::Degraded => 1,
            Self::Unknown => 2,
            Self::Unhealthy => 3,
        }
    }
}

/// What one probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The server answered as an MCP server.
    Ok,
    /// The server answered 401/403: reachable, but it wants credentials.
    AuthRequired,
    /// No answer within the probe timeout.
    Timeout,
    /// The connection was refused.
    Refused,
    /// The host name did not resolve.
    Dns,
    /// The TLS handshake failed (certificate, protocol).
    Tls,
    /// Some other connection failure.
    Connect,
    /// An HTTP error status.
    Http,
    /// An answer that is not MCP (bad JSON-RPC, missing fields).
    Protocol,
}

impl Outcome {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::AuthRequired => "auth_required",
            Self::Timeout => "timeout",
            Self::Refused => "refused",
            Self::Dns => "dns",
            Self::Tls => "tls",
            Self::Connect => "connect",
            Self::Http => "http",
            Self::Protocol => "protocol",
        }
    }

    /// Parses the wire name.
    pub fn parse(raw: &str) -> Result<Self> {
        Ok(match raw {
            "ok" => Self::Ok,
            "auth_required" => Self::AuthRequired,
            "timeout" => Self::Timeout,
            "refused" => Self::Refused,
            "dns" => Self::Dns,
            "tls" => Self::Tls,
            "connect" => Self::Connect,
            "http" => Self::Http,
            "protocol" => Self::Protocol,
            other => return Err(Error::Internal(format!("unknown probe outcome '{other}'"))),
        })
    }

    /// Whether the server counts as up.
    pub fn is_up(self) -> bool {
        matches!(self, Self::Ok | Self::AuthRequired)
    }
}

/// One probe, as kept in the history.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct HealthCheck {
    /// When the probe ran.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub checked_at: OffsetDateTime,
    /// What it found.
    pub outcome: Outcome,
    /// Details of a failure, for people.
    pub detail: Option<String>,
    /// How long it took.
    pub latency_ms: u64,
    /// The protocol version the server spoke, when it answered.
    pub protocol_version: Option<String>,
    /// Which gateway instance probed.
    pub checked_by: String,
}

/// A server's current health.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Health {
    /// The server.
    pub server_id: Uuid,
    /// Where it stands.
    pub status: HealthStatus,
    /// Failed probes in a row.
    pub consecutive_failures: u32,
    /// The last probe, if any.
    pub last_check: Option<HealthCheck>,
    /// When a probe last succeeded.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_ok_at: Option<OffsetDateTime>,
    /// When it is due for its next probe.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub next_check_at: OffsetDateTime,
    /// When it entered its status: the probe that changed it. Absent until a probe changes the
    /// status (never probed), and for a status recorded before mreg kept this.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub status_since: Option<OffsetDateTime>,
}

/// How probes turn into status and schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Time between probes of a server that is up.
    pub interval: Duration,
    /// Failures in a row after which a server is unhealthy (one failure makes it degraded).
    pub unhealthy_after: u32,
    /// Longest wait between probes of a server that stays down.
    pub max_backoff: Duration,
}

impl Health {
    /// A server never probed, due now.
    pub fn unknown(server_id: Uuid, now: OffsetDateTime) -> Self {
        Self {
            server_id,
            status: HealthStatus::Unknown,
            consecutive_failures: 0,
            last_check: None,
            last_ok_at: None,
            next_check_at: now,
            status_since: None,
        }
    }

    /// Records `check` and schedules the next probe. `jitter` in [-1, 1] spreads probes of many
    /// servers over time (±10 % of the wait).
    pub fn record(&mut self, check: HealthCheck, policy: &HealthPolicy, jitter: f64) {
        let now = check.checked_at;
        let before = self.status;
        if check.outcome.is_up() {
            self.consecutive_failures = 0;
            self.status = HealthStatus::Healthy;
            self.last_ok_at = Some(now);
        } else {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            self.status = if self.consecutive_failures >= policy.unhealthy_after.max(1) {
                HealthStatus::Unhealthy
            } else {
                HealthStatus::Degraded
            };
        }
        if self.status != before {
            self.status_since = Some(now);
        }
        let wait = next_wait(policy, self.consecutive_failures);
        let jittered = wait.mul_f64(1.0 + 0.1 * jitter.clamp(-1.0, 1.0));
        self.next_check_at = now + jittered;
        self.last_check = Some(check);
    }
}

/// The wait before the next probe: the interval while up; doubling with each failure beyond
/// the unhealthy threshold, up to `max_backoff`, while down.
pub fn next_wait(policy: &HealthPolicy, failures: u32) -> Duration {
    let beyond = failures.saturating_sub(policy.unhealthy_after.max(1));
    if failures < policy.unhealthy_after.max(1) {
        return policy.interval;
    }
    let factor = 1_u32.checked_shl(beyond.min(16)).unwrap_or(u32::MAX);
    policy
        .interval
        .saturating_mul(factor)
        .min(policy.max_backoff.max(policy.interval))
}

/// Uptime over a window: the share of probes in it that found the server up.
pub fn uptime(checks: &[HealthCheck]) -> Option<f64> {
    if checks.is_empty() {
        return None;
    }
    let up = checks.iter().filter(|c| c.outcome.is_up()).count();
    Some(up as f64 / checks.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> HealthPolicy {
        HealthPolicy {
            interval: Duration::from_secs(30),
            unhealthy_after: 3,
            max_backoff: Duration::from_secs(600),
        }
    }

    fn check(outcome: Outcome, at: OffsetDateTime) -> HealthCheck {
        HealthCheck {
            checked_at: at,
            outcome,
            detail: None,
            latency_ms: 1,
            protocol_version: None,
            checked_by: "test".into(),
        }
    }

    #[test]
    fn failures_degrade_then_make_unhealthy_and_one_success_heals() {
        let now = crate::now();
        let mut health = Health::unknown(Uuid::now_v7(), now);
        let p = policy();
        health.record(check(Outcome::Refused, now), &p, 0.0);
        assert_eq!(health.status, HealthStatus::Degraded);
        health.record(check(Outcome::Timeout, now), &p, 0.0);
        assert_eq!(health.status, HealthStatus::Degraded);
        health.record(check(Outcome::Tls, now), &p, 0.0);
        assert_eq!(health.status, HealthStatus::Unhealthy);
        assert_eq!(health.consecutive_failures, 3);
        health.record(check(Outcome::AuthRequired, now), &p, 0.0);
        assert_eq!(health.status, HealthStatus::Healthy, "401 means reachable");
        assert_eq!(health.consecutive_failures, 0);
        assert_eq!(health.last_ok_at, Some(now));
        assert_eq!(health.next_check_at, now + Duration::from_secs(30));
    }

    #[test]
    fn servers_that_stay_down_are_probed_less_often_up_to_a_cap() {
        let p = policy();
        let waits: Vec<u64> = (0..10).map(|f| next_wait(&p, f).as_secs()).collect();
        assert_eq!(waits, [30, 30, 30, 30, 60, 120, 240, 480, 600, 600]);
        for failures in [0, 1, 5, 40, u32::MAX] {
            let wait = next_wait(&p, failures);
            assert!(
                wait >= p.interval && wait <= p.max_backoff,
                "{failures}: {wait:?}"
            );
        }
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let now = crate::now();
        for jitter in [-5.0, -1.0, -0.3, 0.0, 0.7, 1.0, 9.0] {
            let mut health = Health::unknown(Uuid::now_v7(), now);
            health.record(check(Outcome::Ok, now), &policy(), jitter);
            let wait = (health.next_check_at - now).as_seconds_f64();
            assert!((27.0..=33.0).contains(&wait), "{jitter}: {wait}");
        }
    }

    #[test]
    fn uptime_is_the_share_of_probes_that_found_the_server_up() {
        let now = crate::now();
        assert_eq!(uptime(&[]), None);
        let checks = [
            check(Outcome::Ok, now),
            check(Outcome::AuthRequired, now),
            check(Outcome::Refused, now),
            check(Outcome::Ok, now),
        ];
        assert_eq!(uptime(&checks), Some(0.75));
    }
}

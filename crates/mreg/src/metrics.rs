//! Prometheus metrics: request counts and latency histograms by method, route and status, and
//! per registered server: its health, and the calls through the gateway with their errors and
//! latency by MCP method and tool. Rendered in the text exposition format at `/metrics`.
//!
//! Server and tool names come from the registry and from callers, so their label values are
//! bounded: a tool name that is long or unusual counts as `_other`, and so does any server or
//! (server, tool) pair beyond [`MAX_SERVERS`] and [`MAX_TOOL_SERIES`]; unknown MCP methods count
//! as `other`. So do HTTP methods outside the standard nine: a method is any token the client
//! sends, before authentication, and each distinct one would otherwise be a series for ever.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Most distinct servers labelled; calls to more count under `_other`.
pub const MAX_SERVERS: usize = 1_000;
/// Most distinct (server, tool) pairs labelled; more count under tool `_other`.
pub const MAX_TOOL_SERIES: usize = 5_000;
/// The label of what is over a bound.
const OTHER: &str = "_other";
/// The MCP methods labelled as themselves.
const METHODS: &[&str] = &[
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HealthLabels {
    server: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    server: String,
    method: &'static str,
    tool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    server: String,
    method: &'static str,
    tool: String,
    outcome: &'static str,
}

/// The label values seen so far, to keep them bounded.
#[derive(Default)]
struct Seen {
    servers: HashSet<String>,
    tools: HashSet<(String, String)>,
}

/// The HTTP methods labelled as themselves (RFC 9110's eight and `PATCH`).
const HTTP_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: &'static str,
}

/// The process's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    requests: Family<HttpLabels, Counter>,
    latency: Family<HttpLabels, Histogram>,
    refusals: Family<RefusalLabels, Counter>,
    server_health: Family<HealthLabels, Gauge>,
    server_calls: Family<OutcomeLabels, Counter>,
    server_errors: Family<CallLabels, Counter>,
    server_latency: Family<CallLabels, Histogram>,
    seen: Arc<Mutex<Seen>>,
    /// Whether per-server series are kept (see [`Metrics::per_server`]).
    per_server: Arc<std::sync::atomic::AtomicBool>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics.
    pub fn new() -> Self {
        Self::with_collectors(Vec::new())
    }

    /// A fresh set of metrics that also reports what `collectors` read at each scrape (the
    /// audit writer's figures, kept by the writer itself).
    pub fn with_collectors(
        collectors: Vec<Box<dyn prometheus_client::collector::Collector>>,
    ) -> Self {
        let mut registry = Registry::with_prefix("mreg");
        for collector in collectors {
            registry.register_collector(collector);
        }
        let requests = Family::<HttpLabels, Counter>::default();
        let latency = Family::<HttpLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ])
        });
        registry.register(
            "http_requests",
            "HTTP requests handled, by method, route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency, by method, route and status",
            latency.clone(),
        );
        let refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "policy_refusals",
            "Requests refused by the policy chain, by reason (denied, rate_limited)",
            refusals.clone(),
        );
        let server_health = Family::<HealthLabels, Gauge>::default();
        registry.register(
            "server_health",
            "Health of each registered server as this instance last saw it: 1 for its state (healthy, degraded, unhealthy, unknown), 0 for the others",
            server_health.clone(),
        );
        let server_calls = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "server_calls",
            "MCP requests forwarded to registered servers, by server, method, tool and outcome (ok, error, cancelled)",
            server_calls.clone(),
        );
        let server_errors = Family::<CallLabels, Counter>::default();
        registry.register(
            "server_call_errors",
            "MCP requests to registered servers that failed, by server, method and tool",
            server_errors.clone(),
        );
        let server_latency = Family::<CallLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ])
        });
        registry.register(
            "server_call_duration_seconds",
            "Time from request to the end of the answer of MCP requests to registered servers, by server, method and tool",
            server_latency.clone(),
        );
        Self {
            registry: Arc::new(registry),
            requests,
            latency,
            refusals,
            server_health,
            server_calls,
            server_errors,
            server_latency,
            seen: Arc::new(Mutex::new(Seen::default())),
            per_server: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        }
    }

    /// The server and tool labels of a call, within the bounds.
    fn bounded(&self, server: &str, tool: Option<&str>) -> (String, String) {
        let tool = match tool {
            None => String::new(),
            Some(t)
                if t.len() <= 64
                    && t.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_-./:".contains(&b)) =>
            {
                t.to_owned()
            }
            Some(_) => OTHER.to_owned(),
        };
        let Ok(mut seen) = self.seen.lock() else {
            return (OTHER.to_owned(), OTHER.to_owned());
        };
        let server = if seen.servers.contains(server) || seen.servers.len() < MAX_SERVERS {
            seen.servers.insert(server.to_owned());
            server.to_owned()
        } else {
            OTHER.to_owned()
        };
        let pair = (server.clone(), tool.clone());
        let tool = if tool.is_empty()
            || seen.tools.contains(&pair)
            || seen.tools.len() < MAX_TOOL_SERIES
        {
            seen.tools.insert(pair);
            tool
        } else {
            OTHER.to_owned()
        };
        (server, tool)
    }

    /// Whether per-server series (health, calls, errors, latency by server and tool) are kept.
    /// Server names are private to their tenant with authentication on, and `/metrics` answers
    /// anyone: then they are off unless the operator says otherwise (`MREG_METRICS_PER_SERVER`).
    pub fn per_server(&self, on: bool) {
        self.per_server
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether per-server series are kept (see [`Metrics::per_server`]): callers skip the work of
    /// labelling a call when they are not.
    pub fn keeps_servers(&self) -> bool {
        self.per_server.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Drops the health series of a deleted server.
    pub fn forget_server(&self, server: &domain::Server) {
        let label = server_label(server);
        for state in ["healthy", "degraded", "unhealthy", "unknown"] {
            self.server_health.remove(&HealthLabels {
                server: label.clone(),
                state,
            });
        }
    }

    /// Records the health `state` (`healthy`, `degraded`, `unhealthy`, `unknown`) of `server`.
    pub fn server_health(&self, server: &domain::Server, state: &'static str) {
        if !self.keeps_servers() {
            return;
        }
        let (server, _) = self.bounded(&server_label(server), None);
        for candidate in ["healthy", "degraded", "unhealthy", "unknown"] {
            self.server_health
                .get_or_create(&HealthLabels {
                    server: server.clone(),
                    state: candidate,
                })
                .set(i64::from(candidate == state));
        }
    }

    /// Records one MCP request forwarded to the server labelled `server` ([`server_label`]): its
    /// JSON-RPC `method`, the `tool` of a `tools/call`, its `outcome` (`ok`, `error`,
    /// `cancelled`) and how long it took.
    pub fn server_call(
        &self,
        server: &str,
        method: &str,
        tool: Option<&str>,
        outcome: &str,
        elapsed: Duration,
    ) {
        if !self.keeps_servers() {
            return;
        }
        let (server, tool) = self.bounded(server, tool);
        let method = METHODS.iter().find(|m| **m == method).copied().unwrap_or(
            if method.starts_with("notifications/") {
                "notification"
            } else {
                "other"
            },
        );
        let outcome = match outcome {
            "ok" => "ok",
            "cancelled" => "cancelled",
            _ => "error",
        };
        let labels = CallLabels {
            server,
            method,
            tool,
        };
        self.server_calls
            .get_or_create(&OutcomeLabels {
                server: labels.server.clone(),
                method,
                tool: labels.tool.clone(),
                outcome,
            })
            .inc();
        if outcome == "error" {
            self.server_errors.get_or_create(&labels).inc();
        }
        self.server_latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Records one finished request (a method outside the standard ones as `other`).
    pub fn observe(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let labels = HttpLabels {
            method: HTTP_METHODS
                .iter()
                .find(|m| **m == method)
                .copied()
                .unwrap_or("other"),
            route: route.to_owned(),
            status,
        };
        self.requests.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one refusal by the policy chain.
    pub fn refused(&self, reason: &'static str) {
        self.refusals.get_or_create(&RefusalLabels { reason }).inc();
    }

    /// Every metric in the Prometheus/OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// The `server` label of a server's series: its name, or `TENANT/NAME` for a tenant's server
/// (names are per tenant: two tenants' servers of one name are two series).
pub fn server_label(server: &domain::Server) -> String {
    match &server.tenant {
        Some(tenant) => format!("{tenant}/{}", server.name),
        None => server.name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{MAX_SERVERS, MAX_TOOL_SERIES, Metrics};

    #[test]
    fn label_values_stay_bounded_however_many_servers_and_tools_are_called() {
        let metrics = Metrics::new();
        let ms = Duration::from_millis(1);
        metrics.server_call("a", "tools/call", Some(&"x".repeat(65)), "ok", ms);
        metrics.server_call("a", "tools/call", Some("bad tool\n"), "ok", ms);
        metrics.server_call("a", "made/up", None, "weird", ms);
        let text = metrics.render();
        assert!(
            text.contains(
                r#"mreg_server_calls_total{server="a",method="tools/call",tool="_other",outcome="ok"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"mreg_server_calls_total{server="a",method="other",tool="",outcome="error"} 1"#
            ),
            "{text}"
        );
        for i in 0..MAX_TOOL_SERIES + 10 {
            metrics.server_call("b", "tools/call", Some(&format!("t{i}")), "ok", ms);
        }
        for i in 0..MAX_SERVERS + 10 {
            metrics.server_call(&format!("s{i}"), "ping", None, "ok", ms);
        }
        let text = metrics.render();
        let series = text
            .lines()
            .filter(|l| l.starts_with("mreg_server_calls_total{"))
            .count();
        assert!(
            series <= MAX_SERVERS + MAX_TOOL_SERIES + 4,
            "{series} series"
        );
        assert!(
            text.contains(r#"server="_other""#),
            "servers over the bound"
        );
        assert!(text.contains(r#"server="b",method="tools/call",tool="_other""#));
    }

    #[test]
    fn made_up_http_methods_are_one_series_not_one_each() {
        let metrics = Metrics::new();
        let ms = Duration::from_millis(1);
        for i in 0..100 {
            metrics.observe(&format!("M{i:05}"), "unmatched", 405, ms);
        }
        metrics.observe("GET", "/healthz", 200, ms);
        metrics.observe("PATCH", "/api/v1/servers/{name}", 200, ms);
        metrics.observe("get", "unmatched", 405, ms);
        let text = metrics.render();
        let counts: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("mreg_http_requests_total{"))
            .collect();
        assert_eq!(counts.len(), 3, "{counts:#?}");
        assert!(
            text.contains(
                r#"mreg_http_requests_total{method="other",route="unmatched",status="405"} 101"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"method="GET",route="/healthz",status="200"} 1"#));
        assert!(text.contains(r#"method="PATCH",route="/api/v1/servers/{name}",status="200"} 1"#));
        assert!(!text.contains("M00001"));
    }
}

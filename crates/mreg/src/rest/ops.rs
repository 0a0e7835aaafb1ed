//! Operational endpoints: liveness, readiness, metrics, and where the gateway's MCP listener is.
//! They sit outside authentication so that load balancers, scrapers and a client that has not
//! signed in yet need no token.

use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::ErrorBody;

/// How long a readiness check waits for each dependency.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(discovery))
}

/// Where the gateway's MCP listener is, for clients that were given the REST API's URL (`mreg`
/// client commands given `--gateway`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Discovery {
    /// The MCP listener as clients reach it (`MREG_PUBLIC_URL`, else its address): the OAuth
    /// issuer, and the base of `/mcp` and `/servers/NAME/mcp`.
    #[schema(example = "http://127.0.0.1:8001")]
    pub mcp_url: String,
    /// The gateway's own MCP server (the registry tools).
    #[schema(example = "http://127.0.0.1:8001/mcp")]
    pub mcp_endpoint: String,
    /// mreg's version.
    pub version: &'static str,
}

/// Where the gateway's MCP listener is.
#[utoipa::path(get, path = "/.well-known/mreg", tag = "operations",
    responses((status = 200, description = "The MCP listener's URLs", body = Discovery)))]
async fn discovery(State(state): State<AppState>) -> axum::Json<Discovery> {
    axum::Json(Discovery {
        mcp_url: state.gateway_url.clone(),
        mcp_endpoint: format!("{}/mcp", state.gateway_url),
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// Liveness answer (`Liveness` in the document: `Health` is a server's health).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Liveness)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
}

/// Readiness answer: the state of each dependency.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`; `degraded` while the cache does not answer (requests are still served: rate
    /// limits per instance, tokens validated in process); a 503 when the database or the audit
    /// log cannot serve.
    pub status: &'static str,
    /// `ok` or the problem, for `database`, `cache` and `audit`; how rate limits are shared;
    /// and under `tasks`, the last run of each background task (`runs`, `last_run`, `ok`,
    /// `detail`), which informs but does not decide readiness.
    #[schema(value_type = Object)]
    pub checks: serde_json::Value,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Up", body = Health)))]
async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

async fn check(what: &str, probe: impl Future<Output = domain::Result<()>>) -> Result<(), String> {
    match tokio::time::timeout(CHECK_TIMEOUT, probe).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "{what} readiness check failed");
            Err(format!("{what} unreachable"))
        }
        Err(_) => Err(format!(
            "{what} did not answer within {} s",
            CHECK_TIMEOUT.as_secs()
        )),
    }
}

/// The database and the cache answer.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "A dependency is unreachable; `message` names it", body = ErrorBody),
    ))]
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let (database, cache) = tokio::join!(
        check("database", state.stores.servers.ping()),
        check("cache", state.cache.ping()),
    );
    let show = |r: &Result<(), String>| r.as_ref().err().map_or("ok", String::as_str).to_owned();
    let checks = json!({
        "database": show(&database),
        "database_backend": state.stores.backend,
        "cache": show(&cache),
        "cache_backend": state.cache_backend,
        "rate_limits": if state.oauth.is_none() {
            "off (no authentication)"
        // Limits fall back to this instance's memory while the cache does not answer, and are
        // shared again with the first decision after it does: what the check just saw decides.
        } else if state.gate.limits().degraded() && cache.is_err() {
            "per instance: the cache is unreachable"
        } else if state.cache_backend == "redis" {
            "shared (redis)"
        } else {
            "per instance (memory)"
        },
    });
    // Replaying the spool while the database is down fails, as expected; while it answers, the
    // spooled entries (and every later one) are stuck: not ready.
    let replay_failure = state
        .audit
        .status()
        .filter(|_| database.is_ok())
        .and_then(crate::audit::writer::Status::replay_failure);
    let audit = match state.audit.status() {
        None => Ok("off (MREG_AUDIT=false)".to_owned()),
        Some(s) if s.failing() => Err(
            "audit log: entries can be kept neither in the database nor in the spool".to_owned(),
        ),
        Some(s) if s.saturated_now() => Err(format!(
            "audit queue saturated: more requests are being audited at once than \
             MREG_AUDIT_QUEUE holds ({} refused so far)",
            s.counts().2
        )),
        Some(s) if let Some(why) = replay_failure => Err(format!(
            "replay failing: {why} ({} bytes wait in the spool)",
            s.spooled_bytes()
        )),
        Some(s) if s.spooling() => Ok(format!(
            "spooling: {} bytes wait for the database",
            s.spooled_bytes()
        )),
        Some(_) => Ok("ok".to_owned()),
    };
    let mut checks = checks;
    checks["audit"] = json!(match &audit {
        Ok(text) | Err(text) => text.clone(),
    });
    // The background tasks' last runs, for operators; a failed prune does not make the
    // instance unready (requests are still served right).
    checks["tasks"] = json!(state.tasks.statuses());
    // The cache is shared by every replica: failing them all while it is down would take the
    // whole fleet out of a load balancer over a dependency mreg serves without. It is degraded.
    let failures: Vec<String> = [database, audit.map(|_| ())]
        .into_iter()
        .filter_map(Result::err)
        .collect();
    if failures.is_empty() {
        let body = match cache {
            Ok(()) => json!({ "status": "ready", "checks": checks }),
            Err(why) => json!({
                "status": "degraded",
                "degraded": format!(
                    "{why}: requests are served, with rate limits per instance and tokens validated in process, until it answers"
                ),
                "checks": checks,
            }),
        };
        (StatusCode::OK, axum::Json(body))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({
                "error": "unavailable",
                "message": format!("not ready: {}", failures.join(", ")),
                "checks": checks,
                "request_id": super::request_id::current(),
            })),
        )
    }
}

/// Metrics in the OpenMetrics text format (which Prometheus scrapes), labelled as such.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Metrics", content_type = "application/openmetrics-text", body = String)))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

//! `/api/v1/servers/{name}/health` and `/api/v1/tools`: health reports, on-demand probes, and
//! the tool catalog with each server's health.

use axum::extract::State;
use domain::ToolHit;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{Path, Query};
use crate::authn::Caller;
use crate::health::HealthReport;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(server_health))
        .routes(routes!(check_server))
        .routes(routes!(search_tools))
}

/// Parameters of a health report.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WindowParams {
    /// Hours of history for uptime and the history list, 1-8784 (default 24).
    #[param(minimum = 1, maximum = 8784)]
    window_hours: Option<u32>,
}

/// Parameters of a tool search.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ToolParams {
    /// Only tools whose name, title or description contains this text.
    #[serde(default, deserialize_with = "super::extract::empty_as_none")]
    q: Option<String>,
    /// Only tools of servers in this health (healthy, degraded, unhealthy, unknown).
    #[param(value_type = Option<String>, pattern = "^(|healthy|degraded|unhealthy|unknown)$")]
    #[serde(default, deserialize_with = "super::extract::empty_as_none")]
    health: Option<String>,
    /// At most this many (1-500, default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
}

/// Tools found in the catalog.
#[derive(Debug, Serialize, ToSchema)]
pub struct ToolList {
    /// Healthiest servers first, then by server and tool name.
    pub tools: Vec<ToolHit>,
}

/// A server's health now, its uptime and recent probes.
#[utoipa::path(get, path = "/api/v1/servers/{name}/health", tag = "health",
    params(("name" = String, Path, description = "Server name"), WindowParams),
    responses(
        (status = 200, description = "The health report", body = HealthReport),
        (status = 404, description = "No such server", body = ErrorBody),
    ))]
async fn server_health(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    Query(params): Query<WindowParams>,
) -> Result<axum::Json<HealthReport>, ApiError> {
    let visibility = state.gate.visibility(&caller);
    let server = state.registry.get_visible(&name, &visibility).await?;
    Ok(axum::Json(
        state
            .health
            .report(&server, params.window_hours.unwrap_or(24))
            .await?,
    ))
}

/// Probe a server now and return its new health report.
#[utoipa::path(post, path = "/api/v1/servers/{name}/health/check", tag = "health",
    params(("name" = String, Path, description = "Server name")),
    responses(
        (status = 200, description = "The health report after the probe", body = HealthReport),
        (status = 404, description = "No such server", body = ErrorBody),
    ))]
async fn check_server(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> Result<axum::Json<HealthReport>, ApiError> {
    let visibility = state.gate.visibility(&caller);
    let server = state.registry.get_visible(&name, &visibility).await?;
    if server.status == domain::ServerStatus::Disabled {
        return Err(domain::Error::invalid(
            "status",
            format!("server '{name}' is disabled, so it is not probed; enable it first"),
        )
        .into());
    }
    // One probe per server at a time, however many callers ask at once: those who find one
    // running wait for it and get its result.
    let lock = state.health.board().on_demand(server.id);
    match lock.try_lock() {
        Ok(_probing) => {
            state.health.check_now(&server).await?;
        }
        Err(_) => drop(lock.lock().await),
    }
    Ok(axum::Json(state.health.report(&server, 24).await?))
}

/// Search the tool catalog; every hit carries its server's health.
#[utoipa::path(get, path = "/api/v1/tools", tag = "health",
    params(ToolParams),
    responses(
        (status = 200, description = "Matching tools", body = ToolList),
        (status = 422, description = "A parameter is invalid", body = ErrorBody),
    ))]
async fn search_tools(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(params): Query<ToolParams>,
) -> Result<axum::Json<ToolList>, ApiError> {
    let tools = crate::listing::tools(
        &state,
        &caller,
        params.q.as_deref(),
        params.health.as_deref(),
        params.limit,
        "q",
    )
    .await?;
    Ok(axum::Json(ToolList { tools }))
}

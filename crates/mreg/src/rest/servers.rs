//! `/api/v1/servers`: create, list, read, change and remove registrations. Handlers only
//! translate between HTTP and the domain's [`Registry`](domain::Registry).

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use domain::{ServerDraft, ServerPatch};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{Body, Path, Query};
use crate::authn::Caller;
pub use crate::listing::ServerView;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_server, list_servers))
        .routes(routes!(get_server, update_server, delete_server))
}

/// Filters and paging of `GET /api/v1/servers`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only servers with this tag.
    #[serde(default, deserialize_with = "super::extract::empty_as_none")]
    tag: Option<String>,
    /// Only servers in this status (`active`, `deprecated`, `disabled`).
    #[param(value_type = Option<String>, pattern = "^(|active|deprecated|disabled)$")]
    #[serde(default, deserialize_with = "super::extract::empty_as_none")]
    status: Option<String>,
    /// Only servers whose name, description or tags contain this text (case-insensitive).
    #[serde(default, deserialize_with = "super::extract::empty_as_none")]
    q: Option<String>,
    /// Where to continue: the `next_cursor` of the previous page.
    #[serde(default, deserialize_with = "super::extract::empty_as_none")]
    cursor: Option<String>,
    /// Page size, 1-500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// Only servers in this health (healthy, degraded, unhealthy, unknown).
    #[param(value_type = Option<String>, pattern = "^(|healthy|degraded|unhealthy|unknown)$")]
    #[serde(default, deserialize_with = "super::extract::empty_as_none")]
    health: Option<String>,
    /// Order: `name` (default) or `health` (healthiest first, then by name).
    #[param(value_type = Option<String>, pattern = "^(|name|health)$")]
    #[serde(default, deserialize_with = "super::extract::empty_as_none")]
    sort: Option<String>,
}

/// One page of servers.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerList {
    /// The servers, in name order.
    pub servers: Vec<ServerView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Register a server.
#[utoipa::path(
    post,
    path = "/api/v1/servers",
    tag = "servers",
    request_body = ServerDraft,
    responses(
        (status = 201, description = "Registered", body = ServerView),
        (status = 409, description = "A server with this name exists", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "A field is invalid", body = ErrorBody),
    )
)]
async fn create_server(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Body(draft): Body<ServerDraft>,
) -> Result<impl IntoResponse, ApiError> {
    let server = state.registry.create(&caller, draft).await?;
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/servers/{}", server.name)) {
        headers.insert(header::LOCATION, location);
    }
    Ok((
        StatusCode::CREATED,
        headers,
        axum::Json(ServerView::of(&state, server).await?),
    ))
}

/// List servers, filtered and paged.
#[utoipa::path(
    get,
    path = "/api/v1/servers",
    tag = "servers",
    params(ListParams),
    responses(
        (status = 200, description = "One page of servers", body = ServerList),
        (status = 422, description = "A parameter is invalid", body = ErrorBody),
    )
)]
async fn list_servers(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(params): Query<ListParams>,
) -> Result<axum::Json<ServerList>, ApiError> {
    let filter = crate::listing::ServerFilter {
        tag: params.tag.as_deref(),
        status: params.status.as_deref(),
        text: params.q.as_deref(),
        cursor: params.cursor.as_deref(),
        limit: params.limit,
        health: params.health.as_deref(),
        sort: params.sort.as_deref(),
    };
    let (servers, next_cursor) = crate::listing::servers(&state, &caller, &filter, "q").await?;
    Ok(axum::Json(ServerList {
        servers,
        next_cursor,
    }))
}

/// Read one server.
#[utoipa::path(
    get,
    path = "/api/v1/servers/{name}",
    tag = "servers",
    params(("name" = String, Path, description = "Server name")),
    responses(
        (status = 200, description = "The server", body = ServerView),
        (status = 404, description = "No such server", body = ErrorBody),
    )
)]
async fn get_server(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> Result<axum::Json<ServerView>, ApiError> {
    let visibility = state.gate.visibility(&caller);
    let server = state.registry.get_visible(&name, &visibility).await?;
    Ok(axum::Json(ServerView::of(&state, server).await?))
}

/// Change some fields of a server; absent fields stay, `null` clears optional ones.
#[utoipa::path(
    patch,
    path = "/api/v1/servers/{name}",
    tag = "servers",
    params(("name" = String, Path, description = "Server name")),
    request_body = ServerPatch,
    responses(
        (status = 200, description = "The changed server", body = ServerView),
        (status = 404, description = "No such server", body = ErrorBody),
        (status = 422, description = "A field is invalid", body = ErrorBody),
    )
)]
async fn update_server(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    Body(patch): Body<ServerPatch>,
) -> Result<axum::Json<ServerView>, ApiError> {
    let server = state
        .registry
        .update(&caller, &state.gate.visibility(&caller), &name, patch)
        .await?;
    Ok(axum::Json(ServerView::of(&state, server).await?))
}

/// Remove a server.
#[utoipa::path(
    delete,
    path = "/api/v1/servers/{name}",
    tag = "servers",
    params(("name" = String, Path, description = "Server name")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such server", body = ErrorBody),
    )
)]
async fn delete_server(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let deleted = state
        .registry
        .delete(&caller, &state.gate.visibility(&caller), &name)
        .await?;
    state.metrics.forget_server(&deleted);
    Ok(StatusCode::NO_CONTENT)
}

//! The official MCP registry API (`/v0.1`), read-only, served from the same rows as
//! `/api/v1/servers`. Names are presented as `{MREG_REGISTRY_NAMESPACE}/{name}`, as `server.json`
//! requires; mreg's own fields (tags, owner, tenant, status, metadata, health) travel under
//! `_meta`.

use axum::extract::State;
use domain::{Server, ServerQuery, ServerSort, ServerStatus};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::cursor;
use super::error::{ApiError, ErrorBody};
use super::extract::{Path, Query};
use crate::authn::Caller;

/// The `server.json` schema the documents follow.
pub const SCHEMA_URL: &str =
    "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json";
/// `_meta` key of the registry-managed fields.
pub const OFFICIAL_META: &str = "io.modelcontextprotocol.registry/official";
/// `_meta` key of mreg's own fields.
pub const MREG_META: &str = "io.github.mreg/server";
/// Longest description `server.json` allows.
const MAX_DESCRIPTION: usize = 100;
/// Version reported for servers registered without one (`server.json` requires a version; a
/// made-up `0.0.0` would read as a real one).
const UNVERSIONED: &str = "unversioned";

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(versions))
        .routes(routes!(version))
}

/// Query parameters of `GET /v0.1/servers`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "snake_case")]
pub struct ListParams {
    /// `nextCursor` of the previous page.
    #[serde(default, deserialize_with = "super::extract::empty_as_none")]
    cursor: Option<String>,
    /// Page size, 1-100 (default 30).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// Only servers whose name or description contains this text.
    #[serde(default, deserialize_with = "super::extract::empty_as_none")]
    search: Option<String>,
    /// Only servers changed at or after this RFC 3339 time.
    #[serde(default, deserialize_with = "super::extract::empty_as_none")]
    updated_since: Option<String>,
    /// `latest` (the only version each server has here).
    #[param(pattern = "^(|latest)$")]
    #[serde(default, deserialize_with = "super::extract::empty_as_none")]
    version: Option<String>,
}

/// A page of `server.json` documents.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerListResponse {
    /// The servers.
    #[schema(value_type = Vec<Object>)]
    pub servers: Vec<Value>,
    /// Paging information.
    pub metadata: ListMetadata,
}

/// Paging information of a list.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListMetadata {
    /// Servers on this page.
    pub count: usize,
    /// Cursor of the next page, absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// The official registry's view of a server: `{ server, _meta }`. Its remote is the server's
/// endpoint on the gateway (`{gateway}/servers/NAME/mcp`): a client that discovers servers here
/// reaches them through the gateway, never around it.
pub fn server_response(
    namespace: &str,
    gateway: &str,
    s: &Server,
    health: &crate::health::summary::HealthSummary,
) -> Value {
    let mut description: String = s.description.chars().take(MAX_DESCRIPTION).collect();
    if description.is_empty() {
        description = s.name.to_string();
    }
    let (status, status_message) = match s.status {
        ServerStatus::Active => ("active", None),
        ServerStatus::Deprecated => ("deprecated", None),
        ServerStatus::Disabled => ("deprecated", Some("disabled in this gateway")),
    };
    let mut official = json!({
        "status": status,
        "publishedAt": rfc3339(s.created_at),
        "updatedAt": rfc3339(s.updated_at),
        "isLatest": true,
    });
    if let Some(message) = status_message {
        official["statusMessage"] = json!(message);
    }
    json!({
        "server": {
            "$schema": SCHEMA_URL,
            "name": format!("{namespace}/{}", s.name),
            "description": description,
            "version": s.version.as_deref().unwrap_or(UNVERSIONED),
            "remotes": [{
                "type": "streamable-http",
                "url": format!("{gateway}/servers/{}/mcp", s.name),
            }],
        },
        "_meta": {
            OFFICIAL_META: official,
            MREG_META: {
                "id": s.id,
                "name": s.name,
                "description": s.description,
                "tags": s.tags,
                "status": s.status,
                "registered_by": s.registered_by,
                "tenant": s.tenant,
                "metadata": s.metadata,
                "revision": s.revision,
                "health": health,
            },
        },
    })
}

/// The local name in `{namespace}/{name}` (or a bare local name).
fn local_name<'a>(namespace: &str, server_name: &'a str) -> &'a str {
    server_name
        .strip_prefix(namespace)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or(server_name)
}

/// List servers as `server.json` documents.
#[utoipa::path(
    get,
    path = "/v0.1/servers",
    tag = "registry (v0.1)",
    params(ListParams),
    responses(
        (status = 200, description = "One page of servers", body = ServerListResponse),
        (status = 422, description = "A parameter is invalid", body = ErrorBody),
    )
)]
async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(params): Query<ListParams>,
) -> Result<axum::Json<ServerListResponse>, ApiError> {
    let limit = params.limit.unwrap_or(30);
    if !(1..=100).contains(&limit) {
        return Err(domain::Error::invalid("limit", "must be between 1 and 100").into());
    }
    if params.version.as_deref().is_some_and(|v| v != "latest") {
        return Err(domain::Error::invalid(
            "version",
            "only 'latest' is supported in lists; each server has one version here",
        )
        .into());
    }
    let mut query = ServerQuery::parse(None, None, params.search.as_deref(), Some(limit)).map_err(
        |e| match e {
            domain::Error::Invalid { message, .. } => domain::Error::invalid("search", message),
            other => other,
        },
    )?;
    cursor::apply(&mut query, params.cursor.as_deref())?;
    query.updated_since = params
        .updated_since
        .as_deref()
        .map(|t| {
            OffsetDateTime::parse(t, &Rfc3339)
                .map_err(|_| domain::Error::invalid("updated_since", "is not an RFC 3339 time"))
        })
        .transpose()?;
    query.visibility = state.gate.visibility(&caller);
    let page = state.registry.list_with_health(&query).await?;
    let namespace = &state.config.registry_namespace;
    let healths = state.health.summaries_of(&page.items).await?;
    Ok(axum::Json(ServerListResponse {
        metadata: ListMetadata {
            count: page.items.len(),
            next_cursor: cursor::next(&page, ServerSort::Name),
        },
        servers: page
            .items
            .iter()
            .zip(&healths)
            .map(|((s, _), health)| server_response(namespace, &state.gateway_url, s, health))
            .collect(),
    }))
}

/// Every version of a server (here: its one current version).
#[utoipa::path(
    get,
    path = "/v0.1/servers/{serverName}/versions",
    tag = "registry (v0.1)",
    params(("serverName" = String, Path, description = "namespace/name, URL-encoded")),
    responses(
        (status = 200, description = "The versions", body = ServerListResponse),
        (status = 404, description = "No such server", body = ErrorBody),
    )
)]
async fn versions(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(server_name): Path<String>,
) -> Result<axum::Json<ServerListResponse>, ApiError> {
    let namespace = &state.config.registry_namespace;
    let server = state
        .registry
        .get_visible(
            local_name(namespace, &server_name),
            &state.gate.visibility(&caller),
        )
        .await?;
    let health = state.health.summary(&server).await?;
    Ok(axum::Json(ServerListResponse {
        servers: vec![server_response(
            namespace,
            &state.gateway_url,
            &server,
            &health,
        )],
        metadata: ListMetadata {
            count: 1,
            next_cursor: None,
        },
    }))
}

/// One version of a server: `latest`, or its exact version.
#[utoipa::path(
    get,
    path = "/v0.1/servers/{serverName}/versions/{version}",
    tag = "registry (v0.1)",
    params(
        ("serverName" = String, Path, description = "namespace/name, URL-encoded"),
        ("version" = String, Path, description = "`latest` or an exact version"),
    ),
    responses(
        (status = 200, description = "The server", body = Object),
        (status = 404, description = "No such server or version", body = ErrorBody),
    )
)]
async fn version(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((server_name, version)): Path<(String, String)>,
) -> Result<axum::Json<Value>, ApiError> {
    let namespace = &state.config.registry_namespace;
    let server = state
        .registry
        .get_visible(
            local_name(namespace, &server_name),
            &state.gate.visibility(&caller),
        )
        .await?;
    let current = server.version.as_deref().unwrap_or(UNVERSIONED);
    if version != "latest" && version != current {
        return Err(domain::Error::not_found(format!(
            "version '{version}' of server '{server_name}'"
        ))
        .into());
    }
    let health = state.health.summary(&server).await?;
    Ok(axum::Json(server_response(
        namespace,
        &state.gateway_url,
        &server,
        &health,
    )))
}

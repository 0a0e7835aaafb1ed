//! The REST listener: registry management (`/api/v1`), the official registry API (`/v0.1`),
//! operations endpoints, and the OpenAPI document with its docs page. Every route is declared
//! with its OpenAPI description, so the document is generated from the code that serves it.

pub use crate::http::{error, request_id};
pub use crate::listing::cursor;

pub mod audit;
pub mod extract;
pub mod health;
pub mod mcp_docs;
pub mod ops;
pub mod registry_v0;
pub mod servers;
pub mod whoami;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

pub use crate::state::AppState;
use error::ApiError;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "mreg",
        description = "MCP Registry Gateway: registry management, the official MCP registry API, operations endpoints, and (on the MCP listener) the MCP gateway with its tools and the OAuth endpoints.",
        license(name = "Apache-2.0")
    ),
    tags(
        (name = "servers", description = "Register and manage MCP servers"),
        (name = "health", description = "Server health, probes and the tool catalog"),
        (name = "registry (v0.1)", description = "The official MCP registry API, read-only"),
        (name = "operations", description = "Health, readiness and metrics"),
        (name = "identity", description = "Who the caller is"),
        (name = "audit", description = "The audit log"),
    )
)]
struct ApiDoc;

fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(servers::router())
        .merge(health::router())
        .merge(registry_v0::router())
        .merge(whoami::router())
        .merge(audit::router())
}

/// The REST router with every layer applied.
pub fn router(state: AppState) -> Router {
    let (api, document) = api_routes().split_for_parts();
    let (ops, ops_document) = ops::router().split_for_parts();
    let mut document = document;
    document.merge(ops_document);
    document_common_errors(&mut document);
    // The MCP listener is documented too, on the same page.
    let mut document = serde_json::to_value(&document).unwrap_or_default();
    mcp_docs::extend(
        &mut document,
        &state.gateway_url,
        state.oauth.as_ref().map(|o| o.callback_path()),
    );
    let max_body = state.config.max_body_bytes;
    let hosts = crate::guard::Hosts::for_listener(&state.config, &state.config.api.host);
    let metrics = state.metrics.clone();
    Router::new()
        .merge(api.layer(crate::authn::AuthLayer::new(state.authn.clone())))
        .merge(ops)
        .merge(SwaggerUi::new("/docs").external_url_unchecked("/openapi.json", document))
        .fallback(no_route)
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not support that method",
            )
        })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(crate::guard::GuardLayer::new(hosts))
        .with_state(state)
        .layer(request_id::TrackLayer::new(metrics))
}

/// 404 for a path the REST API does not serve; one the MCP listener serves (a client pointed at
/// the wrong port) is told where that is.
async fn no_route(
    axum::extract::State(state): axum::extract::State<AppState>,
    uri: axum::http::Uri,
) -> ApiError {
    let path = uri.path();
    let mcp = path == "/mcp"
        || path.starts_with("/mcp/")
        || (path.starts_with("/servers/") && path.ends_with("/mcp"))
        || path.starts_with("/.well-known/oauth-")
        || matches!(path, "/authorize" | "/token" | "/register" | "/revoke");
    if !mcp {
        return ApiError::no_route();
    }
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no such endpoint: this is mreg's REST API; {path} is served by its MCP listener, at {}{path}",
            state.gateway_url.trim_end_matches('/')
        ),
    )
}

/// Documents the error answers every operation can give besides its own: a foreign `Host` or
/// `Origin` (403) anywhere; authentication, roles, budgets and an unavailable dependency on the
/// API; a malformed, oversized or non-JSON body where there is one; an invalid query parameter.
fn document_common_errors(document: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let error = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build(),
        )
    };
    for (path, item) in document.paths.paths.iter_mut() {
        let api = path.starts_with("/api/") || path.starts_with("/v0.1/");
        let operations = [
            (false, item.get.as_mut()),
            (false, item.delete.as_mut()),
            (true, item.post.as_mut()),
            (true, item.put.as_mut()),
            (true, item.patch.as_mut()),
        ];
        for (with_body, operation) in operations {
            let Some(operation) = operation else { continue };
            let mut add = |status: &str, description: &str| {
                operation
                    .responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| error(description));
            };
            add(
                "403",
                "Forbidden: a role is missing, or the Host or Origin is not the gateway's",
            );
            if api {
                add("401", "A bearer token is required (authentication on)");
                add("422", "A parameter is invalid");
                add("429", "Rate limited; Retry-After says when to retry");
                add("503", "The database, cache or audit log is unavailable");
            }
            if with_body {
                add("400", "The body is not well-formed JSON, or cannot be read");
                add("413", "The body is larger than MREG_MAX_BODY_BYTES");
                add("415", "The body is not application/json");
            }
        }
    }
}

//! The MCP listener: the gateway's own MCP server at `/mcp`, built on the official Rust SDK
//! (`rmcp`) over streamable HTTP, and the per-server gateway at `/servers/{name}/mcp`
//! ([`crate::proxy`]). Sessions serve 2025-06-18 and 2025-11-25 clients; requests of
//! the stateless 2026-07-28 protocol (`server/discover`) are answered without one.

pub mod edge;
pub mod held;
mod streams;
pub mod tools;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::any;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use crate::http::request_id;
use crate::state::AppState;
use tools::RegistryTools;

pub use crate::jsonrpc::MAX_MCP_BODY_BYTES;

/// The MCP router. `sessions` ends open sessions (and the tool calls they run); `shutdown`
/// ends open `GET` streams (server-to-client SSE, on `/mcp` and proxied) as the gateway starts
/// stopping, so they do not hold the drain of requests for the whole grace period.
pub fn router(state: AppState, sessions: CancellationToken, shutdown: CancellationToken) -> Router {
    let hosts = crate::guard::Hosts::for_listener(&state.config, &state.config.mcp.host);
    let state_cors = state.config.cors_origins.clone();
    let state_keepalive = state.config.sse_keepalive;
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts.names())
        .with_sse_keep_alive(Some(Duration::from_secs(15)))
        .with_max_request_body_bytes(MAX_MCP_BODY_BYTES)
        .with_cancellation_token(sessions);
    let metrics = state.metrics.clone();
    let for_tools = state.clone();
    let tool_router = RegistryTools::router();
    let tools = StreamableHttpService::new(
        move || Ok(RegistryTools::new(for_tools.clone(), tool_router.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let oauth = state.oauth.clone();
    let track = request_id::TrackLayer::new(metrics);
    // Tracking and authentication as one layer: axum boxes every layer applied to a route, and
    // each request clones the boxed stack of its route, so one layer clones less than two.
    let chain = tower::ServiceBuilder::new()
        .layer(track.clone())
        .layer(edge::EdgeLayer)
        .layer(crate::authn::AuthLayer::new(state.authn.clone()));
    let own = Router::new().nest_service("/mcp", tools);
    // With authentication on, a session belongs to whoever opened it: its id is sealed with the
    // caller, as the proxy's are (without it, everyone is the one local operator).
    let own = if oauth.is_some() {
        own.layer(axum::middleware::from_fn_with_state(
            state.clone(),
            bind_session,
        ))
    } else {
        own
    };
    let held = held::Held::new(state.audit.clone());
    let mut router = Router::new()
        .merge(own)
        .route("/servers/{name}/mcp", any(crate::proxy::handle))
        // After authentication (the chain): it counts a caller's streams.
        .layer(axum::middleware::from_fn_with_state(held, held::count))
        .layer(chain)
        .with_state(state);
    if let Some(oauth) = oauth {
        router = router.merge(crate::oauth::router(oauth).layer(track));
    }
    router
        .layer(axum::middleware::from_fn_with_state(
            streams::Streams {
                shutdown,
                keepalive: state_keepalive,
            },
            streams::care,
        ))
        .layer(cors(&state_cors))
        .layer(crate::guard::GuardLayer::new(hosts))
}

/// CORS for MCP clients running in a browser page of an origin on `MREG_CORS_ORIGINS`: preflights
/// are answered (before authentication: a preflight carries no token), and the headers an MCP
/// client reads are exposed. The host guard has already refused any other origin.
fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use axum::http::{HeaderName, HeaderValue, Method, header};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            HeaderName::from_static("mcp-session-id"),
            HeaderName::from_static("mcp-protocol-version"),
            HeaderName::from_static("mcp-method"),
            HeaderName::from_static("mcp-name"),
            HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([
            HeaderName::from_static("mcp-session-id"),
            HeaderName::from_static("mcp-protocol-version"),
            header::WWW_AUTHENTICATE,
            header::RETRY_AFTER,
        ])
        .max_age(std::time::Duration::from_secs(600))
}

/// The header carrying a session id.
const SESSION_HEADER: axum::http::HeaderName =
    axum::http::HeaderName::from_static("mcp-session-id");

/// Binds `/mcp` sessions to the caller that opened them: the client holds the session id sealed
/// with its subject and tenant; another caller presenting it (or a raw rmcp id) is told the
/// session does not exist.
async fn bind_session(
    axum::extract::State(state): axum::extract::State<AppState>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let Some(caller) = request
        .extensions()
        .get::<Arc<domain::Principal>>()
        .cloned()
    else {
        return next.run(request).await;
    };
    if let Some(token) = request.headers().get(SESSION_HEADER) {
        let opened = token.to_str().ok().and_then(|t| {
            crate::proxy::session::open(state.cipher.as_ref(), t, uuid::Uuid::nil(), &caller)
        });
        match opened.and_then(|raw| axum::http::HeaderValue::from_str(&raw).ok()) {
            Some(raw) => {
                request.headers_mut().insert(SESSION_HEADER, raw);
            }
            None => {
                return crate::jsonrpc::error(
                    axum::http::StatusCode::NOT_FOUND,
                    None,
                    crate::jsonrpc::SESSION_NOT_FOUND,
                    "session not found; start a new session with initialize",
                );
            }
        }
    }
    let mut response = next.run(request).await;
    let sealed = response
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|raw| {
            crate::proxy::session::seal(state.cipher.as_ref(), uuid::Uuid::nil(), &caller, raw)
        })
        .and_then(|token| axum::http::HeaderValue::from_str(&token).ok());
    if let Some(sealed) = sealed {
        response.headers_mut().insert(SESSION_HEADER, sealed);
    }
    response
}

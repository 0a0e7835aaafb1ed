//! The REST listener: registry management (`/api/v1`), the official registry API (`/v0.1`),
//! operations endpoints, and the OpenAPI document with its docs page. Every route is declared
//! with its OpenAPI description, so the document is generated from the code that serves it.

pub mod audit;
pub mod cursor;
pub mod error;
pub mod extract;
pub mod health;
pub mod ops;
pub mod registry_v0;
pub mod request_id;
pub mod servers;
pub mod whoami;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use domain::{Cache, Registry};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Stores;
use error::ApiError;

/// Everything a handler may need, shared by all requests. Cloning it (once per request, by the
/// `State` extractor) copies one pointer.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// Shares `shared` between every request.
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The contents of [`AppState`].
pub struct Shared {
    /// The registry service.
    pub registry: Registry,
    /// Current health of every server, for the circuit breaker.
    pub health_board: crate::health::HealthBoard,
    /// Pooled HTTP client for probes and `proxy_request`.
    pub upstream: reqwest::Client,
    /// Pooled HTTP client of the proxy's hot path.
    pub gateway: crate::proxy::client::GatewayClient,
    /// Where the gateway may connect on a caller's behalf.
    pub egress: Arc<crate::egress::Egress>,
    /// The MCP listener as clients reach it: `MREG_PUBLIC_URL`, else `http://` its address;
    /// no trailing slash.
    pub gateway_url: String,
    /// Encryption for secrets at rest and session tokens.
    pub cipher: Arc<crate::crypto::Cipher>,
    /// The database's stores.
    pub stores: Stores,
    /// The cache.
    pub cache: Arc<dyn Cache>,
    /// `memory` or `redis`.
    pub cache_backend: &'static str,
    /// Process metrics.
    pub metrics: Metrics,
    /// The effective configuration.
    pub config: Arc<Config>,
    /// The OAuth authorization server; `None` when authentication is off.
    pub oauth: Option<Arc<crate::oauth::OAuth>>,
    /// Roles and budgets.
    pub policy: Arc<crate::policy::Policy>,
    /// This instance's rate limiter.
    pub limits: Arc<crate::policy::limits::Limits>,
    /// The audit log.
    pub audit: crate::audit::Auditor,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "mreg",
        description = "MCP Registry Gateway: registry management, the official MCP registry API, and operations endpoints.",
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
    let max_body = state.config.max_body_bytes;
    let hosts = crate::guard::Hosts::for_listener(&state.config, &state.config.api.host);
    let metrics = state.metrics.clone();
    Router::new()
        .merge(api.layer(crate::authn::AuthLayer::new(state.clone())))
        .merge(ops)
        .merge(SwaggerUi::new("/docs").url("/openapi.json", document))
        .fallback(|| async { ApiError::no_route() })
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

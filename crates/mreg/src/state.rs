//! The state every handler of both listeners shares: the services the gateway is made of,
//! built once by [`crate::app`]. Handlers of the layers below (the proxy) take only their own
//! service, through [`FromRef`].

use std::sync::Arc;

use axum::extract::FromRef;
use domain::{Cache, Registry};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Stores;

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

impl FromRef<AppState> for Arc<crate::proxy::Proxy> {
    fn from_ref(state: &AppState) -> Self {
        state.proxy.clone()
    }
}

/// The contents of [`AppState`].
pub struct Shared {
    /// The registry service.
    pub registry: Registry,
    /// Health: the circuit breaker's board, probes, reports.
    pub health: Arc<crate::health::Monitor>,
    /// Forwarding to registered servers (`/servers/{name}/mcp` and `proxy_request`).
    pub proxy: Arc<crate::proxy::Proxy>,
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
    /// The policy chain after authentication: roles, budgets, tenant visibility.
    pub gate: crate::policy::Gate,
    /// The audit log.
    pub audit: crate::audit::Auditor,
    /// The chain before every protected route (token, rate limit, REST roles and audit).
    pub authn: Arc<crate::authn::Authenticator>,
    /// The background tasks (their last runs are part of `/readyz`).
    pub tasks: crate::tasks::Tasks,
}

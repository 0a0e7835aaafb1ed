//! The HTTP client of the proxy's hot path: hyper-util's pooled client over rustls (platform
//! certificate verification, aws-lc-rs), without reqwest's extra layers. It follows no
//! redirects. Probes and `proxy_request` use reqwest, which rmcp's client needs anyway.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_platform_verifier::BuilderVerifierExt;

use crate::egress::{Egress, GuardedResolver};

/// The proxy's client for upstream MCP servers.
pub type GatewayClient = Client<HttpsConnector<HttpConnector<GuardedResolver>>, Body>;

/// Builds the pooled client: 5 s to connect, idle connections kept 90 s, up to 64 per host; it
/// connects only to addresses `egress` admits.
pub fn gateway_client(egress: Arc<Egress>) -> anyhow::Result<GatewayClient> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS set-up failed: {e}"))?
        .with_platform_verifier()
        .map_err(|e| anyhow::anyhow!("the platform certificate verifier is unavailable: {e}"))?
        .with_no_client_auth();
    let mut http = HttpConnector::new_with_resolver(GuardedResolver::new(egress));
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(64)
        .build(connector))
}

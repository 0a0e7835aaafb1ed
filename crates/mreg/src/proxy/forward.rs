//! One MCP request forwarded on a caller's behalf (the `proxy_request` tool): connect to the
//! registered server with the official SDK's client (discover for 2026-07-28 servers,
//! initialize for older ones), send the request, return the result, end the session.

use std::collections::HashMap;

use axum::http::{HeaderName, HeaderValue};
use domain::{Error, Route};
use rmcp::model::{
    ClientCapabilities, ClientConfig, ClientRequest, CustomRequest, Implementation, ProtocolVersion,
};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientLifecycleMode, ClientServiceExt, ServiceError};
use serde_json::Value;

use super::Proxy;

/// Methods that belong to the session itself, not to one forwarded request.
fn lifecycle_method(method: &str) -> bool {
    method == "initialize" || method == "server/discover" || method.starts_with("notifications/")
}

/// Sends `method` with `params` to the server of `route` (from [`Proxy::route_for`]) and
/// returns the result.
pub async fn forward_one(
    state: &Proxy,
    principal: &domain::Principal,
    route: &Route,
    method: &str,
    params: Option<Value>,
) -> Result<Value, Error> {
    let server = &route.server;
    let tool = params
        .as_ref()
        .and_then(|p| p.get("name"))
        .and_then(Value::as_str);
    // The order of `/servers/{name}/mcp`: roles, the circuit breaker, then the tool's budget.
    state
        .gate
        .authorize_forward(principal, server, method, tool)?;
    state.health.ensure_reachable(server)?;
    state
        .gate
        .spend_forward(principal, server, method, tool)
        .await?;
    if method.trim().is_empty() || lifecycle_method(method) {
        return Err(Error::invalid(
            "method",
            format!(
                "'{method}' cannot be forwarded; the gateway manages sessions itself (use e.g. tools/list, tools/call, resources/read)"
            ),
        ));
    }
    if params.as_ref().is_some_and(|p| !p.is_object()) {
        return Err(Error::invalid("params", "must be a JSON object"));
    }
    if let Ok(uri) = axum::http::Uri::try_from(server.url.as_str())
        && let Err(why) = state.egress.check_uri(&uri)
    {
        return Err(Error::unavailable(
            format!("server '{}' (egress refused: {why})", server.name),
            std::io::Error::other(why.clone()),
        ));
    }
    let mut headers = HashMap::new();
    for (name, value) in route.upstream_headers.iter().flat_map(|h| h.iter()) {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            headers.insert(name, value);
        }
    }
    let config =
        StreamableHttpClientTransportConfig::with_uri(server.url.as_str()).custom_headers(headers);
    let transport = StreamableHttpClientTransport::with_client(state.upstream.clone(), config);
    let info = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("mreg", env!("CARGO_PKG_VERSION")),
    );
    let lifecycle = ClientLifecycleMode::Auto {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        legacy_version: Some(ProtocolVersion::V_2025_11_25),
    };
    let name = server.name.to_string();
    let timeout = super::timeout_of(server);
    let exchange = async {
        let client = info
            .serve_with_lifecycle(transport, lifecycle)
            .await
            .map_err(|e| {
                Error::unavailable(
                    format!(
                        "server '{name}' (connecting failed: {})",
                        super::root_cause(&e)
                    ),
                    e,
                )
            })?;
        let request = ClientRequest::CustomRequest(CustomRequest::new(method, params));
        let answer = client.send_request(request).await;
        let _ = client.cancel().await;
        match answer {
            Ok(result) => {
                let mut value =
                    serde_json::to_value(result).map_err(|e| Error::Internal(e.to_string()))?;
                if method == "tools/list" {
                    crate::policy::filter_tool_list(
                        state.gate.rules(),
                        principal,
                        &route.server,
                        &mut value,
                    );
                }
                Ok(value)
            }
            Err(ServiceError::McpError(error)) => Err(Error::invalid(
                "method",
                format!(
                    "server '{name}' answered with error {}: {}",
                    error.code.0,
                    super::clipped(&error.message, super::MAX_UPSTREAM_TEXT_CHARS)
                ),
            )),
            Err(e) => Err(Error::Unavailable {
                what: format!(
                    "server '{name}' (the request failed: {})",
                    super::root_cause(&e)
                ),
                source: Some(Box::new(e)),
            }),
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(Error::Unavailable {
                what: format!("server '{name}' (no answer within {} s)", timeout.as_secs()),
                source: None,
            })
        })
}

//! The edge of every MCP route (`/mcp`, `/servers/{name}/mcp`): what happens before the policy
//! chain and after the route has answered.
//!
//! - A POST must be JSON (`Content-Type: application/json`): a cross-site form or `text/plain`
//!   post, which a browser sends without asking, is refused with 415.
//! - Its body is read once, bounded by [`MAX_MCP_BODY_BYTES`], and its JSON-RPC call peeked
//!   ([`Peeked`], left in the request's extensions): the chain counts JSON-RPC requests (not
//!   notifications or responses) against the rate limit, and the proxy reads the call from there
//!   instead of parsing the message again.
//! - Every 4xx or 5xx answer leaves as a JSON-RPC error body (`application/json`, the request's
//!   id when it could be read, a code, the message, and `data` with the HTTP status, the error
//!   code, `retry_after_ms` or `required_roles` when known), whichever part of the gateway made
//!   it: authentication, the rate limit, the proxy, or rmcp's transport. Status and headers
//!   (`WWW-Authenticate`, `Retry-After`) stay. The official SDKs show their user the message of
//!   such a body; a body of another shape they report as "Server returned an error response".
//! - The end of a session (`DELETE`) is answered 204 rather than rmcp's 202, which SDK clients
//!   log as a failed termination.

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use tower::{Layer, Service, ServiceExt};

use crate::http::too_large;
use crate::jsonrpc::{self as rpc, MAX_MCP_BODY_BYTES, Peeked};

/// Largest error body of an inner answer that is read to be rewritten.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// Longest message taken from a plain-text error body.
const MAX_MESSAGE_CHARS: usize = 1024;

/// Layer: the MCP edge around the chain and the route.
#[derive(Clone, Copy, Default)]
pub struct EdgeLayer;

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Edge { inner }
    }
}

/// The service [`EdgeLayer`] wraps around the MCP routes.
#[derive(Clone)]
pub struct Edge<S> {
    inner: S,
}

impl<S> Service<Request> for Edge<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // The ready service handles this request; a fresh clone waits for the next one.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move { Ok(edge(request, inner).await) })
    }
}

async fn edge<S>(request: Request, inner: S) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    if let Some(hops) = request
        .headers()
        .get(crate::egress::HOP_HEADER)
        .and_then(|v| v.to_str().ok())
        && crate::egress::is_loop(hops)
    {
        tracing::warn!(hops, "request loop refused");
        return rpc::error(
            StatusCode::LOOP_DETECTED,
            None,
            rpc::UPSTREAM_ERROR,
            "request loop: this request already passed through this gateway; a registered server's URL leads back to it",
        );
    }
    let (mut parts, body) = request.into_parts();
    let method = parts.method.clone();
    let mut id = None;
    let body = if method == Method::POST {
        if !is_json(&parts.headers) {
            return rpc::error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                None,
                rpc::INVALID_REQUEST,
                "an MCP message is sent with Content-Type: application/json",
            );
        }
        let bytes = match axum::body::to_bytes(body, MAX_MCP_BODY_BYTES).await {
            Ok(bytes) => bytes,
            Err(e) if too_large(&e) => {
                return rpc::error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    None,
                    rpc::INVALID_REQUEST,
                    format!("the message is larger than {MAX_MCP_BODY_BYTES} bytes"),
                );
            }
            Err(e) => {
                return rpc::error(
                    StatusCode::BAD_REQUEST,
                    None,
                    rpc::INVALID_REQUEST,
                    format!(
                        "the request body cannot be read: {}",
                        domain::text::root_cause(&e)
                    ),
                );
            }
        };
        let call = rpc::inspect(&bytes);
        id = call.as_ref().ok().and_then(|c| c.id.clone());
        // The gateway's own server answers a message it cannot read here, as the proxy does
        // (which audits it, so it gets to see it).
        let own = !parts.uri.path().starts_with("/servers/");
        if let Err((status, code, message)) = &call
            && own
        {
            return rpc::error(*status, None, *code, message.clone());
        }
        // Its JSON reader stops at a nesting depth the edge's does not (the SDK answered 415).
        if own && rpc::nests_deeper_than(&bytes, rpc::MAX_DEPTH) {
            return rpc::error(
                StatusCode::BAD_REQUEST,
                None,
                rpc::PARSE_ERROR,
                format!(
                    "Parse error: the message nests arrays and objects deeper than {}",
                    rpc::MAX_DEPTH
                ),
            );
        }
        // The gateway's own server speaks the protocol versions without batches (the SDK
        // answered one with 415, "fail to deserialize"); a registered server may take them.
        if own && call.as_ref().is_ok_and(|c| c.method == "batch") {
            return rpc::error(
                StatusCode::BAD_REQUEST,
                None,
                rpc::INVALID_REQUEST,
                "Invalid Request: the gateway's own MCP server takes one message per request (JSON-RPC batches left MCP in 2025-06-18); send them one by one",
            );
        }
        parts.extensions.insert(Peeked(call));
        Body::from(bytes)
    } else {
        body
    };
    let Ok(response) = inner.oneshot(Request::from_parts(parts, body)).await;
    if method == Method::DELETE && response.status() == StatusCode::ACCEPTED {
        let (mut parts, _) = response.into_parts();
        parts.status = StatusCode::NO_CONTENT;
        parts.headers.remove(header::CONTENT_TYPE);
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::empty());
    }
    if !(response.status().is_client_error() || response.status().is_server_error()) {
        return response;
    }
    as_json_rpc(response, id.as_ref()).await
}

/// Whether the request says its body is JSON.
fn is_json(headers: &HeaderMap) -> bool {
    rpc::media_type(headers).eq_ignore_ascii_case("application/json")
}

/// The JSON-RPC error code of an HTTP error status.
fn code_of(status: StatusCode) -> i64 {
    match status {
        StatusCode::UNAUTHORIZED => rpc::UNAUTHENTICATED,
        StatusCode::FORBIDDEN => rpc::FORBIDDEN,
        StatusCode::NOT_FOUND => rpc::SESSION_NOT_FOUND,
        StatusCode::TOO_MANY_REQUESTS => rpc::RATE_LIMITED,
        s if s.is_client_error() => rpc::INVALID_REQUEST,
        _ => rpc::UPSTREAM_ERROR,
    }
}

/// Rewrites an error answer as a JSON-RPC error body, or, when it already is one, gives it the
/// request's id.
async fn as_json_rpc(response: Response, id: Option<&Value>) -> Response {
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_ERROR_BODY_BYTES)
        .await
        .unwrap_or_default();
    let parsed = serde_json::from_slice::<Value>(&bytes).ok();
    if let Some(mut message) = parsed.clone().filter(|m| m.get("jsonrpc").is_some()) {
        if message.get("id").is_none_or(Value::is_null)
            && let Some(id) = id
        {
            message["id"] = id.clone();
            return rebuilt(parts, &message);
        }
        return Response::from_parts(parts, Body::from(bytes));
    }
    let status = parts.status;
    let mut data = json!({ "status": status.as_u16() });
    let text = match &parsed {
        // The REST error shape: { error, message, request_id, retry_after_ms?, required_roles? }.
        Some(rest) if rest.get("message").is_some() => {
            for key in ["error", "request_id", "retry_after_ms", "required_roles"] {
                if let Some(value) = rest.get(key) {
                    data[key] = value.clone();
                }
            }
            rest["message"].as_str().unwrap_or_default().to_owned()
        }
        _ => String::from_utf8_lossy(&bytes)
            .trim()
            .chars()
            .take(MAX_MESSAGE_CHARS)
            .collect(),
    };
    if data.get("retry_after_ms").is_none()
        && let Some(secs) = parts
            .headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    {
        data["retry_after_ms"] = json!(secs.saturating_mul(1000));
    }
    // An empty 404 is the router's: no endpoint at this path (not an unknown session).
    let no_endpoint = status == StatusCode::NOT_FOUND && bytes.is_empty();
    let text = if no_endpoint {
        "no MCP endpoint at this path: the gateway's is /mcp, a server's /servers/NAME/mcp"
            .to_owned()
    } else if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let code = if no_endpoint {
        rpc::INVALID_REQUEST
    } else {
        code_of(status)
    };
    let message = json!({
        "jsonrpc": "2.0",
        "id": id.cloned().unwrap_or(Value::Null),
        "error": { "code": code, "message": text, "data": data },
    });
    let error = message["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    crate::audit::Note::failed(rebuilt(parts, &message), error)
}

/// `parts` with `message` as its JSON body.
fn rebuilt(mut parts: axum::http::response::Parts, message: &Value) -> Response {
    let body = Bytes::from(message.to_string());
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_json_content_types_are_json() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            headers
        };
        assert!(is_json(&with("application/json")));
        assert!(is_json(&with("Application/JSON; charset=utf-8")));
        assert!(!is_json(&with("text/plain")));
        assert!(!is_json(&with("application/x-www-form-urlencoded")));
        assert!(!is_json(&with("multipart/form-data; boundary=x")));
        assert!(
            !is_json(&HeaderMap::new()),
            "a body without a type is refused"
        );
    }

    #[test]
    fn requests_count_and_notifications_and_responses_do_not() {
        let peek = |body: &str| Peeked(rpc::inspect(body.as_bytes()));
        assert!(peek(r#"{"jsonrpc":"2.0","id":1,"method":"initialize"}"#).is_request());
        assert!(!peek(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).is_request());
        assert!(!peek(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#).is_request());
        assert!(
            peek(r#"[{"jsonrpc":"2.0","method":"notifications/x"},{"jsonrpc":"2.0","id":2,"method":"ping"}]"#)
                .is_request()
        );
        assert!(peek("not json").is_request(), "garbage is not free");
    }
}

//! `/servers/{name}/mcp`: the gateway in front of one registered server. Any MCP client can use
//! a registered server through mreg by changing only its URL.
//!
//! The proxy reads each message's JSON-RPC method and tool name (for the policy chain and the
//! logs), forwards POST, GET and DELETE with a pooled client, and streams the answer back as it
//! arrives (JSON or SSE) without holding whole streams. The upstream's session id is replaced by
//! a sealed token bound to the caller ([`session`]); upstream credentials are added here and
//! never leave the gateway; the caller's own `Authorization` is never passed on (no token
//! passthrough).

pub mod client;
pub mod forward;
pub mod session;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use domain::Server;
use http_body_util::BodyExt;

use crate::audit::Auditor;
use crate::authn::Caller;
use crate::crypto::Cipher;
use crate::egress::Egress;
use crate::health::Monitor;
use crate::jsonrpc::MAX_MCP_BODY_BYTES;
use crate::jsonrpc::{self as rpc, McpCall};
use crate::metrics::Metrics;
use crate::policy::Gate;
use client::GatewayClient;

/// Request headers passed on to the upstream (besides `mcp-param-*`).
const FORWARDED_REQUEST_HEADERS: [HeaderName; 6] = [
    header::ACCEPT,
    header::CONTENT_TYPE,
    HeaderName::from_static("last-event-id"),
    HeaderName::from_static("mcp-method"),
    HeaderName::from_static("mcp-name"),
    PROTOCOL_VERSION_HEADER,
];
/// Response headers passed back to the client (besides the session id, which is translated).
const FORWARDED_RESPONSE_HEADERS: [HeaderName; 3] = [
    header::CACHE_CONTROL,
    header::CONTENT_TYPE,
    PROTOCOL_VERSION_HEADER,
];
const SESSION_HEADER: HeaderName = HeaderName::from_static("mcp-session-id");
const PROTOCOL_VERSION_HEADER: HeaderName = HeaderName::from_static("mcp-protocol-version");

/// The gateway's user agent towards upstream servers.
const USER_AGENT: &str = concat!("mreg/", env!("CARGO_PKG_VERSION"));

/// What forwarding needs: where names lead (the registry), who may pass (the gate, the circuit
/// breaker, egress), what is recorded (audit, metrics), the clients and the session cipher.
/// Built once and shared by both forwarding paths (`/servers/{name}/mcp` and `proxy_request`).
pub struct Proxy {
    /// Where names lead.
    pub registry: domain::Registry,
    /// Roles and budgets per server and tool.
    pub gate: Gate,
    /// The circuit breaker.
    pub health: Arc<Monitor>,
    /// The audit log.
    pub audit: Auditor,
    /// Per-server metrics and refusals.
    pub metrics: Metrics,
    /// Seals session ids.
    pub cipher: Arc<Cipher>,
    /// Where the gateway may connect on a caller's behalf.
    pub egress: Arc<Egress>,
    /// The hot path's pooled client.
    pub gateway: GatewayClient,
    /// The reqwest client of `proxy_request` (rmcp's transport).
    pub upstream: reqwest::Client,
}

/// The reqwest client for probes and `proxy_request`: pooled, no redirects (an upstream may not
/// send the gateway elsewhere), no overall timeout (SSE streams are long); each request gets the
/// server's own timeout for its answer to start. It connects only where `egress` admits, and
/// marks its requests with this instance's hop.
pub fn upstream_client(
    egress: std::sync::Arc<crate::egress::Egress>,
) -> anyhow::Result<reqwest::Client> {
    let mut hop = HeaderMap::new();
    hop.insert(
        crate::egress::HOP_HEADER,
        HeaderValue::from_static(crate::egress::instance_id()),
    );
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .default_headers(hop)
        .dns_resolver(std::sync::Arc::new(crate::egress::GuardedResolver::new(
            egress,
        )))
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| anyhow::anyhow!("the HTTP client for upstream servers cannot be built: {e}"))
}

/// The request timeout of `server`.
pub fn timeout_of(server: &Server) -> Duration {
    Duration::from_secs(u64::from(
        server
            .timeout_secs
            .unwrap_or(domain::upstream::DEFAULT_TIMEOUT_SECS),
    ))
}

pub use domain::text::{MAX_UPSTREAM_TEXT_CHARS, clipped, root_cause};

/// Handles one request to `/servers/{name}/mcp`: one audit row each, opened before anything
/// else (when the audit log cannot take it, the request is refused). The row is completed when
/// the response starts, or, for an answer streamed as SSE, when the stream ends; a `GET` stream
/// (server-to-client messages, open for as long as the client likes) is recorded when it opens.
pub async fn handle(
    State(state): State<Arc<Proxy>>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    let request_id = crate::http::request_id::of(request.extensions());
    let mut entry = match state.audit.open(&caller, request_id, "mcp").await {
        Ok(entry) => entry,
        Err(e) => {
            return rpc::error(
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                rpc::UPSTREAM_ERROR,
                e.to_string(),
            );
        }
    };
    entry.target(None, Some(&name));
    let response = proxy(&state, &caller, &name, request, &mut entry).await;
    // The per-server metrics count what the audit row records, when it is completed — for
    // registered servers the caller may see only: a name nobody registered makes no series.
    // Nothing is allocated for it when the series are off (authentication on, by default).
    if state.metrics.keeps_servers() && response.extensions().get::<Known>().is_some() {
        let (metrics, method, tool) = (
            state.metrics.clone(),
            entry.operation_name().to_owned(),
            entry.tool().map(str::to_owned),
        );
        entry.observe(move |outcome, elapsed| {
            metrics.server_call(&name, &method, tool.as_deref(), outcome, elapsed);
        });
    }
    let failure = response.extensions().get::<rpc::Failure>();
    if let (None, Some(outcome)) = (failure, response.extensions().get::<rpc::StreamOutcome>()) {
        // A streamed answer: the row is completed when the stream ends (or cancelled, when the
        // caller goes away first), with the stream's real outcome and duration.
        // It holds no place in the audit queue meanwhile: streams may last, and the queue's
        // places admit requests.
        let outcome = outcome.clone();
        entry.detach();
        let (parts, body) = response.into_parts();
        return Response::from_parts(
            parts,
            Body::from_stream(stream::audited(body, entry, outcome)),
        );
    }
    entry.finish(match failure {
        Some(rpc::Failure(message)) => Err(message.clone()),
        None if response.status().is_success() => Ok(()),
        None => Err(format!("HTTP {}", response.status().as_u16())),
    });
    response
}

/// Names an audit row after the message's JSON-RPC method (and tool, for `tools/call`).
fn name_entry(entry: &mut crate::audit::Entry, call: &McpCall, server: &str) {
    entry.operation(&call.method);
    if call.method == "tools/call" {
        entry.target(call.name.as_deref(), Some(server));
    }
}

/// The arguments of the audited call(s) in a message: `params.arguments` of a `tools/call` or
/// `prompts/get`, or of each message of a batch. Parsed only for the audit log: the message
/// itself goes upstream as it came.
fn call_arguments(call: &McpCall) -> Option<serde_json::Value> {
    let parse = |c: &McpCall| {
        c.arguments
            .as_deref()
            .and_then(|raw| serde_json::from_str::<serde_json::Value>(raw).ok())
    };
    if call.batch.is_empty() {
        return matches!(call.method.as_str(), "tools/call" | "prompts/get")
            .then(|| parse(call))
            .flatten();
    }
    Some(serde_json::Value::Array(
        call.batch
            .iter()
            .map(|m| {
                serde_json::json!({
                    "method": m.method,
                    "name": m.name,
                    "arguments": parse(m),
                })
            })
            .collect(),
    ))
}

async fn proxy(
    state: &Proxy,
    caller: &std::sync::Arc<domain::Principal>,
    name: &str,
    request: Request,
    entry: &mut crate::audit::Entry,
) -> Response {
    let (parts, body) = request.into_parts();
    // What the edge read of the message names the row from the start, so that a request refused
    // before it is forwarded (unknown, disabled or unhealthy server) keeps its JSON-RPC method.
    if let Some(crate::jsonrpc::Peeked(Ok(call))) = parts.extensions.get() {
        name_entry(entry, call, name);
    }
    let route = match state.registry.route(name).await {
        Ok(route) => route,
        Err(domain::Error::NotFound { .. }) => {
            return rpc::error(
                StatusCode::NOT_FOUND,
                None,
                rpc::INVALID_REQUEST,
                format!("no server named '{name}' is registered"),
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "registry lookup failed");
            return rpc::error(
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                rpc::UPSTREAM_ERROR,
                "the registry is unavailable; try again",
            );
        }
    };
    if !state.gate.visibility(caller).allows(&route.server) {
        return rpc::error(
            StatusCode::NOT_FOUND,
            None,
            rpc::INVALID_REQUEST,
            format!("no server named '{name}' is registered"),
        );
    }
    // From here on the server is one the caller may see: its calls are counted per server.
    let mut response = forward_to(state, caller, name, parts, body, entry, &route).await;
    response.extensions_mut().insert(Known);
    response
}

/// A response about a registered server the caller may see (see [`handle`]).
#[derive(Clone, Copy)]
struct Known;

/// The rest of [`proxy`], once the server is known and visible.
async fn forward_to(
    state: &Proxy,
    caller: &std::sync::Arc<domain::Principal>,
    name: &str,
    mut parts: axum::http::request::Parts,
    body: Body,
    entry: &mut crate::audit::Entry,
    route: &domain::Route,
) -> Response {
    let server = &route.server;
    if let Err(e) = state.health.ensure_reachable(server) {
        return rpc::error(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            rpc::UPSTREAM_ERROR,
            e.to_string(),
        );
    }

    // The MCP edge has read the call already; only a request that did not pass it is read here.
    let peeked = parts.extensions.remove::<crate::jsonrpc::Peeked>();
    let (body, call) = match parts.method {
        Method::POST => match axum::body::to_bytes(body, MAX_MCP_BODY_BYTES).await {
            Err(_) => {
                return rpc::error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    None,
                    rpc::INVALID_REQUEST,
                    format!("the message is larger than {MAX_MCP_BODY_BYTES} bytes"),
                );
            }
            Ok(bytes) => match peeked
                .map_or_else(|| rpc::inspect(&bytes), |p| p.0)
                .and_then(|call| rpc::check_headers(&parts.headers, &call).map(|()| call))
            {
                Ok(call) => (Some(bytes), call),
                Err((status, code, message)) => return rpc::error(status, None, code, message),
            },
        },
        Method::GET => (
            None,
            McpCall {
                method: "stream".to_owned(),
                ..McpCall::default()
            },
        ),
        Method::DELETE => (
            None,
            McpCall {
                method: "session/end".to_owned(),
                ..McpCall::default()
            },
        ),
        _ => {
            return rpc::error(
                StatusCode::METHOD_NOT_ALLOWED,
                None,
                rpc::INVALID_REQUEST,
                "use POST, GET or DELETE",
            );
        }
    };

    name_entry(entry, &call, name);
    if state.audit.is_on()
        && let Some(arguments) = call_arguments(&call)
    {
        entry.arguments(arguments);
    }
    if let Err(refusal) = admit(state, caller, server.name.as_str(), &call).await {
        entry.decide(&refusal);
        // A refused tool call is an error answer inside the session; a refused server or a
        // spent budget is an HTTP status (403, or 429 with Retry-After).
        state.metrics.refused(refusal.reason());
        let (code, data) = crate::policy::rpc_error(&refusal);
        let status = match (&refusal, call.method == "tools/call") {
            (_, true) => StatusCode::OK,
            (crate::policy::Refusal::Denied(_), false) => StatusCode::FORBIDDEN,
            (crate::policy::Refusal::Limited(_), false) => StatusCode::TOO_MANY_REQUESTS,
        };
        let mut response =
            rpc::error_with_data(status, call.id.as_ref(), code, refusal.message(), data);
        if let Some(secs) = refusal.retry_after_secs()
            && let Ok(value) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    let upstream_session = match parts.headers.get(SESSION_HEADER) {
        None => None,
        Some(token) => match token
            .to_str()
            .ok()
            .and_then(|t| session::open(state.cipher.as_ref(), t, server.id, caller))
        {
            Some(upstream) => Some((upstream, token.clone())),
            None => {
                return rpc::error(
                    StatusCode::NOT_FOUND,
                    call.id.as_ref(),
                    rpc::SESSION_NOT_FOUND,
                    "session not found; start a new session with initialize",
                );
            }
        },
    };
    // The instances this request passed, this one added: a URL leading back ends at the edge.
    let hops = match parts
        .headers
        .get(crate::egress::HOP_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        Some(before) => {
            HeaderValue::from_str(&format!("{before},{}", crate::egress::instance_id()))
        }
        None => Ok(HeaderValue::from_static(crate::egress::instance_id())),
    };
    // The caller's headers are kept in place, less those not passed on; then the gateway's own.
    let mut headers = parts.headers;
    keep_only(&mut headers, &FORWARDED_REQUEST_HEADERS, |name| {
        name.as_str().starts_with("mcp-param-")
    });
    headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
    if let Ok(hops) = hops {
        headers.insert(crate::egress::HOP_HEADER, hops);
    }
    if let Some(id) = upstream_session
        .as_ref()
        .and_then(|(id, _)| HeaderValue::from_str(id).ok())
    {
        headers.insert(SESSION_HEADER, id);
    }
    let cannot_address = |why: &str| {
        tracing::error!(server = %name, why, "cannot build the upstream request");
        rpc::error(
            StatusCode::BAD_GATEWAY,
            call.id.as_ref(),
            rpc::UPSTREAM_ERROR,
            format!("the gateway cannot address server '{name}'"),
        )
    };
    for (key, value) in route.upstream_headers.iter().flat_map(|c| c.iter()) {
        // The value is a secret: only the fact that it is unusable is logged.
        match (HeaderName::try_from(key), HeaderValue::try_from(value)) {
            (Ok(key), Ok(value)) => {
                headers.append(key, value);
            }
            _ => return cannot_address("a stored upstream credential is not a valid header"),
        }
    }
    let Ok(uri) = axum::http::Uri::try_from(server.url.as_str()) else {
        return cannot_address("the server's URL is not a valid request URI");
    };
    // Names are checked by the client's resolver; an address literal only here.
    if let Err(why) = state.egress.check_uri(&uri) {
        tracing::warn!(server = %name, %why, "egress refused");
        return rpc::error(
            StatusCode::BAD_GATEWAY,
            call.id.as_ref(),
            rpc::UPSTREAM_ERROR,
            format!("server '{name}' cannot be reached: egress refused: {why}"),
        );
    }
    let mut upstream = axum::http::Request::new(body.map(Body::from).unwrap_or_else(Body::empty));
    *upstream.method_mut() = parts.method;
    *upstream.uri_mut() = uri;
    *upstream.headers_mut() = headers;
    let timeout = timeout_of(server);
    // The server's timeout covers the whole answer to a request, not only its headers.
    let deadline = tokio::time::Instant::now() + timeout;
    let response = match tokio::time::timeout_at(deadline, state.gateway.request(upstream)).await {
        Err(_) => {
            return rpc::error(
                StatusCode::GATEWAY_TIMEOUT,
                call.id.as_ref(),
                rpc::UPSTREAM_ERROR,
                format!(
                    "server '{name}' did not answer within {} s",
                    timeout.as_secs()
                ),
            );
        }
        Ok(Err(e)) => {
            let cause = root_cause(&e);
            tracing::warn!(server = %name, mcp.method = %call.method, %cause, "upstream request failed");
            return rpc::error(
                StatusCode::BAD_GATEWAY,
                call.id.as_ref(),
                rpc::UPSTREAM_ERROR,
                format!("server '{name}' cannot be reached: {cause}"),
            );
        }
        Ok(Ok(response)) => response,
    };
    if matches!(
        response.status(),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
    ) {
        return rpc::error(
            StatusCode::BAD_GATEWAY,
            call.id.as_ref(),
            rpc::UPSTREAM_ERROR,
            format!(
                "server '{name}' refused the gateway (HTTP {}); its upstream credentials are missing or wrong",
                response.status().as_u16()
            ),
        );
    }
    match checked(response, name, &call, deadline).await {
        Ok(response) => relay(
            state,
            server,
            caller,
            &call,
            response,
            deadline,
            upstream_session.as_ref(),
        ),
        Err(refused) => refused,
    }
}

/// Largest JSON answer the gateway reads whole to check that it is JSON.
const MAX_JSON_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// An upstream answer is JSON, an event stream, or empty; an answer to a request that is JSON
/// is read whole and must parse. Anything else (an HTML error page, a 200 whose "JSON" is not)
/// becomes a 502 JSON-RPC error naming the server, rather than reaching the client as it came.
async fn checked<B>(
    response: axum::http::Response<B>,
    name: &str,
    call: &McpCall,
    deadline: tokio::time::Instant,
) -> Result<Response, Response>
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let status = response.status();
    let essence = rpc::media_type(response.headers());
    let json = essence.eq_ignore_ascii_case("application/json");
    let sse = essence.eq_ignore_ascii_case("text/event-stream");
    let empty = matches!(status, StatusCode::ACCEPTED | StatusCode::NO_CONTENT)
        || response
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() == b"0");
    let refuse = |why: String| {
        tracing::warn!(server = %name, %why, "upstream answer refused");
        rpc::error(
            StatusCode::BAD_GATEWAY,
            call.id.as_ref(),
            rpc::UPSTREAM_ERROR,
            format!("server '{name}' {why}"),
        )
    };
    // A GET opens a stream of server messages: anything else (a metadata document, a page) is
    // not relayed.
    if call.method == "stream" && status.is_success() && !sse {
        return Err(rpc::error(
            StatusCode::BAD_GATEWAY,
            None,
            rpc::UPSTREAM_ERROR,
            format!(
                "server '{name}' answered GET with {}, not an event stream; only text/event-stream is relayed",
                if essence.is_empty() {
                    "no content type"
                } else {
                    essence
                }
            ),
        ));
    }
    // A redirect is not followed (the registered URL is the one vetted for egress), nor relayed
    // (its Location is the upstream's business): the caller learns where it pointed.
    if status.is_redirection() {
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map_or_else(|| "nowhere".to_owned(), |l| clipped(l, 200));
        return Err(refuse(format!(
            "answered HTTP {} (a redirect to {}); redirects are not followed: register the URL it points to",
            status.as_u16(),
            location
        )));
    }
    let known = json || sse;
    if !known && !empty && status.is_client_error() {
        // A refusal (a session that is gone, a GET the server does not stream) keeps its
        // status, which clients act on; its text becomes a JSON-RPC error naming the server.
        let (_, body) = response.into_parts();
        let bytes = axum::body::to_bytes(Body::new(body), 64 * 1024)
            .await
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        let code = if status == StatusCode::NOT_FOUND {
            rpc::SESSION_NOT_FOUND
        } else {
            rpc::INVALID_REQUEST
        };
        return Err(rpc::error(
            status,
            call.id.as_ref(),
            code,
            format!(
                "server '{name}' answered HTTP {}: {}",
                status.as_u16(),
                clipped(text.trim(), 200)
            ),
        ));
    }
    if !known && !empty && call.method != "session/end" {
        let shown = if essence.is_empty() {
            "no content type"
        } else {
            essence
        };
        return Err(refuse(format!(
            "answered HTTP {} with {}, not JSON or an event stream",
            status.as_u16(),
            clipped(shown, 100)
        )));
    }
    if !json || call.id.is_none() {
        return Ok(response.map(Body::new));
    }
    let (parts, body) = response.into_parts();
    let read = axum::body::to_bytes(Body::new(body), MAX_JSON_ANSWER_BYTES);
    let bytes = match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(bytes)) => bytes,
        Err(_) => {
            return Err(rpc::error(
                StatusCode::GATEWAY_TIMEOUT,
                call.id.as_ref(),
                rpc::UPSTREAM_ERROR,
                format!("server '{name}' did not finish its answer in time (its timeout_secs)"),
            ));
        }
        Ok(Err(e)) => {
            return Err(refuse(format!(
                "answered with JSON that could not be read whole: {}",
                root_cause(&e)
            )));
        }
    };
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
        return Err(refuse(format!(
            "answered HTTP {} with a body that is not JSON ({e})",
            status.as_u16()
        )));
    }
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// Removes from `headers` every header not named in `names` and not `also` kept. Done in place,
/// because on the proxy's path a request or response usually keeps most of its headers.
fn keep_only(headers: &mut HeaderMap, names: &[HeaderName], also: impl Fn(&HeaderName) -> bool) {
    // A few names at most: found one at a time rather than collected (no allocation).
    while let Some(name) = headers
        .keys()
        .find(|name| !names.contains(name) && !also(name))
        .cloned()
    {
        headers.remove(name);
    }
}

/// Turns the upstream's response into the client's: translated session id, chosen headers, and
/// the body streamed through.
fn relay<B>(
    state: &Proxy,
    server: &Server,
    caller: &domain::Principal,
    call: &McpCall,
    response: axum::http::Response<B>,
    deadline: tokio::time::Instant,
    presented: Option<&(String, HeaderValue)>,
) -> Response
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (parts, body) = response.into_parts();
    let mut headers = parts.headers;
    // The session the client presented comes back under the token it sent: sealed once per
    // session, not once per response (each seal spends a random nonce).
    let sealed = headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|upstream| match presented {
            Some((known, token)) if known == upstream => Some(token.clone()),
            _ => HeaderValue::from_str(&session::seal(
                state.cipher.as_ref(),
                server.id,
                caller,
                upstream,
            ))
            .ok(),
        });
    keep_only(&mut headers, &FORWARDED_RESPONSE_HEADERS, |_| false);
    if let Some(value) = sealed {
        headers.insert(SESSION_HEADER, value);
    }
    let is_sse = rpc::media_type(&headers).eq_ignore_ascii_case("text/event-stream");
    let status = parts.status;
    // A tool listing of a server with per-tool rules shows only what the caller may call.
    let lists_tools =
        call.method == "tools/list" || call.batch.iter().any(|c| c.method == "tools/list");
    if lists_tools && state.gate.rules().filters_tools(server.name.as_str()) {
        let policy = state.gate.rules().clone();
        let caller = caller.clone();
        let name = server.name.to_string();
        let stream = futures_util::stream::once(async move {
            let bytes = axum::body::to_bytes(Body::new(body), MAX_MCP_BODY_BYTES)
                .await
                .map_err(std::io::Error::other)?;
            Ok::<_, std::io::Error>(filter_listing(&bytes, is_sse, |result| {
                crate::policy::filter_tool_list(&policy, &caller, &name, result);
            }))
        });
        headers.remove(header::CONTENT_LENGTH);
        let mut out = Response::new(Body::from_stream(stream));
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        return out;
    }
    // Only an SSE answer to a request needs watching; anything else passes through untouched.
    let (body, outcome) = match call.id.clone().filter(|_| is_sse) {
        Some(pending) => {
            let outcome = rpc::StreamOutcome::default();
            let body = Body::from_stream(stream::cut_off_reported(
                body.into_data_stream(),
                server.name.to_string(),
                Some(pending),
                outcome.clone(),
                deadline,
            ));
            (body, Some(outcome))
        }
        None => (Body::new(body), None),
    };
    let mut out = Response::new(body);
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    if let Some(outcome) = outcome {
        out.extensions_mut().insert(outcome);
    }
    out
}

/// Admits a message, or every message of a batch, through the policy chain.
async fn admit(
    state: &Proxy,
    caller: &domain::Principal,
    server: &str,
    call: &McpCall,
) -> Result<(), crate::policy::Refusal> {
    let calls = if call.batch.is_empty() {
        std::slice::from_ref(call)
    } else {
        call.batch.as_slice()
    };
    for one in calls {
        state
            .gate
            .admit_forward(caller, server, &one.method, one.name.as_deref())
            .await?;
    }
    Ok(())
}

/// Applies `filter` to the `result` of every JSON-RPC response (single or batched) in a JSON or
/// SSE body.
fn filter_listing(body: &[u8], is_sse: bool, filter: impl Fn(&mut serde_json::Value)) -> Bytes {
    let apply = |text: &str| -> Option<String> {
        let mut message: serde_json::Value = serde_json::from_str(text).ok()?;
        match message.as_array_mut() {
            Some(batch) => batch
                .iter_mut()
                .filter_map(|m| m.get_mut("result"))
                .for_each(&filter),
            None => filter(message.get_mut("result")?),
        }
        serde_json::to_string(&message).ok()
    };
    let text = String::from_utf8_lossy(body);
    if !is_sse {
        return Bytes::from(apply(&text).unwrap_or_else(|| text.into_owned()));
    }
    let mut out = String::with_capacity(text.len());
    for event in text.replace("\r\n", "\n").split_inclusive("\n\n") {
        let data: Vec<&str> = event
            .lines()
            .filter_map(|l| {
                l.strip_prefix("data:")
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
            })
            .collect();
        match apply(&data.join("\n")) {
            Some(filtered) => {
                for line in event
                    .lines()
                    .filter(|l| !l.starts_with("data:") && !l.is_empty())
                {
                    out.push_str(line);
                    out.push('\n');
                }
                out.push_str("data: ");
                out.push_str(&filtered);
                out.push_str("\n\n");
            }
            None => out.push_str(event),
        }
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_chosen_headers_are_passed_on_with_every_value() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("host", "gateway.example"),
            ("accept", "application/json"),
            ("accept", "text/event-stream"),
            ("authorization", "Bearer the-callers-token"),
            ("mcp-session-id", "sealed-token"),
            ("mcp-param-region", "eu"),
            ("content-length", "99"),
            ("mcp-protocol-version", "2025-11-25"),
            ("cookie", "a=b"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        keep_only(&mut headers, &FORWARDED_REQUEST_HEADERS, |name| {
            name.as_str().starts_with("mcp-param-")
        });
        let mut kept: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().expect("ascii")))
            .collect();
        kept.sort_unstable();
        assert_eq!(
            kept,
            [
                ("accept", "application/json"),
                ("accept", "text/event-stream"),
                ("mcp-param-region", "eu"),
                ("mcp-protocol-version", "2025-11-25"),
            ]
        );
        keep_only(&mut headers, &[], |_| false);
        assert!(headers.is_empty());
    }
}

//! `/servers/{name}/mcp`: the gateway in front of one registered server. Any MCP client can use
//! a registered server through mreg by changing only its URL.
//!
//! The proxy reads each message's JSON-RPC method and tool name (for the policy chain and the
//! logs), forwards POST, GET and DELETE with a pooled client, and streams the answer back as it
//! arrives (JSON or SSE) without holding whole streams. The upstream's session id is replaced by
//! a sealed token bound to the caller ([`session`]); upstream credentials are added here and
//! never leave the gateway; the caller's own `Authorization` is never passed on (no token
//! passthrough).

mod relay;

pub mod forward;
pub mod http_client;
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
use http_client::GatewayClient;
use relay::*;

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
    /// Where the rest of an answer relayed as JSON is read to its end.
    pub tasks: crate::tasks::Tasks,
}

impl Proxy {
    /// The route to the server `name` means to `caller`: its registration and upstream
    /// credentials (its own tenant's server, else the public one; a private server of another
    /// tenant is as unknown as one nobody registered: [`domain::Error::NotFound`]). Both forwarding paths start here and
    /// then go the same way: the policy's roles for each message ([`Gate::authorize_forward`]),
    /// the circuit breaker ([`Monitor::ensure_reachable`]), then the tool budgets
    /// ([`Gate::spend_forward`]): a caller the roles refuse learns nothing of the server's health
    /// and sets off no probe, and a call refused as unavailable spends no tool budget.
    pub async fn route_for(
        &self,
        caller: &domain::Principal,
        name: &str,
    ) -> domain::Result<Arc<domain::Route>> {
        self.registry
            .route(name, &self.gate.visibility(caller))
            .await
    }
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
    // What a budget does not count (a notification, a response, a stream, a session's end).
    let free = request.method() != axum::http::Method::POST
        || !request
            .extensions()
            .get::<crate::jsonrpc::Peeked>()
            .is_some_and(crate::jsonrpc::Peeked::is_request);
    let response = proxy(&state, &caller, &name, request, &mut entry).await;
    // Free when it succeeds, not when it fails (not the caller's to use, no such server or
    // session, a message the server refuses): each failure is a row, and they cannot be asked
    // for without end. Over the budget, the answer is 429 and the rows fold.
    // (405 is how a server says it offers no GET stream or session end: an answer, not a
    // failure, which clients ask for once per session.)
    let failed =
        !response.status().is_success() && response.status() != StatusCode::METHOD_NOT_ALLOWED;
    let response = if free && failed {
        match state.gate.spend_refused(&caller).await {
            Err(limited) => {
                entry.decide(&limited);
                crate::policy::answer::jsonrpc(&limited, None, false)
            }
            Ok(()) => response,
        }
    } else {
        response
    };
    // The per-server metrics count what the audit row records, when it is completed — for
    // registered servers the caller may see only: a name nobody registered makes no series.
    // Nothing is allocated for it when the series are off (authentication on, by default).
    if state.metrics.keeps_servers()
        && let Some(Known(label)) = response.extensions().get::<Known>().cloned()
    {
        let (metrics, method, tool) = (
            state.metrics.clone(),
            entry.operation_name().to_owned(),
            entry.tool().map(str::to_owned),
        );
        entry.observe(move |outcome, elapsed| {
            metrics.server_call(&label, &method, tool.as_deref(), outcome, elapsed);
        });
    }
    let failed = crate::audit::Note::error_of(&response).is_some();
    if let (false, Some(outcome)) = (failed, response.extensions().get::<rpc::StreamOutcome>()) {
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
    entry.finish(crate::audit::Note::outcome(&response, false));
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
    let route = match state.route_for(caller, name).await {
        Ok(route) => route,
        Err(domain::Error::NotFound { .. }) => {
            return rpc::error(
                StatusCode::NOT_FOUND,
                None,
                rpc::INVALID_REQUEST,
                format!("no server named '{name}' is registered"),
            );
        }
        Err(domain::Error::Invalid { message, .. }) => {
            // A name two tenants use privately, asked for by the local operator.
            return rpc::error(StatusCode::CONFLICT, None, rpc::INVALID_REQUEST, message);
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
    entry.server_tenant(route.server.tenant.as_deref());
    // From here on the server is one the caller may see: its calls are counted per server.
    let mut response = forward_to(state, caller, name, parts, body, entry, &route).await;
    if state.metrics.keeps_servers() {
        let label = crate::metrics::server_label(&route.server);
        response.extensions_mut().insert(Known(label));
    }
    response
}

/// A response about a registered server the caller may see, with the label of its metrics (see
/// [`handle`]).
#[derive(Clone)]
struct Known(String);

/// A message, or each message of a batch.
fn messages(call: &McpCall) -> &[McpCall] {
    if call.batch.is_empty() {
        std::slice::from_ref(call)
    } else {
        call.batch.as_slice()
    }
}

/// Authorizes a message, or every message of a batch, by the policy's roles.
fn authorize(
    state: &Proxy,
    caller: &domain::Principal,
    server: &domain::Server,
    call: &McpCall,
) -> Result<(), crate::policy::Refusal> {
    messages(call).iter().try_for_each(|one| {
        state
            .gate
            .authorize_forward(caller, server, &one.method, one.name.as_deref())
    })
}

/// Spends the tool budgets of a message, or of every message of a batch.
async fn spend(
    state: &Proxy,
    caller: &domain::Principal,
    server: &domain::Server,
    call: &McpCall,
) -> Result<(), crate::policy::Refusal> {
    for one in messages(call) {
        state
            .gate
            .spend_forward(caller, server, &one.method, one.name.as_deref())
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upstreams_error_at_an_http_error_status_names_the_server() {
        let named = |body: &str| {
            relay::naming_the_server(body.as_bytes(), "weather", StatusCode::NOT_FOUND)
                .map(|b| serde_json::from_slice::<serde_json::Value>(&b).expect("JSON"))
        };
        let error = r#"{"jsonrpc":"2.0","id":3,"error":{"code":-32001,"message":"Session not found","data":{"x":1}}}"#;
        assert_eq!(
            named(error),
            Some(
                serde_json::json!({"jsonrpc":"2.0","id":3,"error":{"code":-32001,
                "message":"server 'weather' answered HTTP 404: Session not found","data":{"x":1}}})
            )
        );
        let once = serde_json::to_string(&named(error).expect("named")).expect("text");
        assert_eq!(named(&once), None, "named once");
        assert_eq!(named(r#"{"jsonrpc":"2.0","id":3,"result":{}}"#), None);
        assert_eq!(named(r#"{"error":{"code":1}}"#), None);
        assert_eq!(named(r#"[{"error":{"message":"a batch"}}]"#), None);
        assert_eq!(named("not json"), None);
    }

    #[test]
    fn a_listing_is_filtered_in_json_in_a_batch_and_in_each_event_of_a_stream() {
        let hide = |result: &mut serde_json::Value| {
            if let Some(tools) = result.get_mut("tools").and_then(|t| t.as_array_mut()) {
                tools.retain(|t| t["name"] != "secret");
            }
        };
        let listing =
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"open"},{"name":"secret"}]}}"#;
        // Written again by serde_json: keys in order.
        let filtered = r#"{"id":1,"jsonrpc":"2.0","result":{"tools":[{"name":"open"}]}}"#;
        assert_eq!(filter_listing(listing.as_bytes(), false, hide), filtered);
        let batch = format!("[{listing},{{\"jsonrpc\":\"2.0\",\"method\":\"notifications/x\"}}]");
        assert_eq!(
            filter_listing(batch.as_bytes(), false, hide),
            format!("[{filtered},{{\"jsonrpc\":\"2.0\",\"method\":\"notifications/x\"}}]")
        );
        // A notification and a comment pass as they came; the response's other fields (event
        // type, id) are kept, its data filtered; line ends become "\n".
        let progress =
            "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n";
        let stream =
            format!(": hello\n\n{progress}event: message\r\nid: 7\r\ndata: {listing}\r\n\r\n");
        assert_eq!(
            filter_listing(stream.as_bytes(), true, hide),
            format!(": hello\n\n{progress}event: message\nid: 7\ndata: {filtered}\n\n")
        );
        // Not JSON: passed on untouched.
        assert_eq!(filter_listing(b"oops", false, hide), "oops");
    }

    #[test]
    fn a_json_answer_goes_to_clients_whose_accept_takes_it() {
        for (accept, takes) in [
            ("application/json, text/event-stream", true),
            ("text/event-stream, application/json;q=0.5", true),
            ("text/event-stream", false),
            ("*/*", true),
            ("application/*;q=0.1", true),
            ("application/json;q=0, text/event-stream", false),
            ("Application/JSON", true),
            ("application/jsonx", false),
            // The most specific range decides.
            ("application/json;q=0, */*", false),
            ("application/json;q=0, application/*", false),
            ("*/*;q=0, application/json", true),
            ("application/json;Q=0, text/event-stream", false),
            ("application/json;q=NaN, text/event-stream", false),
            ("application/json;q=oops", false),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, HeaderValue::from_static(accept));
            assert_eq!(accepts_json(&headers), takes, "{accept}");
        }
        assert!(!accepts_json(&HeaderMap::new()), "no Accept at all");
    }

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

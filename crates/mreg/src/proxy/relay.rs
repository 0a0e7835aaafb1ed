//! One admitted message on its way to the upstream and back: the request as the upstream gets it
//! (credentials added, the caller's own `Authorization` never), the answer checked (status, type,
//! size) and relayed as it streams, session ids sealed, tool lists filtered by policy.

use super::*;

/// The rest of [`proxy`], once the server is known and visible.
pub(super) async fn forward_to(
    state: &Proxy,
    caller: &std::sync::Arc<domain::Principal>,
    name: &str,
    mut parts: axum::http::request::Parts,
    body: Body,
    entry: &mut crate::audit::Entry,
    route: &domain::Route,
) -> Response {
    let server = &route.server;

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
    let refused = |refusal: crate::policy::Refusal, entry: &mut crate::audit::Entry| {
        entry.decide(&refusal);
        // A tool the caller may not call (or whose budget is spent) is an error inside its
        // session (200); a server it may not use at all is 403, whatever the message.
        let in_session = call.method == "tools/call"
            && (matches!(refusal, crate::policy::Refusal::Limited(_))
                || state
                    .gate
                    .rules()
                    .server(caller, server.tenant.as_deref(), server.name.as_str(), None)
                    .is_ok());
        crate::policy::answer::jsonrpc(&refusal, call.id.as_ref(), in_session)
    };
    if let Err(refusal) = authorize(state, caller, server, &call) {
        return refused(refusal, entry);
    }
    // The breaker after the roles: a caller the policy refuses learns nothing of the server's
    // health and never sets off the half-open probe; and before the budgets, which a call
    // refused as unavailable does not spend.
    if let Err(e) = state.health.ensure_reachable(server) {
        return rpc::error(
            StatusCode::SERVICE_UNAVAILABLE,
            call.id.as_ref(),
            rpc::UPSTREAM_ERROR,
            e.to_string(),
        );
    }
    if let Err(refusal) = spend(state, caller, server, &call).await {
        return refused(refusal, entry);
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
    // An SSE answer may come back as JSON (stream::single_answer) to a client that takes it.
    let takes_json = call.batch.is_empty() && accepts_json(&parts.headers);
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
        Ok(response) => {
            let response = match call.id.as_ref() {
                Some(id)
                    if takes_json
                        && rpc::media_type(response.headers())
                            .eq_ignore_ascii_case("text/event-stream") =>
                {
                    stream::single_answer(response, id, deadline, &state.tasks).await
                }
                _ => response,
            };
            relay(
                state,
                server,
                caller,
                &call,
                response,
                deadline,
                upstream_session.as_ref(),
            )
        }
        Err(refused) => refused,
    }
}

/// Whether a request's `Accept` takes a JSON answer: the most specific range that matches
/// `application/json` (itself, `application/*`, `*/*`) has a quality above zero.
pub(super) fn accepts_json(headers: &HeaderMap) -> bool {
    // (specificity, quality) of the best match so far.
    let mut best: Option<(usize, f32)> = None;
    let ranges = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    for range in ranges {
        let mut params = range.split(';');
        let kind = params.next().unwrap_or("").trim();
        // On every proxied request: matched without allocating.
        let Some(specificity) = ["*/*", "application/*", "application/json"]
            .iter()
            .position(|k| kind.eq_ignore_ascii_case(k))
        else {
            continue;
        };
        // A quality that does not parse is no quality: the range is refused.
        let quality = params
            .filter_map(|p| p.split_once('='))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
            .map_or(Some(1.0), |(_, q)| {
                q.trim().parse::<f32>().ok().filter(|q| q.is_finite())
            })
            .unwrap_or(0.0);
        if best.is_none_or(|(s, q)| specificity > s || (specificity == s && quality > q)) {
            best = Some((specificity, quality));
        }
    }
    best.is_some_and(|(_, quality)| quality > 0.0)
}

/// Largest JSON answer the gateway reads whole to check that it is JSON.
pub(super) const MAX_JSON_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// An upstream answer is JSON, an event stream, or empty; an answer to a request that is JSON
/// is read whole and must parse. Anything else (an HTML error page, a 200 whose "JSON" is not)
/// becomes a 502 JSON-RPC error naming the server, rather than reaching the client as it came.
pub(super) async fn checked<B>(
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
    // Only a request has an answer to read: a notification or a response (a client answering
    // the server's sampling or elicitation request) is accepted with 202, whose body, if any,
    // is nothing (FastMCP labels its empty 202 as JSON).
    if !json || call.id.is_none() || call.method == "response" || status == StatusCode::ACCEPTED {
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
    if !status.is_success()
        && let Some(named) = naming_the_server(&bytes, name, status)
    {
        let mut parts = parts;
        parts.headers.remove(header::CONTENT_LENGTH);
        return Ok(Response::from_parts(parts, Body::from(named)));
    }
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// An upstream's JSON-RPC error at an HTTP error status (a wrong path, a session it no longer
/// knows) with its message prefixed by the server and the status, as mreg's own errors are: the
/// client's user sees which server refused. Its code, data and id are kept. `None` when the
/// body is anything else.
pub(super) fn naming_the_server(bytes: &[u8], name: &str, status: StatusCode) -> Option<Vec<u8>> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let message = value.get_mut("error")?.get_mut("message")?;
    let text = message.as_str()?;
    let prefix = format!("server '{name}' answered HTTP {}", status.as_u16());
    if text.starts_with(&prefix) {
        return None;
    }
    *message = serde_json::Value::String(format!("{prefix}: {}", clipped(text, 1024)));
    serde_json::to_vec(&value).ok()
}

/// Removes from `headers` every header not named in `names` and not `also` kept. Done in place,
/// because on the proxy's path a request or response usually keeps most of its headers.
pub(super) fn keep_only(
    headers: &mut HeaderMap,
    names: &[HeaderName],
    also: impl Fn(&HeaderName) -> bool,
) {
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
pub(super) fn relay<B>(
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
    if lists_tools
        && state
            .gate
            .rules()
            .filters_tools(server.tenant.as_deref(), server.name.as_str())
    {
        let policy = state.gate.rules().clone();
        let caller = caller.clone();
        let server = server.clone();
        let stream = futures_util::stream::once(async move {
            let bytes = axum::body::to_bytes(Body::new(body), MAX_MCP_BODY_BYTES)
                .await
                .map_err(std::io::Error::other)?;
            Ok::<_, std::io::Error>(filter_listing(&bytes, is_sse, |result| {
                crate::policy::filter_tool_list(&policy, &caller, &server, result);
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
                timeout_of(server),
                state.tasks.cut_off(),
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

/// Applies `filter` to the `result` of every JSON-RPC response (single or batched) in a JSON or
/// SSE body.
pub(super) fn filter_listing(
    body: &[u8],
    is_sse: bool,
    filter: impl Fn(&mut serde_json::Value),
) -> Bytes {
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
    for event in crate::jsonrpc::sse::events(&text) {
        match apply(&crate::jsonrpc::sse::data(&event)) {
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
            None => out.push_str(&event),
        }
    }
    Bytes::from(out)
}

//! The chain after the principal is known: the gate (rate limit, REST roles), whose refusal is
//! audited, then the audit row of a REST mutation around the route.

use super::*;

/// The rest of the chain for an authenticated request: rate limit and REST roles (a refusal is
/// audited), then the audit entry of a REST mutation (its redacted JSON body as arguments, its
/// outcome from the answer's [`crate::audit::Note`]), then the handler. MCP messages are
/// audited where they are read: by the gateway's tools and by the proxy.
pub(super) async fn admit<S>(
    state: &Authenticator,
    principal: Arc<Principal>,
    mut request: Request,
    inner: S,
) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    // Nothing is allocated for the common case (an admitted read or MCP message): the audit
    // names are made only for a refusal or a mutation.
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .cloned();
    let route = route.as_ref().map(axum::extract::MatchedPath::as_str);
    // A budget counts REST requests and JSON-RPC requests; an MCP notification, response,
    // stream or session end is free.
    let counts = route.is_some_and(|r| r.starts_with("/api/"))
        || request
            .extensions()
            .get::<crate::jsonrpc::Peeked>()
            .is_some_and(crate::jsonrpc::Peeked::is_request);
    if let Err(refusal) = state
        .gate
        .check_request(&principal, request.method(), route, counts)
        .await
    {
        let (request_id, operation) = audit_names(&request, route);
        match state.audit.open(&principal, &request_id, operation).await {
            Ok(mut entry) => {
                let server = server_in_path(request.uri().path());
                entry.target(None, server);
                // A refused MCP message keeps its JSON-RPC method (and tool) in the row.
                if let Some(crate::jsonrpc::Peeked(Ok(call))) = request.extensions().get() {
                    entry.operation(&call.method);
                    if call.method == "tools/call" {
                        entry.target(call.name.as_deref(), server);
                    }
                }
                entry.refused(&refusal);
            }
            Err(e) => return audit_unavailable(&e),
        }
        return crate::policy::answer::rest(&refusal);
    }
    let mutation = !matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    ) && route.is_some_and(|r| r.starts_with("/api/"));
    if !mutation {
        request.extensions_mut().insert(principal);
        return run(inner, request).await;
    }
    request.extensions_mut().insert(principal.clone());
    let (request_id, operation) = audit_names(&request, route);
    let path = request.uri().path().to_owned();
    let mut entry = match state.audit.open(&principal, &request_id, operation).await {
        Ok(entry) => entry,
        Err(e) => return audit_unavailable(&e),
    };
    entry.target(None, server_in_path(&path));
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, state.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(e) if !crate::http::too_large(&e) => {
            let message = format!(
                "the request body cannot be read: {}",
                domain::text::root_cause(&e)
            );
            entry.finish(Err(message.clone()));
            return ApiError::new(axum::http::StatusCode::BAD_REQUEST, "bad_request", message)
                .into_response();
        }
        Err(_) => {
            let message = format!(
                "the request body is larger than {} bytes (MREG_MAX_BODY_BYTES)",
                state.max_body_bytes
            );
            entry.finish(Err(message.clone()));
            return ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                message,
            )
            .into_response();
        }
    };
    if let Ok(arguments) = serde_json::from_slice::<serde_json::Value>(&bytes) {
        // A registration names its server in the body.
        if server_in_path(&path).is_none()
            && path.starts_with("/api/v1/servers")
            && let Some(name) = arguments.get("name").and_then(|n| n.as_str())
        {
            entry.target(None, Some(name));
        }
        entry.arguments(arguments);
    }
    let (response, watched) = crate::audit::watch(run(
        inner,
        Request::from_parts(parts, axum::body::Body::from(bytes)),
    ))
    .await;
    entry.watched(&watched);
    // A change is answered once its row is kept: a crash the next moment loses no change. A
    // failed one says why: the error answer's note (the message the caller got).
    entry
        .finish_kept(crate::audit::Note::outcome(&response, false))
        .await;
    response
}

/// The request id and the operation (`METHOD /route`) of a request, for its audit row.
pub(super) fn audit_names(request: &Request, route: Option<&str>) -> (String, String) {
    let request_id = crate::http::request_id::of(request.extensions()).to_owned();
    let operation = format!(
        "{} {}",
        request.method(),
        route.unwrap_or(request.uri().path())
    );
    (request_id, operation)
}

/// The registered server a path names (`/api/v1/servers/{name}…`, `/servers/{name}/mcp`).
pub(super) fn server_in_path(path: &str) -> Option<&str> {
    let rest = path
        .strip_prefix("/api/v1/servers/")
        .or_else(|| path.strip_prefix("/servers/"))?;
    let name = rest.split('/').next()?;
    (!name.is_empty()).then_some(name)
}

/// 503 when the audit log cannot take another entry: the request is not run.
pub fn audit_unavailable(e: &crate::audit::AuditUnavailable) -> Response {
    ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "audit_unavailable",
        e.to_string(),
    )
    .into_response()
}

//! How a refusal of the policy chain leaves each edge. The chain decides, and counts the
//! refusal in `mreg_policy_refusals_total`, where it decides ([`super::Gate`],
//! [`super::limits::AddressLimit`]); these functions only say it, each edge in its own shape —
//! the REST error body, a JSON-RPC error (over HTTP for a proxied message, or in an MCP session
//! for the gateway's own tools), OAuth's `error`/`error_description`. Every one names the cause
//! (the roles that are missing, or how long to wait) and a spent budget carries `Retry-After`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Refusal;
use crate::http::error::ApiError;

/// The REST answer: 403 naming the roles (`required_roles`), or 429 with `Retry-After`.
pub fn rest(refusal: &Refusal) -> Response {
    match refusal {
        Refusal::Denied(denial) => ApiError::from(domain::Error::Forbidden(refusal.message()))
            .with_required_roles(denial.required.clone())
            .into_response(),
        Refusal::Limited(wait) => ApiError::rate_limited(refusal.message(), *wait).into_response(),
    }
}

/// The JSON-RPC error code and `data` of a refusal: forbidden (`data.required_roles`), or rate
/// limited (`data.retry_after_ms`).
pub fn rpc(refusal: &Refusal) -> (i64, Value) {
    match refusal {
        Refusal::Denied(denial) => (
            crate::jsonrpc::FORBIDDEN,
            json!({ "required_roles": denial.required }),
        ),
        Refusal::Limited(wait) => (
            crate::jsonrpc::RATE_LIMITED,
            json!({ "retry_after_ms": u64::try_from(wait.as_millis()).unwrap_or(u64::MAX) }),
        ),
    }
}

/// The answer to JSON-RPC message `id` over HTTP. A refused tool call (`in_session`) is an
/// error inside the session (200); a refused server or a spent budget is an HTTP status too
/// (403, or 429).
pub fn jsonrpc(refusal: &Refusal, id: Option<&Value>, in_session: bool) -> Response {
    let status = match (refusal, in_session) {
        (_, true) => StatusCode::OK,
        (Refusal::Denied(_), false) => StatusCode::FORBIDDEN,
        (Refusal::Limited(_), false) => StatusCode::TOO_MANY_REQUESTS,
    };
    let (code, data) = rpc(refusal);
    let response = crate::jsonrpc::error_with_data(status, id, code, refusal.message(), Some(data));
    with_retry_after(response, refusal)
}

/// The answer of an OAuth endpoint to a caller over its address budget (RFC 6749's error
/// shape: 429 `temporarily_unavailable`, `Retry-After`, never cached).
pub fn oauth(refusal: &Refusal) -> Response {
    let description = format!("too many requests from this address: {}", refusal.message());
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({ "error": "temporarily_unavailable", "error_description": description })),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    with_retry_after(response, refusal)
}

/// Adds `Retry-After` (whole seconds, rounded up) when the refusal is a spent budget.
fn with_retry_after(mut response: Response, refusal: &Refusal) -> Response {
    if let Some(secs) = refusal.retry_after_secs() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn denied() -> Refusal {
        Refusal::Denied(crate::config::policy::Denial {
            what: "the tool 'delete_server'".to_owned(),
            required: vec!["admin".to_owned()],
        })
    }

    #[test]
    fn every_edge_names_the_cause_and_a_spent_budget_says_when_to_retry() {
        let limited = Refusal::Limited(Duration::from_millis(1500));
        let rest_denied = rest(&denied());
        assert_eq!(rest_denied.status(), StatusCode::FORBIDDEN);
        let rest_limited = rest(&limited);
        assert_eq!(rest_limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(rest_limited.headers()[header::RETRY_AFTER], "2");

        assert_eq!(jsonrpc(&denied(), None, true).status(), StatusCode::OK);
        assert_eq!(
            jsonrpc(&denied(), None, false).status(),
            StatusCode::FORBIDDEN
        );
        let over = jsonrpc(&limited, None, false);
        assert_eq!(over.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(over.headers()[header::RETRY_AFTER], "2");
        assert_eq!(rpc(&limited).1["retry_after_ms"], 1500);
        assert_eq!(rpc(&denied()).1["required_roles"], json!(["admin"]));

        let oauth = oauth(&limited);
        assert_eq!(oauth.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(oauth.headers()[header::RETRY_AFTER], "2");
        assert_eq!(oauth.headers()[header::CACHE_CONTROL], "no-store");
    }
}

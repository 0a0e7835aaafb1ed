//! What the gateway reads from a JSON-RPC message on its way through (method, id, the tool or
//! resource it names) and the JSON-RPC errors it answers with itself.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// JSON-RPC: the body is not JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC: the body is not a valid request.
pub const INVALID_REQUEST: i64 = -32600;
/// Implementation-defined: the gateway could not get an answer from the upstream.
pub const UPSTREAM_ERROR: i64 = -32000;
/// Implementation-defined: the session is unknown (the client should start a new one).
pub const SESSION_NOT_FOUND: i64 = -32001;
/// MCP (2026-07-28): a header disagrees with the body.
pub const HEADER_MISMATCH: i64 = -32020;
/// The policy chain refused the message: a role is missing.
pub const FORBIDDEN: i64 = -32003;
/// The policy chain refused the message: the caller's budget is spent (`data.retry_after_ms`).
pub const RATE_LIMITED: i64 = -32029;

/// The MCP call a message makes, as the policy chain sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct McpCall {
    /// `tools/call`, `initialize`, … (`batch` for an array of messages).
    pub method: String,
    /// The tool or prompt name, or the resource URI, when the method names one.
    pub name: Option<String>,
    /// The request id (absent for notifications and responses).
    pub id: Option<Value>,
    /// For a batch, the call of each message (the policy chain admits every one).
    pub batch: Vec<McpCall>,
}

/// The parts of a message the gateway reads; everything else (the arguments above all) is
/// skipped by the parser rather than built into a tree, because this runs on every message.
#[derive(serde::Deserialize)]
struct Peek<'a> {
    #[serde(borrow, default)]
    jsonrpc: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    id: Option<Value>,
    #[serde(borrow, default)]
    method: Option<PeekMethod<'a>>,
    #[serde(borrow, default)]
    params: Option<PeekParamsOrOther<'a>>,
    #[serde(default)]
    result: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum PeekMethod<'a> {
    Name(#[serde(borrow)] std::borrow::Cow<'a, str>),
    Other(serde::de::IgnoredAny),
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum PeekParamsOrOther<'a> {
    Object(#[serde(borrow)] PeekParams<'a>),
    Other(serde::de::IgnoredAny),
}

#[derive(serde::Deserialize)]
struct PeekParams<'a> {
    #[serde(borrow, default)]
    name: Option<PeekText<'a>>,
    #[serde(borrow, default)]
    uri: Option<PeekText<'a>>,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum PeekText<'a> {
    Text(#[serde(borrow)] std::borrow::Cow<'a, str>),
    Other(serde::de::IgnoredAny),
}

impl PeekText<'_> {
    fn text(self) -> Option<String> {
        match self {
            Self::Text(text) => Some(text.into_owned()),
            Self::Other(_) => None,
        }
    }
}

/// Reads the call out of a message body; a problem is `(status, code, message)`.
pub fn inspect(body: &[u8]) -> Result<McpCall, (StatusCode, i64, String)> {
    let invalid = |why: &str| {
        (
            StatusCode::BAD_REQUEST,
            INVALID_REQUEST,
            format!("Invalid Request: {why}"),
        )
    };
    let parse_error = |e: serde_json::Error| {
        (
            StatusCode::BAD_REQUEST,
            PARSE_ERROR,
            format!("Parse error: the body is not JSON ({e})"),
        )
    };
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(b'[') => {
            let batch: Vec<Peek<'_>> = serde_json::from_slice(body).map_err(|e| {
                if e.is_data() {
                    invalid("a batch holds JSON-RPC messages")
                } else {
                    parse_error(e)
                }
            })?;
            if batch.is_empty() {
                return Err(invalid("empty batch"));
            }
            return Ok(McpCall {
                method: "batch".to_owned(),
                batch: batch
                    .into_iter()
                    .map(|peek| call_of(peek, &invalid))
                    .collect::<Result<_, _>>()?,
                ..McpCall::default()
            });
        }
        _ => {
            serde_json::from_slice::<serde::de::IgnoredAny>(body).map_err(parse_error)?;
            return Err(invalid("a message is a JSON object"));
        }
    }
    let peek: Peek<'_> = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            invalid("unexpected field types")
        } else {
            parse_error(e)
        }
    })?;
    call_of(peek, &invalid)
}

/// The call one message makes.
fn call_of(
    peek: Peek<'_>,
    invalid: &dyn Fn(&str) -> (StatusCode, i64, String),
) -> Result<McpCall, (StatusCode, i64, String)> {
    if peek.jsonrpc.as_deref() != Some("2.0") {
        return Err(invalid("\"jsonrpc\" must be \"2.0\""));
    }
    match peek.method {
        Some(PeekMethod::Name(method)) => {
            let name = match peek.params {
                Some(PeekParamsOrOther::Object(p)) => p
                    .name
                    .and_then(PeekText::text)
                    .or_else(|| p.uri.and_then(PeekText::text)),
                _ => None,
            };
            Ok(McpCall {
                method: method.into_owned(),
                name,
                id: peek.id,
                batch: Vec::new(),
            })
        }
        Some(PeekMethod::Other(_)) => Err(invalid("\"method\" must be a string")),
        None if peek.result.is_some() || peek.error.is_some() => Ok(McpCall {
            method: "response".to_owned(),
            name: None,
            id: peek.id,
            batch: Vec::new(),
        }),
        None => Err(invalid("no \"method\"")),
    }
}

/// Checks the `Mcp-Method` and `Mcp-Name` headers, when sent, against the body: the policy
/// chain acts on what the body says, so a header may not claim otherwise.
pub fn check_headers(headers: &HeaderMap, call: &McpCall) -> Result<(), (StatusCode, i64, String)> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(method) = header("mcp-method")
        && method != call.method
    {
        return Err((
            StatusCode::BAD_REQUEST,
            HEADER_MISMATCH,
            format!(
                "Mcp-Method header '{method}' does not match the body's method '{}'",
                call.method
            ),
        ));
    }
    if let (Some(name), Some(body_name)) = (header("mcp-name"), call.name.as_deref())
        && !name.starts_with("=?base64?")
        && name != body_name
    {
        return Err((
            StatusCode::BAD_REQUEST,
            HEADER_MISMATCH,
            format!("Mcp-Name header '{name}' does not match the body's '{body_name}'"),
        ));
    }
    Ok(())
}

/// The JSON-RPC message one SSE event carries (its `data:` lines, joined), if any.
pub fn sse_event_message(event: &str) -> Option<Value> {
    let data: Vec<&str> = event
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    serde_json::from_str(&data.join("\n")).ok()
}

/// Whether `message` is the response (result or error) to the request with `id`.
pub fn is_response_to(message: &Value, id: &Value) -> bool {
    message.get("id") == Some(id)
        && (message.get("result").is_some() || message.get("error").is_some())
}

/// A JSON-RPC error response from the gateway itself.
pub fn error(
    status: StatusCode,
    id: Option<&Value>,
    code: i64,
    message: impl Into<String>,
) -> Response {
    error_with_data(status, id, code, message, None)
}

/// [`error`] with a `data` member.
pub fn error_with_data(
    status: StatusCode,
    id: Option<&Value>,
    code: i64,
    message: impl Into<String>,
    data: Option<Value>,
) -> Response {
    let message = message.into();
    let failure = Failure(message.clone());
    let mut error = json!({ "code": code, "message": message });
    if let Some(data) = data {
        error["data"] = data;
    }
    let body = json!({
        "jsonrpc": "2.0",
        "id": id.cloned().unwrap_or(Value::Null),
        "error": error,
    });
    let mut response = (status, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response.extensions_mut().insert(failure);
    response
}

/// The message of an error answer the gateway made itself, kept in the response's extensions
/// for the audit row.
#[derive(Debug, Clone)]
pub struct Failure(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_read_from_requests_notifications_and_batches() {
        let call = inspect(br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#)
            .expect("valid");
        assert_eq!(
            call,
            McpCall {
                method: "tools/call".into(),
                name: Some("echo".into()),
                id: Some(json!(7)),
                batch: Vec::new(),
            }
        );
        let read = inspect(
            br#"{"jsonrpc":"2.0","id":"a","method":"resources/read","params":{"uri":"demo://x"}}"#,
        )
        .expect("valid");
        assert_eq!(read.name.as_deref(), Some("demo://x"));
        let note =
            inspect(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).expect("valid");
        assert_eq!(note.id, None);
        let batch = inspect(
            br#"[{"jsonrpc":"2.0","method":"x"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo"}}]"#,
        )
        .expect("valid");
        assert_eq!(batch.method, "batch");
        let calls: Vec<(&str, Option<&str>)> = batch
            .batch
            .iter()
            .map(|c| (c.method.as_str(), c.name.as_deref()))
            .collect();
        assert_eq!(calls, [("x", None), ("tools/call", Some("echo"))]);
        for (bad, code) in [
            (&b"{not json"[..], PARSE_ERROR),
            (br#"{"id":1,"method":"x"}"#, INVALID_REQUEST),
            (br#"{"jsonrpc":"2.0","id":1,"method":5}"#, INVALID_REQUEST),
            (br#"{"jsonrpc":"2.0","id":1}"#, INVALID_REQUEST),
            (br#"[]"#, INVALID_REQUEST),
            (br#"[{"jsonrpc":"2.0","method":"x"},5]"#, INVALID_REQUEST),
            (br#"[{"id":1,"method":"x"}]"#, INVALID_REQUEST),
            (br#""text""#, INVALID_REQUEST),
        ] {
            assert_eq!(
                inspect(bad).map_err(|e| e.1).err(),
                Some(code),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn headers_that_contradict_the_body_are_refused() {
        let call = McpCall {
            method: "tools/call".into(),
            name: Some("echo".into()),
            id: None,
            batch: Vec::new(),
        };
        let mut headers = HeaderMap::new();
        headers.insert("mcp-method", HeaderValue::from_static("tools/call"));
        headers.insert("mcp-name", HeaderValue::from_static("echo"));
        assert!(check_headers(&headers, &call).is_ok());
        headers.insert("mcp-name", HeaderValue::from_static("delete_everything"));
        assert_eq!(
            check_headers(&headers, &call).map_err(|e| e.1),
            Err(HEADER_MISMATCH)
        );
        headers.remove("mcp-name");
        headers.insert("mcp-method", HeaderValue::from_static("tools/list"));
        assert_eq!(
            check_headers(&headers, &call).map_err(|e| e.1),
            Err(HEADER_MISMATCH)
        );
    }
}

//! What the gateway reads from a JSON-RPC message on its way through (method, id, the tool or
//! resource it names) and the JSON-RPC errors it answers with itself.

pub mod sse;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Largest MCP message (request body) the gateway reads, on `/mcp` and when forwarding.
pub const MAX_MCP_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The JSON-RPC call of a POSTed message, as the edge read it (or why it could not).
#[derive(Debug, Clone)]
pub struct Peeked(pub Result<McpCall, (StatusCode, i64, String)>);

impl Peeked {
    /// Whether the message holds at least one JSON-RPC request (a message with a method and an
    /// id): what a rate-limit budget counts. A message that cannot be read counts too, so that
    /// garbage is not free.
    pub fn is_request(&self) -> bool {
        match &self.0 {
            Ok(call) if call.batch.is_empty() => call.id.is_some() && call.method != "response",
            Ok(call) => call
                .batch
                .iter()
                .any(|c| c.id.is_some() && c.method != "response"),
            Err(_) => true,
        }
    }
}

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
/// No usable bearer token (HTTP 401; `WWW-Authenticate` says where to get one).
pub const UNAUTHENTICATED: i64 = -32004;
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
    /// `params.arguments` as it was sent (raw JSON text), for the audit log.
    pub arguments: Option<String>,
    /// For a batch, the call of each message (the policy chain admits every one).
    pub batch: Vec<McpCall>,
}

/// The parts of a message the gateway reads. Everything else is skipped by the parser rather
/// than built into a tree, and nothing is buffered to be parsed twice (as `#[serde(untagged)]`
/// would), because this runs on every message. A repeated member is an error, as in a derived
/// parser: the upstream must not see another method or tool than the policy chain did.
#[derive(serde::Deserialize)]
struct Peek<'a> {
    #[serde(borrow, default)]
    jsonrpc: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    id: Option<Value>,
    #[serde(borrow, default)]
    method: Option<Text<'a>>,
    #[serde(borrow, default)]
    params: Option<Params<'a>>,
    #[serde(default)]
    result: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

/// A member that should be a string: its text, or `None` for any other JSON value.
struct Text<'a>(Option<std::borrow::Cow<'a, str>>);

/// `params`: the name (or URI) it gives and its raw arguments; empty when it is not an object.
#[derive(Default)]
struct Params<'a> {
    name: Option<Text<'a>>,
    uri: Option<Text<'a>>,
    arguments: Option<&'a serde_json::value::RawValue>,
}

/// Accepts any JSON value; `on_other` makes the result for a value that is not a string or an
/// object (whose contents, like those of an array, are skipped).
macro_rules! skip_other_values {
    ($on_other:expr) => {
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($on_other)
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($on_other)
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($on_other)
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($on_other)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok($on_other)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok($on_other)
        }
    };
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(Text(Some(std::borrow::Cow::Borrowed(v))))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Some(std::borrow::Cow::Owned(v.to_owned()))))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Text(None))
            }
            skip_other_values!(Text(None));
        }
        deserializer.deserialize_any(Visit(std::marker::PhantomData))
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Params<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// The members of `params` that are read.
        enum Key {
            Name,
            Uri,
            Arguments,
            Other,
        }
        impl<'de> serde::Deserialize<'de> for Key {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Visit;
                impl serde::de::Visitor<'_> for Visit {
                    type Value = Key;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a member name")
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key, E> {
                        Ok(match v {
                            "name" => Key::Name,
                            "uri" => Key::Uri,
                            "arguments" => Key::Arguments,
                            _ => Key::Other,
                        })
                    }
                }
                deserializer.deserialize_identifier(Visit)
            }
        }
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = Params<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                use serde::de::Error;
                let mut params = Params::default();
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::Name if params.name.is_some() => {
                            return Err(A::Error::duplicate_field("name"));
                        }
                        Key::Name => params.name = Some(map.next_value()?),
                        Key::Uri if params.uri.is_some() => {
                            return Err(A::Error::duplicate_field("uri"));
                        }
                        Key::Uri => params.uri = Some(map.next_value()?),
                        Key::Arguments if params.arguments.is_some() => {
                            return Err(A::Error::duplicate_field("arguments"));
                        }
                        Key::Arguments => params.arguments = Some(map.next_value()?),
                        Key::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(params)
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Params::default())
            }
            skip_other_values!(Params::default());
        }
        deserializer.deserialize_any(Visit(std::marker::PhantomData))
    }
}

/// Most messages in one batch (JSON-RPC batches are gone from MCP since 2025-06-18; clients of
/// the earlier versions that send them send a few). Notifications in a batch spend no budget, so
/// without a bound one request carried 20,000 of them to an upstream.
pub const MAX_BATCH: usize = 100;

/// Deepest nesting of arrays and objects a message to the gateway's own server may have: what
/// its JSON reader takes (serde_json's recursion limit is 128; past it the SDK answered 415).
pub const MAX_DEPTH: usize = 128;

/// Whether `body`'s arrays and objects nest deeper than `max` (strings skipped, escapes too):
/// one pass over the bytes, no parsing.
pub fn nests_deeper_than(body: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0_usize, false, false);
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
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
            if batch.len() > MAX_BATCH {
                return Err(invalid(&format!(
                    "a batch holds at most {MAX_BATCH} messages; this one holds {}",
                    batch.len()
                )));
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
    let params = peek.params.unwrap_or_default();
    match peek.method {
        Some(Text(Some(method))) => Ok(McpCall {
            method: method.into_owned(),
            name: params
                .name
                .and_then(|t| t.0)
                .or_else(|| params.uri.and_then(|t| t.0))
                .map(std::borrow::Cow::into_owned),
            id: peek.id,
            arguments: params.arguments.map(|raw| raw.get().to_owned()),
            batch: Vec::new(),
        }),
        Some(Text(None)) => Err(invalid("\"method\" must be a string")),
        None if peek.result.is_some() || peek.error.is_some() => Ok(McpCall {
            method: "response".to_owned(),
            id: peek.id,
            ..McpCall::default()
        }),
        None => Err(invalid("no \"method\"")),
    }
}

/// Checks the `Mcp-Method` and `Mcp-Name` headers, when sent, against the body: the policy
/// chain acts on what the body says, so a header may not claim otherwise.
pub fn check_headers(headers: &HeaderMap, call: &McpCall) -> Result<(), (StatusCode, i64, String)> {
    // Named by constants: a name given as a string would be parsed again on every message.
    const METHOD: HeaderName = HeaderName::from_static("mcp-method");
    const NAME: HeaderName = HeaderName::from_static("mcp-name");
    let header = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(method) = header(&METHOD)
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
    if let (Some(name), Some(body_name)) = (header(&NAME), call.name.as_deref()) {
        // A name that is not plain ASCII is sent base64-encoded: `=?base64?…?=`.
        let decoded = match name
            .strip_prefix("=?base64?")
            .and_then(|rest| rest.strip_suffix("?="))
        {
            Some(encoded) => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
            }
            None => Some(name.to_owned()),
        };
        if decoded.as_deref() != Some(body_name) {
            return Err((
                StatusCode::BAD_REQUEST,
                HEADER_MISMATCH,
                format!("Mcp-Name header '{name}' does not match the body's '{body_name}'"),
            ));
        }
    }
    Ok(())
}

/// The media type of a message (`application/json` of `application/json; charset=utf-8`),
/// without allocating: this runs on every request and answer of the proxy.
pub fn media_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map_or("", str::trim)
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
    let noted = message.clone();
    let mut error = json!({ "code": code, "message": message });
    // Every error of the gateway says its HTTP status in `data`, as the edge's do.
    let mut data = data.unwrap_or_else(|| json!({}));
    if data.is_object() && data.get("status").is_none() {
        data["status"] = json!(status.as_u16());
    }
    error["data"] = data;
    let body = json!({
        "jsonrpc": "2.0",
        "id": id.cloned().unwrap_or(Value::Null),
        "error": error,
    });
    let mut response = (status, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    crate::audit::Note::failed(response, noted)
}

/// For an answer streamed as SSE: whether the response to the request has passed, and, once the
/// stream is over, why the upstream failed to answer (it ended or broke off the stream first).
/// Kept in the response's extensions, so that the audit row is completed when the stream ends
/// rather than when it starts.
#[derive(Debug, Clone, Default)]
pub struct StreamOutcome(std::sync::Arc<Outcome>);

#[derive(Debug, Default)]
struct Outcome {
    failed: std::sync::OnceLock<String>,
    answered: std::sync::atomic::AtomicBool,
}

impl StreamOutcome {
    /// Records why the request was left unanswered (the first reason stays).
    pub fn fail(&self, why: String) {
        let _ = self.0.failed.set(why);
    }

    /// Why the request was left unanswered, if it was.
    pub fn failure(&self) -> Option<&str> {
        self.0.failed.get().map(String::as_str)
    }

    /// Records that the response to the request is in the bytes being passed on.
    pub fn answer(&self) {
        self.0
            .answered
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the response to the request has been passed on.
    pub fn answered(&self) -> bool {
        self.0.answered.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod properties;

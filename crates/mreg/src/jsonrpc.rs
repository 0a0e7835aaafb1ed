//! What the gateway reads from a JSON-RPC message on its way through (method, id, the tool or
//! resource it names) and the JSON-RPC errors it answers with itself.

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

/// For an answer streamed as SSE: set, once the stream is over, to why the upstream failed to
/// answer (it ended or broke off the stream first). Kept in the response's extensions, so that
/// the audit row is completed when the stream ends rather than when it starts.
#[derive(Debug, Clone, Default)]
pub struct StreamOutcome(pub std::sync::Arc<std::sync::OnceLock<String>>);

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
                arguments: Some("{}".into()),
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
    fn the_reader_keeps_raw_arguments_and_refuses_repeated_members() {
        let call = inspect(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools\/call","params":{"arguments":{"a":[1,{"b":null}]},"meta":[{"x":1}],"name":"e\u0063ho"}}"#,
        )
        .expect("valid");
        assert_eq!(call.method, "tools/call");
        assert_eq!(call.name.as_deref(), Some("echo"));
        assert_eq!(call.arguments.as_deref(), Some(r#"{"a":[1,{"b":null}]}"#));
        // A name that is not a string names nothing; params that are not an object are ignored.
        for odd in [
            &br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":{"x":"y"}}}"#[..],
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":[1,2]}}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":"echo"}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":[{"name":"echo"}]}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":null}"#,
        ] {
            let call = inspect(odd).expect("valid");
            assert_eq!((call.method.as_str(), call.name), ("tools/call", None));
        }
        // The upstream must not see another method or tool than the policy chain did.
        for repeated in [
            &br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"wipe"}}"#[..],
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call"}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"arguments":{},"arguments":{}}}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"uri":"a","uri":"b"}}"#,
        ] {
            assert_eq!(
                inspect(repeated).map_err(|e| e.1).err(),
                Some(INVALID_REQUEST),
                "{}",
                String::from_utf8_lossy(repeated)
            );
        }
    }

    #[test]
    fn headers_that_contradict_the_body_are_refused() {
        let call = McpCall {
            method: "tools/call".into(),
            name: Some("echo".into()),
            ..McpCall::default()
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
        // Base64-encoded names are decoded and compared too: "echo", then "delete".
        headers.insert("mcp-name", HeaderValue::from_static("=?base64?ZWNobw==?="));
        assert!(check_headers(&headers, &call).is_ok());
        for wrong in [
            "=?base64?ZGVsZXRl?=",
            "=?base64?not base64?=",
            "=?base64?ZWNobw==",
        ] {
            headers.insert("mcp-name", HeaderValue::from_static(wrong));
            assert_eq!(
                check_headers(&headers, &call).map_err(|e| e.1),
                Err(HEADER_MISMATCH),
                "{wrong}"
            );
        }
        headers.remove("mcp-name");
        headers.insert("mcp-method", HeaderValue::from_static("tools/list"));
        assert_eq!(
            check_headers(&headers, &call).map_err(|e| e.1),
            Err(HEADER_MISMATCH)
        );
    }
}

/// Properties of the parsers at the edge, over generated and mutated input: nothing panics,
/// and what the policy chain reads is what the upstream will read.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Valid messages that mutations start from.
    const SEEDS: [&str; 5] = [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":"a","result":{}}"#,
        r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"x"}]"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"demo://x"}}"#,
    ];

    fn mutated() -> impl Strategy<Value = Vec<u8>> {
        (
            prop::sample::select(SEEDS.as_slice()),
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
            any::<prop::sample::Index>(),
        )
            .prop_map(|(seed, flips, cut)| {
                let mut bytes = seed.as_bytes().to_vec();
                for (at, byte) in flips {
                    let i = at.index(bytes.len());
                    bytes[i] = byte;
                }
                bytes.truncate(cut.index(bytes.len() + 1));
                bytes
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn inspect_never_panics_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = inspect(&bytes);
        }

        #[test]
        fn a_message_read_is_the_message_the_upstream_reads(bytes in mutated()) {
            // The peek does not decode the parts it skips (an argument's text may hold a lone
            // surrogate escape that a full parse refuses); where a full parse succeeds, it must
            // see the same method and name as the policy chain did.
            if let (Ok(call), Ok(value)) = (inspect(&bytes), serde_json::from_slice::<serde_json::Value>(&bytes)) {
                if call.batch.is_empty() && call.method != "response" {
                    prop_assert_eq!(value["method"].as_str(), Some(call.method.as_str()));
                    let named = value["params"]["name"].as_str().or(value["params"]["uri"].as_str());
                    prop_assert_eq!(named, call.name.as_deref());
                }
                for (one, value) in call.batch.iter().zip(value.as_array().into_iter().flatten()) {
                    if one.method != "response" {
                        prop_assert_eq!(value["method"].as_str(), Some(one.method.as_str()));
                    }
                }
            }
        }

        #[test]
        fn headers_never_panic_and_a_contradiction_is_refused(
            method in any::<String>(),
            name in any::<String>(),
            bytes in mutated(),
        ) {
            if let Ok(call) = inspect(&bytes) {
                let mut headers = HeaderMap::new();
                if let Ok(value) = HeaderValue::from_str(&method) {
                    headers.insert("mcp-method", value);
                }
                if let Ok(value) = HeaderValue::from_str(&name) {
                    headers.insert("mcp-name", value);
                }
                let sent = headers.get("mcp-method").and_then(|v| v.to_str().ok());
                if check_headers(&headers, &call).is_ok() {
                    prop_assert!(sent.is_none_or(|m| m == call.method));
                }
            }
        }
    }
}

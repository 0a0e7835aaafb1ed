//! One health probe of one server, over plain HTTP so that every failure can be classified.
//!
//! Servers of the 2026-07-28 protocol are asked `server/discover` (stateless, nothing to clean
//! up). Older servers get `initialize`, `notifications/initialized`, `tools/list`, and then the
//! session is ended with DELETE, so probes never pile up sessions on the upstream. 401 and 403
//! mean "reachable, needs credentials". Successful probes also return the server's tools.

use std::time::{Duration, Instant};

use domain::upstream::UpstreamHeaders;
use domain::{Outcome, Server, ToolInfo};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::jsonrpc as rpc;

/// The newest protocol, probed with `server/discover`.
pub const STATELESS_VERSION: &str = "2026-07-28";
/// The protocol asked for in `initialize`.
pub const SESSION_VERSION: &str = "2025-11-25";
/// Largest answer a probe reads.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;
/// Most `tools/list` pages a probe follows.
const MAX_TOOL_PAGES: usize = 20;

/// What a probe found.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// The outcome.
    pub outcome: Outcome,
    /// What went wrong, for people.
    pub detail: Option<String>,
    /// How long it took.
    pub latency: Duration,
    /// The protocol version the server spoke.
    pub protocol_version: Option<String>,
    /// Its tools, when it answered `tools/list`.
    pub tools: Option<Vec<ToolInfo>>,
}

struct Failure {
    outcome: Outcome,
    detail: String,
}

impl Failure {
    fn new(outcome: Outcome, detail: impl Into<String>) -> Self {
        Self {
            outcome,
            detail: detail.into(),
        }
    }
}

/// Whether a TLS error is somewhere in the chain of `e` (including errors wrapped inside
/// `io::Error`s, as the TLS connector does).
fn is_tls(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(error) = cause {
        if error.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(inner) = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            && is_tls(inner)
        {
            return true;
        }
        cause = error.source();
    }
    false
}

fn classify(e: &reqwest::Error) -> Failure {
    let cause = domain::text::root_cause(e);
    let lower = cause.to_lowercase();
    let outcome = if e.is_timeout() {
        Outcome::Timeout
    } else if is_tls(e) {
        Outcome::Tls
    } else if lower.contains("refused") {
        Outcome::Refused
    } else if lower.contains("dns") || lower.contains("lookup") || lower.contains("resolve") {
        Outcome::Dns
    } else if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake")
    {
        Outcome::Tls
    } else if e.is_connect() {
        Outcome::Connect
    } else {
        Outcome::Protocol
    };
    Failure::new(outcome, cause)
}

struct Prober<'a> {
    http: &'a reqwest::Client,
    server: &'a Server,
    credentials: Option<&'a UpstreamHeaders>,
}

struct Answer {
    message: Value,
    session: Option<String>,
}

impl Prober<'_> {
    async fn send(
        &self,
        method: Method,
        body: Option<&Value>,
        version: &str,
        session: Option<&str>,
    ) -> Result<reqwest::Response, Failure> {
        let mut request = self
            .http
            .request(method, self.server.url.as_str())
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", version);
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        for (name, value) in self.credentials.iter().flat_map(|c| c.iter()) {
            request = request.header(name, value);
        }
        if let Some(body) = body {
            if let Some(method) = body.get("method").and_then(Value::as_str) {
                request = request.header("mcp-method", method);
            }
            request = request.json(body);
        }
        request.send().await.map_err(|e| classify(&e))
    }

    /// Sends a request and reads the JSON-RPC response to it (from JSON or SSE).
    async fn call(
        &self,
        body: &Value,
        version: &str,
        session: Option<&str>,
    ) -> Result<Answer, Failure> {
        let response = self
            .send(Method::POST, Some(body), version, session)
            .await?;
        let status = response.status();
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return Err(Failure::new(
                Outcome::AuthRequired,
                format!("HTTP {}", status.as_u16()),
            ));
        }
        if !status.is_success() {
            return Err(Failure::new(
                Outcome::Http,
                format!("HTTP {}", status.as_u16()),
            ));
        }
        let session = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let sse = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let id = body.get("id").cloned().unwrap_or(Value::Null);
        let message = read_answer(response, sse, &id).await?;
        Ok(Answer { message, session })
    }

    async fn notify(&self, body: &Value, version: &str, session: Option<&str>) {
        let _ = self.send(Method::POST, Some(body), version, session).await;
    }

    async fn end_session(&self, session: &str, version: &str) {
        let _ = self
            .send(Method::DELETE, None, version, Some(session))
            .await;
    }

    async fn discover(&self) -> Result<Option<String>, Failure> {
        let body = json!({
            "jsonrpc": "2.0", "id": 1, "method": "server/discover",
            "params": { "_meta": {
                "io.modelcontextprotocol/protocolVersion": STATELESS_VERSION,
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": { "name": "mreg-health", "version": env!("CARGO_PKG_VERSION") },
            } },
        });
        match self.call(&body, STATELESS_VERSION, None).await {
            Ok(answer) => {
                let supported = answer.message["result"]["supportedVersions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if supported.iter().any(|v| v == STATELESS_VERSION) {
                    Ok(Some(STATELESS_VERSION.to_owned()))
                } else {
                    Ok(None)
                }
            }
            // An older server refuses the method or the bare request; try initialize.
            Err(f) if matches!(f.outcome, Outcome::Http | Outcome::Protocol) => Ok(None),
            Err(f) => Err(f),
        }
    }

    async fn list_tools(
        &self,
        version: &str,
        session: Option<&str>,
    ) -> Result<Vec<ToolInfo>, Failure> {
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        for page in 0..MAX_TOOL_PAGES {
            let mut params = json!({});
            if version == STATELESS_VERSION {
                params["_meta"] = json!({
                    "io.modelcontextprotocol/protocolVersion": STATELESS_VERSION,
                    "io.modelcontextprotocol/clientCapabilities": {},
                });
            }
            if let Some(cursor) = &cursor {
                params["cursor"] = json!(cursor);
            }
            let body = json!({ "jsonrpc": "2.0", "id": 10 + page, "method": "tools/list", "params": params });
            let answer = self.call(&body, version, session).await?;
            let result = &answer.message["result"];
            let Some(list) = result["tools"].as_array() else {
                return Err(Failure::new(
                    Outcome::Protocol,
                    "tools/list returned no tools array",
                ));
            };
            tools.extend(list.iter().filter_map(tool_info));
            cursor = result["nextCursor"].as_str().map(str::to_owned);
            if cursor.is_none() {
                break;
            }
        }
        Ok(tools)
    }

    async fn run(&self) -> Result<(String, Option<Vec<ToolInfo>>), Failure> {
        if let Some(version) = self.discover().await? {
            let tools = self.list_tools(&version, None).await.ok();
            return Ok((version, tools));
        }
        let init = json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {
                "protocolVersion": SESSION_VERSION,
                "capabilities": {},
                "clientInfo": { "name": "mreg-health", "version": env!("CARGO_PKG_VERSION") },
            },
        });
        let answer = self.call(&init, SESSION_VERSION, None).await?;
        let result = &answer.message["result"];
        let Some(version) = result["protocolVersion"].as_str().map(str::to_owned) else {
            let why = answer.message["error"]["message"]
                .as_str()
                .unwrap_or("no protocolVersion in the answer");
            return Err(Failure::new(
                Outcome::Protocol,
                format!("initialize failed: {why}"),
            ));
        };
        let session = answer.session.as_deref();
        self.notify(
            &json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }),
            &version,
            session,
        )
        .await;
        let tools = if result["capabilities"]["tools"].is_object() {
            self.list_tools(&version, session).await.ok()
        } else {
            Some(Vec::new())
        };
        if let Some(session) = session {
            self.end_session(session, &version).await;
        }
        Ok((version, tools))
    }
}

fn tool_info(tool: &Value) -> Option<ToolInfo> {
    Some(ToolInfo {
        name: tool["name"].as_str()?.to_owned(),
        title: tool["title"].as_str().map(str::to_owned),
        description: tool["description"]
            .as_str()
            .unwrap_or_default()
            .chars()
            .take(4000)
            .collect(),
        input_schema: tool
            .get("inputSchema")
            .cloned()
            .unwrap_or_else(|| json!({ "type": "object" })),
    })
}

async fn read_answer(
    mut response: reqwest::Response,
    sse: bool,
    id: &Value,
) -> Result<Value, Failure> {
    // The bytes as they come: an SSE answer is split into events as it arrives (each read once,
    // decoded once whole, so a character cut between chunks stays whole); a JSON answer is
    // parsed when it has all come.
    let (mut body, mut events, mut received) = (Vec::new(), rpc::sse::Splitter::default(), 0);
    while let Some(chunk) = response.chunk().await.map_err(|e| classify(&e))? {
        received += chunk.len();
        if received > MAX_ANSWER_BYTES {
            return Err(Failure::new(Outcome::Protocol, "the answer is too large"));
        }
        if !sse {
            body.extend_from_slice(&chunk);
            continue;
        }
        events.push(&chunk);
        while let Some(message) = events.next_event(rpc::sse::message) {
            if let Some(message) = message.filter(|m| rpc::is_response_to(m, id)) {
                return Ok(message);
            }
        }
    }
    if sse {
        return Err(Failure::new(
            Outcome::Protocol,
            "the event stream ended without an answer",
        ));
    }
    // Lossy, as the proxy relays it: text an upstream got wrong is not a protocol failure.
    let message: Value = serde_json::from_str(&String::from_utf8_lossy(&body))
        .map_err(|_| Failure::new(Outcome::Protocol, "the answer is not JSON-RPC"))?;
    if message["jsonrpc"] != "2.0" {
        return Err(Failure::new(
            Outcome::Protocol,
            "the answer is not JSON-RPC",
        ));
    }
    Ok(message)
}

/// Text an upstream chose (an error it answered), as mreg may show it to anyone who may see the
/// server: a stored credential value it repeats (servers often echo a rejected key) is masked,
/// and control characters — terminal escape sequences among them — become `\u{fffd}`.
fn upstream_text(text: &str, credentials: Option<&UpstreamHeaders>) -> String {
    let mut text = text.to_owned();
    for (_, value) in credentials.into_iter().flat_map(UpstreamHeaders::iter) {
        // Also the value without a scheme word (`Bearer sk-…` echoed as `sk-…`).
        let secret = value.rsplit(' ').next().unwrap_or(value);
        for needle in [value, secret] {
            if needle.len() >= 4 {
                text = text.replace(needle, "[redacted]");
            }
        }
    }
    printable(&text)
}

/// `text` with control characters (but for tab and newline) replaced by `\u{fffd}`.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect()
}

/// A tool as its server describes it, with no control characters in the text people read.
fn printable_tool(mut tool: ToolInfo) -> ToolInfo {
    tool.name = printable(&tool.name);
    tool.title = tool.title.as_deref().map(printable);
    tool.description = printable(&tool.description);
    tool
}

/// Probes `server` within `timeout`.
pub async fn probe(
    http: &reqwest::Client,
    server: &Server,
    credentials: Option<&UpstreamHeaders>,
    timeout: Duration,
) -> ProbeReport {
    let started = Instant::now();
    let prober = Prober {
        http,
        server,
        credentials,
    };
    let outcome = tokio::time::timeout(timeout, prober.run()).await;
    let latency = started.elapsed();
    match outcome {
        Ok(Ok((version, tools))) => ProbeReport {
            outcome: Outcome::Ok,
            detail: None,
            latency,
            protocol_version: Some(version),
            tools: tools.map(|tools| tools.into_iter().map(printable_tool).collect()),
        },
        Ok(Err(failure)) => ProbeReport {
            outcome: failure.outcome,
            detail: Some(upstream_text(&failure.detail, credentials)),
            latency,
            protocol_version: None,
            tools: None,
        },
        Err(_) => ProbeReport {
            outcome: Outcome::Timeout,
            detail: Some(format!("no answer within {} s", timeout.as_secs_f64())),
            latency,
            protocol_version: None,
            tools: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_text_masks_stored_credentials_and_control_characters() {
        let headers = UpstreamHeaders::parse(
            [
                ("x-api-key".to_owned(), "sk-live-123456".to_owned()),
                ("authorization".to_owned(), "Bearer tok-abcdef".to_owned()),
            ]
            .into_iter()
            .collect(),
        )
        .expect("headers");
        let text = "invalid API key 'sk-live-123456', token tok-abcdef\u{1b}[2J\u{7}\r";
        let shown = upstream_text(text, Some(&headers));
        assert!(
            !shown.contains("sk-live") && !shown.contains("tok-abcdef"),
            "{shown}"
        );
        assert!(!shown.chars().any(|c| c.is_control()), "{shown:?}");
        assert!(shown.contains("invalid API key '[redacted]'"), "{shown}");
        let tool = printable_tool(ToolInfo {
            name: "t".to_owned(),
            title: Some("\u{1b}]52;c;x\u{7}".to_owned()),
            description: "ok\u{1b}[2J".to_owned(),
            input_schema: json!({}),
        });
        assert!(!tool.description.contains('\u{1b}'));
        assert!(!tool.title.unwrap_or_default().contains('\u{1b}'));
    }

    #[test]
    fn tools_without_a_name_are_skipped_and_schemas_default() {
        assert_eq!(tool_info(&json!({ "description": "x" })), None);
        let tool = tool_info(&json!({ "name": "t" })).expect("tool");
        assert_eq!(tool.input_schema, json!({ "type": "object" }));
    }
}

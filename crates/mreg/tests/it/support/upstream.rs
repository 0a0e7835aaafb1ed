//! Real MCP servers to stand behind the gateway in tests, built with the official Rust SDK:
//! stateful (sessions) or stateless (2026-style, JSON answers). They listen on loopback, port 0.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::request::Parts;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::Extension;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, ProgressNotificationParam, ProtocolVersion,
    ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct TestTools {
    tool_router: ToolRouter<Self>,
    legacy_only: bool,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct EchoArgs {
    text: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct CountArgs {
    n: u32,
    delay_ms: u64,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct HangArgs {
    secs: u64,
}

fn structured(text: String, value: serde_json::Value) -> CallToolResult {
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(value);
    result
}

#[tool_router]
impl TestTools {
    fn new(legacy_only: bool) -> Self {
        Self {
            tool_router: Self::tool_router(),
            legacy_only,
        }
    }

    #[tool(description = "Echo the text back")]
    async fn echo(
        &self,
        Parameters(args): Parameters<EchoArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(structured(args.text.clone(), json!({ "text": args.text })))
    }

    #[tool(description = "Report the session id and x-api-key header this server saw")]
    async fn whoami(
        &self,
        Extension(parts): Extension<Parts>,
    ) -> Result<CallToolResult, ErrorData> {
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_owned()
        };
        let value = json!({
            "session": header("mcp-session-id"),
            "api_key": header("x-api-key"),
            "authorization": header("authorization"),
        });
        Ok(structured(value.to_string(), value))
    }

    #[tool(description = "Send n progress notifications delay_ms apart, then answer")]
    async fn count(
        &self,
        Parameters(args): Parameters<CountArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let token = ctx.meta.get_progress_token();
        for i in 1..=args.n {
            if let Some(token) = &token {
                let mut progress = ProgressNotificationParam::new(token.clone(), f64::from(i));
                progress.total = Some(f64::from(args.n));
                let _ = ctx.peer.notify_progress(progress).await;
            }
            tokio::time::sleep(Duration::from_millis(args.delay_ms)).await;
        }
        Ok(structured(
            format!("counted {}", args.n),
            json!({ "count": args.n }),
        ))
    }

    #[tool(description = "Sleep for secs seconds, then answer")]
    async fn hang(
        &self,
        Parameters(args): Parameters<HangArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        tokio::time::sleep(Duration::from_secs(args.secs)).await;
        Ok(structured(
            "woke up".to_owned(),
            json!({ "slept": args.secs }),
        ))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for TestTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("test-upstream", "1.0.0"))
    }

    fn supported_protocol_versions(&self) -> std::borrow::Cow<'static, [ProtocolVersion]> {
        if self.legacy_only {
            std::borrow::Cow::Borrowed(ProtocolVersion::known_up_to(&ProtocolVersion::V_2025_11_25))
        } else {
            std::borrow::Cow::Borrowed(ProtocolVersion::KNOWN_VERSIONS)
        }
    }
}

/// How a test upstream behaves.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Sessions (2025 protocols) or stateless JSON answers.
    pub stateful: bool,
    /// Refuse the 2026-07-28 protocol (and so `server/discover`).
    pub legacy_only: bool,
    /// Where to listen (port 0: any).
    pub addr: SocketAddr,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            stateful: true,
            legacy_only: false,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

/// A running upstream MCP server.
pub struct Upstream {
    /// `http://127.0.0.1:PORT/mcp`.
    pub url: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// HTTP requests it received, by HTTP method and JSON-RPC method (`GET`, `DELETE`,
    /// `POST initialize`, …).
    pub requests: Arc<Mutex<HashMap<String, usize>>>,
    stop: CancellationToken,
}

impl Upstream {
    /// Starts a server with sessions (`stateful`) or without (JSON answers, no session ids).
    pub async fn start(stateful: bool) -> Self {
        Self::start_with(Options {
            stateful,
            ..Options::default()
        })
        .await
    }

    /// Starts a server as `options` say.
    pub async fn start_with(options: Options) -> Self {
        let stop = CancellationToken::new();
        let config = StreamableHttpServerConfig::default()
            .with_cancellation_token(stop.child_token())
            .with_legacy_session_mode(options.stateful)
            .with_json_response(!options.stateful);
        let legacy = options.legacy_only;
        let router = if options.stateful {
            axum::Router::new().nest_service(
                "/mcp",
                StreamableHttpService::new(
                    move || Ok(TestTools::new(legacy)),
                    Arc::new(LocalSessionManager::default()),
                    config,
                ),
            )
        } else {
            axum::Router::new().nest_service(
                "/mcp",
                StreamableHttpService::new(
                    move || Ok(TestTools::new(legacy)),
                    Arc::new(NeverSessionManager::default()),
                    config,
                ),
            )
        };
        let requests = Arc::new(Mutex::new(HashMap::new()));
        let counter = requests.clone();
        let router = router.layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let counter = counter.clone();
                async move {
                    let (parts, body) = request.into_parts();
                    let bytes = axum::body::to_bytes(body, 16 * 1024 * 1024)
                        .await
                        .unwrap_or_default();
                    let rpc = serde_json::from_slice::<serde_json::Value>(&bytes)
                        .ok()
                        .and_then(|v| v["method"].as_str().map(str::to_owned));
                    let key = match rpc {
                        Some(method) => format!("{} {method}", parts.method),
                        None => parts.method.to_string(),
                    };
                    if let Ok(mut counts) = counter.lock() {
                        *counts.entry(key).or_insert(0) += 1;
                    }
                    next.run(axum::extract::Request::from_parts(
                        parts,
                        axum::body::Body::from(bytes),
                    ))
                    .await
                }
            },
        ));
        let listener = tokio::net::TcpListener::bind(options.addr)
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let token = stop.clone();
        tokio::spawn(async move {
            // As any well-configured server: answers written in pieces leave at once.
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(token.cancelled_owned())
                .await;
        });
        Self {
            url: format!("http://{addr}/mcp"),
            addr,
            requests,
            stop,
        }
    }

    /// How many requests with this key (see [`Upstream::requests`]) arrived.
    pub fn count(&self, key: &str) -> usize {
        self.requests
            .lock()
            .map(|c| c.get(key).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Stops the server: open streams end at once and new connections are refused.
    pub fn kill(&self) {
        self.stop.cancel();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

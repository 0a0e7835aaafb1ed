//! Real MCP servers to stand behind the gateway in tests, built with the official Rust SDK:
//! stateful (sessions) or stateless (2026-style, JSON answers). They listen on loopback, port 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::request::Parts;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::Extension;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, ProgressNotificationParam, ServerCapabilities,
    ServerConfig,
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
    fn new() -> Self {
        Self {
            tool_router: Self::tool_router(),
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
}

/// A running upstream MCP server.
pub struct Upstream {
    /// `http://127.0.0.1:PORT/mcp`.
    pub url: String,
    stop: CancellationToken,
}

impl Upstream {
    /// Starts a server with sessions (`stateful`) or without (JSON answers, no session ids).
    pub async fn start(stateful: bool) -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("addr"), stateful).await
    }

    /// Starts a server on `addr` (to bring one back on the same port).
    pub async fn start_on(addr: SocketAddr, stateful: bool) -> Self {
        let stop = CancellationToken::new();
        let config = StreamableHttpServerConfig::default()
            .with_cancellation_token(stop.child_token())
            .with_legacy_session_mode(stateful)
            .with_json_response(!stateful);
        let router = if stateful {
            axum::Router::new().nest_service(
                "/mcp",
                StreamableHttpService::new(
                    || Ok(TestTools::new()),
                    Arc::new(LocalSessionManager::default()),
                    config,
                ),
            )
        } else {
            axum::Router::new().nest_service(
                "/mcp",
                StreamableHttpService::new(
                    || Ok(TestTools::new()),
                    Arc::new(NeverSessionManager::default()),
                    config,
                ),
            )
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let token = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(token.cancelled_owned())
                .await;
        });
        Self {
            url: format!("http://{addr}/mcp"),
            stop,
        }
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

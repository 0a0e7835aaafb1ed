//! An MCP server built with the official Rust SDK (rmcp), for `scripts/bench-peers`: one tool,
//! `echo {text}`, at `http://127.0.0.1:PORT/mcp`. Stateless with JSON answers (the 2026 style)
//! by default; `--stateful` keeps sessions and answers over SSE. Prints `LISTENING <port>` once
//! it accepts connections.
//!
//! `cargo run --release --example rmcp_upstream -- [--stateful] [--port N]`
#![allow(
    clippy::disallowed_methods,
    reason = "tests, benchmarks and examples run their own peers and load on tokio; the bans concern the gateway's code"
)]

use std::sync::Arc;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;

#[derive(Clone)]
struct Echo {
    tool_router: ToolRouter<Self>,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct EchoArgs {
    /// What to send back.
    text: String,
}

#[tool_router]
impl Echo {
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
        Ok(CallToolResult::success(vec![ContentBlock::text(args.text)]))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Echo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("rmcp-upstream", "1"))
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut stateful = false;
    let mut port = 0_u16;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--stateful" => stateful = true,
            "--port" => {
                port = args
                    .next()
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| std::io::Error::other("--port wants a number"))?;
            }
            other => return Err(std::io::Error::other(format!("unknown argument {other}"))),
        }
    }
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(stateful)
        .with_json_response(!stateful);
    let router = if stateful {
        axum::Router::new().nest_service(
            "/mcp",
            StreamableHttpService::new(
                || Ok(Echo::new()),
                Arc::new(LocalSessionManager::default()),
                config,
            ),
        )
    } else {
        axum::Router::new().nest_service(
            "/mcp",
            StreamableHttpService::new(
                || Ok(Echo::new()),
                Arc::new(NeverSessionManager::default()),
                config,
            ),
        )
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("LISTENING {}", listener.local_addr()?.port());
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router).await
}

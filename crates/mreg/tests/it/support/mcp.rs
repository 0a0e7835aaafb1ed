//! An MCP client of the gateway built with the official Rust SDK (rmcp), for the tests that drive
//! `/mcp` and `/servers/{name}/mcp` as a client would.

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation,
    ProtocolVersion,
};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientLifecycleMode, ClientServiceExt, RoleClient, ServiceExt};
use serde_json::Value;

pub type McpClient = RunningService<RoleClient, ClientConfig>;

/// An rmcp client of `url` speaking `version` (2026-07-28: stateless, via `server/discover`).
pub async fn connect(url: &str, version: ProtocolVersion) -> McpClient {
    let transport = StreamableHttpClientTransport::from_uri(url.to_owned());
    let info = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("mreg-tests", "0"),
    );
    if version.has_initialize() {
        info.with_protocol_version(version)
            .serve(transport)
            .await
            .expect("initialize")
    } else {
        info.serve_with_lifecycle(
            transport,
            ClientLifecycleMode::Discover {
                preferred_versions: vec![version],
            },
        )
        .await
        .expect("discover")
    }
}

/// Calls `tool` with `args`.
pub async fn call(client: &McpClient, tool: &str, args: Value) -> CallToolResult {
    let args = args.as_object().cloned().unwrap_or_default();
    client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args))
        .await
        .expect("tools/call answered")
}

/// The text of a result's first content block.
pub fn text(result: &CallToolResult) -> String {
    result
        .content
        .first()
        .and_then(|c| c.as_text())
        .map(|t| t.text.clone())
        .unwrap_or_default()
}

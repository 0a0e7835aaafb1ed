//! `mreg call TOOL key=value …`: calls one of the gateway's own MCP tools.

use std::process::ExitCode;

use clap::Args;
use serde_json::{Map, Value};

use super::{EXIT_UNREACHABLE, Failure, exit, print_json};

/// `mreg call`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// Tool name, e.g. list_servers.
    tool: String,
    /// Arguments as key=value (a value that parses as JSON is used as such, else as text).
    #[arg(value_name = "KEY=VALUE")]
    arguments: Vec<String>,
    /// The gateway's MCP endpoint (default: `/mcp` of the gateway `mreg login` used, else
    /// http://127.0.0.1:8001/mcp).
    #[arg(long, env = "MREG_MCP_ENDPOINT")]
    endpoint: Option<String>,
    /// Bearer token to send (default: the one `mreg login` saved).
    #[arg(long, env = "MREG_TOKEN", hide_env_values = true)]
    token: Option<crate::cli::BearerToken>,
    /// Print the whole result as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `mreg call`.
pub async fn call(args: CallArgs) -> ExitCode {
    exit(call_tool(args).await)
}

async fn call_tool(args: CallArgs) -> Result<(), Failure> {
    use rmcp::ServiceExt;
    use rmcp::model::{CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation};
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

    let mut arguments = Map::new();
    for pair in &args.arguments {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("argument '{pair}' is not KEY=VALUE"))?;
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
        arguments.insert(key.to_owned(), value);
    }
    let endpoint = match &args.endpoint {
        Some(e) => e.clone(),
        None => crate::login::load()
            .map(|c| format!("{}/mcp", c.issuer))
            .unwrap_or_else(|| "http://127.0.0.1:8001/mcp".to_owned()),
    };
    let token = match &args.token {
        Some(t) => Some(t.0.clone()),
        None => crate::login::bearer().await?,
    };
    let mut config = StreamableHttpClientTransportConfig::with_uri(endpoint.as_str());
    if let Some(token) = token {
        config = config.auth_header(token);
    }
    let transport = StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
    let info = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("mreg-cli", env!("CARGO_PKG_VERSION")),
    );
    let client = info.serve(transport).await.map_err(|e| Failure {
        message: format!("cannot open an MCP session at {endpoint}: {e}"),
        code: EXIT_UNREACHABLE,
    })?;
    let result = client
        .call_tool(CallToolRequestParams::new(args.tool.clone()).with_arguments(arguments))
        .await
        .map_err(|e| format!("{} failed: {e}", args.tool))?;
    let _ = client.cancel().await;
    if args.json {
        print_json(&serde_json::to_value(&result).map_err(|e| e.to_string())?);
    } else {
        for block in &result.content {
            if let Some(t) = block.as_text() {
                println!("{}", t.text);
            }
        }
    }
    if result.is_error == Some(true) {
        return Err(Failure::from(format!("{} reported an error", args.tool)));
    }
    Ok(())
}

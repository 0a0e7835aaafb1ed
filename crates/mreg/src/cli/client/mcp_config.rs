//! `mreg mcp-config [--client claude|vscode|cursor] [NAME]`: the configuration an MCP client
//! needs to reach the gateway's own tools (`/mcp`) or one registered server through the gateway
//! (`/servers/NAME/mcp`), in the shape that client reads, ready to paste.
//!
//! No token goes into it: with authentication on, the client discovers the gateway's OAuth
//! server from its first 401 and signs the user in itself.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use reqwest::Method;
use serde_json::{Value, json};

use super::{Client, Failure, exit, print_json, segment};
use crate::cli::ClientArgs;

/// An MCP client whose configuration format `mcp-config` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum McpClient {
    /// Claude Code (`.mcp.json`, or `claude mcp add-json`).
    Claude,
    /// Visual Studio Code (`.vscode/mcp.json`).
    Vscode,
    /// Cursor (`.cursor/mcp.json` or `~/.cursor/mcp.json`).
    Cursor,
}

/// `mreg mcp-config`.
#[derive(Debug, Args)]
pub struct McpConfigArgs {
    /// Which client's format.
    #[arg(long, value_enum, default_value = "claude")]
    client: McpClient,
    /// A registered server to reach through the gateway; without one, the gateway's own tools.
    name: Option<String>,
    #[command(flatten)]
    pub(crate) rest: ClientArgs,
}

/// Runs `mreg mcp-config`.
pub async fn mcp_config(args: McpConfigArgs) -> ExitCode {
    exit(execute(args).await)
}

/// The configuration of `client` for one server called `key` at `url`.
pub fn render(client: McpClient, key: &str, url: &str) -> Value {
    match client {
        McpClient::Claude => json!({ "mcpServers": { key: { "type": "http", "url": url } } }),
        McpClient::Vscode => json!({ "servers": { key: { "type": "http", "url": url } } }),
        McpClient::Cursor => json!({ "mcpServers": { key: { "url": url } } }),
    }
}

async fn execute(args: McpConfigArgs) -> Result<(), Failure> {
    let (key, url) = match &args.name {
        Some(name) => {
            let name = domain::ServerName::parse(name).map_err(|e| e.to_string())?;
            // Asking the registry checks that the server exists and that the caller may see
            // it, and gives its endpoint as the gateway publishes it.
            let client = Client::new(&args.rest).await?;
            let path = format!("/api/v1/servers/{}", segment(name.as_str()));
            let (_, server) = client.call(Method::GET, &path, None).await?;
            let url = server["gateway_url"]
                .as_str()
                .ok_or_else(|| {
                    Failure::from("the gateway did not say where the server is".to_owned())
                })?
                .to_owned();
            (name.to_string(), url)
        }
        None => {
            let mcp = args.rest.gateway.resolve()?.mcp_url().await?;
            ("mreg".to_owned(), format!("{mcp}/mcp"))
        }
    };
    print_json(&render(args.client, &key, &url));
    // The output is JSON either way; `--json` asks for nothing else (no hint on a terminal).
    if std::io::stdout().is_terminal() && !args.rest.json {
        let hint = match args.client {
            McpClient::Claude => {
                format!("paste into .mcp.json, or run: claude mcp add --transport http {key} {url}")
            }
            McpClient::Vscode => "paste into .vscode/mcp.json".to_owned(),
            McpClient::Cursor => "paste into .cursor/mcp.json".to_owned(),
        };
        errln!("({hint})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{McpClient, render};

    #[test]
    fn each_client_gets_its_own_shape() {
        let url = "http://127.0.0.1:8001/mcp";
        assert_eq!(
            render(McpClient::Claude, "mreg", url)["mcpServers"]["mreg"],
            serde_json::json!({ "type": "http", "url": url })
        );
        assert_eq!(
            render(McpClient::Vscode, "mreg", url)["servers"]["mreg"]["type"],
            "http"
        );
        assert_eq!(
            render(McpClient::Cursor, "w", url),
            serde_json::json!({ "mcpServers": { "w": { "url": url } } })
        );
    }
}

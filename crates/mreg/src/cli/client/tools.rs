//! `mreg tools search QUERY`: the tool catalog of every registered server, each hit with its
//! server's health.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::Value;

use super::{Client, Failure, exit, print_json, print_rows, text};
use crate::cli::ClientArgs;

/// `mreg tools`.
#[derive(Debug, Args)]
pub struct ToolsArgs {
    #[command(flatten)]
    pub(crate) client: ClientArgs,

    #[command(subcommand)]
    command: ToolsCommand,
}

#[derive(Debug, Subcommand)]
enum ToolsCommand {
    /// Find tools whose name, title or description contain every word of QUERY (any order),
    /// healthiest servers first.
    Search {
        /// Words to find, e.g. `weather forecast`.
        #[arg(required = true, num_args = 1..)]
        query: Vec<String>,
        /// Only tools of servers in this health (healthy, degraded, unhealthy, unknown).
        #[arg(long)]
        health: Option<String>,
        /// At most this many (1-500).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

/// Runs a `mreg tools` command.
pub async fn tools(args: ToolsArgs) -> ExitCode {
    exit(execute(args).await)
}

async fn execute(args: ToolsArgs) -> Result<(), Failure> {
    let client = Client::new(&args.client).await?;
    match args.command {
        ToolsCommand::Search {
            query,
            health,
            limit,
        } => {
            let mut params = url::form_urlencoded::Serializer::new(String::new());
            params.append_pair("q", &query.join(" "));
            params.append_pair("limit", &limit.to_string());
            if let Some(health) = &health {
                params.append_pair("health", health);
            }
            let path = format!("/api/v1/tools?{}", params.finish());
            let (_, found) = client.call(Method::GET, &path, None).await?;
            let hits = found["tools"].as_array().cloned().unwrap_or_default();
            if args.client.json {
                print_json(&found);
            } else if hits.is_empty() {
                outln!("no tools match '{}'", query.join(" "));
            } else {
                let rows = hits.iter().map(row).collect();
                print_rows(&["server", "tool", "health", "description"], rows);
            }
        }
    }
    Ok(())
}

/// One table row: the description's first line, shortened to keep the table readable.
fn row(hit: &Value) -> Vec<String> {
    let description = hit["tool"]["description"]
        .as_str()
        .and_then(|d| d.lines().next())
        .unwrap_or("");
    let mut short: String = description.chars().take(80).collect();
    if short.chars().count() < description.chars().count() {
        short.push('…');
    }
    vec![
        text(&hit["server"]),
        text(&hit["tool"]["name"]),
        text(&hit["health"]),
        short,
    ]
}

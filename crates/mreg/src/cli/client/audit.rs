//! `mreg audit list`: the gateway's audit log, through its REST API.

use std::process::ExitCode;

use clap::Args;
use reqwest::Method;
use serde_json::Value;

use super::{Client, Failure, Layout, exit, print_json, printable, segment, text};
use crate::cli::ClientArgs;

/// `mreg audit list`.
#[derive(Debug, Args)]
pub struct AuditListArgs {
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    /// Only rows of this actor (subject or e-mail).
    #[arg(long)]
    actor: Option<String>,
    /// Only rows of this tool.
    #[arg(long)]
    tool: Option<String>,
    /// Only rows addressing this server.
    #[arg(long)]
    server: Option<String>,
    /// Only rows with this decision (allow, deny, rate_limited).
    #[arg(long)]
    decision: Option<String>,
    /// Only rows of this operation (e.g. register_server, tools/call, oauth.token).
    #[arg(long)]
    operation: Option<String>,
    /// Only rows from this time on (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// Only rows before this time (RFC 3339).
    #[arg(long)]
    until: Option<String>,
    /// Rows per page.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Fetch every page, not just the first.
    #[arg(long)]
    all: bool,
}

/// Runs `mreg audit list`: the gateway's audit log, newest first.
pub async fn audit_list(args: AuditListArgs) -> ExitCode {
    let outcome = async {
        let client = Client::new(&args.client).await?;
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (key, value) in [
            ("actor", &args.actor),
            ("tool", &args.tool),
            ("server", &args.server),
            ("decision", &args.decision),
            ("operation", &args.operation),
            ("since", &args.since),
            ("until", &args.until),
        ] {
            if let Some(value) = value {
                query.append_pair(key, value);
            }
        }
        query.append_pair("limit", &args.limit.to_string());
        let base = query.finish();
        let mut entries = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/v1/audit?{base}&cursor={}", segment(c)),
                None => format!("/api/v1/audit?{base}"),
            };
            let (_, page) = client.call(Method::GET, &path, None).await?;
            entries.extend(page["entries"].as_array().cloned().unwrap_or_default());
            cursor = page["next_cursor"].as_str().map(str::to_owned);
            if !args.all || cursor.is_none() {
                break;
            }
        }
        if args.client.json {
            print_json(&Value::Array(entries));
            return Ok::<(), Failure>(());
        }
        if entries.is_empty() {
            outln!("no audit entries");
        }
        for e in &entries {
            let target = match (e["tool"].as_str(), e["server"].as_str()) {
                (Some(tool), Some(server)) => format!("{server}/{tool}"),
                (Some(one), None) | (None, Some(one)) => one.to_owned(),
                (None, None) => "-".to_owned(),
            };
            let who = e["actor"]["email"]
                .as_str()
                .or_else(|| e["actor"]["subject"].as_str())
                .unwrap_or("-");
            let mut line = format!(
                "{:>6}  {}  {}  {}  {}  {}  {}",
                text(&e["seq"]),
                text(&e["time"]),
                printable(who, Layout::OneLine),
                text(&e["operation"]),
                printable(&target, Layout::OneLine),
                text(&e["decision"]),
                text(&e["outcome"]),
            );
            if let Some(error) = e["error"].as_str() {
                line.push_str(&format!("  ({})", printable(error, Layout::OneLine)));
            }
            outln!("{line}");
        }
        Ok(())
    };
    exit(outcome.await)
}

//! `mreg servers …`: list, show, add, change, remove and probe registered servers.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::{Client, Failure, Layout, print_json, print_rows, printable, segment, text};
use crate::cli::ClientArgs;

/// Exit status of `servers check` when the server could not be checked at all, so that a
/// script tells "unhealthy" (1) from "no such server" or "not allowed".
const EXIT_NOT_CHECKED: u8 = 2;

/// `mreg servers`.
#[derive(Debug, Args)]
pub struct ServersArgs {
    #[command(flatten)]
    pub(crate) client: ClientArgs,

    #[command(subcommand)]
    command: ServersCommand,
}

#[derive(Debug, Subcommand)]
enum ServersCommand {
    /// List registered servers.
    List {
        /// Only servers with this tag.
        #[arg(long)]
        tag: Option<String>,
        /// Only servers in this status (active, deprecated, disabled).
        #[arg(long)]
        status: Option<String>,
        /// Only servers whose name, description or tags contain this text.
        #[arg(short, long)]
        query: Option<String>,
        /// Only servers in this health (healthy, degraded, unhealthy, unknown).
        #[arg(long)]
        health: Option<String>,
        /// Order: name (default) or health (healthiest first).
        #[arg(long)]
        sort: Option<String>,
        /// Page size.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Fetch every page, not just the first.
        #[arg(long)]
        all: bool,
    },
    /// Show one server.
    Get {
        /// Server name.
        name: String,
    },
    /// Register a server.
    Add {
        /// Unique name (a-z, 0-9, '-').
        name: String,
        /// URL of its MCP endpoint (http or https).
        #[arg(value_name = "URL")]
        server_url: String,
        #[command(flatten)]
        fields: Fields,
    },
    /// Change some fields of a server.
    Update {
        /// Server name.
        name: String,
        /// New URL of its MCP endpoint.
        #[arg(long, value_name = "URL")]
        server_url: Option<String>,
        /// Remove all tags (before adding any given with --tag).
        #[arg(long)]
        clear_tags: bool,
        /// Remove every stored header.
        #[arg(long, conflicts_with = "headers")]
        clear_headers: bool,
        #[command(flatten)]
        fields: Fields,
    },
    /// Remove a server.
    Rm {
        /// Server name.
        name: String,
    },
    /// Probe a server now and show what was found. Exit status 0 when it is healthy; 1 when it
    /// is not (degraded, unhealthy or unknown); 2 when it could not be checked (no such server,
    /// or the gateway refused: not signed in, not allowed, …); 69 when the gateway cannot be
    /// reached; 64 for a configuration error.
    Check {
        /// Server name.
        name: String,
    },
}

/// Optional fields shared by `add` and `update`.
#[derive(Debug, Args)]
struct Fields {
    /// What the server is for.
    #[arg(short, long)]
    description: Option<String>,
    /// A tag (repeat for several).
    #[arg(short, long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// streamable-http (the default; legacy sse servers cannot be registered yet).
    #[arg(long)]
    transport: Option<String>,
    /// The server's version.
    #[arg(long = "server-version", value_name = "VERSION")]
    server_version: Option<String>,
    /// active, deprecated or disabled.
    #[arg(long)]
    status: Option<String>,
    /// Metadata as a JSON object.
    #[arg(long, value_name = "JSON")]
    metadata: Option<String>,
    /// Seconds the gateway waits for the server to answer a request (1-600; default 30).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u32>,
    /// Whether callers of every tenant may see and use it (administrators only): `--shared`,
    /// `--shared=false`.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    shared: Option<bool>,
    /// A header sent to the server with every proxied request, e.g. `--header x-api-key=SECRET`
    /// (repeat for several). Stored encrypted and never shown again; on `update`, the headers
    /// given replace all stored ones.
    #[arg(long = "header", value_name = "NAME=VALUE")]
    headers: Vec<HeaderArg>,
}

/// One `--header NAME=VALUE` as given; `Debug` never shows it. Parsed in
/// [`Fields::into_body`] rather than by clap, whose error would repeat the value (a secret).
#[derive(Clone)]
struct HeaderArg(String);

impl std::fmt::Debug for HeaderArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeaderArg(..)")
    }
}

impl std::str::FromStr for HeaderArg {
    type Err = std::convert::Infallible;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Ok(Self(raw.to_owned()))
    }
}

impl Fields {
    fn into_body(self, body: &mut Map<String, Value>) -> Result<(), String> {
        for (key, value) in [
            ("description", self.description),
            ("transport", self.transport),
            ("version", self.server_version),
            ("status", self.status),
        ] {
            if let Some(value) = value {
                body.insert(key.to_owned(), Value::String(value));
            }
        }
        if !self.tags.is_empty() {
            body.insert("tags".to_owned(), json!(self.tags));
        }
        if let Some(raw) = self.metadata {
            let value: Value = serde_json::from_str(&raw)
                .map_err(|e| format!("--metadata is not valid JSON: {e}"))?;
            body.insert("metadata".to_owned(), value);
        }
        if let Some(timeout) = self.timeout {
            body.insert("timeout_secs".to_owned(), json!(timeout));
        }
        if let Some(shared) = self.shared {
            body.insert("shared".to_owned(), json!(shared));
        }
        if !self.headers.is_empty() {
            let mut headers = Map::new();
            for HeaderArg(raw) in self.headers {
                match raw.split_once('=') {
                    Some((name, value)) if !name.trim().is_empty() => {
                        headers.insert(name.trim().to_owned(), Value::String(value.to_owned()));
                    }
                    _ => {
                        return Err(
                            "--header expects NAME=VALUE, e.g. x-api-key=SECRET (the value given is not repeated here)"
                                .to_owned(),
                        );
                    }
                }
            }
            body.insert("upstream_headers".to_owned(), Value::Object(headers));
        }
        Ok(())
    }
}

/// Runs a `mreg servers` command.
pub async fn run(args: ServersArgs) -> ExitCode {
    super::exit(execute(args).await)
}

impl ServersCommand {
    /// The server named in this command's URL path, if any (`add` sends its name in the body,
    /// where the gateway reports a bad one as typed, with the other fields' problems).
    fn name(&self) -> Option<&str> {
        match self {
            Self::List { .. } | Self::Add { .. } => None,
            Self::Get { name }
            | Self::Update { name, .. }
            | Self::Rm { name }
            | Self::Check { name } => Some(name),
        }
    }
}

async fn execute(args: ServersArgs) -> Result<(), Failure> {
    if let Some(name) = args.command.name()
        && let Err(failure) = super::server_name(name)
    {
        return Err(match args.command {
            ServersCommand::Check { .. } => Failure {
                code: EXIT_NOT_CHECKED,
                ..failure
            },
            _ => failure,
        });
    }
    let client = Client::new(&args.client).await?;
    let json_output = args.client.json;
    match args.command {
        ServersCommand::List {
            tag,
            status,
            query,
            health,
            sort,
            limit,
            all,
        } => {
            let mut servers = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut params = url::form_urlencoded::Serializer::new(String::new());
                params.append_pair("limit", &limit.to_string());
                for (key, value) in [
                    ("tag", &tag),
                    ("status", &status),
                    ("q", &query),
                    ("health", &health),
                    ("sort", &sort),
                    ("cursor", &cursor),
                ] {
                    if let Some(value) = value {
                        params.append_pair(key, value);
                    }
                }
                let path = format!("/api/v1/servers?{}", params.finish());
                let (_, page) = client.call(Method::GET, &path, None).await?;
                if let Some(items) = page.get("servers").and_then(Value::as_array) {
                    servers.extend(items.iter().cloned());
                }
                cursor = page
                    .get("next_cursor")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                if !all || cursor.is_none() {
                    break;
                }
            }
            if json_output {
                print_json(&json!({ "servers": servers, "next_cursor": cursor }));
            } else {
                print_table(&servers);
                if cursor.is_some() {
                    outln!("(more servers follow; use --all to list every page)");
                }
            }
        }
        ServersCommand::Get { name } => {
            let (_, server) = client
                .call(
                    Method::GET,
                    &format!("/api/v1/servers/{}", segment(&name)),
                    None,
                )
                .await?;
            show(&server, json_output);
        }
        ServersCommand::Add {
            name,
            server_url,
            fields,
        } => {
            let mut body = Map::new();
            body.insert("name".to_owned(), json!(name));
            body.insert("url".to_owned(), json!(server_url));
            fields.into_body(&mut body)?;
            let (_, server) = client
                .call(Method::POST, "/api/v1/servers", Some(Value::Object(body)))
                .await?;
            if json_output {
                print_json(&server);
            } else {
                outln!("registered {}", server["name"].as_str().unwrap_or(&name));
            }
        }
        ServersCommand::Update {
            name,
            server_url,
            clear_tags,
            clear_headers,
            fields,
        } => {
            let mut body = Map::new();
            if let Some(url) = server_url {
                body.insert("url".to_owned(), json!(url));
            }
            if clear_tags {
                body.insert("tags".to_owned(), Value::Null);
            }
            if clear_headers {
                body.insert("upstream_headers".to_owned(), Value::Null);
            }
            fields.into_body(&mut body)?;
            if body.is_empty() {
                return Err(Failure::from(
                    "nothing to change; give at least one field to update".to_owned(),
                ));
            }
            let path = format!("/api/v1/servers/{}", segment(&name));
            let (_, server) = client
                .call(Method::PATCH, &path, Some(Value::Object(body)))
                .await?;
            if json_output {
                print_json(&server);
            } else {
                outln!("updated {name}");
            }
        }
        ServersCommand::Rm { name } => {
            client
                .call(
                    Method::DELETE,
                    &format!("/api/v1/servers/{}", segment(&name)),
                    None,
                )
                .await?;
            if json_output {
                print_json(&json!({ "deleted": name }));
            } else {
                outln!("removed {name}");
            }
        }
        ServersCommand::Check { name } => {
            let path = format!("/api/v1/servers/{}/health/check", segment(&name));
            let (_, report) = client
                .call(Method::POST, &path, None)
                .await
                .map_err(|failure| match failure.code {
                    1 => Failure {
                        code: EXIT_NOT_CHECKED,
                        ..failure
                    },
                    _ => failure,
                })?;
            let current = &report["current"];
            if json_output {
                print_json(&report);
            } else {
                let mut line = format!("{name}: {}", text(&current["status"]));
                // Indexed as a `Value`, whose missing keys are null (a `Map` panics on them).
                let check = &current["last_check"];
                if check.is_object() {
                    line.push_str(&format!(
                        "; probe {} in {} ms",
                        text(&check["outcome"]),
                        text(&check["latency_ms"])
                    ));
                    if let Some(detail) = check["detail"].as_str() {
                        line.push_str(&format!(" ({})", printable(detail, Layout::OneLine)));
                    }
                    if let Some(version) = check["protocol_version"].as_str() {
                        line.push_str(&format!(", protocol {version}"));
                    }
                }
                outln!("{line}");
            }
            if current["status"] != "healthy" {
                return Err(Failure {
                    message: format!("{name} is not healthy"),
                    code: 1,
                });
            }
        }
    }
    Ok(())
}

fn show(server: &Value, json_output: bool) {
    if json_output {
        print_json(server);
        return;
    }
    for key in [
        "name",
        "url",
        "transport",
        "status",
        "description",
        "tags",
        "version",
        "registered_by",
        "tenant",
        "created_at",
        "updated_at",
        "id",
    ] {
        outln!("{:14} {}", format!("{key}:"), text(&server[key]));
    }
    let health = &server["health"];
    let mut state = text(&health["state"]);
    if let Some(since) = health["since"].as_str() {
        state.push_str(&format!(" since {since}"));
    }
    if let Some(reason) = health["reason"].as_str() {
        state.push_str(&format!(": {}", printable(reason, Layout::OneLine)));
    }
    outln!("{:14} {state}", "health:");
    let probe = &health["last_probe"];
    if probe.is_object() {
        outln!(
            "{:14} {} {} in {} ms",
            "last probe:",
            text(&probe["at"]),
            text(&probe["outcome"]),
            text(&probe["latency_ms"])
        );
    }
    outln!("{:14} {}", "gateway url:", text(&server["gateway_url"]));
    let timeout = server["timeout_secs"]
        .as_u64()
        .map_or_else(|| "30 s (default)".to_owned(), |t| format!("{t} s"));
    outln!("{:14} {timeout}", "timeout:");
    outln!("{:14} {}", "shared:", yes_no(&server["shared"]));
    let credentials = if server["has_upstream_credentials"] == true {
        "stored (never shown)"
    } else {
        "none"
    };
    outln!("{:14} {credentials}", "credentials:");
    if server["metadata"]
        .as_object()
        .is_some_and(|m| !m.is_empty())
    {
        outln!("{:14} {}", "metadata:", server["metadata"]);
    }
}

fn yes_no(value: &Value) -> &'static str {
    if value == true { "yes" } else { "no" }
}

fn print_table(servers: &[Value]) {
    if servers.is_empty() {
        outln!("no servers");
        return;
    }
    let columns = ["name", "status", "health", "transport", "url", "tags"];
    let rows: Vec<Vec<String>> = servers
        .iter()
        .map(|s| {
            columns
                .iter()
                .map(|c| match *c {
                    "health" => text(&s["health"]["state"]),
                    _ => text(&s[*c]),
                })
                .collect()
        })
        .collect();
    print_rows(&columns, rows);
}

//! `mreg servers …`: a client of a running gateway's REST API. It prints tables for people and
//! JSON (`--json`) for scripts, and turns the server's error body into one readable line.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};

use crate::cli::ClientArgs;

/// Exit code when the gateway cannot be reached (`EX_UNAVAILABLE`).
const EXIT_UNREACHABLE: u8 = 69;

/// `mreg servers`.
#[derive(Debug, Args)]
pub struct ServersArgs {
    #[command(flatten)]
    client: ClientArgs,

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
        #[command(flatten)]
        fields: Fields,
    },
    /// Remove a server.
    Rm {
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
    /// streamable-http or sse.
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
        Ok(())
    }
}

/// A failed client command: what to print and the exit code.
struct Failure {
    message: String,
    code: u8,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Self { message, code: 1 }
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// A client of the REST API at `args.url`, with the explicit or saved token.
    async fn new(args: &ClientArgs) -> Result<Self, Failure> {
        let base = args.url.trim_end_matches('/').to_owned();
        url::Url::parse(&base).map_err(|e| format!("--url {base} is not a URL: {e}"))?;
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .map_err(|e| e.to_string())?,
            base,
            token: token(args).await?,
        })
    }
}

/// The bearer token: `--token`/`MREG_TOKEN`, else the one `mreg login` saved (refreshed).
async fn token(args: &ClientArgs) -> Result<Option<String>, Failure> {
    match &args.token {
        Some(token) => Ok(Some(token.0.clone())),
        None => Ok(crate::login::bearer().await?),
    }
}

impl Client {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value), Failure> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| Failure {
            message: format!(
                "cannot reach mreg at {} ({}); is `mreg serve` running there?",
                self.base,
                crate::proxy::root_cause(&e)
            ),
            code: EXIT_UNREACHABLE,
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            return Ok((status, value));
        }
        let message = value
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| format!("HTTP {status}"), str::to_owned);
        let request_id = value
            .get("request_id")
            .and_then(Value::as_str)
            .map(|id| format!(", request id {id}"))
            .unwrap_or_default();
        Err(Failure::from(format!(
            "{message} (HTTP {}{request_id})",
            status.as_u16()
        )))
    }
}

/// Runs `mreg whoami`.
pub async fn whoami(args: ClientArgs) -> ExitCode {
    let outcome = async {
        let client = Client::new(&args).await?;
        let (_, me) = client.call(Method::GET, "/api/v1/whoami", None).await?;
        if args.json {
            print_json(&me);
        } else {
            for (label, key) in [
                ("subject", "subject"),
                ("email", "email"),
                ("name", "name"),
                ("tenant", "tenant"),
                ("roles", "roles"),
                ("scopes", "scopes"),
                ("client", "client_id"),
            ] {
                println!("{label:8} {}", text(&me[key]));
            }
        }
        Ok::<(), Failure>(())
    };
    exit(outcome.await)
}

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

fn exit(outcome: Result<(), Failure>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("mreg: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn segment(name: &str) -> String {
    url::form_urlencoded::byte_serialize(name.as_bytes()).collect()
}

/// Runs a `mreg servers` command.
pub async fn run(args: ServersArgs) -> ExitCode {
    match execute(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("mreg: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

async fn execute(args: ServersArgs) -> Result<(), Failure> {
    let client = Client::new(&args.client).await?;
    let json_output = args.client.json;
    match args.command {
        ServersCommand::List {
            tag,
            status,
            query,
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
                    println!("(more servers follow; use --all to list every page)");
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
                println!("registered {}", server["name"].as_str().unwrap_or(&name));
            }
        }
        ServersCommand::Update {
            name,
            server_url,
            clear_tags,
            fields,
        } => {
            let mut body = Map::new();
            if let Some(url) = server_url {
                body.insert("url".to_owned(), json!(url));
            }
            if clear_tags {
                body.insert("tags".to_owned(), Value::Null);
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
                println!("updated {name}");
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
                println!("removed {name}");
            }
        }
    }
    Ok(())
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
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
        println!("{:14} {}", format!("{key}:"), text(&server[key]));
    }
    if server["metadata"]
        .as_object()
        .is_some_and(|m| !m.is_empty())
    {
        println!("{:14} {}", "metadata:", server["metadata"]);
    }
}

fn print_table(servers: &[Value]) {
    if servers.is_empty() {
        println!("no servers");
        return;
    }
    let columns = ["name", "status", "transport", "url", "tags"];
    let rows: Vec<Vec<String>> = servers
        .iter()
        .map(|s| columns.iter().map(|c| text(&s[*c])).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
                .max(c.len())
        })
        .collect();
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:width$}  ", width = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(columns.iter().map(|c| c.to_uppercase()).collect());
    for row in rows {
        line(row);
    }
}

/// `mreg audit list`.
#[derive(Debug, Args)]
pub struct AuditListArgs {
    #[command(flatten)]
    client: ClientArgs,
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
            println!("no audit entries");
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
                who,
                text(&e["operation"]),
                target,
                text(&e["decision"]),
                text(&e["outcome"]),
            );
            if let Some(error) = e["error"].as_str() {
                line.push_str(&format!("  ({error})"));
            }
            println!("{line}");
        }
        Ok(())
    };
    exit(outcome.await)
}

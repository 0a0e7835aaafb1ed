//! `mreg call TOOL key=value …`: calls one of the gateway's own MCP tools, or with `--server NAME`
//! a tool of a registered server through the gateway.
//!
//! Arguments are written as httpie writes them: `key=value` is always a string, `key:=json` is
//! JSON (a number, `true`, an object…), so `name=007` stays the text "007". Failures are told in
//! words: the SDK's errors carry its own type names, which mean nothing to a user.

use std::process::ExitCode;

use clap::Args;
use serde_json::{Map, Value};

use super::gateway::deprecated;
use super::{EXIT_UNREACHABLE, Failure, exit, print_json};
use crate::cli::GatewayArgs;

/// `mreg call`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// Tool name, e.g. list_servers.
    tool: String,
    /// Arguments: `key=value` (a string) or `key:=json` (JSON: numbers, true/false, null,
    /// arrays, objects), e.g. `name=weather limit:=10 tags:='["geo"]'`.
    #[arg(value_name = "KEY=VALUE|KEY:=JSON")]
    arguments: Vec<String>,
    /// Call a tool of this registered server (through `/servers/NAME/mcp`) instead of one of
    /// the gateway's own tools.
    #[arg(long, value_name = "NAME")]
    server: Option<String>,
    #[command(flatten)]
    pub(crate) gateway: GatewayArgs,
    /// Old way to name the MCP endpoint; use --gateway (and --server).
    #[arg(long, value_name = "URL", hide = true)]
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

/// Parses `key=value` (a string) and `key:=json` (JSON) arguments.
fn parse_arguments(pairs: &[String]) -> Result<Map<String, Value>, String> {
    let mut arguments = Map::new();
    for pair in pairs {
        let (key, value) = match (pair.find(":="), pair.find('=')) {
            (Some(json_at), Some(eq_at)) if json_at < eq_at => {
                let (key, raw) = (&pair[..json_at], &pair[json_at + 2..]);
                let value = serde_json::from_str(raw).map_err(|e| {
                    format!(
                        "argument '{key}': '{raw}' is not JSON ({e}); write {key}={raw} to pass it as text"
                    )
                })?;
                (key, value)
            }
            (_, Some(eq_at)) => (&pair[..eq_at], Value::String(pair[eq_at + 1..].to_owned())),
            _ => {
                return Err(format!(
                    "argument '{pair}' is neither KEY=VALUE (text) nor KEY:=JSON"
                ));
            }
        };
        if key.is_empty() {
            return Err(format!("argument '{pair}' has no name before '='"));
        }
        if arguments.insert(key.to_owned(), value).is_some() {
            return Err(format!("argument '{key}' is given twice"));
        }
    }
    Ok(arguments)
}

/// The innermost cause of an error: the words of the OS or the HTTP client, not the wrappers'
/// type names.
fn root_words(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// Why a session could not be opened, in words.
fn session_failure(error: &rmcp::service::ClientInitializeError) -> String {
    use rmcp::service::ClientInitializeError as E;
    if error.auth_challenge().is_some() {
        return "the gateway wants a bearer token: run `mreg login`, or pass --token".to_owned();
    }
    match error {
        E::JsonRpcError(data) => data.message.to_string(),
        E::ConnectionClosed(_) => "the connection closed during the handshake".to_owned(),
        E::TransportError { error, .. } => match http_error(error) {
            Some(http) => root_words(http),
            None => root_words(error),
        },
        other => root_words(other),
    }
}

/// The HTTP client's error in `error`'s chain, if there is one (rmcp wraps it without naming
/// it as the source).
fn http_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a reqwest::Error> {
    use rmcp::transport::streamable_http_client::StreamableHttpError;
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(http) = e.downcast_ref::<reqwest::Error>() {
            return Some(http);
        }
        if let Some(StreamableHttpError::Client(http)) =
            e.downcast_ref::<StreamableHttpError<reqwest::Error>>()
        {
            return Some(http);
        }
        current = e.source();
    }
    None
}

/// Whether `error` came after the gateway answered (a refusal, an error of the server behind
/// it), rather than from not reaching it at all (refused or timed-out connection, unknown host):
/// only the latter is exit code 69, so a script can tell a mistyped server from a gateway that
/// is down.
fn gateway_answered(error: &rmcp::service::ClientInitializeError) -> bool {
    use rmcp::service::ClientInitializeError as E;
    match error {
        E::JsonRpcError(_) => true,
        E::ConnectionClosed(_) => false,
        E::TransportError { error, .. } => {
            !http_error(error).is_some_and(|http| http.is_connect() || http.is_timeout())
        }
        _ => true,
    }
}

/// A hint for a tool's complaint about an argument's type: `limit=5` is the text "5", and a
/// tool that wants a number says "invalid type: string".
fn typing_hint(why: &str) -> &'static str {
    if why.contains("invalid type: string") {
        " (KEY=VALUE passes text; write KEY:=JSON for a number, true/false, a list or an object, e.g. limit:=5)"
    } else {
        ""
    }
}

/// Why a call failed, in words.
fn call_failure(error: &rmcp::ServiceError) -> String {
    use rmcp::ServiceError as E;
    match error {
        E::McpError(data) => data.message.to_string(),
        E::TransportSend(inner) => root_words(inner),
        E::TransportClosed => "the connection closed before the answer".to_owned(),
        E::Timeout { timeout } => format!("no answer within {} s", timeout.as_secs()),
        _ => "the gateway's answer could not be read".to_owned(),
    }
}

/// The MCP endpoint the command talks to.
async fn endpoint(args: &CallArgs) -> Result<String, Failure> {
    if let Some(endpoint) = &args.endpoint {
        deprecated("--endpoint", "--gateway (and --server NAME)");
        return super::gateway::checked(endpoint, "--endpoint");
    }
    if args.gateway.gateway.is_none()
        && args.gateway.url.is_none()
        && std::env::var_os("MREG_GATEWAY_URL").is_none()
        && let Ok(endpoint) = std::env::var("MREG_MCP_ENDPOINT")
        && !endpoint.trim().is_empty()
    {
        deprecated("MREG_MCP_ENDPOINT", "MREG_GATEWAY_URL");
        return super::gateway::checked(&endpoint, "MREG_MCP_ENDPOINT");
    }
    let server = args.server.as_deref().map(super::server_name).transpose()?;
    let base = args.gateway.resolve()?.mcp_url().await?;
    Ok(match server {
        Some(server) => format!("{base}/servers/{}/mcp", super::segment(server.as_str())),
        None => format!("{base}/mcp"),
    })
}

async fn call_tool(args: CallArgs) -> Result<(), Failure> {
    use rmcp::ServiceExt;
    use rmcp::model::{CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation};
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

    let arguments = parse_arguments(&args.arguments)?;
    let endpoint = endpoint(&args).await?;
    let token = super::token(args.token.as_ref(), &endpoint).await?;
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
        message: format!(
            "cannot open an MCP session at {}: {}",
            super::gateway::shown(&endpoint),
            session_failure(&e)
        ),
        code: if gateway_answered(&e) {
            1
        } else {
            EXIT_UNREACHABLE
        },
    })?;
    let result = client
        .call_tool(CallToolRequestParams::new(args.tool.clone()).with_arguments(arguments))
        .await
        .map_err(|e| {
            let why = call_failure(&e);
            format!("{} failed: {why}{}", args.tool, typing_hint(&why))
        });
    let _ = client.cancel().await;
    let result = result?;
    if args.json {
        print_json(&serde_json::to_value(&result).map_err(|e| e.to_string())?);
    } else {
        for block in &result.content {
            if let Some(t) = block.as_text() {
                outln!("{}", t.text);
            }
        }
    }
    if result.is_error == Some(true) {
        let text: String = result
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
            .collect();
        return Err(Failure::from(format!(
            "{} reported an error{}",
            args.tool,
            typing_hint(&text)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::parse_arguments;

    fn parse(pairs: &[&str]) -> Result<serde_json::Value, String> {
        let owned: Vec<String> = pairs.iter().map(|p| (*p).to_owned()).collect();
        parse_arguments(&owned).map(serde_json::Value::Object)
    }

    #[test]
    fn plain_values_are_strings_and_colon_equals_values_are_json() {
        assert_eq!(
            parse(&[
                "name=007",
                "flag=true",
                "limit:=10",
                "shared:=true",
                "tags:=[\"geo\"]",
                "expr=a=b",
                "empty=",
            ]),
            Ok(json!({
                "name": "007",
                "flag": "true",
                "limit": 10,
                "shared": true,
                "tags": ["geo"],
                "expr": "a=b",
                "empty": "",
            }))
        );
        assert_eq!(
            parse(&["url=http://h/x?a:=b"]),
            Ok(json!({ "url": "http://h/x?a:=b" })),
            "':=' after the first '=' is part of the text"
        );
    }

    #[test]
    fn malformed_arguments_are_refused_in_words() {
        let err = parse(&["limit:=ten"]).expect_err("not JSON");
        assert!(err.contains("'limit': 'ten' is not JSON"), "{err}");
        assert!(err.contains("limit=ten"), "{err}");
        let err = parse(&["lonely"]).expect_err("no =");
        assert!(err.contains("neither KEY=VALUE"), "{err}");
        assert!(parse(&["=x"]).is_err());
        assert!(parse(&["a=1", "a=2"]).is_err());
    }
}

//! The client commands (`mreg servers …`, `mreg tools …`, `mreg call`, `mreg whoami`,
//! `mreg audit list`): clients of a running gateway. They print tables for people and JSON
//! (`--json`) for scripts, and turn the server's error body into one readable line. One file per
//! command family; this one holds the HTTP client and the output helpers they share.

/// `println!` for client commands: see [`out`].
macro_rules! outln {
    () => {
        $crate::cli::client::out(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::client::out(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// `eprintln!` for every command: see [`err`].
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::cli::client::err(format_args!($($arg)*))
    };
}
pub(crate) use errln;

mod audit;
mod call;
pub mod gateway;
mod mcp_config;
mod servers;
mod tools;

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::cli::ClientArgs;

pub use audit::{AuditListArgs, audit_list};
pub use call::{CallArgs, call};
pub use gateway::Gateway;
pub use mcp_config::{McpConfigArgs, mcp_config};
pub use servers::{ServersArgs, run};
pub use tools::{ToolsArgs, tools};

/// Exit code when the gateway cannot be reached (`EX_UNAVAILABLE`).
const EXIT_UNREACHABLE: u8 = 69;
/// Exit code when the output could not be written (`EX_IOERR`).
const EXIT_OUTPUT: u8 = 74;

/// Set once stdout is closed or failed: nothing more is written to it.
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);
/// Set when stdout failed for another reason than a reader that went away.
static STDOUT_FAILED: AtomicBool = AtomicBool::new(false);

/// Writes one line of a client command's output. A reader that stopped reading
/// (`mreg servers list | head -1`) is not an error: the rest of the output is dropped quietly and
/// the command ends as it would have. Any other failure (a full disk) is reported once, and the
/// command then exits 74. (`println!` panics in both cases, since Rust ignores SIGPIPE; `serve`
/// relies on that, so the signal is left alone.)
pub(crate) fn out(line: std::fmt::Arguments<'_>) {
    if STDOUT_GONE.load(Ordering::Relaxed) {
        return;
    }
    let line = printable(&line.to_string(), Layout::Keep);
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        STDOUT_GONE.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            STDOUT_FAILED.store(true, Ordering::Relaxed);
            err(format_args!("mreg: cannot write the output: {e}"));
        }
    }
}

/// Writes one line to standard error, ignoring failure: a message nobody can read is no reason
/// to stop (`eprintln!` panics when standard error is a closed pipe, which turned a failed message
/// into exit code 101).
pub(crate) fn err(line: std::fmt::Arguments<'_>) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{line}");
}

/// Whether [`printable`] keeps line breaks and tabs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// `\n` and `\t` are kept (multi-line output such as a tool's text).
    Keep,
    /// Everything is on one line (a table cell, a field, an error message).
    OneLine,
}

/// `text` safe to put on a terminal: every control character (ESC, BEL, CR, DEL, the C1 set,
/// and with [`Layout::OneLine`] also `\n` and `\t`) and the bidirectional overrides are shown
/// as escapes (`\x1b`, `\u{202e}`) instead of being acted on. Gateways and the upstream servers
/// behind them choose much of what the commands print (descriptions, health reasons, error
/// messages): unescaped, that text could clear the screen, forge output, set the clipboard
/// (OSC 52) or hide a link (OSC 8).
pub(crate) fn printable(text: &str, layout: Layout) -> String {
    let hidden = |c: char| {
        (c.is_control() && !(layout == Layout::Keep && matches!(c, '\n' | '\t')))
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(hidden) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !hidden(c) {
            out.push(c);
        } else if u32::from(c) <= 0xff {
            out.push_str(&format!("\\x{:02x}", u32::from(c)));
        } else {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        }
    }
    out
}

/// A failed client command: what to print and the exit code.
pub struct Failure {
    message: String,
    code: u8,
}

impl std::fmt::Debug for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (exit {})", self.message, self.code)
    }
}

impl Failure {
    /// What to print.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The exit code.
    pub fn code(&self) -> u8 {
        self.code
    }
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
    /// A client of the gateway's REST API that `args` name, with the explicit or saved token.
    async fn new(args: &ClientArgs) -> Result<Self, Failure> {
        let base = args.gateway.resolve()?.api;
        let token = token(args.token.as_ref(), &base).await?;
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .map_err(|e| e.to_string())?,
            base,
            token,
        })
    }
}

/// The bearer token for requests to `target`: `--token`/`MREG_TOKEN` as given, else the one
/// `mreg login` saved (refreshed) when `target` is on the gateway it belongs to.
async fn token(
    explicit: Option<&crate::cli::BearerToken>,
    target: &str,
) -> Result<Option<String>, Failure> {
    match explicit {
        Some(token) => Ok(Some(token.0.clone())),
        None => Ok(crate::cli::login::bearer(target).await?),
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
                gateway::shown(&self.base),
                domain::text::root_cause(&e)
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
        let message = match value.get("message").and_then(Value::as_str) {
            Some(message) => message.to_owned(),
            // An MCP endpoint's JSON-RPC error: --gateway names the wrong listener.
            None if value.get("jsonrpc").is_some() => format!(
                "{} answers as an MCP endpoint, not as mreg's REST API ({}): --gateway takes the REST API's address (MREG_API_PORT, 8000 by default)",
                gateway::shown(&self.base),
                value
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("no message")
            ),
            None => format!(
                "HTTP {status} from {}, which does not answer as mreg's REST API: --gateway takes the REST API's address (MREG_API_PORT, 8000 by default)",
                gateway::shown(&self.base)
            ),
        };
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
                outln!("{label:8} {}", text(&me[key]));
            }
        }
        Ok::<(), Failure>(())
    };
    exit(outcome.await)
}

/// The exit code of a client command that ended with `outcome`, its failure printed.
pub(crate) fn exit(outcome: Result<(), Failure>) -> ExitCode {
    match outcome {
        Ok(()) if STDOUT_FAILED.load(Ordering::Relaxed) => ExitCode::from(EXIT_OUTPUT),
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            errln!("mreg: {}", printable(&failure.message, Layout::OneLine));
            ExitCode::from(failure.code)
        }
    }
}

/// Checks `raw` as a server name here, before it goes into a URL, so that a bad one is reported
/// as the user typed it (in a path it would arrive encoded: `bad name` as `bad+name`).
fn server_name(raw: &str) -> Result<domain::ServerName, Failure> {
    domain::ServerName::parse(raw).map_err(|e| {
        let why = match e {
            domain::Error::Invalid { message, .. } => message,
            other => other.to_string(),
        };
        Failure::from(format!("invalid server name '{raw}': {why}"))
    })
}

fn segment(name: &str) -> String {
    url::form_urlencoded::byte_serialize(name.as_bytes()).collect()
}

fn print_json(value: &Value) {
    outln!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => printable(s, Layout::OneLine),
        Value::Null => "-".to_owned(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Prints `rows` under the upper-cased `columns`, each column as wide as its widest cell.
fn print_rows(columns: &[&str], rows: Vec<Vec<String>>) {
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|row| {
            row.iter()
                .map(|cell| printable(cell, Layout::OneLine))
                .collect()
        })
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
        outln!("{}", out.trim_end());
    };
    line(columns.iter().map(|c| c.to_uppercase()).collect());
    for row in rows {
        line(row);
    }
}

#[cfg(test)]
mod tests {
    use super::{Layout, printable};

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        let hostile = "a\u{1b}[2Jb\u{7}c\rd\u{9b}e\u{202e}f\ng\th";
        assert_eq!(
            printable(hostile, Layout::OneLine),
            "a\\x1b[2Jb\\x07c\\x0dd\\x9be\\u{202e}f\\x0ag\\x09h"
        );
        assert_eq!(
            printable(hostile, Layout::Keep),
            "a\\x1b[2Jb\\x07c\\x0dd\\x9be\\u{202e}f\ng\th"
        );
        assert_eq!(
            printable("plain, ünïcode", Layout::OneLine),
            "plain, ünïcode"
        );
    }
}

//! The peers nobody here wrote: the TypeScript SDK's client and servers (`interop/`, installed by
//! `npm ci`) and the Python SDK's client (`interop/python/.venv`, made by `scripts/python-peers`).
//! Without them the tests that need them are skipped, unless `MREG_TEST_REQUIRE_SERVICES=1`
//! (CI) makes that a failure.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub(crate) fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../interop")
}

/// Whether the Node.js peers can run; skips (or, when required, fails) otherwise.
pub(crate) fn peers_available() -> bool {
    let installed = interop_dir()
        .join("node_modules/@modelcontextprotocol/sdk/package.json")
        .exists();
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if installed && node {
        return true;
    }
    let why = if node {
        "interop/node_modules is missing (npm ci --prefix interop)"
    } else {
        "node is not installed"
    };
    assert!(
        !std::env::var("MREG_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1" || v == "true"),
        "the TypeScript SDK peers are required but {why}"
    );
    eprintln!("SKIPPED: {why}");
    false
}

/// A TypeScript SDK server in its own process.
pub(crate) struct TsServer {
    /// Its MCP endpoint.
    pub(crate) url: String,
    child: Child,
}

impl TsServer {
    /// Starts the server (`--stateless`: JSON answers, no sessions) on a port of its choosing.
    pub(crate) async fn start(stateless: bool) -> Self {
        let mut command = Command::new("node");
        command
            .arg(interop_dir().join("server.mjs"))
            .args(["--port", "0"]);
        if stateless {
            command.arg("--stateless");
        }
        let (url, child) = listening(command).await;
        Self { url, child }
    }

    /// Kills the server, as a crash would.
    pub(crate) async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// A FastMCP server (`interop/python/server.py`) in its own process, in FastMCP's default HTTP
/// mode: stateful sessions, SSE answers.
pub(crate) struct FastMcpServer {
    /// Its MCP endpoint.
    pub(crate) url: String,
    _child: Child,
}

impl FastMcpServer {
    /// Starts `server.py` with `options` under the Python peers' interpreter.
    pub(crate) async fn start(python: &PathBuf, options: &[&str]) -> Self {
        let mut command = Command::new(python);
        command
            .arg(interop_dir().join("python/server.py"))
            .args(["--port", "0"])
            .args(options);
        let (url, child) = listening(command).await;
        Self { url, _child: child }
    }
}

/// Starts a peer server that prints `LISTENING <port>` once it accepts connections; its MCP
/// endpoint (`/mcp` on that port) and the process, killed when dropped.
async fn listening(mut command: Command) -> (String, Child) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the peer server starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the server reports its port")
        .expect("read")
        .expect("a line");
    let port = line
        .strip_prefix("LISTENING ")
        .expect("LISTENING <port>")
        .trim()
        .to_owned();
    (format!("http://127.0.0.1:{port}/mcp"), child)
}

/// Runs the TypeScript SDK client; returns its JSON answer and whether it succeeded.
pub(crate) async fn ts_client(url: &str, options: &[&str], command: &[&str]) -> (bool, Value) {
    let mut client = Command::new("node");
    client
        .arg(interop_dir().join("client.mjs"))
        .args(["--url", url, "--timeout", "20000"]);
    run_client(client, options, command).await
}

/// Runs an SDK client command line (one JSON line on stdout); returns whether it succeeded and
/// what it printed.
async fn run_client(mut client: Command, options: &[&str], command: &[&str]) -> (bool, Value) {
    let output = client
        .args(options)
        .args(command)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("the client runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "client printed {stdout:?}; stderr {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.success(), value)
}

/// The Python interop peers' interpreter (`scripts/python-peers` makes its virtual environment),
/// or `None` (skip; a failure when the peers are required).
pub(crate) fn python_peers() -> Option<PathBuf> {
    let python = interop_dir().join("python/.venv/bin/python");
    if python.exists() {
        return Some(python);
    }
    assert!(
        !std::env::var("MREG_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1" || v == "true"),
        "the Python SDK peers are required but interop/python/.venv is missing (scripts/python-peers)"
    );
    eprintln!("SKIPPED: interop/python/.venv is missing (scripts/python-peers)");
    None
}

/// Runs the official Python SDK's client (`interop/python/client.py`); returns whether it
/// succeeded and its JSON answer (on failure, `error` is the message the SDK's user sees).
pub(crate) async fn py_client(
    python: &PathBuf,
    url: &str,
    options: &[&str],
    command: &[&str],
) -> (bool, Value) {
    let mut client = Command::new(python);
    client
        .arg(interop_dir().join("python/client.py"))
        .args(["--url", url, "--timeout", "20"]);
    run_client(client, options, command).await
}

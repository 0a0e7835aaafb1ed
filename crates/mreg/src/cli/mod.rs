//! The command line: `mreg serve`, `mreg migrate`, `mreg check-config`, and the client commands
//! (`mreg servers …`) that talk to a running gateway.

pub mod client;
pub mod login;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, ConfigError, EXIT_CONFIG};
use crate::{app, store, telemetry};
use client::{errln, outln};

/// The MCP Registry Gateway.
///
/// Keeps a registry of MCP servers and serves it over a REST API (default
/// http://127.0.0.1:8000, docs at /docs) and as an MCP gateway (http://127.0.0.1:8001/mcp with
/// the registry tools, and /servers/NAME/mcp in front of each registered server), watching the
/// health of every server. With an identity provider configured (AZURE_TENANT_ID,
/// AZURE_CLIENT_ID, AZURE_CLIENT_SECRET, or MREG_OIDC_*) it is also the OAuth authorization
/// server of its MCP clients and every route needs a bearer token (`mreg login`); roles and rate
/// limits come from MREG_POLICY_FILE. Configuration comes from built-in defaults, an optional
/// TOML file (--config or MREG_CONFIG), a .env file in the working directory, and the
/// environment, in rising precedence; `mreg check-config` shows the result.
#[derive(Debug, Parser)]
#[command(name = "mreg", version, propagate_version = true)]
pub struct Cli {
    /// TOML configuration file [default: MREG_CONFIG]; client commands read it too, to find the
    /// gateway.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// mreg's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway until SIGINT or SIGTERM.
    ///
    /// Everything is configured by settings, not flags (`mreg check-config` shows them and where
    /// each came from): the REST API listens on MREG_API_HOST:MREG_API_PORT (127.0.0.1:8000), the
    /// MCP listener on FASTMCP_SERVER_HOST:FASTMCP_SERVER_PORT (127.0.0.1:8001); the registry is
    /// the SQLite file in MREG_DATA_DIR (.) unless MREG_DATABASE_URL names PostgreSQL, the cache
    /// is in memory unless MREG_REDIS_URL names Redis; an identity provider (AZURE_* or MREG_OIDC_*)
    /// turns authentication on. Set them in the environment, in ./.env, or in a TOML file
    /// (--config).
    Serve,
    /// Bring the database schema up to date, then exit.
    Migrate,
    /// Print the effective configuration (secrets hidden) and where each value came from.
    CheckConfig,
    /// Manage servers in a running gateway's registry.
    Servers(Box<client::ServersArgs>),
    /// Search the tools of the registered servers.
    Tools(Box<client::ToolsArgs>),
    /// Sign in to a gateway (browser, OAuth with PKCE); later commands use the saved token.
    Login(crate::cli::login::LoginArgs),
    /// Revoke the saved login and forget it.
    Logout,
    /// Show who the gateway thinks you are.
    Whoami(ClientArgs),
    /// Call one of the gateway's MCP tools: `mreg call list_servers tag=prod`.
    Call(client::CallArgs),
    /// Print a ready-to-paste MCP client configuration for the gateway's tools or one server.
    McpConfig(Box<client::McpConfigArgs>),
    /// Read the audit log (`list`, through a gateway) or check its hash chain (`verify`, in the
    /// configured database).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Print a shell completion script, e.g. `mreg completions bash > ~/.local/share/bash-completion/completions/mreg`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print mreg's manual page (roff: `mreg man | man -l -`), or write one page per command
    /// into a directory.
    Man {
        /// Write mreg.1, mreg-servers.1, mreg-servers-add.1, … into this directory instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// `mreg audit`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit rows, newest first (admins only).
    List(Box<client::AuditListArgs>),
    /// Walk the whole hash chain in the configured database (MREG_DATABASE_URL, MREG_POSTGRES_*,
    /// or the SQLite file) and report the first altered, removed or reordered row. Exit status 0
    /// when the chain is intact, 1 when it is broken, 64 when there is no database here (or the
    /// configuration is invalid), 69 when the database cannot be reached or read.
    Verify {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// How a client command names the gateway (see [`client::Gateway`]).
#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    /// The gateway's REST API, e.g. `https://mreg.example.com:8000` [default: MREG_GATEWAY_URL,
    /// else the listeners of this directory's configuration, as `mreg serve` reads it].
    #[arg(long, global = true, value_name = "URL")]
    pub gateway: Option<String>,

    /// Old name of --gateway.
    #[arg(long, global = true, value_name = "URL", hide = true)]
    pub url: Option<String>,

    /// The configuration file (`--config`), set by the dispatcher.
    #[arg(skip)]
    pub config: Option<PathBuf>,
}

impl GatewayArgs {
    /// The gateway these arguments (and the configuration) name.
    pub fn resolve(&self) -> Result<client::Gateway, client::Failure> {
        client::Gateway::resolve(
            self.gateway.as_deref(),
            self.url.as_deref(),
            self.config.as_deref(),
        )
    }
}

/// Options shared by every client command of the REST API.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Which gateway.
    #[command(flatten)]
    pub gateway: GatewayArgs,

    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,

    /// Bearer token to send (default: the one `mreg login` saved).
    #[arg(long, global = true, env = "MREG_TOKEN", hide_env_values = true)]
    pub token: Option<BearerToken>,
}

/// A bearer token given on the command line; `Debug` never shows it.
#[derive(Clone)]
pub struct BearerToken(pub String);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

impl std::str::FromStr for BearerToken {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// Parses the command line and runs it; returns the process exit code.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            errln!("mreg: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(dispatch(cli))
}

fn finish(outcome: Result<(), String>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // Login's errors quote the authorization server.
            let message = client::printable(&message, client::Layout::OneLine);
            errln!("mreg: {message}");
            ExitCode::FAILURE
        }
    }
}

fn config_failure(e: &ConfigError) -> ExitCode {
    errln!("mreg: configuration error: {e}");
    ExitCode::from(EXIT_CONFIG as u8)
}

async fn dispatch(cli: Cli) -> ExitCode {
    let file = cli.config.as_deref();
    let (serving, config) = match cli.command {
        Command::Servers(mut args) => {
            args.client.gateway.config = cli.config;
            return client::run(*args).await;
        }
        Command::Tools(mut args) => {
            args.client.gateway.config = cli.config;
            return client::tools(*args).await;
        }
        Command::Whoami(mut args) => {
            args.gateway.config = cli.config;
            return client::whoami(args).await;
        }
        Command::McpConfig(mut args) => {
            args.rest.gateway.config = cli.config;
            return client::mcp_config(*args).await;
        }
        Command::Call(mut args) => {
            args.gateway.config = cli.config;
            return client::call(args).await;
        }
        Command::Audit(AuditCommand::List(mut args)) => {
            args.client.gateway.config = cli.config;
            return client::audit_list(*args).await;
        }
        Command::Audit(AuditCommand::Verify { json }) => {
            let config = match config::load(file).and_then(|raw| raw.parse()) {
                Ok(config) => config,
                Err(e) => return config_failure(&e),
            };
            return audit_verify(&config, json).await;
        }
        Command::Login(mut args) => {
            args.config = cli.config;
            return finish(crate::cli::login::login(args).await);
        }
        Command::Logout => return finish(crate::cli::login::logout().await),
        Command::CheckConfig => return check_config(file),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            // Generated into memory: clap_complete panics when its writer fails.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "mreg", &mut script);
            return finish(write_stdout(&script));
        }
        Command::Man { dir } => return finish(manual(dir.as_deref())),
        Command::Serve => (true, config::load(file).and_then(|raw| raw.parse())),
        Command::Migrate => (false, config::load(file).and_then(|raw| raw.parse())),
    };
    let config = match config {
        Ok(config) => config,
        Err(e) => return config_failure(&e),
    };
    telemetry::init(&config.log);
    // A mistyped variable is otherwise silently ignored (its default used).
    let present = config::lint::present();
    for warning in config::lint::warnings(present.iter().map(|(n, o)| (n.as_str(), *o))) {
        tracing::warn!("{warning}");
    }
    let json_log = config.log.format == config::LogFormat::Json;
    let outcome = if serving {
        serve(config).await
    } else {
        migrate(&config).await
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once on standard error: as a JSON log line too when the log is read by machines.
            if json_log {
                tracing::error!("{e:#}");
            }
            errln!("mreg: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the manual page of `mreg`, or writes one page per command into `dir`.
fn manual(dir: Option<&std::path::Path>) -> Result<(), String> {
    let command = <Cli as clap::CommandFactory>::command();
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            clap_mangen::generate_to(command, dir)
                .map_err(|e| format!("cannot write the manual pages into {}: {e}", dir.display()))
        }
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut page)
                .map_err(|e| e.to_string())?;
            write_stdout(&page)
        }
    }
}

/// Writes a generated document (a manual page, a completion script) to standard output. A
/// reader that stopped reading (`mreg man | head`) is not an error.
fn write_stdout(bytes: &[u8]) -> Result<(), String> {
    let mut stdout = std::io::stdout().lock();
    match std::io::Write::write_all(&mut stdout, bytes)
        .and_then(|()| std::io::Write::flush(&mut stdout))
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(format!("cannot write the output: {e}"))
        }
        _ => Ok(()),
    }
}

async fn serve(config: config::Config) -> anyhow::Result<()> {
    let running = app::start(config).await?;
    let token = running.shutdown_token();
    #[allow(
        clippy::disallowed_methods,
        reason = "the signal handler of the serve command; it lives as long as the process"
    )]
    tokio::spawn(async move {
        app::shutdown_signal().await;
        token.cancel();
    });
    running.wait().await
}

async fn audit_verify(config: &config::Config, json: bool) -> ExitCode {
    // A maintenance command reads the gateway's database; it never makes an empty one (which
    // would verify as "empty" in the wrong directory).
    if let config::DatabaseConfig::Sqlite { path } = &config.database
        && !path.exists()
    {
        errln!(
            "mreg: no database at {}: run this where the gateway keeps its data, or set MREG_DATA_DIR or MREG_DATABASE_URL",
            path.display()
        );
        return ExitCode::from(EXIT_CONFIG as u8);
    }
    // Exit 1 says the chain is broken; a database that cannot be asked is another answer.
    let unavailable = ExitCode::from(69);
    let stores = match store::connect(config).await {
        Ok(stores) => stores,
        Err(e) => {
            errln!("mreg: {e:#}");
            return unavailable;
        }
    };
    let result = crate::audit::verify(stores.audit.as_ref()).await;
    stores.close().await;
    let verification = match result {
        Ok(v) => v,
        Err(e) => {
            errln!("mreg: cannot read the audit log: {e}");
            return unavailable;
        }
    };
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&verification).unwrap_or_default()
        );
    } else if let Some(broken) = &verification.broken {
        outln!(
            "audit chain BROKEN at row {}: {} ({} rows before it verify)",
            broken.seq,
            broken.reason,
            verification.rows
        );
    } else {
        match (verification.first_seq, verification.last_seq) {
            (Some(first), Some(last)) => outln!(
                "audit chain intact: {} rows ({first} to {last}); head {}",
                verification.rows,
                verification.head
            ),
            _ => outln!("audit log is empty"),
        }
    }
    if verification.broken.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn migrate(config: &config::Config) -> anyhow::Result<()> {
    let stores = store::connect(config).await?;
    outln!("database {} is up to date", config.database.redacted());
    stores.close().await;
    Ok(())
}

fn check_config(file: Option<&std::path::Path>) -> ExitCode {
    let raw = match config::load(file) {
        Ok(raw) => raw,
        Err(e) => return config_failure(&e),
    };
    // A URL in any setting (MREG_GATEWAY_URL, MREG_PUBLIC_URL, …) may carry a password.
    let rows: Vec<_> = raw
        .describe()
        .into_iter()
        .map(|(setting, value, source)| {
            let has_password = url::Url::parse(&value).is_ok_and(|u| u.password().is_some());
            let value = if has_password {
                config::redact_url(&value)
            } else {
                value
            };
            (setting, value, source)
        })
        .collect();
    let width = rows.iter().map(|(s, _, _)| s.env.len()).max().unwrap_or(0);
    let value_width = rows
        .iter()
        .map(|(_, v, _)| v.chars().count())
        .max()
        .unwrap_or(0)
        .min(60);
    for (setting, value, source) in &rows {
        outln!("{:width$}  {value:value_width$}  ({source})", setting.env);
    }
    let present = config::lint::present();
    for warning in config::lint::warnings(present.iter().map(|(n, o)| (n.as_str(), *o))) {
        errln!("mreg: warning: {warning}");
    }
    match raw.parse() {
        Ok(config) => {
            outln!();
            outln!("database:     {}", config.database.redacted());
            outln!(
                "cache:        {}",
                if config.redis_url.is_some() {
                    "redis"
                } else {
                    "memory (in process)"
                }
            );
            outln!("auth:         {}", auth_mode(&config));
            outln!("REST API:     http://{}", config.api);
            let mcp = config.public_url.as_ref().map_or_else(
                || format!("http://{}", config.mcp),
                |url| url.as_str().trim_end_matches('/').to_owned(),
            );
            outln!("MCP endpoint: {mcp}/mcp (servers at {mcp}/servers/NAME/mcp)");
            client::exit(Ok(()))
        }
        Err(e) => config_failure(&e),
    }
}

/// The authentication mode in words: who signs callers in.
fn auth_mode(config: &config::Config) -> String {
    match (config.auth.mode, &config.auth.oidc) {
        (config::AuthMode::None, _) => {
            "none (every caller is an administrator; loopback only)".to_owned()
        }
        (config::AuthMode::OAuth, Some(oidc)) => {
            format!("oauth, OpenID Connect provider {}", oidc.issuer)
        }
        (config::AuthMode::OAuth, None) => format!(
            "oauth, Entra ID tenant {}",
            config.azure.tenant_id.as_deref().unwrap_or("-")
        ),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}

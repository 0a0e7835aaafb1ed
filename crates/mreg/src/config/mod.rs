//! mreg's configuration: one typed tree, loaded once at start-up from, in rising precedence,
//! built-in defaults, an optional TOML file, a `.env` file in the working directory, and the
//! process environment.
//!
//! Loading first collects every setting as text together with where it came from (so that
//! `mreg check-config` can say), then parses each one. The first bad value stops start-up with
//! one line naming the setting; nothing is bound before that.

pub mod lint;
pub mod policy;
pub mod settings;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretBox, SecretString};
use url::Url;

use settings::{SETTINGS, Setting};

/// The exit code for a configuration error (`EX_USAGE` in sysexits.h).
pub const EXIT_CONFIG: i32 = 64;

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// mreg's built-in default.
    Default,
    /// The TOML configuration file.
    File(PathBuf),
    /// The `.env` file in the working directory.
    DotEnv,
    /// The process environment.
    Env,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::File(path) => write!(f, "file {}", path.display()),
            Self::DotEnv => f.write_str(".env"),
            Self::Env => f.write_str("environment"),
        }
    }
}

/// A setting that could not be used: which one, from where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}{}: {message}", describe_origin(.origin))]
pub struct ConfigError {
    /// The setting, by environment variable name (or the file, for file-level problems).
    pub setting: String,
    /// Where the bad value came from, when it came from somewhere.
    pub origin: Option<Source>,
    /// What is wrong and what would be right.
    pub message: String,
}

fn describe_origin(origin: &Option<Source>) -> String {
    match origin {
        Some(Source::File(path)) => format!(" (in {})", path.display()),
        Some(Source::DotEnv) => " (in .env)".to_owned(),
        _ => String::new(),
    }
}

/// A host and port to listen on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// Host name or IP address.
    pub host: String,
    /// Port (0: any free port).
    pub port: u16,
}

impl Listen {
    /// Whether binding here keeps the listener on this machine.
    pub fn is_loopback(&self) -> bool {
        self.host == "localhost" || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Which database holds the registry.
#[derive(Debug, Clone)]
pub enum DatabaseConfig {
    /// An embedded SQLite file.
    Sqlite {
        /// Path of the database file.
        path: PathBuf,
    },
    /// A PostgreSQL server.
    Postgres {
        /// Connection URL (may hold a password).
        url: SecretString,
    },
}

impl DatabaseConfig {
    /// A description safe to print (no password).
    pub fn redacted(&self) -> String {
        match self {
            Self::Sqlite { path } => format!("sqlite:{}", path.display()),
            Self::Postgres { url } => redact_url(url.expose_secret()),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging settings.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `tracing` filter directive.
    pub filter: String,
    /// Output format.
    pub format: LogFormat,
}

/// Entra ID (Azure AD) settings of the seed document. Parsed and validated now; used by the
/// OAuth proxy.
#[derive(Debug, Clone)]
pub struct AzureConfig {
    /// Tenant: GUID, verified domain, or `organizations` / `common`.
    pub tenant_id: Option<String>,
    /// Application (client) ID.
    pub client_id: Option<String>,
    /// Client secret.
    pub client_secret: Option<SecretString>,
    /// Public URL of the OAuth callback.
    pub callback_url: Option<Url>,
    /// Scopes requested from Entra.
    pub scopes: Vec<String>,
    /// Confirm users with Graph `/me`.
    pub validate_with_graph: bool,
    /// Upper bound on how long a validated token is cached.
    pub token_cache_ttl: Duration,
    /// Tolerated clock skew.
    pub clock_skew: Duration,
    /// Authority host of the Entra preset (`https://login.microsoftonline.com`).
    pub authority_host: Url,
    /// Tenants whose users may sign in, for multi-tenant apps.
    pub allowed_tenants: Vec<String>,
    /// Custom scopes of mreg's own app registration (short names).
    pub api_scopes: Vec<String>,
    /// Microsoft Graph base URL.
    pub graph_url: Url,
}

/// A generic OpenID Connect upstream, used instead of the Entra preset.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// Issuer URL; its discovery document says everything else.
    pub issuer: Url,
    /// mreg's client ID there.
    pub client_id: String,
    /// mreg's client secret there.
    pub client_secret: SecretString,
}

/// Whether routes require a bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Every API and MCP route needs a token issued by mreg or by the upstream for this app.
    OAuth,
    /// Nobody is asked who they are; only loopback binds are allowed.
    None,
}

/// Authentication and the OAuth authorization server.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// The effective mode (`auto` already resolved).
    pub mode: AuthMode,
    /// Scopes every delegated token must carry.
    pub required_scopes: Vec<String>,
    /// Lifetime of minted access tokens.
    pub access_token_ttl: Duration,
    /// Lifetime of a refresh-token family.
    pub refresh_token_ttl: Duration,
    /// Lifetime of mreg's one-time authorization codes.
    pub code_ttl: Duration,
    /// Period of the signing-key rotation.
    pub signing_key_rotation: Duration,
    /// The generic OpenID Connect upstream, when configured.
    pub oidc: Option<OidcConfig>,
    /// Whether client metadata documents may be fetched from private addresses.
    pub cimd_allow_private: bool,
    /// Budget per client address and minute on the public OAuth endpoints; 0 is unlimited.
    pub oauth_rate_limit_per_minute: u32,
    /// Most registered clients without a grant; `/register` refuses more.
    pub max_idle_clients: u64,
    /// Reverse proxies in front of the MCP listener that append to `X-Forwarded-For`.
    pub trusted_proxy_hops: usize,
}

/// Health monitor settings.
#[derive(Debug, Clone)]
pub struct HealthConfig {
    /// Whether the monitor runs.
    pub enabled: bool,
    /// Time between probes of a server that is up.
    pub interval: Duration,
    /// Longest time one probe may take.
    pub timeout: Duration,
    /// Probes run at once by this instance.
    pub concurrency: usize,
    /// Failures in a row that make a server unhealthy.
    pub unhealthy_after: u32,
    /// How long probe history is kept.
    pub retention: Duration,
}

/// Audit log settings.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Whether anything is audited.
    pub enabled: bool,
    /// Entries that may wait in memory.
    pub queue: usize,
    /// The spool file.
    pub spool: PathBuf,
    /// Largest spool, in bytes.
    pub spool_max_bytes: u64,
    /// How long rows are kept; `None`: forever.
    pub retention: Option<Duration>,
    /// Rate-limit refusals of one caller within this long share one row and a count.
    pub refusal_window: Duration,
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// REST API listener.
    pub api: Listen,
    /// MCP listener.
    pub mcp: Listen,
    /// Public base URL of the MCP listener, when it differs from the listen address.
    pub public_url: Option<Url>,
    /// Extra host names both listeners answer to (besides loopback, their own host and the
    /// public URL's): the names of a load balancer in front of them.
    pub allowed_hosts: Vec<String>,
    /// Web origins (`https://app.example.com`) whose pages may call the MCP listener (CORS).
    pub cors_origins: Vec<String>,
    /// Loopback and private upstreams that may be registered with authentication on.
    pub upstream_allow: Vec<crate::egress::Allowed>,
    /// Local state directory.
    pub data_dir: PathBuf,
    /// Registry database.
    pub database: DatabaseConfig,
    /// Database pool size.
    pub database_max_connections: u32,
    /// The bound on each database call (`MREG_DATABASE_TIMEOUT`).
    pub database_timeout: Duration,
    /// Key for secrets at rest and session tokens; generated and kept in the database when unset.
    pub encryption_key: Option<std::sync::Arc<SecretBox<[u8; 32]>>>,
    /// Redis URL, when Redis is used as the cache.
    pub redis_url: Option<SecretString>,
    /// Prefix of every Redis key.
    pub redis_prefix: String,
    /// Logging.
    pub log: LogConfig,
    /// Namespace of server names in the official registry API.
    pub registry_namespace: String,
    /// Drain deadline at shutdown.
    pub shutdown_grace: Duration,
    /// How long a connection may take to send a request's headers (`MREG_HEADER_TIMEOUT`).
    pub header_timeout: Duration,
    /// Whether `/metrics` has per-server series (`MREG_METRICS_PER_SERVER`); unset: only with
    /// authentication off.
    pub metrics_per_server: Option<bool>,
    /// How long an event stream may stay quiet before a comment keeps it alive
    /// (`MREG_SSE_KEEPALIVE`).
    pub sse_keepalive: Duration,
    /// Largest accepted REST request body.
    pub max_body_bytes: usize,
    /// Entra ID.
    pub azure: AzureConfig,
    /// Authentication.
    pub auth: AuthConfig,
    /// Roles and rate limits (the seed mapping, or the policy file's).
    pub policy: policy::Policy,
    /// Health monitor.
    pub health: HealthConfig,
    /// Audit log.
    pub audit: AuditConfig,
    /// Name of this instance in leases and history.
    pub instance_id: String,
}

/// Every setting's text value and where it came from, before parsing.
#[derive(Debug, Clone, Default)]
pub struct RawConfig {
    values: BTreeMap<&'static str, (String, Source)>,
}

impl RawConfig {
    /// Collects values from the defaults, `file` (if any), `.env` lines and `env` pairs, later
    /// sources winning. Unknown `MREG_*` variables are ignored; unknown file keys are errors.
    pub fn collect(
        file: Option<&Path>,
        dotenv: impl IntoIterator<Item = (String, String)>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut raw = Self::default();
        for setting in SETTINGS {
            if let Some(default) = setting.default {
                raw.values
                    .insert(setting.env, (default.to_owned(), Source::Default));
            }
        }
        if let Some(path) = file {
            raw.merge_file(path)?;
        }
        for (source, pairs) in [
            (Source::DotEnv, dotenv.into_iter().collect::<Vec<_>>()),
            (Source::Env, env.into_iter().collect()),
        ] {
            for (name, value) in pairs {
                if let Some(setting) = settings::by_env(&name) {
                    raw.values.insert(setting.env, (value, source.clone()));
                }
            }
        }
        Ok(raw)
    }

    fn merge_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let file_error = |message: String| ConfigError {
            setting: format!("config file {}", path.display()),
            origin: None,
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| file_error(e.message().to_owned()))?;
        let mut flat = Vec::new();
        flatten("", &toml::Value::Table(table), &mut flat).map_err(file_error)?;
        for (key, value) in flat {
            let setting =
                settings::by_key(&key).ok_or_else(|| file_error(format!("unknown key '{key}'")))?;
            self.values
                .insert(setting.env, (value, Source::File(path.to_owned())));
        }
        Ok(())
    }

    /// The value of `setting` and its source, if set.
    pub fn get(&self, setting: &Setting) -> Option<(&str, &Source)> {
        self.values
            .get(setting.env)
            .map(|(value, source)| (value.as_str(), source))
    }

    /// Every setting with its value (secrets and passwords in URLs redacted) and source, in
    /// table order, for `mreg check-config`.
    pub fn describe(&self) -> Vec<(&'static Setting, String, String)> {
        SETTINGS
            .iter()
            .map(|setting| match self.get(setting) {
                None => (setting, "(unset)".to_owned(), "default".to_owned()),
                Some((value, source)) => {
                    let shown =
                        if setting.env == "MREG_DATABASE_URL" || setting.env == "MREG_REDIS_URL" {
                            redact_url(value)
                        } else if setting.secret {
                            "(set, hidden)".to_owned()
                        } else if Url::parse(value).is_ok_and(|url| url.password().is_some()) {
                            // Any other URL setting (MREG_GATEWAY_URL, MREG_PUBLIC_URL…).
                            redact_url(value)
                        } else {
                            value.to_owned()
                        };
                    (setting, shown, source.to_string())
                }
            })
            .collect()
    }

    /// Parses every value into a [`Config`].
    pub fn parse(&self) -> Result<Config, ConfigError> {
        Parser { raw: self }.config()
    }
}

fn flatten(
    prefix: &str,
    value: &toml::Value,
    out: &mut Vec<(String, String)>,
) -> Result<(), String> {
    match value {
        toml::Value::Table(table) => {
            for (k, v) in table {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out)?;
            }
        }
        toml::Value::String(s) => out.push((prefix.to_owned(), s.clone())),
        toml::Value::Integer(i) => out.push((prefix.to_owned(), i.to_string())),
        toml::Value::Boolean(b) => out.push((prefix.to_owned(), b.to_string())),
        toml::Value::Array(items) => {
            let words = items
                .iter()
                .map(|i| i.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| format!("'{prefix}': only arrays of strings are supported"))?;
            out.push((prefix.to_owned(), words.join(" ")));
        }
        other => {
            return Err(format!(
                "'{prefix}': a {} is not supported here",
                other.type_str()
            ));
        }
    }
    Ok(())
}

/// Replaces the password of a URL (if any) with `***`.
pub fn redact_url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        Ok(url) => url.to_string(),
        Err(_) => "(unparsable, hidden)".to_owned(),
    }
}

/// Loads the configuration the way `mreg` does: `file` (or `MREG_CONFIG`), `./.env`, the
/// process environment.
pub fn load(file: Option<&Path>) -> Result<RawConfig, ConfigError> {
    let dotenv: Vec<(String, String)> = match dotenvy::from_path_iter(".env") {
        Ok(iter) => iter.collect::<Result<_, _>>().map_err(|e| ConfigError {
            setting: ".env".to_owned(),
            origin: None,
            message: e.to_string(),
        })?,
        Err(_) => Vec::new(),
    };
    let env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let from_env = |pairs: &[(String, String)]| {
        pairs
            .iter()
            .rev()
            .find(|(k, _)| k == "MREG_CONFIG")
            .map(|(_, v)| PathBuf::from(v))
    };
    let file = file
        .map(Path::to_path_buf)
        .or_else(|| from_env(&env))
        .or_else(|| from_env(&dotenv));
    RawConfig::collect(file.as_deref(), dotenv, env)
}

struct Parser<'a> {
    raw: &'a RawConfig,
}

impl Parser<'_> {
    fn setting(env: &str) -> &'static Setting {
        settings::by_env(env).unwrap_or_else(|| unreachable!("unknown setting {env}"))
    }

    fn text(&self, env: &str) -> Option<(&str, &Source)> {
        self.raw
            .get(Self::setting(env))
            .filter(|(v, _)| !v.trim().is_empty())
    }

    fn error(&self, env: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            setting: env.to_owned(),
            origin: self.raw.get(Self::setting(env)).map(|(_, s)| s.clone()),
            message: message.into(),
        }
    }

    fn parse<T>(
        &self,
        env: &str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.text(env) {
            None => Ok(None),
            Some((value, _)) => f(value.trim()).map(Some).map_err(|m| self.error(env, m)),
        }
    }

    fn required<T>(
        &self,
        env: &str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        self.parse(env, f)?
            .ok_or_else(|| self.error(env, "must not be empty"))
    }

    fn is_set(&self, env: &str) -> bool {
        self.text(env)
            .is_some_and(|(_, source)| *source != Source::Default)
    }

    fn listen(&self, host: &str, port: &str) -> Result<Listen, ConfigError> {
        Ok(Listen {
            host: self.required(host, parse_host)?,
            port: self.required(port, |v| {
                v.parse::<u16>()
                    .map_err(|_| format!("'{v}' is not a port number (0-65535)"))
            })?,
        })
    }

    fn seconds(&self, env: &str, max: u64) -> Result<Duration, ConfigError> {
        self.required(env, |v| match v.parse::<u64>() {
            Ok(n) if n <= max => Ok(Duration::from_secs(n)),
            _ => Err(format!(
                "'{v}' is not a whole number of seconds from 0 to {max}"
            )),
        })
    }

    fn config(&self) -> Result<Config, ConfigError> {
        let config = self.assemble()?;
        if config.auth.mode == AuthMode::OAuth && config.encryption_key.is_none() {
            return Err(self.error(
                "MREG_ENCRYPTION_KEY",
                "is required with authentication on (or MREG_ENCRYPTION_KEY_FILE): the key seals the token-signing keys, and one generated into the database would open for anyone who can read it; make one with `openssl rand -base64 32` and keep it outside the database",
            ));
        }
        if config.auth.mode == AuthMode::OAuth
            && config.public_url.is_none()
            && config
                .mcp
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_unspecified())
        {
            return Err(self.error(
                "MREG_PUBLIC_URL",
                format!(
                    "is required when the MCP listener binds every address ('{}') with authentication on: clients, the sign-in redirect and the token issuer need the address they reach mreg at (e.g. https://mreg.example.com), not http://{}:{}",
                    config.mcp.host, config.mcp.host, config.mcp.port
                ),
            ));
        }
        if config.auth.mode == AuthMode::None {
            for (listen, env) in [
                (&config.api, "MREG_API_HOST"),
                (&config.mcp, "FASTMCP_SERVER_HOST"),
            ] {
                if !listen.is_loopback() {
                    return Err(self.error(
                        env,
                        format!(
                            "'{}' is not a loopback address, and authentication is off (MREG_AUTH=none, or no identity provider): bind to 127.0.0.1, or configure an identity provider (AZURE_* or MREG_OIDC_*)",
                            listen.host
                        ),
                    ));
                }
            }
        }
        Ok(config)
    }

    /// The encryption key: `MREG_ENCRYPTION_KEY`, or the content of `MREG_ENCRYPTION_KEY_FILE`.
    fn encryption_key(&self) -> Result<Option<std::sync::Arc<SecretBox<[u8; 32]>>>, ConfigError> {
        let decode = |v: &str| {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(v.trim()))
                .map_err(|_| "is not base64".to_owned())?;
            let key: [u8; 32] = bytes
                .try_into()
                .map_err(|_| "must be 32 bytes (base64 of `openssl rand 32`)".to_owned())?;
            Ok(std::sync::Arc::new(SecretBox::new(Box::new(key))))
        };
        let inline = self.parse("MREG_ENCRYPTION_KEY", decode)?;
        let file = self.parse("MREG_ENCRYPTION_KEY_FILE", |path| {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
            decode(&text).map_err(|why| format!("{path}: the key {why}"))
        })?;
        match (inline, file) {
            (Some(_), Some(_)) => Err(self.error(
                "MREG_ENCRYPTION_KEY_FILE",
                "set either MREG_ENCRYPTION_KEY or MREG_ENCRYPTION_KEY_FILE, not both",
            )),
            (key, None) | (None, key) => Ok(key),
        }
    }

    fn assemble(&self) -> Result<Config, ConfigError> {
        let data_dir = PathBuf::from(self.required("MREG_DATA_DIR", |v| Ok(v.to_owned()))?);
        Ok(Config {
            api: self.listen("MREG_API_HOST", "MREG_API_PORT")?,
            mcp: self.listen("FASTMCP_SERVER_HOST", "FASTMCP_SERVER_PORT")?,
            public_url: self.parse("MREG_PUBLIC_URL", |v| {
                let url = Url::parse(v).map_err(|e| format!("not an absolute URL ({e})"))?;
                if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                    return Err("must be an http or https URL with a host".to_owned());
                }
                if url.query().is_some() || url.fragment().is_some() {
                    return Err("must not have a query or fragment".to_owned());
                }
                require_https_off_loopback(&url)?;
                Ok(url)
            })?,
            allowed_hosts: self
                .parse("MREG_ALLOWED_HOSTS", |v| {
                    v.split([',', ' '])
                        .filter(|h| !h.is_empty())
                        .map(|h| {
                            match url::Host::parse(h.trim_start_matches('[').trim_end_matches(']'))
                            {
                                Ok(_) if !h.contains(['/', ':']) || h.starts_with('[') => {
                                    Ok(h.to_ascii_lowercase())
                                }
                                _ => Err(format!(
                                    "'{h}' is not a host name (no scheme, port or path)"
                                )),
                            }
                        })
                        .collect()
                })?
                .unwrap_or_default(),
            cors_origins: self
                .parse("MREG_CORS_ORIGINS", |v| {
                    v.split([',', ' '])
                        .filter(|o| !o.is_empty())
                        .map(|o| {
                            let url = Url::parse(o).map_err(|_| format!("'{o}' is not an origin such as https://app.example.com"))?;
                            let origin = url.origin().ascii_serialization();
                            if !matches!(url.scheme(), "http" | "https") || origin.trim_end_matches('/') != o.trim_end_matches('/') {
                                return Err(format!("'{o}' is not an origin such as https://app.example.com (scheme, host and port only)"));
                            }
                            Ok(origin)
                        })
                        .collect()
                })?
                .unwrap_or_default(),
            upstream_allow: self
                .parse("MREG_UPSTREAM_ALLOW", |v| {
                    v.split([',', ' '])
                        .filter(|h| !h.is_empty())
                        .map(crate::egress::Allowed::parse)
                        .collect()
                })?
                .unwrap_or_default(),
            database: self.database(&data_dir)?,
            database_max_connections: self.required(
                "MREG_DATABASE_MAX_CONNECTIONS",
                |v| match v.parse::<u32>() {
                    Ok(n) if (1..=1000).contains(&n) => Ok(n),
                    _ => Err(format!("'{v}' is not a number from 1 to 1000")),
                },
            )?,
            database_timeout: self.required("MREG_DATABASE_TIMEOUT", |v| {
                parse_duration(v, Duration::from_millis(100), Duration::from_secs(600))
            })?,
            data_dir: data_dir.clone(),
            encryption_key: self.encryption_key()?,
            redis_url: self.parse("MREG_REDIS_URL", |v| {
                let url = Url::parse(v).map_err(|e| format!("not a URL ({e})"))?;
                match url.scheme() {
                    "redis" | "rediss" => Ok(SecretString::from(v.to_owned())),
                    other => Err(format!("scheme '{other}' is not redis:// or rediss://")),
                }
            })?,
            redis_prefix: self.required("MREG_REDIS_PREFIX", |v| {
                if v.len() <= 64 && !v.chars().any(char::is_whitespace) {
                    Ok(v.to_owned())
                } else {
                    Err("must be at most 64 characters without spaces".to_owned())
                }
            })?,
            log: LogConfig {
                filter: self.required("MREG_LOG", |v| {
                    tracing_subscriber::EnvFilter::try_new(v)
                        .map(|_| v.to_owned())
                        .map_err(|e| format!("'{v}' is not a log filter ({e})"))
                })?,
                format: self.required("MREG_LOG_FORMAT", |v| match v {
                    "text" => Ok(LogFormat::Text),
                    "json" => Ok(LogFormat::Json),
                    _ => Err(format!("'{v}' is not a log format; use text or json")),
                })?,
            },
            registry_namespace: self.required("MREG_REGISTRY_NAMESPACE", |v| {
                let ok = v.len() <= 100
                    && v.split('.').all(|part| {
                        !part.is_empty()
                            && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    });
                if ok {
                    Ok(v.to_owned())
                } else {
                    Err(format!(
                        "'{v}' is not a reverse-DNS namespace such as com.example"
                    ))
                }
            })?,
            shutdown_grace: self.seconds("MREG_SHUTDOWN_GRACE_SECS", 3600)?,
            header_timeout: self.required("MREG_HEADER_TIMEOUT", |v| {
                parse_duration(v, Duration::from_secs(1), Duration::from_secs(3600))
            })?,
            metrics_per_server: self.parse("MREG_METRICS_PER_SERVER", parse_bool)?,
            sse_keepalive: self.required("MREG_SSE_KEEPALIVE", |v| {
                parse_duration(v, Duration::from_secs(1), Duration::from_secs(3600))
            })?,
            max_body_bytes: self.required("MREG_MAX_BODY_BYTES", |v| match v.parse::<usize>() {
                Ok(n) if (1024..=64 * 1024 * 1024).contains(&n) => Ok(n),
                _ => Err(format!("'{v}' is not a byte count from 1024 to 67108864")),
            })?,
            azure: self.azure()?,
            auth: self.auth()?,
            policy: {
                let per_minute =
                    self.required("MREG_RATE_LIMIT_PER_MINUTE", |v| match v.parse::<u32>() {
                        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
                        _ => Err(format!("'{v}' is not a number from 1 to 1000000")),
                    })?;
                let file = self.parse("MREG_POLICY_FILE", |v| Ok(PathBuf::from(v)))?;
                policy::Policy::load(file.as_deref(), per_minute)
                    .map_err(|e| self.error("MREG_POLICY_FILE", e))?
            },
            health: HealthConfig {
                enabled: self.required("MREG_HEALTH_ENABLED", parse_bool)?,
                interval: self.required("MREG_HEALTH_INTERVAL", |v| {
                    parse_duration(v, Duration::from_millis(100), Duration::from_secs(86_400))
                })?,
                timeout: self.required("MREG_HEALTH_TIMEOUT", |v| {
                    parse_duration(v, Duration::from_millis(100), Duration::from_secs(600))
                })?,
                concurrency: self.required("MREG_HEALTH_CONCURRENCY", |v| {
                    match v.parse::<usize>() {
                        Ok(n) if (1..=1024).contains(&n) => Ok(n),
                        _ => Err(format!("'{v}' is not a number from 1 to 1024")),
                    }
                })?,
                unhealthy_after: self.required("MREG_HEALTH_UNHEALTHY_AFTER", |v| {
                    match v.parse::<u32>() {
                        Ok(n) if (1..=100).contains(&n) => Ok(n),
                        _ => Err(format!("'{v}' is not a number from 1 to 100")),
                    }
                })?,
                retention: self.required("MREG_HEALTH_RETENTION_HOURS", |v| {
                    match v.parse::<u64>() {
                        Ok(n) if (1..=24 * 366).contains(&n) => Ok(Duration::from_secs(n * 3600)),
                        _ => Err(format!("'{v}' is not a number of hours from 1 to 8784")),
                    }
                })?,
            },
            audit: AuditConfig {
                enabled: self.required("MREG_AUDIT", parse_bool)?,
                queue: self.required("MREG_AUDIT_QUEUE", |v| match v.parse::<usize>() {
                    Ok(n) if (1..=10_000_000).contains(&n) => Ok(n),
                    _ => Err(format!("'{v}' is not a number from 1 to 10000000")),
                })?,
                spool: self
                    .parse("MREG_AUDIT_SPOOL", |v| Ok(PathBuf::from(v)))?
                    .unwrap_or_else(|| data_dir.join("audit.spool")),
                spool_max_bytes: self.required("MREG_AUDIT_SPOOL_MAX_MB", |v| {
                    match v.parse::<u64>() {
                        Ok(n) if n <= 1024 * 1024 => Ok(n * 1024 * 1024),
                        _ => Err(format!("'{v}' is not a number of MiB from 0 to 1048576")),
                    }
                })?,
                retention: self.required("MREG_AUDIT_RETENTION_DAYS", |v| {
                    match v.parse::<u64>() {
                        Ok(0) => Ok(None),
                        Ok(n) if n <= 36_500 => Ok(Some(Duration::from_secs(n * 86_400))),
                        _ => Err(format!("'{v}' is not a number of days from 0 to 36500")),
                    }
                })?,
                refusal_window: self.required("MREG_AUDIT_REFUSAL_WINDOW", |v| {
                    parse_duration(v, Duration::ZERO, Duration::from_secs(3600))
                })?,
            },
            instance_id: match self.parse("MREG_INSTANCE_ID", |v| {
                if v.len() <= 64
                    && v.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
                {
                    Ok(v.to_owned())
                } else {
                    Err(
                        "must be at most 64 characters of letters, digits, '-', '_', '.', ':'"
                            .to_owned(),
                    )
                }
            })? {
                Some(id) => id,
                None => default_instance_id(),
            },
        })
    }

    fn database(&self, data_dir: &Path) -> Result<DatabaseConfig, ConfigError> {
        if let Some(db) = self.parse("MREG_DATABASE_URL", parse_database_url)? {
            return Ok(db);
        }
        if !self.is_set("MREG_POSTGRES_HOST") {
            for part in [
                "MREG_POSTGRES_USER",
                "MREG_POSTGRES_PASSWORD",
                "MREG_POSTGRES_DB",
                "MREG_POSTGRES_PORT",
            ] {
                if self.is_set(part) {
                    return Err(self.error(
                        part,
                        "is set but MREG_POSTGRES_HOST is not; set the host too (or MREG_DATABASE_URL)",
                    ));
                }
            }
            return Ok(DatabaseConfig::Sqlite {
                path: data_dir.join("mreg.db"),
            });
        }
        let host = self.required("MREG_POSTGRES_HOST", parse_host)?;
        let port: u16 = self.required("MREG_POSTGRES_PORT", |v| {
            v.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("'{v}' is not a port number (1-65535)"))
        })?;
        let user = self.required("MREG_POSTGRES_USER", |v| Ok(v.to_owned()))?;
        let db = self.required("MREG_POSTGRES_DB", |v| Ok(v.to_owned()))?;
        let password = self.parse("MREG_POSTGRES_PASSWORD", |v| Ok(v.to_owned()))?;
        let mut url = Url::parse("postgres://localhost/")
            .map_err(|e| self.error("MREG_POSTGRES_HOST", e.to_string()))?;
        let bad_host = |_| self.error("MREG_POSTGRES_HOST", format!("'{host}' is not a host"));
        let host_part = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        url.set_host(Some(&host_part)).map_err(bad_host)?;
        let _ = url.set_port(Some(port));
        let _ = url.set_username(&user);
        if let Some(password) = &password {
            let _ = url.set_password(Some(password));
        }
        url.set_path(&db);
        Ok(DatabaseConfig::Postgres {
            url: SecretString::from(url.to_string()),
        })
    }

    fn azure(&self) -> Result<AzureConfig, ConfigError> {
        let tenant_id = self.parse("AZURE_TENANT_ID", |v| {
            let named = matches!(v, "common" | "organizations" | "consumers");
            let domain = v.contains('.')
                && v.split('.').all(|p| {
                    !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if named || domain || uuid::Uuid::try_parse(v).is_ok() {
                Ok(v.to_owned())
            } else {
                Err(format!(
                    "'{v}' is not a tenant; use the tenant's GUID, a verified domain, organizations or common"
                ))
            }
        })?;
        let client_id = self.parse("AZURE_CLIENT_ID", |v| {
            uuid::Uuid::try_parse(v)
                .map(|_| v.to_owned())
                .map_err(|_| format!("'{v}' is not an application (client) ID; it is a GUID"))
        })?;
        let client_secret = self.parse("AZURE_CLIENT_SECRET", |v| {
            Ok(SecretString::from(v.to_owned()))
        })?;
        let missing: Vec<&str> = [
            ("AZURE_TENANT_ID", tenant_id.is_some()),
            ("AZURE_CLIENT_ID", client_id.is_some()),
            ("AZURE_CLIENT_SECRET", client_secret.is_some()),
        ]
        .into_iter()
        .filter_map(|(env, set)| (!set).then_some(env))
        .collect();
        if !missing.is_empty() && missing.len() < 3 {
            return Err(missing_together(
                &missing,
                "AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET",
            ));
        }
        Ok(AzureConfig {
            tenant_id: tenant_id.clone(),
            client_id,
            client_secret,
            callback_url: self.parse("OAUTH_CALLBACK_URL", parse_callback_url)?,
            scopes: self.required("OAUTH_SCOPES", |v| {
                let scopes: Vec<String> = v.split_whitespace().map(str::to_owned).collect();
                match scopes.iter().find(|s| !is_scope_token(s)) {
                    Some(bad) => Err(format!("'{bad}' is not a valid scope")),
                    None => Ok(scopes),
                }
            })?,
            validate_with_graph: self.required("AZURE_VALIDATE_WITH_GRAPH", parse_bool)?,
            token_cache_ttl: self.seconds("AZURE_TOKEN_CACHE_TTL", 86_400)?,
            clock_skew: self.seconds("AZURE_CLOCK_SKEW", 900)?,
            authority_host: self.required("AZURE_AUTHORITY_HOST", parse_secure_base_url)?,
            allowed_tenants: {
                let tenants = self
                    .parse("AZURE_ALLOWED_TENANTS", |v| {
                        v.split([' ', ','])
                            .filter(|t| !t.is_empty())
                            .map(|t| {
                                uuid::Uuid::try_parse(t)
                                    .map(|_| t.to_ascii_lowercase())
                                    .map_err(|_| format!("'{t}' is not a tenant GUID"))
                            })
                            .collect::<Result<Vec<_>, _>>()
                    })?
                    .unwrap_or_default();
                // Every personal Microsoft account shares one tid, so `consumers` without a list
                // would admit anyone with an outlook.com address.
                if tenants.is_empty()
                    && matches!(
                        tenant_id.as_deref(),
                        Some("organizations" | "common" | "consumers")
                    )
                {
                    return Err(self.error(
                        "AZURE_ALLOWED_TENANTS",
                        "must list the tenant GUIDs whose users may sign in when AZURE_TENANT_ID is organizations, common or consumers (for consumers: 9188040d-6c67-4c5b-b112-36a304b66dad, the tenant of every personal account, and know that this admits every personal Microsoft account)",
                    ));
                }
                tenants
            },
            api_scopes: self
                .parse("AZURE_API_SCOPES", |v| {
                    let scopes: Vec<String> = v.split_whitespace().map(str::to_owned).collect();
                    match scopes
                        .iter()
                        .find(|s| !is_scope_token(s) || s.contains('/'))
                    {
                        Some(bad) => Err(format!(
                            "'{bad}' is not a short scope name (write access_as_user, not api://…/access_as_user)"
                        )),
                        None => Ok(scopes),
                    }
                })?
                .unwrap_or_default(),
            graph_url: self.required("AZURE_GRAPH_URL", parse_secure_base_url)?,
        })
    }

    fn auth(&self) -> Result<AuthConfig, ConfigError> {
        let issuer = self.parse("MREG_OIDC_ISSUER", parse_secure_base_url)?;
        let client_id = self.parse("MREG_OIDC_CLIENT_ID", |v| Ok(v.to_owned()))?;
        let client_secret = self.parse("MREG_OIDC_CLIENT_SECRET", |v| {
            Ok(SecretString::from(v.to_owned()))
        })?;
        let oidc = match (issuer, client_id, client_secret) {
            (None, None, None) => None,
            (Some(issuer), Some(client_id), Some(client_secret)) => Some(OidcConfig {
                issuer,
                client_id,
                client_secret,
            }),
            (issuer, client_id, client_secret) => {
                let missing: Vec<&str> = [
                    ("MREG_OIDC_ISSUER", issuer.is_some()),
                    ("MREG_OIDC_CLIENT_ID", client_id.is_some()),
                    ("MREG_OIDC_CLIENT_SECRET", client_secret.is_some()),
                ]
                .into_iter()
                .filter_map(|(env, set)| (!set).then_some(env))
                .collect();
                return Err(missing_together(
                    &missing,
                    "MREG_OIDC_ISSUER, MREG_OIDC_CLIENT_ID and MREG_OIDC_CLIENT_SECRET",
                ));
            }
        };
        let azure = self.text("AZURE_TENANT_ID").is_some();
        if azure && oidc.is_some() {
            return Err(self.error(
                "MREG_OIDC_ISSUER",
                "configure either the Entra preset (AZURE_*) or a generic OpenID Connect upstream (MREG_OIDC_*), not both",
            ));
        }
        let upstream = azure || oidc.is_some();
        let mode = self.required("MREG_AUTH", |v| match v {
            "auto" if upstream => Ok(AuthMode::OAuth),
            "auto" | "none" => Ok(AuthMode::None),
            "oauth" if upstream => Ok(AuthMode::OAuth),
            "oauth" => Err("oauth needs an identity provider: set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (or MREG_OIDC_*)".to_owned()),
            _ => Err(format!("'{v}' is not an authentication mode; use auto, oauth or none")),
        })?;
        Ok(AuthConfig {
            mode,
            required_scopes: self
                .parse("MREG_REQUIRED_SCOPES", |v| {
                    let scopes: Vec<String> = v.split_whitespace().map(str::to_owned).collect();
                    match scopes.iter().find(|s| !is_scope_token(s)) {
                        Some(bad) => Err(format!("'{bad}' is not a valid scope")),
                        None => Ok(scopes),
                    }
                })?
                .unwrap_or_default(),
            access_token_ttl: self.bounded_seconds("MREG_ACCESS_TOKEN_TTL", 60, 86_400)?,
            code_ttl: self.bounded_seconds("MREG_AUTHORIZATION_CODE_TTL", 1, 600)?,
            refresh_token_ttl: self.bounded_seconds("MREG_REFRESH_TOKEN_TTL", 300, 366 * 86_400)?,
            signing_key_rotation: self.bounded_seconds(
                "MREG_SIGNING_KEY_ROTATION",
                2 * 86_400,
                366 * 86_400,
            )?,
            oidc,
            cimd_allow_private: self.required("MREG_CIMD_ALLOW_PRIVATE", parse_bool)?,
            oauth_rate_limit_per_minute: self.required(
                "MREG_OAUTH_RATE_LIMIT_PER_MINUTE",
                |v| match v.parse::<u32>() {
                    Ok(n) if n <= 1_000_000 => Ok(n),
                    _ => Err(format!("'{v}' is not a number from 0 to 1000000")),
                },
            )?,
            max_idle_clients: self.required("MREG_OAUTH_MAX_IDLE_CLIENTS", |v| {
                match v.parse::<u64>() {
                    Ok(n) if (1..=10_000_000).contains(&n) => Ok(n),
                    _ => Err(format!("'{v}' is not a number from 1 to 10000000")),
                }
            })?,
            trusted_proxy_hops: self.required("MREG_TRUSTED_PROXY_HOPS", |v| {
                match v.parse::<usize>() {
                    Ok(n) if n <= 10 => Ok(n),
                    _ => Err(format!("'{v}' is not a number from 0 to 10")),
                }
            })?,
        })
    }

    fn bounded_seconds(&self, env: &str, min: u64, max: u64) -> Result<Duration, ConfigError> {
        self.required(env, |v| match v.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Duration::from_secs(n)),
            _ => Err(format!(
                "'{v}' is not a whole number of seconds from {min} to {max}"
            )),
        })
    }
}

fn parse_host(v: &str) -> Result<String, String> {
    let host = v.trim_start_matches('[').trim_end_matches(']');
    let hostname = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if host.parse::<IpAddr>().is_ok() || hostname {
        Ok(host.to_owned())
    } else {
        Err(format!("'{v}' is not an IP address or host name"))
    }
}

/// Settings that must be set together, some of which are missing: one error naming each.
fn missing_together(missing: &[&str], group: &str) -> ConfigError {
    let (last, rest) = missing.split_last().unwrap_or((&"", &[]));
    let named = if rest.is_empty() {
        (*last).to_owned()
    } else {
        format!("{} and {last}", rest.join(", "))
    };
    ConfigError {
        setting: named,
        origin: None,
        message: format!("missing: {group} are set together, or none of them"),
    }
}

/// A duration with its unit: `30s`, `500ms`, `2m` or `1h`, within bounds. A bare number is
/// refused: `30` could mean seconds or milliseconds, and a wrong guess is off by 1000.
pub fn parse_duration(v: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let (number, unit) = match v.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => v.split_at(i),
        None => {
            return Err(format!(
                "'{v}' needs a unit: write {v}s, {v}ms, {v}m or {v}h"
            ));
        }
    };
    let amount: f64 = number
        .parse()
        .map_err(|_| format!("'{v}' is not a duration such as 30s, 500ms or 2m"))?;
    let seconds = match unit.trim() {
        "ms" => amount / 1000.0,
        "s" => amount,
        "m" => amount * 60.0,
        "h" => amount * 3600.0,
        _ => return Err(format!("'{v}' is not a duration such as 30s, 500ms or 2m")),
    };
    let duration = Duration::try_from_secs_f64(seconds)
        .map_err(|_| format!("'{v}' is not a duration such as 30s, 500ms or 2m"))?;
    if duration < min || duration > max {
        return Err(if min.is_zero() {
            format!("'{v}' must be at most {max:?}")
        } else {
            format!("'{v}' must be between {min:?} and {max:?}")
        });
    }
    Ok(duration)
}

fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "mreg".to_owned());
    format!("{host}:{}", std::process::id())
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("'{v}' is not true or false")),
    }
}

/// A scope token as RFC 6749 §3.3 defines it.
fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

fn parse_callback_url(v: &str) -> Result<Url, String> {
    let url = Url::parse(v).map_err(|e| format!("not an absolute URL ({e})"))?;
    let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => return Err("must use https (http is allowed only for localhost)".to_owned()),
        other => return Err(format!("scheme '{other}' is not https")),
    }
    if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain a fragment or credentials".to_owned());
    }
    Ok(url)
}

/// Whether `url`'s host is this machine (`localhost`, a loopback address).
fn is_loopback_url(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Refuses plain http off loopback: keys, tokens and sign-ins must not travel in the clear.
fn require_https_off_loopback(url: &Url) -> Result<(), String> {
    if url.scheme() == "http" && !is_loopback_url(url) {
        return Err(format!(
            "'{url}' must use https (http is allowed only for localhost and loopback addresses)"
        ));
    }
    Ok(())
}

/// [`parse_base_url`], https unless the host is loopback.
fn parse_secure_base_url(v: &str) -> Result<Url, String> {
    let url = parse_base_url(v)?;
    require_https_off_loopback(&url)?;
    Ok(url)
}

/// An http(s) base URL without query, fragment or credentials; a trailing `/` is dropped.
fn parse_base_url(v: &str) -> Result<Url, String> {
    let url = Url::parse(v.trim_end_matches('/'))
        .map_err(|e| format!("'{v}' is not an absolute URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("'{v}' must be an http or https URL with a host"));
    }
    if url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(format!(
            "'{v}' must not contain a query, a fragment or credentials"
        ));
    }
    Ok(url)
}

fn parse_database_url(v: &str) -> Result<DatabaseConfig, String> {
    if let Some(rest) = v.strip_prefix("sqlite:") {
        let path = rest.strip_prefix("//").unwrap_or(rest);
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() {
            return Err("sqlite: needs a file path, e.g. sqlite:./mreg.db".to_owned());
        }
        return Ok(DatabaseConfig::Sqlite {
            path: PathBuf::from(path),
        });
    }
    let url = Url::parse(v).map_err(|_| {
        "is not a database URL; use sqlite:PATH or postgres://USER:PASSWORD@HOST:PORT/DB".to_owned()
    })?;
    match url.scheme() {
        "postgres" | "postgresql" if url.host_str().is_some() => Ok(DatabaseConfig::Postgres {
            url: SecretString::from(v.to_owned()),
        }),
        "postgres" | "postgresql" => Err("a postgres:// URL needs a host".to_owned()),
        other => Err(format!(
            "scheme '{other}' is not supported; use sqlite: or postgres://"
        )),
    }
}

#[cfg(test)]
mod tests;

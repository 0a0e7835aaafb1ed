//! mreg's configuration: one typed tree, loaded once at start-up from, in rising precedence,
//! built-in defaults, an optional TOML file, a `.env` file in the working directory, and the
//! process environment.
//!
//! Loading first collects every setting as text together with where it came from (so that
//! `mreg check-config` can say), then parses each one. The first bad value stops start-up with
//! one line naming the setting; nothing is bound before that.

mod identity;
mod parse;
mod values;

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

pub use parse::RawConfig;
pub use parse::load;
use settings::{SETTINGS, Setting};
pub use values::parse_duration;
pub use values::redact_url;
use values::*;

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

    /// Whether this binds every address (`0.0.0.0`, `::`).
    pub fn is_wildcard(&self) -> bool {
        self.host
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified())
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

impl AzureConfig {
    /// Whether the app admits users of several tenants (`organizations`, `common`,
    /// `consumers`, or more than one tenant in `AZURE_ALLOWED_TENANTS`), its home tenant
    /// (`AZURE_TENANT_ID` when it is a GUID), and the tenant ids it admits when it says (else
    /// none: a single tenant named by domain, or a generic OpenID Connect provider).
    pub fn tenancy(&self) -> (bool, Option<String>, Vec<String>) {
        let home = self
            .tenant_id
            .as_deref()
            .filter(|t| uuid::Uuid::try_parse(t).is_ok())
            .map(str::to_ascii_lowercase);
        let multi = matches!(
            self.tenant_id.as_deref(),
            Some("organizations" | "common" | "consumers")
        );
        let mut admitted: Vec<&str> = self.allowed_tenants.iter().map(String::as_str).collect();
        admitted.extend(home.as_deref());
        admitted.sort_unstable();
        admitted.dedup();
        let several = multi || admitted.len() > 1;
        let admitted = admitted.into_iter().map(str::to_owned).collect();
        (several, home, admitted)
    }
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
    /// The clock expiry is measured by (the system clock; not a setting: a test moves it).
    pub clock: domain::Clock,
}

#[cfg(test)]
mod tests;

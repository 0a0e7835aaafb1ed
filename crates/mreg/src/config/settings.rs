//! Every configuration setting mreg knows: its environment variable, its key in the TOML file,
//! its default, whether it is a secret, and what it means. This table drives loading,
//! `mreg check-config` and the README's table, so a setting cannot exist in one and not the
//! others.

/// One configuration setting.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// Environment variable (also the name used in error messages).
    pub env: &'static str,
    /// Dotted key in the TOML file (`api.port` is `port` in table `[api]`).
    pub key: &'static str,
    /// Default value, as text; `None` when unset by default.
    pub default: Option<&'static str>,
    /// Whether the value is a secret (never printed, never logged).
    pub secret: bool,
    /// What the setting means.
    pub help: &'static str,
}

const fn s(
    env: &'static str,
    key: &'static str,
    default: Option<&'static str>,
    secret: bool,
    help: &'static str,
) -> Setting {
    Setting {
        env,
        key,
        default,
        secret,
        help,
    }
}

/// Every setting, in the order `check-config` prints them.
pub const SETTINGS: &[Setting] = &[
    s(
        "MREG_API_HOST",
        "api.host",
        Some("127.0.0.1"),
        false,
        "Address the REST API listens on.",
    ),
    s(
        "MREG_API_PORT",
        "api.port",
        Some("8000"),
        false,
        "Port of the REST API (0 picks a free port).",
    ),
    s(
        "FASTMCP_SERVER_HOST",
        "mcp.host",
        Some("127.0.0.1"),
        false,
        "Address the MCP listener (gateway, OAuth endpoints) listens on. Loopback by default until authentication is configured.",
    ),
    s(
        "FASTMCP_SERVER_PORT",
        "mcp.port",
        Some("8001"),
        false,
        "Port of the MCP listener.",
    ),
    s(
        "MREG_PUBLIC_URL",
        "mcp.public_url",
        None,
        false,
        "Public base URL of the MCP listener as clients reach it (e.g. https://mreg.example.com); its host is accepted in Host headers. Unset: http://FASTMCP_SERVER_HOST:FASTMCP_SERVER_PORT.",
    ),
    s(
        "MREG_DATA_DIR",
        "data_dir",
        Some("."),
        false,
        "Directory for the embedded SQLite database (mreg.db) and other local state.",
    ),
    s(
        "MREG_DATABASE_URL",
        "database.url",
        None,
        true,
        "Database URL: sqlite:PATH or postgres://USER:PASSWORD@HOST:PORT/DB. Overrides MREG_POSTGRES_*; unset means SQLite in MREG_DATA_DIR.",
    ),
    s(
        "MREG_POSTGRES_HOST",
        "postgres.host",
        None,
        false,
        "PostgreSQL host; setting it selects PostgreSQL instead of SQLite.",
    ),
    s(
        "MREG_POSTGRES_PORT",
        "postgres.port",
        Some("5432"),
        false,
        "PostgreSQL port.",
    ),
    s(
        "MREG_POSTGRES_USER",
        "postgres.user",
        Some("mreg"),
        false,
        "PostgreSQL user.",
    ),
    s(
        "MREG_POSTGRES_PASSWORD",
        "postgres.password",
        None,
        true,
        "PostgreSQL password.",
    ),
    s(
        "MREG_POSTGRES_DB",
        "postgres.db",
        Some("mreg"),
        false,
        "PostgreSQL database name.",
    ),
    s(
        "MREG_DATABASE_MAX_CONNECTIONS",
        "database.max_connections",
        Some("10"),
        false,
        "Size of the database connection pool.",
    ),
    s(
        "MREG_ENCRYPTION_KEY",
        "security.encryption_key",
        None,
        true,
        "Base64 of 32 random bytes: the AES-256-GCM key for secrets at rest (upstream credentials) and session tokens. Unset: generated once and kept in the database.",
    ),
    s(
        "MREG_REDIS_URL",
        "redis.url",
        None,
        true,
        "Redis URL (redis://HOST:PORT/DB or rediss://...). Unset means an in-process cache.",
    ),
    s(
        "MREG_REDIS_PREFIX",
        "redis.prefix",
        Some("mreg:"),
        false,
        "Prefix of every key mreg writes to Redis.",
    ),
    s(
        "MREG_LOG",
        "log.level",
        Some("info"),
        false,
        "Log filter (tracing EnvFilter syntax, e.g. info or mreg=debug,sqlx=warn).",
    ),
    s(
        "MREG_LOG_FORMAT",
        "log.format",
        Some("text"),
        false,
        "Log format: text or json.",
    ),
    s(
        "MREG_REGISTRY_NAMESPACE",
        "registry.namespace",
        Some("local.mreg"),
        false,
        "Reverse-DNS namespace in front of server names in the official registry API (/v0.1): local.mreg/weather.",
    ),
    s(
        "MREG_SHUTDOWN_GRACE_SECS",
        "shutdown.grace_secs",
        Some("10"),
        false,
        "How long shutdown waits for in-flight requests before closing them.",
    ),
    s(
        "MREG_MAX_BODY_BYTES",
        "api.max_body_bytes",
        Some("65536"),
        false,
        "Largest request body the REST API accepts (413 beyond).",
    ),
    s(
        "MREG_HEALTH_ENABLED",
        "health.enabled",
        Some("true"),
        false,
        "Probe registered servers in the background.",
    ),
    s(
        "MREG_HEALTH_INTERVAL",
        "health.interval",
        Some("30s"),
        false,
        "Time between probes of a server that is up (e.g. 30s, 500ms, 2m); servers that stay down are probed less often, up to 10 intervals apart.",
    ),
    s(
        "MREG_HEALTH_TIMEOUT",
        "health.timeout",
        Some("10s"),
        false,
        "How long one probe may take.",
    ),
    s(
        "MREG_HEALTH_CONCURRENCY",
        "health.concurrency",
        Some("16"),
        false,
        "Probes one instance runs at the same time.",
    ),
    s(
        "MREG_HEALTH_UNHEALTHY_AFTER",
        "health.unhealthy_after",
        Some("3"),
        false,
        "Failed probes in a row after which a server is unhealthy (one makes it degraded); the gateway then turns its callers away at once.",
    ),
    s(
        "MREG_HEALTH_RETENTION_HOURS",
        "health.retention_hours",
        Some("168"),
        false,
        "How long probe history is kept.",
    ),
    s(
        "MREG_INSTANCE_ID",
        "instance_id",
        None,
        false,
        "Name of this gateway instance in leases and probe history. Unset: host name and process id.",
    ),
    s(
        "MREG_AUTH",
        "auth.mode",
        Some("auto"),
        false,
        "oauth: every API and MCP route needs a bearer token; none: no authentication (loopback binds only, with a warning); auto: oauth when an identity provider is configured, else none.",
    ),
    s(
        "MREG_REQUIRED_SCOPES",
        "auth.required_scopes",
        None,
        false,
        "Space-separated scopes every delegated token must carry (403 insufficient_scope otherwise). Unset: any valid token.",
    ),
    s(
        "MREG_ACCESS_TOKEN_TTL",
        "auth.access_token_ttl",
        Some("3600"),
        false,
        "Lifetime (seconds) of the access tokens mreg mints.",
    ),
    s(
        "MREG_AUTHORIZATION_CODE_TTL",
        "auth.authorization_code_ttl",
        Some("120"),
        false,
        "Lifetime (seconds) of the one-time authorization codes mreg hands to clients.",
    ),
    s(
        "MREG_REFRESH_TOKEN_TTL",
        "auth.refresh_token_ttl",
        Some("2592000"),
        false,
        "Lifetime (seconds) of a refresh-token family; every refresh rotates the token.",
    ),
    s(
        "MREG_SIGNING_KEY_ROTATION",
        "auth.signing_key_rotation",
        Some("2592000"),
        false,
        "Seconds between rotations of mreg's token-signing key; the previous key stays published for one more period.",
    ),
    s(
        "MREG_CIMD_ALLOW_PRIVATE",
        "auth.cimd_allow_private",
        Some("false"),
        false,
        "Fetch Client ID Metadata Documents from private and loopback addresses too (and over http from loopback). For tests and closed networks only.",
    ),
    s(
        "MREG_POLICY_FILE",
        "policy.file",
        None,
        false,
        "TOML policy file: roles per gateway tool, per REST operation and per registered server, and rate-limit budgets. Unset: the seed document's role mapping.",
    ),
    s(
        "MREG_RATE_LIMIT_PER_MINUTE",
        "policy.rate_limit_per_minute",
        Some("100"),
        false,
        "Requests per minute a principal may make, and may make of one tool (GCRA; bursts up to the budget).",
    ),
    s(
        "MREG_AUDIT",
        "audit.enabled",
        Some("true"),
        false,
        "Audit log of every tool call, proxied request, REST mutation, refusal, sign-in and token event. Turning it off is meant for benchmarks and throwaway setups.",
    ),
    s(
        "MREG_AUDIT_QUEUE",
        "audit.queue",
        Some("10000"),
        false,
        "Audit entries that may be open (audited requests in flight) or wait in memory for the writer; when it is full (database unreachable and spool full), requests are refused rather than run unaudited.",
    ),
    s(
        "MREG_AUDIT_SPOOL",
        "audit.spool",
        None,
        false,
        "Local append-only file that keeps audit entries while the database is unreachable; replayed in order when it returns. One per instance. Unset: MREG_DATA_DIR/audit.spool.",
    ),
    s(
        "MREG_AUDIT_SPOOL_MAX_MB",
        "audit.spool_max_mb",
        Some("256"),
        false,
        "Largest size of the audit spool, in MiB.",
    ),
    s(
        "MREG_AUDIT_RETENTION_DAYS",
        "audit.retention_days",
        Some("365"),
        false,
        "Audit rows older than this are pruned (hourly), leaving a checkpoint from which the rest still verifies; 0 keeps them forever.",
    ),
    s(
        "MREG_OIDC_ISSUER",
        "oidc.issuer",
        None,
        false,
        "Issuer URL of a generic OpenID Connect upstream (instead of the Entra preset).",
    ),
    s(
        "MREG_OIDC_CLIENT_ID",
        "oidc.client_id",
        None,
        false,
        "Client ID of mreg at the generic OpenID Connect upstream.",
    ),
    s(
        "MREG_OIDC_CLIENT_SECRET",
        "oidc.client_secret",
        None,
        true,
        "Client secret of mreg at the generic OpenID Connect upstream.",
    ),
    s(
        "AZURE_TENANT_ID",
        "azure.tenant_id",
        None,
        false,
        "Entra tenant: a GUID, a verified domain, or organizations / common for multi-tenant apps.",
    ),
    s(
        "AZURE_AUTHORITY_HOST",
        "azure.authority_host",
        Some("https://login.microsoftonline.com"),
        false,
        "Entra authority host (a sovereign cloud, or a local OpenID Connect provider in tests).",
    ),
    s(
        "AZURE_ALLOWED_TENANTS",
        "azure.allowed_tenants",
        None,
        false,
        "Space-separated tenant GUIDs whose users may sign in; required when AZURE_TENANT_ID is organizations or common.",
    ),
    s(
        "AZURE_API_SCOPES",
        "azure.api_scopes",
        None,
        false,
        "Space-separated custom scopes of mreg's Entra app (short names); sent to Entra as api://{client id}/NAME.",
    ),
    s(
        "AZURE_GRAPH_URL",
        "azure.graph_url",
        Some("https://graph.microsoft.com"),
        false,
        "Microsoft Graph base URL for AZURE_VALIDATE_WITH_GRAPH.",
    ),
    s(
        "AZURE_CLIENT_ID",
        "azure.client_id",
        None,
        false,
        "Application (client) ID of mreg's Entra app registration.",
    ),
    s(
        "AZURE_CLIENT_SECRET",
        "azure.client_secret",
        None,
        true,
        "Client secret of mreg's Entra app registration.",
    ),
    s(
        "OAUTH_CALLBACK_URL",
        "oauth.callback_url",
        None,
        false,
        "Public URL of mreg's OAuth callback (…/auth/callback), registered as redirect URI in Entra.",
    ),
    s(
        "OAUTH_SCOPES",
        "oauth.scopes",
        Some("User.Read profile openid email"),
        false,
        "Space-separated scopes requested from Entra.",
    ),
    s(
        "AZURE_VALIDATE_WITH_GRAPH",
        "azure.validate_with_graph",
        Some("true"),
        false,
        "Confirm each signed-in user with Microsoft Graph /me.",
    ),
    s(
        "AZURE_TOKEN_CACHE_TTL",
        "azure.token_cache_ttl",
        Some("3600"),
        false,
        "Longest time (seconds) a validated token is cached; never past its expiry.",
    ),
    s(
        "AZURE_CLOCK_SKEW",
        "azure.clock_skew",
        Some("300"),
        false,
        "Clock skew (seconds) tolerated when checking token times.",
    ),
];

/// The setting whose environment variable is `env`.
pub fn by_env(env: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.env == env)
}

/// The setting whose TOML key is `key`.
pub fn by_key(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

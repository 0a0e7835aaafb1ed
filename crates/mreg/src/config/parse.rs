//! Reading the configuration: environment variables and an optional TOML file (`MREG_CONFIG`),
//! each setting once, checked as a whole; [`load`] is the one entry point.

use super::*;

/// Every setting's text value and where it came from, before parsing.
#[derive(Debug, Clone, Default)]
pub struct RawConfig {
    pub(super) values: BTreeMap<&'static str, (String, Source)>,
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

    pub(super) fn merge_file(&mut self, path: &Path) -> Result<(), ConfigError> {
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

pub(super) fn flatten(
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

/// Loads the configuration the way `mreg` does: `file` (or `MREG_CONFIG`), `./.env`, the
/// process environment.
pub fn load(file: Option<&Path>) -> Result<RawConfig, ConfigError> {
    let dotenv: Vec<(String, String)> = match dotenvy::from_path_iter(".env") {
        Ok(iter) => iter.collect::<Result<_, _>>().map_err(|e| ConfigError {
            setting: ".env".to_owned(),
            origin: None,
            message: match e {
                // dotenvy's index is a column, which read as a line number.
                dotenvy::Error::LineParse(line, _) => format!(
                    "cannot read the line '{}': each line is NAME=VALUE (or a # comment)",
                    line.chars().take(100).collect::<String>()
                ),
                other => other.to_string(),
            },
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

pub(super) struct Parser<'a> {
    pub(super) raw: &'a RawConfig,
}

impl Parser<'_> {
    pub(super) fn setting(env: &str) -> &'static Setting {
        settings::by_env(env).unwrap_or_else(|| unreachable!("unknown setting {env}"))
    }

    pub(super) fn text(&self, env: &str) -> Option<(&str, &Source)> {
        self.raw
            .get(Self::setting(env))
            .filter(|(v, _)| !v.trim().is_empty())
    }

    pub(super) fn error(&self, env: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            setting: env.to_owned(),
            origin: self.raw.get(Self::setting(env)).map(|(_, s)| s.clone()),
            message: message.into(),
        }
    }

    pub(super) fn parse<T>(
        &self,
        env: &str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.text(env) {
            None => Ok(None),
            Some((value, _)) => f(value.trim()).map(Some).map_err(|m| self.error(env, m)),
        }
    }

    pub(super) fn required<T>(
        &self,
        env: &str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        self.parse(env, f)?
            .ok_or_else(|| self.error(env, "must not be empty"))
    }

    pub(super) fn is_set(&self, env: &str) -> bool {
        self.text(env)
            .is_some_and(|(_, source)| *source != Source::Default)
    }

    pub(super) fn listen(&self, host: &str, port: &str) -> Result<Listen, ConfigError> {
        Ok(Listen {
            host: self.required(host, parse_host)?,
            port: self.required(port, |v| {
                v.parse::<u16>()
                    .map_err(|_| format!("'{v}' is not a port number (0-65535)"))
            })?,
        })
    }

    pub(super) fn seconds(&self, env: &str, max: u64) -> Result<Duration, ConfigError> {
        self.required(env, |v| match v.parse::<u64>() {
            Ok(n) if n <= max => Ok(Duration::from_secs(n)),
            _ => Err(format!(
                "'{v}' is not a whole number of seconds from 0 to {max}"
            )),
        })
    }

    pub(super) fn config(&self) -> Result<Config, ConfigError> {
        let mut config = self.assemble()?;
        let (several, home, admitted) = config.azure.tenancy();
        config
            .policy
            .scope_to_tenants(several, home.as_deref(), &admitted)
            .map_err(|e| self.error("MREG_POLICY_FILE", e))?;
        if config.auth.mode == AuthMode::OAuth && config.encryption_key.is_none() {
            return Err(self.error(
                "MREG_ENCRYPTION_KEY",
                "is required with authentication on (or MREG_ENCRYPTION_KEY_FILE): the key seals the token-signing keys, and one generated into the database would open for anyone who can read it; make one with `openssl rand -base64 32` and keep it outside the database",
            ));
        }
        if config.auth.mode == AuthMode::OAuth
            && config.public_url.is_none()
            && config.mcp.is_wildcard()
        {
            return Err(self.error(
                "MREG_PUBLIC_URL",
                format!(
                    "is required when the MCP listener binds every address ('{}') with authentication on: clients, the sign-in redirect and the token issuer need the address they reach mreg at (e.g. https://mreg.example.com), not http://{}:{}",
                    config.mcp.host, config.mcp.host, config.mcp.port
                ),
            ));
        }
        if config.api.port != 0
            && config.api.port == config.mcp.port
            && (config.api.host.eq_ignore_ascii_case(&config.mcp.host)
                || config.api.is_wildcard()
                || config.mcp.is_wildcard()
                || (config.api.is_loopback() && config.mcp.is_loopback()))
        {
            return Err(self.error(
                "FASTMCP_SERVER_PORT",
                format!(
                    "{} is the REST API's port too (MREG_API_HOST/MREG_API_PORT: {}): the REST API and the MCP listener need a port each (by default 8000 and 8001)",
                    config.mcp.port, config.api
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
    pub(super) fn encryption_key(
        &self,
    ) -> Result<Option<std::sync::Arc<SecretBox<[u8; 32]>>>, ConfigError> {
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

    pub(super) fn assemble(&self) -> Result<Config, ConfigError> {
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
            clock: domain::Clock::system(),
        })
    }

    pub(super) fn database(&self, data_dir: &Path) -> Result<DatabaseConfig, ConfigError> {
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

    pub(super) fn bounded_seconds(
        &self,
        env: &str,
        min: u64,
        max: u64,
    ) -> Result<Duration, ConfigError> {
        self.required(env, |v| match v.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Duration::from_secs(n)),
            _ => Err(format!(
                "'{v}' is not a whole number of seconds from {min} to {max}"
            )),
        })
    }
}

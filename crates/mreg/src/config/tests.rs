use std::io::Write;

use secrecy::ExposeSecret;

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// An encryption key (32 bytes, base64), which authentication on requires.
const TEST_KEY: &str = "a2V5LXNlY3JldC1rZXktc2VjcmV0LWtleS1zZWNyZXQ=";

fn parse(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    RawConfig::collect(None, Vec::new(), env(pairs))?.parse()
}

#[test]
fn defaults_give_loopback_listeners_sqlite_and_no_redis() {
    let config = parse(&[]).expect("defaults are valid");
    assert_eq!(config.api.to_string(), "127.0.0.1:8000");
    assert_eq!(config.mcp.to_string(), "127.0.0.1:8001");
    assert!(config.api.is_loopback());
    assert!(
        matches!(config.database, DatabaseConfig::Sqlite { ref path } if path == Path::new("./mreg.db"))
    );
    assert!(config.redis_url.is_none());
    assert_eq!(
        config.azure.scopes,
        ["User.Read", "profile", "openid", "email"]
    );
    assert!(config.azure.validate_with_graph);
    assert_eq!(config.azure.token_cache_ttl, Duration::from_secs(3600));
    assert_eq!(config.azure.clock_skew, Duration::from_secs(300));
}

#[test]
fn postgres_parts_build_a_url_and_the_database_url_overrides_them() {
    let config = parse(&[
        ("MREG_POSTGRES_HOST", "db.internal"),
        ("MREG_POSTGRES_USER", "mcp_user"),
        ("MREG_POSTGRES_PASSWORD", "p@ss/word"),
        ("MREG_POSTGRES_DB", "mcp_registry"),
    ])
    .expect("valid");
    let DatabaseConfig::Postgres { url } = &config.database else {
        panic!("expected postgres, got {:?}", config.database);
    };
    assert_eq!(
        url.expose_secret(),
        "postgres://mcp_user:p%40ss%2Fword@db.internal:5432/mcp_registry"
    );
    assert_eq!(
        config.database.redacted(),
        "postgres://mcp_user:***@db.internal:5432/mcp_registry"
    );

    let config = parse(&[
        ("MREG_POSTGRES_HOST", "db.internal"),
        ("MREG_DATABASE_URL", "sqlite:/var/lib/mreg/x.db"),
    ])
    .expect("valid");
    assert!(
        matches!(config.database, DatabaseConfig::Sqlite { ref path } if path == Path::new("/var/lib/mreg/x.db"))
    );
}

#[test]
fn a_bad_value_names_the_variable_and_the_problem() {
    let cases = [
        ("MREG_API_PORT", "eighty", "not a port number"),
        ("FASTMCP_SERVER_PORT", "70000", "not a port number"),
        ("MREG_API_HOST", "bad host!", "not an IP address"),
        ("MREG_DATABASE_URL", "mysql://x/y", "not supported"),
        ("MREG_REDIS_URL", "http://localhost", "not redis://"),
        ("MREG_LOG_FORMAT", "xml", "use text or json"),
        ("AZURE_TOKEN_CACHE_TTL", "-1", "whole number of seconds"),
        ("AZURE_CLOCK_SKEW", "1h", "whole number of seconds"),
        ("AZURE_VALIDATE_WITH_GRAPH", "maybe", "is not a yes or no"),
        (
            "OAUTH_CALLBACK_URL",
            "http://example.com/auth/callback",
            "must use https",
        ),
        ("OAUTH_SCOPES", "openid \"bad\"", "not a valid scope"),
        ("MREG_POSTGRES_USER", "someone", "MREG_POSTGRES_HOST is not"),
    ];
    for (var, value, expected) in cases {
        let err = parse(&[(var, value)]).expect_err(var);
        assert_eq!(err.setting, var);
        let line = err.to_string();
        assert!(line.starts_with(var), "{line}");
        assert!(line.contains(expected), "{var}: {line}");
        assert!(!line.contains('\n'));
    }
}

#[test]
fn azure_credentials_come_as_a_set_and_are_validated() {
    let tenant = "08541b6e-646d-43de-a0eb-834e6713d6d5";
    let client = "835f09b6-0f0f-40cc-85cb-f32c5829a149";
    let err = parse(&[("AZURE_TENANT_ID", tenant), ("AZURE_CLIENT_ID", client)])
        .expect_err("secret missing");
    assert_eq!(err.setting, "AZURE_CLIENT_SECRET");
    let err = parse(&[
        ("AZURE_TENANT_ID", tenant),
        ("AZURE_CLIENT_ID", "my-app"),
        ("AZURE_CLIENT_SECRET", "s3cret"),
    ])
    .expect_err("bad client id");
    assert_eq!(err.setting, "AZURE_CLIENT_ID");
    assert!(!err.to_string().contains("s3cret"));
    let err = parse(&[
        ("AZURE_TENANT_ID", "organizations"),
        ("AZURE_CLIENT_ID", client),
        ("AZURE_CLIENT_SECRET", "s3cret"),
    ])
    .expect_err("a multi-tenant app needs an allowlist");
    assert_eq!(err.setting, "AZURE_ALLOWED_TENANTS");
    let entra = [
        ("AZURE_TENANT_ID", "organizations"),
        ("AZURE_ALLOWED_TENANTS", tenant),
        ("AZURE_CLIENT_ID", client),
        ("AZURE_CLIENT_SECRET", "s3cret"),
        (
            "OAUTH_CALLBACK_URL",
            "https://mreg.example.com/auth/callback",
        ),
    ];
    let err = parse(&entra).expect_err("authentication on needs an external key");
    assert_eq!(err.setting, "MREG_ENCRYPTION_KEY");
    assert!(err.to_string().contains("outside the database"), "{err}");
    let key = TEST_KEY;
    let (path, mut file) = tempfile();
    writeln!(file, "{key}").expect("write");
    let path = path.display().to_string();
    let from_file = parse(
        &[
            entra.as_slice(),
            &[("MREG_ENCRYPTION_KEY_FILE", path.as_str())],
        ]
        .concat(),
    )
    .expect("a key file will do");
    assert!(from_file.encryption_key.is_some());
    let both = parse(
        &[
            entra.as_slice(),
            &[
                ("MREG_ENCRYPTION_KEY_FILE", path.as_str()),
                ("MREG_ENCRYPTION_KEY", key),
            ],
        ]
        .concat(),
    )
    .expect_err("one or the other");
    assert_eq!(both.setting, "MREG_ENCRYPTION_KEY_FILE");
    let config =
        parse(&[entra.as_slice(), &[("MREG_ENCRYPTION_KEY", key)]].concat()).expect("valid");
    assert_eq!(
        config.auth.mode,
        AuthMode::OAuth,
        "auto turns OAuth on with Entra"
    );
    assert_eq!(config.azure.tenant_id.as_deref(), Some("organizations"));
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("s3cret"),
        "secret leaked into Debug: {debug}"
    );
}

#[test]
fn sources_rise_from_default_to_file_to_dotenv_to_environment() {
    let mut file = tempfile();
    writeln!(
        file.1,
        "[api]\nport = 9000\nhost = \"127.0.0.2\"\n[oauth]\nscopes = [\"openid\", \"email\"]\n[log]\nformat = \"json\""
    )
    .expect("write");
    let raw = RawConfig::collect(
        Some(&file.0),
        env(&[("MREG_API_PORT", "9100"), ("MREG_LOG_FORMAT", "text")]),
        env(&[("MREG_API_PORT", "9200"), ("UNRELATED", "x")]),
    )
    .expect("collect");
    let config = raw.parse().expect("valid");
    assert_eq!(config.api.port, 9200);
    assert_eq!(config.api.host, "127.0.0.2");
    assert_eq!(config.log.format, LogFormat::Text);
    assert_eq!(config.azure.scopes, ["openid", "email"]);
    let described: BTreeMap<_, _> = raw
        .describe()
        .into_iter()
        .map(|(s, v, src)| (s.env, (v, src)))
        .collect();
    assert_eq!(
        described["MREG_API_PORT"],
        ("9200".to_owned(), "environment".to_owned())
    );
    assert_eq!(
        described["MREG_LOG_FORMAT"],
        ("text".to_owned(), ".env".to_owned())
    );
    assert_eq!(
        described["MREG_API_HOST"].1,
        format!("file {}", file.0.display())
    );
    assert_eq!(described["MREG_API_PORT"].0, "9200");
    assert_eq!(described["FASTMCP_SERVER_PORT"].1, "default");
    let _ = std::fs::remove_file(&file.0);
}

#[test]
fn unknown_file_keys_and_bad_file_values_are_reported_with_the_file() {
    let mut file = tempfile();
    writeln!(file.1, "[api]\nhots = \"x\"").expect("write");
    let err = RawConfig::collect(Some(&file.0), Vec::new(), Vec::new()).expect_err("unknown");
    assert!(err.to_string().contains("unknown key 'api.hots'"), "{err}");

    let mut file2 = tempfile();
    writeln!(file2.1, "[api]\nport = 123456").expect("write");
    let err = RawConfig::collect(Some(&file2.0), Vec::new(), Vec::new())
        .and_then(|raw| raw.parse())
        .expect_err("bad port");
    assert_eq!(err.setting, "MREG_API_PORT");
    assert!(
        err.to_string()
            .contains(&format!("(in {})", file2.0.display())),
        "{err}"
    );
    let _ = std::fs::remove_file(&file.0);
    let _ = std::fs::remove_file(&file2.0);
}

#[test]
fn secrets_are_hidden_when_described() {
    let raw = RawConfig::collect(
        None,
        Vec::new(),
        env(&[
            ("AZURE_CLIENT_SECRET", "s3cret"),
            ("MREG_POSTGRES_PASSWORD", "pw1"),
            ("MREG_DATABASE_URL", "postgres://u:pw2@h/db"),
            ("MREG_REDIS_URL", "redis://:pw3@localhost:6379/0"),
        ]),
    )
    .expect("collect");
    let text = format!("{:?}", raw.describe());
    for secret in ["s3cret", "pw1", "pw2", "pw3"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    assert!(text.contains("postgres://u:***@h/db"));
}

#[test]
fn a_password_in_a_urls_query_is_hidden_too() {
    let config = parse(&[(
        "MREG_DATABASE_URL",
        "postgres://mreg@db.internal/mreg?password=LeakMe&sslmode=require&sslpassword=Key2",
    )])
    .expect("valid");
    let shown = config.database.redacted();
    assert!(
        !shown.contains("LeakMe") && !shown.contains("Key2"),
        "{shown}"
    );
    assert!(shown.contains("sslmode=require"), "{shown}");
    assert!(shown.contains("password=***"), "{shown}");
    assert_eq!(
        redact_url("redis://h:6379/0?token=abc&db=1"),
        "redis://h:6379/0?token=***&db=1"
    );
}

fn tempfile() -> (PathBuf, std::fs::File) {
    let path = std::env::temp_dir().join(format!("mreg-config-{}.toml", uuid::Uuid::new_v4()));
    let file = std::fs::File::create(&path).expect("create temp file");
    (path, file)
}

#[test]
fn the_readme_documents_every_setting_with_its_default() {
    let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"));
    for setting in SETTINGS {
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", setting.env)))
            .unwrap_or_else(|| panic!("README has no table row for {}", setting.env));
        assert!(row.contains(&format!("`{}`", setting.key)), "{row}");
        match setting.default {
            Some(default) => assert!(row.contains(&format!("`{default}`")), "{row}"),
            None => assert!(row.contains("| — |"), "{row}"),
        }
    }
}

#[test]
fn durations_take_units_and_bounds() {
    let (min, max) = (Duration::from_millis(100), Duration::from_secs(3600));
    assert_eq!(parse_duration("30s", min, max), Ok(Duration::from_secs(30)));
    assert_eq!(
        parse_duration("30", min, max),
        Err("'30' needs a unit: write 30s, 30ms, 30m or 30h".to_owned()),
        "a bare number is ambiguous"
    );
    assert_eq!(
        parse_duration("500ms", min, max),
        Ok(Duration::from_millis(500))
    );
    assert_eq!(parse_duration("2m", min, max), Ok(Duration::from_secs(120)));
    assert_eq!(
        parse_duration("1.5s", min, max),
        Ok(Duration::from_millis(1500))
    );
    for bad in ["", "s", "ten", "5 parsecs", "-1s", "10ms", "2h"] {
        assert!(parse_duration(bad, min, max).is_err(), "{bad}");
    }
    let err = parse(&[("MREG_HEALTH_INTERVAL", "often")]).expect_err("bad");
    assert_eq!(err.setting, "MREG_HEALTH_INTERVAL");
}

#[test]
fn consumers_needs_an_allowlist_like_the_other_multi_tenant_names() {
    let client = "835f09b6-0f0f-40cc-85cb-f32c5829a149";
    let err = parse(&[
        ("AZURE_TENANT_ID", "consumers"),
        ("AZURE_CLIENT_ID", client),
        ("AZURE_CLIENT_SECRET", "s3cret"),
    ])
    .expect_err("every personal account shares one tid");
    assert_eq!(err.setting, "AZURE_ALLOWED_TENANTS");
    assert!(err.to_string().contains("consumers"), "{err}");
    let config = parse(&[
        ("AZURE_TENANT_ID", "consumers"),
        ("AZURE_CLIENT_ID", client),
        ("AZURE_CLIENT_SECRET", "s3cret"),
        (
            "AZURE_ALLOWED_TENANTS",
            "9188040d-6c67-4c5b-b112-36a304b66dad",
        ),
        ("MREG_ENCRYPTION_KEY", TEST_KEY),
    ])
    .expect("listed");
    assert_eq!(
        config.azure.allowed_tenants,
        ["9188040d-6c67-4c5b-b112-36a304b66dad"]
    );
}

#[test]
fn provider_and_public_urls_need_https_off_loopback() {
    for var in ["AZURE_AUTHORITY_HOST", "AZURE_GRAPH_URL", "MREG_PUBLIC_URL"] {
        let err = parse(&[(var, "http://login.example.com")]).expect_err(var);
        assert_eq!(err.setting, var);
        assert!(err.to_string().contains("https"), "{err}");
        for local in [
            "http://localhost:8001",
            "http://127.0.0.1:8001",
            "http://[::1]:8001",
            "https://login.example.com",
        ] {
            assert!(parse(&[(var, local)]).is_ok(), "{var}={local}");
        }
    }
    let oidc = |issuer: &str| {
        parse(&[
            ("MREG_OIDC_ISSUER", issuer),
            ("MREG_OIDC_CLIENT_ID", "mreg"),
            ("MREG_OIDC_CLIENT_SECRET", "s3cret"),
            ("MREG_ENCRYPTION_KEY", TEST_KEY),
        ])
    };
    let err = oidc("http://idp.example.com/realms/x").expect_err("http issuer");
    assert_eq!(err.setting, "MREG_OIDC_ISSUER");
    assert!(oidc("https://idp.example.com/realms/x").is_ok());
    assert!(oidc("http://127.0.0.1:9000/realms/x").is_ok());
}

#[test]
fn a_wildcard_bind_with_authentication_needs_the_public_url() {
    let client = "835f09b6-0f0f-40cc-85cb-f32c5829a149";
    let entra = [
        ("AZURE_TENANT_ID", "9188040d-6c67-4c5b-b112-36a304b66dad"),
        ("AZURE_CLIENT_ID", client),
        ("AZURE_CLIENT_SECRET", "s3cret"),
        ("MREG_ENCRYPTION_KEY", TEST_KEY),
    ];
    let mut settings = entra.to_vec();
    settings.push(("FASTMCP_SERVER_HOST", "0.0.0.0"));
    let err = parse(&settings).expect_err("clients would be sent to 0.0.0.0");
    assert_eq!(err.setting, "MREG_PUBLIC_URL");
    assert!(err.to_string().contains("0.0.0.0"), "{err}");
    settings.push(("MREG_PUBLIC_URL", "https://mreg.example.com"));
    let config = parse(&settings).expect("with the public URL");
    assert_eq!(
        config.public_url.map(|u| u.to_string()),
        Some("https://mreg.example.com/".to_owned())
    );
}

#[test]
fn check_config_hides_the_password_of_any_url_setting() {
    let raw = RawConfig::collect(
        None,
        Vec::new(),
        env(&[
            ("MREG_GATEWAY_URL", "http://alice:S3CRETPW@127.0.0.1:8000"),
            ("MREG_PUBLIC_URL", "https://bob:hunter2@mreg.example.com"),
        ]),
    )
    .expect("collected");
    let shown: Vec<String> = raw
        .describe()
        .into_iter()
        .map(|(_, value, _)| value)
        .collect();
    let all = shown.join("\n");
    assert!(
        !all.contains("S3CRETPW") && !all.contains("hunter2"),
        "{all}"
    );
    assert!(all.contains("http://alice:***@127.0.0.1:8000"), "{all}");
}

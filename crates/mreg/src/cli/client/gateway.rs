//! Which gateway a client command talks to. There is one way to name it: `--gateway URL` or
//! `MREG_GATEWAY_URL` (in the environment, `.env` or the configuration file), the URL of its
//! REST API. Without one, the command reads the same configuration as `mreg serve` (`--config`,
//! `MREG_CONFIG`, `.env`, the environment), so in a project directory that sets the ports the
//! client finds the gateway started there.
//!
//! Commands that speak MCP (`call`, `login`, `mcp-config`) need the MCP listener as well: from a
//! named gateway they ask its REST API (`/.well-known/mreg`); from the configuration they use
//! `MREG_PUBLIC_URL` or the MCP listener's address. The old names (`--url`, `MREG_URL`,
//! `MREG_MCP_URL`, `MREG_MCP_ENDPOINT`) still work, with a one-line note on stderr.

use std::path::Path;

use serde_json::Value;

use super::{EXIT_UNREACHABLE, Failure};
use crate::config::{self, EXIT_CONFIG, RawConfig, settings};

/// The gateway a client command talks to.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// Base URL of its REST API, without a trailing slash.
    pub api: String,
    /// Base URL of its MCP listener when the configuration tells it; asked of the REST API
    /// otherwise.
    mcp: Option<String>,
}

/// Prints the one-line note for a deprecated name.
pub fn deprecated(old: &str, new: &str) {
    errln!("mreg: note: {old} is deprecated; use {new}");
}

/// A non-empty process environment variable.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn config_failure(e: &config::ConfigError) -> Failure {
    Failure {
        message: format!("configuration error: {e}"),
        code: EXIT_CONFIG as u8,
    }
}

fn value<'a>(raw: &'a RawConfig, env: &str) -> Option<&'a str> {
    settings::by_env(env)
        .and_then(|setting| raw.get(setting))
        .map(|(value, _)| value.trim())
        .filter(|value| !value.is_empty())
}

/// `http://host:port` of a listener as a client on this machine reaches it (a wildcard address
/// is reached on loopback).
fn local_url(raw: &RawConfig, host_var: &str, port_var: &str) -> Result<String, Failure> {
    let host = match value(raw, host_var).unwrap_or("127.0.0.1") {
        "0.0.0.0" | "" => "127.0.0.1".to_owned(),
        "::" | "[::]" => "[::1]".to_owned(),
        h if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
        h => h.to_owned(),
    };
    let port = value(raw, port_var).unwrap_or("0");
    match port.parse::<u16>() {
        Ok(port) if port != 0 => Ok(format!("http://{host}:{port}")),
        _ => Err(Failure {
            message: format!(
                "configuration error: {port_var}: '{port}' is not a port a client can reach; name the gateway with --gateway or MREG_GATEWAY_URL"
            ),
            code: EXIT_CONFIG as u8,
        }),
    }
}

/// `raw` (a URL the user gave) as it may be printed: a password in it replaced with `***`. Text
/// that does not parse as a URL with a host loses everything before an `@` (after a scheme), as
/// that may be a password too.
pub fn shown(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(url) if url.has_host() => {
            if url.password().is_none() {
                return raw.to_owned();
            }
            let redacted = config::redact_url(raw);
            if raw.ends_with('/') {
                redacted
            } else {
                redacted.trim_end_matches('/').to_owned()
            }
        }
        _ => match raw.rsplit_once('@') {
            Some((before, after)) => {
                let scheme = before.find("://").map_or("", |i| &before[..i + 3]);
                format!("{scheme}***@{after}")
            }
            None => raw.to_owned(),
        },
    }
}

/// Checks a URL given by `what` and returns it without a trailing slash; a bad one is a
/// configuration error (exit 64).
pub fn checked(raw: &str, what: &str) -> Result<String, Failure> {
    let base = raw.trim().trim_end_matches('/').to_owned();
    let bad = |why: String| Failure {
        message: format!("configuration error: {what} {} {why}", shown(&base)),
        code: EXIT_CONFIG as u8,
    };
    if !base.contains("://") {
        // `127.0.0.1:8000` is no URL at all, and `localhost:8000` one with the scheme `localhost`.
        return Err(bad(format!(
            "has no scheme; write http://{} (or https://…)",
            shown(&base)
        )));
    }
    match url::Url::parse(&base) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => Ok(base),
        Ok(_) => Err(bad("is not an http(s) URL".to_owned())),
        Err(e) => Err(bad(format!("is not a URL: {e}"))),
    }
}

/// Checks the URL of a gateway's REST API given by `what`: [`checked`], and the base alone,
/// since client commands add `/api/v1/…` themselves. A path prefix (a gateway published under
/// `https://host/mreg`) is kept; a path into the API itself (`/api/v1`, `/mcp`…) is refused.
pub fn checked_gateway(raw: &str, what: &str) -> Result<String, Failure> {
    let base = checked(raw, what)?;
    let url = url::Url::parse(&base).map_err(|e| Failure::from(e.to_string()))?;
    let into_api = url.path_segments().into_iter().flatten().any(|segment| {
        matches!(
            segment,
            "api" | "v0.1" | "mcp" | "servers" | "docs" | "openapi.json" | ".well-known"
        )
    });
    if !into_api && url.query().is_none() && url.fragment().is_none() {
        return Ok(base.trim_end_matches('/').to_owned());
    }
    let mut root = url;
    root.set_path("");
    root.set_query(None);
    root.set_fragment(None);
    let root = root.as_str().trim_end_matches('/').to_owned();
    Err(Failure {
        message: format!(
            "configuration error: {what} {}: the gateway URL is the base of its REST API, without a path; write {}",
            shown(&base),
            shown(&root)
        ),
        code: EXIT_CONFIG as u8,
    })
}

impl Gateway {
    /// A gateway named by the URL of its REST API; its MCP listener is asked of it.
    fn named(api: String) -> Self {
        Self { api, mcp: None }
    }

    /// The gateway named by `flag` (`--gateway`), else `old_flag` (`--url`, deprecated), else
    /// `MREG_GATEWAY_URL`, else `MREG_URL` (deprecated), else the configuration's listeners.
    pub fn resolve(
        flag: Option<&str>,
        old_flag: Option<&str>,
        file: Option<&Path>,
    ) -> Result<Self, Failure> {
        if let Some(url) = flag {
            return Ok(Self::named(checked_gateway(url, "--gateway")?));
        }
        if let Some(url) = old_flag {
            deprecated("--url", "--gateway");
            return Ok(Self::named(checked_gateway(url, "--url")?));
        }
        let raw = config::load(file).map_err(|e| config_failure(&e))?;
        let named = if let Some(url) = value(&raw, "MREG_GATEWAY_URL") {
            Some(checked_gateway(url, "MREG_GATEWAY_URL")?)
        } else if let Some(url) = env("MREG_URL") {
            deprecated("MREG_URL", "MREG_GATEWAY_URL");
            Some(checked_gateway(&url, "MREG_URL")?)
        } else {
            None
        };
        if let Some(api) = named {
            return Ok(Self::named(api));
        }
        let api = local_url(&raw, "MREG_API_HOST", "MREG_API_PORT")?;
        let mcp = match value(&raw, "MREG_PUBLIC_URL") {
            Some(public) => checked(public, "MREG_PUBLIC_URL")?,
            None => local_url(&raw, "FASTMCP_SERVER_HOST", "FASTMCP_SERVER_PORT")?,
        };
        Ok(Self {
            api,
            mcp: Some(mcp),
        })
    }

    /// The MCP listener's base URL (the OAuth issuer; `/mcp` and `/servers/NAME/mcp` hang off
    /// it): from the configuration, or asked of the named gateway's REST API.
    pub async fn mcp_url(&self) -> Result<String, Failure> {
        if let Some(mcp) = &self.mcp {
            return Ok(mcp.clone());
        }
        let url = format!("{}/.well-known/mreg", self.api);
        let unreachable = |why: String| Failure {
            message: format!(
                "cannot ask the gateway at {} where its MCP listener is ({why}); is `mreg serve` running there?",
                shown(&self.api)
            ),
            code: EXIT_UNREACHABLE,
        };
        let response = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| Failure::from(e.to_string()))?
            .get(&url)
            .send()
            .await
            .map_err(|e| unreachable(domain::text::root_cause(&e)))?;
        if !response.status().is_success() {
            return Err(unreachable(format!("HTTP {}", response.status().as_u16())));
        }
        let document: Value = response
            .json()
            .await
            .map_err(|_| unreachable("the answer is not JSON".to_owned()))?;
        let mcp = document["mcp_url"]
            .as_str()
            .ok_or_else(|| unreachable("the answer has no mcp_url".to_owned()))?;
        // Not the user's configuration: the gateway's answer.
        checked(mcp, "the gateway's mcp_url")
            .map_err(|f| Failure::from(f.message.replacen("configuration error: ", "", 1)))
    }
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn a_password_never_survives_in_a_shown_url() {
        assert_eq!(
            shown("http://alice:pw@h:8000"),
            "http://alice:***@h:8000",
            "no slash added"
        );
        assert_eq!(shown("https://h:8000/"), "https://h:8000/");
        assert_eq!(shown("alice:pw@h:8000"), "***@h:8000", "no scheme");
        assert_eq!(shown("http://alice:pw@[::1"), "http://***@[::1");
        assert_eq!(shown("127.0.0.1:8000"), "127.0.0.1:8000");
    }

    #[test]
    fn a_gateway_is_named_by_the_base_url_of_its_rest_api() {
        use super::checked_gateway;
        assert_eq!(
            checked_gateway(" https://h:8000/ ", "--gateway").expect("base"),
            "https://h:8000"
        );
        assert_eq!(
            checked_gateway("https://h/mreg/", "--gateway").expect("a prefix is kept"),
            "https://h/mreg"
        );
        for (raw, hint) in [
            ("127.0.0.1:8000", "write http://127.0.0.1:8000"),
            ("localhost:8000", "write http://localhost:8000"),
            (
                "http://h:8000/api/v1",
                "without a path; write http://h:8000",
            ),
            ("https://h/?x=1", "without a path; write https://h"),
            ("https://h/mreg/mcp", "without a path; write https://h"),
            ("ftp://h", "is not an http(s) URL"),
        ] {
            let failure = checked_gateway(raw, "--gateway").expect_err(raw);
            assert_eq!(failure.code(), 64, "{raw}");
            assert!(failure.message().contains(hint), "{raw}: {failure:?}");
        }
    }
}

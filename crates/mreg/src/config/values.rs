//! Parsers of single setting values (hosts, durations, booleans, URLs, the database URL), each
//! naming the setting in its error.

use super::*;

/// Replaces the password of a URL (if any) with `***`.
pub fn redact_url(raw: &str) -> String {
    let Ok(mut url) = Url::parse(raw) else {
        return "(unparsable, hidden)".to_owned();
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    // A password may come as a query parameter too (`?password=`, `?sslpassword=`).
    let secret = |key: &str| {
        let key = key.to_ascii_lowercase();
        ["password", "secret", "token"]
            .iter()
            .any(|s| key.contains(s))
    };
    if url.query_pairs().any(|(key, _)| secret(&key)) {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(key, value)| {
                let value = if secret(&key) {
                    "***".to_owned()
                } else {
                    value.into_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

pub(super) fn parse_host(v: &str) -> Result<String, String> {
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
pub(super) fn missing_together(missing: &[&str], group: &str) -> ConfigError {
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

pub(super) fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "mreg".to_owned());
    format!("{host}:{}", std::process::id())
}

pub(super) fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!(
            "'{v}' is not a yes or no: write true or false (also yes/no, on/off, 1/0)"
        )),
    }
}

/// A scope token as RFC 6749 §3.3 defines it.
pub(super) fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

pub(super) fn parse_callback_url(v: &str) -> Result<Url, String> {
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
pub(super) fn is_loopback_url(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Refuses plain http off loopback: keys, tokens and sign-ins must not travel in the clear.
pub(super) fn require_https_off_loopback(url: &Url) -> Result<(), String> {
    if url.scheme() == "http" && !is_loopback_url(url) {
        return Err(format!(
            "'{url}' must use https (http is allowed only for localhost and loopback addresses)"
        ));
    }
    Ok(())
}

/// [`parse_base_url`], https unless the host is loopback.
pub(super) fn parse_secure_base_url(v: &str) -> Result<Url, String> {
    let url = parse_base_url(v)?;
    require_https_off_loopback(&url)?;
    Ok(url)
}

/// An http(s) base URL without query, fragment or credentials; a trailing `/` is dropped.
pub(super) fn parse_base_url(v: &str) -> Result<Url, String> {
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

pub(super) fn parse_database_url(v: &str) -> Result<DatabaseConfig, String> {
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

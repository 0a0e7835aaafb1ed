//! The two values every server is known by, validated once: its name and its URL.

use super::*;

/// A server's unique name: a DNS label (1–63 characters of `a-z`, `0-9` and `-`, starting with a
/// letter, not ending with `-`). It is used in URLs (`/servers/{name}/mcp`) and as the key of the
/// registry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ServerName(pub(super) String);

impl ServerName {
    /// Parses a name, reporting problems against the field `name`.
    pub fn parse(raw: &str) -> Result<Self> {
        Self::parse_field(raw, "name")
    }

    /// Parses a name, reporting problems against `field`.
    pub fn parse_field(raw: &str, field: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::invalid(
                field,
                format!(
                    "{why}; a server name is 1-63 characters of a-z, 0-9 and '-', starting with a letter and not ending with '-'"
                ),
            )
        };
        if raw.is_empty() {
            return Err(bad("must not be empty"));
        }
        if raw.len() > 63 {
            return Err(bad("is longer than 63 characters"));
        }
        if let Some(c) = raw
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(bad(&format!("contains {c:?}")));
        }
        if !raw.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(bad("must start with a letter"));
        }
        if raw.ends_with('-') {
            return Err(bad("must not end with '-'"));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a server is reached: an absolute `http` or `https` URL with a host, without userinfo
/// (credentials do not belong in a registry record) and without a fragment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ServerUrl(pub(super) String);

impl ServerUrl {
    /// Parses a URL, reporting problems against `field`.
    pub fn parse_field(raw: &str, field: &str) -> Result<Self> {
        if raw.len() > MAX_URL_CHARS {
            return Err(Error::invalid(
                field,
                format!("is longer than {MAX_URL_CHARS} characters"),
            ));
        }
        let url = Url::parse(raw)
            .map_err(|e| Error::invalid(field, format!("is not an absolute URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::invalid(
                field,
                format!(
                    "scheme '{}' is not allowed; use http or https",
                    url.scheme()
                ),
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(Error::invalid(field, "must name a host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Error::invalid(
                field,
                "must not contain a user name or password; store upstream credentials separately",
            ));
        }
        if url.fragment().is_some() {
            return Err(Error::invalid(
                field,
                "must not contain a fragment ('#...')",
            ));
        }
        Ok(Self(url.into()))
    }

    /// The URL as text, normalized.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

//! How the gateway reaches a registered server: per-server request timeouts and upstream
//! credentials (static headers such as an API key). Credentials are write-only: they are sealed
//! before they are stored and never appear in any API answer, log line or `Debug` output.

use std::collections::BTreeMap;
use std::fmt;

use crate::error::{Error, Result};

/// Most upstream headers a server may carry.
pub const MAX_UPSTREAM_HEADERS: usize = 8;
/// Longest upstream header value.
pub const MAX_UPSTREAM_HEADER_VALUE: usize = 4096;
/// Request timeout when a registration does not set one.
pub const DEFAULT_TIMEOUT_SECS: u32 = 30;
/// Longest timeout a registration may set.
pub const MAX_TIMEOUT_SECS: u32 = 600;

/// Headers the gateway manages itself and that credentials may therefore not set.
const RESERVED: &[&str] = &[
    "accept",
    "connection",
    "content-length",
    "content-type",
    "host",
    "keep-alive",
    "last-event-id",
    "mcp-method",
    "mcp-name",
    "mcp-protocol-version",
    "mcp-session-id",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    // Cloud metadata services answer only requests that carry one of these: stored as an
    // upstream "credential", they would turn a registration into a request for the host's
    // managed identity.
    "metadata",
    "metadata-flavor",
    "x-google-metadata-request",
    "x-aws-ec2-metadata-token",
    "x-aws-ec2-metadata-token-ttl-seconds",
    "x-identity-header",
    "x-mreg-hop",
];

/// Static headers sent to an upstream server with every request, e.g. `x-api-key`. Names are
/// lowercase. `Debug` shows names only.
#[derive(Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct UpstreamHeaders(BTreeMap<String, String>);

impl fmt::Debug for UpstreamHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl UpstreamHeaders {
    /// Validates header names and values, reporting problems against `upstream_headers`.
    pub fn parse(raw: BTreeMap<String, String>) -> Result<Self> {
        if raw.len() > MAX_UPSTREAM_HEADERS {
            return Err(Error::invalid(
                "upstream_headers",
                format!(
                    "has {} entries; at most {MAX_UPSTREAM_HEADERS} are allowed",
                    raw.len()
                ),
            ));
        }
        let mut headers = BTreeMap::new();
        for (name, value) in raw {
            let name = name.trim().to_ascii_lowercase();
            let field = format!("upstream_headers.{name}");
            let token = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                return Err(Error::invalid(field, "is not a valid HTTP header name"));
            }
            if RESERVED.contains(&name.as_str()) {
                return Err(Error::invalid(
                    field,
                    "is managed by the gateway and cannot be set",
                ));
            }
            if value.is_empty()
                || value.len() > MAX_UPSTREAM_HEADER_VALUE
                || !value
                    .bytes()
                    .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
            {
                return Err(Error::invalid(
                    field,
                    format!("value must be 1-{MAX_UPSTREAM_HEADER_VALUE} visible ASCII characters"),
                ));
            }
            headers.insert(name, value);
        }
        Ok(Self(headers))
    }

    /// The headers, name → value.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Parses a per-server timeout in seconds.
pub fn parse_timeout(secs: u32) -> Result<u32> {
    if (1..=MAX_TIMEOUT_SECS).contains(&secs) {
        Ok(secs)
    } else {
        Err(Error::invalid(
            "timeout_secs",
            format!("must be between 1 and {MAX_TIMEOUT_SECS} seconds"),
        ))
    }
}

/// Authenticated encryption for small secrets at rest. `purpose` separates uses of one key: a
/// value sealed for one purpose does not open for another.
pub trait Sealer: Send + Sync + 'static {
    /// Encrypts and authenticates `plaintext`.
    fn seal(&self, purpose: &str, plaintext: &[u8]) -> Vec<u8>;

    /// Decrypts `sealed`; fails if it was altered, sealed with another key or for another purpose.
    fn open(&self, purpose: &str, sealed: &[u8]) -> Result<Vec<u8>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn upstream_headers_are_validated_and_never_shown_in_debug() {
        let ok = UpstreamHeaders::parse(headers(&[
            ("X-Api-Key", "s3cret"),
            ("authorization", "Bearer t"),
        ]))
        .expect("valid");
        assert_eq!(ok.iter().next(), Some(("authorization", "Bearer t")));
        assert!(!format!("{ok:?}").contains("s3cret"));
        for (bad, field) in [
            (headers(&[("host", "x")]), "upstream_headers.host"),
            (
                headers(&[("Mcp-Session-Id", "x")]),
                "upstream_headers.mcp-session-id",
            ),
            (headers(&[("bad name", "x")]), "upstream_headers.bad name"),
            (
                headers(&[("x-key", "line\nbreak")]),
                "upstream_headers.x-key",
            ),
            (headers(&[("x-key", "")]), "upstream_headers.x-key"),
        ] {
            let err = UpstreamHeaders::parse(bad).expect_err(field);
            assert!(
                matches!(err, Error::Invalid { field: ref f, .. } if f == field),
                "{err:?}"
            );
        }
        let many = (0..=MAX_UPSTREAM_HEADERS)
            .map(|i| (format!("x-{i}"), "v".to_owned()))
            .collect();
        assert!(UpstreamHeaders::parse(many).is_err());
    }

    #[test]
    fn timeouts_are_bounded() {
        assert!(parse_timeout(0).is_err());
        assert!(parse_timeout(MAX_TIMEOUT_SECS + 1).is_err());
        assert_eq!(parse_timeout(5).ok(), Some(5));
    }
}

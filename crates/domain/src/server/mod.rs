//! A registered MCP server and the rules its fields follow.
//!
//! Input arrives as a [`ServerDraft`] (create) or a [`ServerPatch`] (partial update), exactly as
//! the caller sent it; `validate` turns it into a [`NewServer`] or [`ServerUpdate`] whose fields
//! can no longer be wrong. Errors name the field as the caller spelled it.

mod change;
mod name;
mod query;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use url::Url;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::upstream::{UpstreamHeaders, parse_timeout};
pub use change::NewServer;
pub use change::Patch;
pub use change::ServerDraft;
pub use change::ServerPatch;
pub use change::ServerUpdate;
pub use change::parse_tag;
pub use name::ServerName;
pub use name::ServerUrl;
pub use query::Page;
pub use query::ServerQuery;
pub use query::ServerSort;
pub use query::Visibility;

/// Longest accepted description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1000;

/// Most tags a server may carry.
pub const MAX_TAGS: usize = 32;

/// Longest tag, in characters.
pub const MAX_TAG_CHARS: usize = 50;

/// Largest `metadata` object, serialized as JSON.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// Longest accepted URL.
pub const MAX_URL_CHARS: usize = 2048;

/// Longest text query.
pub const MAX_QUERY_CHARS: usize = 200;

/// Largest page a list may ask for.
pub const MAX_PAGE_SIZE: u32 = 500;

/// Page size when the caller does not say.
pub const DEFAULT_PAGE_SIZE: u32 = 50;

/// How the gateway talks to a server. Only remote transports can be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// MCP streamable HTTP (2025-03-26 and later).
    #[default]
    StreamableHttp,
    /// The legacy HTTP+SSE transport (2024-11-05).
    Sse,
}

impl Transport {
    /// The wire name (`streamable-http`, `sse`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StreamableHttp => "streamable-http",
            Self::Sse => "sse",
        }
    }

    /// Parses the wire name.
    pub fn parse_field(raw: &str, field: &str) -> Result<Self> {
        match raw {
            "streamable-http" => Ok(Self::StreamableHttp),
            // Stored registrations may still say `sse`; new ones may not until the gateway can
            // bridge the legacy transport.
            "sse" => Err(Error::invalid(
                field,
                "the legacy HTTP+SSE transport (sse) is not supported yet: the gateway cannot reach such a server (bridging is planned, with federation); register the server's streamable-http endpoint",
            )),
            other => Err(Error::invalid(
                field,
                format!("unknown transport '{other}'; use streamable-http"),
            )),
        }
    }
}

/// Lifecycle status of a registration, set by its operators (health is tracked separately).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServerStatus {
    /// In service.
    #[default]
    Active,
    /// Still served, but callers should move away from it.
    Deprecated,
    /// Kept in the registry but not served through the gateway.
    Disabled,
}

impl ServerStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Deprecated => "deprecated",
            Self::Disabled => "disabled",
        }
    }

    /// Parses the wire name.
    pub fn parse_field(raw: &str, field: &str) -> Result<Self> {
        match raw {
            "active" => Ok(Self::Active),
            "deprecated" => Ok(Self::Deprecated),
            "disabled" => Ok(Self::Disabled),
            other => Err(Error::invalid(
                field,
                format!("unknown status '{other}'; use active, deprecated or disabled"),
            )),
        }
    }
}

/// A registered MCP server.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Server {
    /// Immutable identifier.
    pub id: Uuid,
    /// Unique name (DNS label).
    #[schema(value_type = String, example = "weather")]
    pub name: ServerName,
    /// Where the server is reached.
    #[schema(value_type = String, example = "https://weather.example.com/mcp")]
    pub url: ServerUrl,
    /// How the gateway talks to it.
    pub transport: Transport,
    /// What the server is for.
    pub description: String,
    /// Lowercase labels for discovery, sorted and unique.
    pub tags: Vec<String>,
    /// The server's version, when known (no ranges).
    pub version: Option<String>,
    /// Subject of whoever registered it.
    pub registered_by: String,
    /// Tenant it belongs to, when known.
    pub tenant: Option<String>,
    /// Whether callers of every tenant may see and use it (an administrator's decision).
    pub shared: bool,
    /// Lifecycle status.
    pub status: ServerStatus,
    /// Free-form JSON object for the operator's own use.
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    /// Seconds the gateway waits for the server to answer a request (default 30).
    pub timeout_secs: Option<u32>,
    /// Whether upstream credentials are stored for it (they are never shown).
    pub has_upstream_credentials: bool,
    /// When it was registered.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
    /// Increases by one on every change; used for optimistic concurrency.
    pub revision: i64,
}

impl Server {
    /// The lowercase text that `q` searches are matched against: name, description and tags.
    pub fn search_text(&self) -> String {
        let mut text = format!("{} {}", self.name, self.description.to_lowercase());
        for tag in &self.tags {
            text.push(' ');
            text.push_str(tag);
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::change::*;
    use super::*;

    #[test]
    fn a_name_means_the_callers_own_server_then_the_public_one() {
        let server = |tenant: Option<&str>, shared: bool| {
            let mut s = ServerDraft {
                name: "payroll".to_owned(),
                url: "https://payroll.example.com/mcp".to_owned(),
                ..ServerDraft::default()
            }
            .validate()
            .expect("valid")
            .into_server("alice", tenant, OffsetDateTime::UNIX_EPOCH);
            s.shared = shared;
            s
        };
        let (t1, t2_shared, t3) = (
            server(Some("t1"), false),
            server(Some("t2"), true),
            server(Some("t3"), false),
        );
        let all = vec![t1.clone(), t2_shared.clone(), t3.clone()];
        let picked = |v: Visibility, c: Vec<Server>| v.pick(c).map(|s| s.map(|s| s.id));
        let tenant = |t: &str| Visibility::Tenant(Some(t.to_owned()));
        assert_eq!(
            picked(tenant("t1"), all.clone()),
            Ok(Some(t1.id)),
            "its own"
        );
        assert_eq!(
            picked(tenant("t2"), all.clone()),
            Ok(Some(t2_shared.id)),
            "its own, shared"
        );
        assert_eq!(
            picked(tenant("t4"), all.clone()),
            Ok(Some(t2_shared.id)),
            "the public one"
        );
        assert_eq!(
            picked(Visibility::Tenant(None), all.clone()),
            Ok(Some(t2_shared.id))
        );
        assert_eq!(
            picked(tenant("t4"), vec![t1.clone(), t3.clone()]),
            Ok(None),
            "others' private servers are not there"
        );
        assert_eq!(picked(Visibility::All, all), Ok(Some(t2_shared.id)));
        assert_eq!(picked(Visibility::All, vec![t3.clone()]), Ok(Some(t3.id)));
        assert_eq!(
            picked(Visibility::All, vec![t1, t3]),
            Err(2),
            "two private servers of one name: ambiguous to the local operator"
        );
    }

    #[test]
    fn names_follow_dns_label_rules() {
        for ok in ["a", "weather", "w-2", "a1-b2-c3", &"a".repeat(63)] {
            assert!(ServerName::parse(ok).is_ok(), "{ok} should be valid");
        }
        for bad in [
            "",
            "Weather",
            "1abc",
            "-a",
            "a-",
            "a_b",
            "a.b",
            "a b",
            &"a".repeat(64),
        ] {
            let err = ServerName::parse(bad).expect_err(bad);
            assert!(matches!(err, Error::Invalid { ref field, .. } if field == "name"));
        }
    }

    #[test]
    fn urls_must_be_http_with_a_host_and_no_credentials() {
        assert_eq!(
            ServerUrl::parse_field("https://Example.com/mcp", "url")
                .map(|u| u.to_string())
                .ok(),
            Some("https://example.com/mcp".to_owned())
        );
        for bad in [
            "ftp://example.com",
            "javascript:alert(1)",
            "https://user:pw@example.com/mcp",
            "https://user@example.com/mcp",
            "https://example.com/mcp#frag",
            "/relative",
            "file:///etc/passwd",
        ] {
            assert!(ServerUrl::parse_field(bad, "url").is_err(), "{bad}");
        }
    }

    #[test]
    fn tags_are_normalized_sorted_and_deduplicated() {
        let tags = parse_tags(vec!["Weather".into(), " api ".into(), "weather".into()]);
        assert_eq!(
            tags.ok(),
            Some(vec!["api".to_owned(), "weather".to_owned()])
        );
        let err = parse_tags(vec!["ok".into(), "not ok".into()]).expect_err("space");
        assert!(matches!(err, Error::Invalid { ref field, .. } if field == "tags[1]"));
        assert!(parse_tags(vec!["t".into(); MAX_TAGS + 1]).is_err());
    }

    #[test]
    fn versions_reject_ranges_and_latest() {
        assert!(parse_version("1.2.3-beta+7").is_ok());
        for bad in ["^1.2", ">=1", "1.x || 2", "latest", "", "1 2"] {
            assert!(parse_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_patch_distinguishes_absent_from_null() {
        let patch: ServerPatch =
            serde_json::from_str(r#"{"description": null, "version": "2.0"}"#).expect("json");
        let update = patch.validate().expect("valid");
        assert_eq!(update.description, Some(String::new()));
        assert_eq!(update.version, Some(Some("2.0".to_owned())));
        assert_eq!(update.url, None);
        let patch: ServerPatch = serde_json::from_str(r#"{"url": null}"#).expect("json");
        assert!(matches!(patch.validate(), Err(Error::Invalid { field, .. }) if field == "url"));
    }

    #[test]
    fn oversized_metadata_is_rejected() {
        let mut m = Map::new();
        m.insert("k".into(), Value::String("x".repeat(MAX_METADATA_BYTES)));
        assert!(parse_metadata(m).is_err());
    }

    #[test]
    fn query_limits_are_checked() {
        assert!(ServerQuery::parse(None, None, None, Some(0)).is_err());
        assert!(ServerQuery::parse(None, None, None, Some(MAX_PAGE_SIZE + 1)).is_err());
        let q = ServerQuery::parse(Some("API"), Some("active"), Some("  Weather "), None)
            .expect("valid");
        assert_eq!(q.tag.as_deref(), Some("api"));
        assert_eq!(q.text.as_deref(), Some("weather"));
        assert!(ServerQuery::parse(None, Some("gone"), None, None).is_err());
    }
}

//! A registered MCP server and the rules its fields follow.
//!
//! Input arrives as a [`ServerDraft`] (create) or a [`ServerPatch`] (partial update), exactly as
//! the caller sent it; `validate` turns it into a [`NewServer`] or [`ServerUpdate`] whose fields
//! can no longer be wrong. Errors name the field as the caller spelled it.

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

/// A server's unique name: a DNS label (1–63 characters of `a-z`, `0-9` and `-`, starting with a
/// letter, not ending with `-`). It is used in URLs (`/servers/{name}/mcp`) and as the key of the
/// registry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ServerName(String);

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
pub struct ServerUrl(String);

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

/// A registration as the caller sent it, before validation.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerDraft {
    /// Unique name (DNS label: a-z, 0-9, '-').
    #[schema(example = "weather")]
    pub name: String,
    /// http(s) URL of the server's MCP endpoint.
    #[schema(example = "https://weather.example.com/mcp")]
    pub url: String,
    /// `streamable-http` (default) or `sse`.
    #[serde(default)]
    pub transport: Option<String>,
    /// What the server is for (at most 1000 characters).
    #[serde(default)]
    pub description: Option<String>,
    /// Labels for discovery (at most 32; a-z, 0-9, '.', '_', '-').
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// Version of the server (no ranges).
    #[serde(default)]
    pub version: Option<String>,
    /// `active` (default), `deprecated` or `disabled`.
    #[serde(default)]
    pub status: Option<String>,
    /// Free-form JSON object (at most 16 KiB).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// Seconds the gateway waits for the server to answer (1-600, default 30).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 600)]
    pub timeout_secs: Option<u32>,
    /// Visible to callers of every tenant, not only the registering one (administrators only).
    #[serde(default)]
    pub shared: Option<bool>,
    /// Headers sent to the server with every proxied request, e.g. `{"x-api-key": "..."}`.
    /// Stored encrypted; never returned.
    #[serde(default)]
    pub upstream_headers: Option<BTreeMap<String, String>>,
}

/// A validated registration, ready to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewServer {
    /// See [`Server::name`].
    pub name: ServerName,
    /// See [`Server::url`].
    pub url: ServerUrl,
    /// See [`Server::transport`].
    pub transport: Transport,
    /// See [`Server::description`].
    pub description: String,
    /// See [`Server::tags`].
    pub tags: Vec<String>,
    /// See [`Server::version`].
    pub version: Option<String>,
    /// See [`Server::status`].
    pub status: ServerStatus,
    /// See [`Server::metadata`].
    pub metadata: Map<String, Value>,
    /// See [`Server::timeout_secs`].
    pub timeout_secs: Option<u32>,
    /// Upstream credentials to store (sealed) with the server.
    pub upstream_headers: Option<UpstreamHeaders>,
    /// See [`Server::shared`].
    pub shared: bool,
}

impl NewServer {
    /// The server this registration becomes when `registered_by` (of `tenant`) stores it at
    /// `now`.
    pub fn into_server(
        self,
        registered_by: &str,
        tenant: Option<&str>,
        now: OffsetDateTime,
    ) -> Server {
        Server {
            id: Uuid::now_v7(),
            name: self.name,
            url: self.url,
            transport: self.transport,
            description: self.description,
            tags: self.tags,
            version: self.version,
            registered_by: registered_by.to_owned(),
            tenant: tenant.map(str::to_owned),
            shared: self.shared,
            status: self.status,
            metadata: self.metadata,
            timeout_secs: self.timeout_secs,
            has_upstream_credentials: self.upstream_headers.is_some_and(|h| !h.is_empty()),
            created_at: now,
            updated_at: now,
            revision: 1,
        }
    }
}

impl ServerDraft {
    /// Checks every field and returns the registration they describe.
    pub fn validate(self) -> Result<NewServer> {
        Ok(NewServer {
            name: ServerName::parse(self.name.trim())?,
            url: ServerUrl::parse_field(self.url.trim(), "url")?,
            transport: self
                .transport
                .map(|t| Transport::parse_field(&t, "transport"))
                .transpose()?
                .unwrap_or_default(),
            description: parse_description(self.description.as_deref().unwrap_or(""))?,
            tags: parse_tags(self.tags.unwrap_or_default())?,
            version: self.version.as_deref().map(parse_version).transpose()?,
            status: self
                .status
                .map(|s| ServerStatus::parse_field(&s, "status"))
                .transpose()?
                .unwrap_or_default(),
            metadata: parse_metadata(self.metadata.unwrap_or_default())?,
            timeout_secs: self.timeout_secs.map(parse_timeout).transpose()?,
            upstream_headers: self
                .upstream_headers
                .map(UpstreamHeaders::parse)
                .transpose()?
                .filter(|h| !h.is_empty()),
            shared: self.shared.unwrap_or(false),
        })
    }
}

/// A field of a partial update: left alone, cleared (`null`) or set.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Patch<T> {
    /// The field was not sent: keep the current value.
    #[default]
    Keep,
    /// The field was sent as `null`: clear it.
    Clear,
    /// The field was sent with a value.
    Set(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(deserializer)? {
            Some(value) => Self::Set(value),
            None => Self::Clear,
        })
    }
}

/// A partial update as the caller sent it: absent fields stay as they are; `null` clears the
/// fields that can be cleared (`description`, `tags`, `version`, `metadata`).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerPatch {
    /// New URL.
    #[serde(default)]
    #[schema(value_type = String, required = false, example = "https://weather.example.com/mcp")]
    pub url: Patch<String>,
    /// New transport.
    #[serde(default)]
    #[schema(value_type = String, required = false)]
    pub transport: Patch<String>,
    /// New description; `null` clears it.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub description: Patch<String>,
    /// New tags (replacing the old ones); `null` clears them.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    pub tags: Patch<Vec<String>>,
    /// New version; `null` clears it.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub version: Patch<String>,
    /// New status.
    #[serde(default)]
    #[schema(value_type = String, required = false)]
    pub status: Patch<String>,
    /// New metadata (replacing the old object); `null` clears it.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Patch<Map<String, Value>>,
    /// New timeout in seconds (1-600); `null` restores the default.
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 600)]
    pub timeout_secs: Patch<u32>,
    /// New upstream credentials (replacing the old ones); `null` removes them.
    #[serde(default)]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub upstream_headers: Patch<BTreeMap<String, String>>,
    /// Share with every tenant, or stop sharing (administrators only).
    #[serde(default)]
    #[schema(value_type = Option<bool>)]
    pub shared: Patch<bool>,
}

/// A validated partial update.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerUpdate {
    /// New URL.
    pub url: Option<ServerUrl>,
    /// New transport.
    pub transport: Option<Transport>,
    /// New description (empty to clear).
    pub description: Option<String>,
    /// New tags.
    pub tags: Option<Vec<String>>,
    /// New version (`Some(None)` clears it).
    pub version: Option<Option<String>>,
    /// New status.
    pub status: Option<ServerStatus>,
    /// New metadata.
    pub metadata: Option<Map<String, Value>>,
    /// New timeout (`Some(None)` restores the default).
    pub timeout_secs: Option<Option<u32>>,
    /// New upstream credentials (`Some(None)` removes them).
    pub upstream_headers: Option<Option<UpstreamHeaders>>,
    /// New sharing.
    pub shared: Option<bool>,
}

fn required<T>(patch: Patch<T>, field: &str) -> Result<Option<T>> {
    match patch {
        Patch::Keep => Ok(None),
        Patch::Clear => Err(Error::invalid(field, "cannot be null")),
        Patch::Set(value) => Ok(Some(value)),
    }
}

impl ServerPatch {
    /// Checks every field that was sent.
    pub fn validate(self) -> Result<ServerUpdate> {
        Ok(ServerUpdate {
            url: required(self.url, "url")?
                .map(|u| ServerUrl::parse_field(u.trim(), "url"))
                .transpose()?,
            transport: required(self.transport, "transport")?
                .map(|t| Transport::parse_field(&t, "transport"))
                .transpose()?,
            description: match self.description {
                Patch::Keep => None,
                Patch::Clear => Some(String::new()),
                Patch::Set(d) => Some(parse_description(&d)?),
            },
            tags: match self.tags {
                Patch::Keep => None,
                Patch::Clear => Some(Vec::new()),
                Patch::Set(tags) => Some(parse_tags(tags)?),
            },
            version: match self.version {
                Patch::Keep => None,
                Patch::Clear => Some(None),
                Patch::Set(v) => Some(Some(parse_version(&v)?)),
            },
            status: required(self.status, "status")?
                .map(|s| ServerStatus::parse_field(&s, "status"))
                .transpose()?,
            metadata: match self.metadata {
                Patch::Keep => None,
                Patch::Clear => Some(Map::new()),
                Patch::Set(m) => Some(parse_metadata(m)?),
            },
            timeout_secs: match self.timeout_secs {
                Patch::Keep => None,
                Patch::Clear => Some(None),
                Patch::Set(t) => Some(Some(parse_timeout(t)?)),
            },
            upstream_headers: match self.upstream_headers {
                Patch::Keep => None,
                Patch::Clear => Some(None),
                Patch::Set(h) => Some(Some(UpstreamHeaders::parse(h)?).filter(|h| !h.is_empty())),
            },
            shared: required(self.shared, "shared")?,
        })
    }
}

impl ServerUpdate {
    /// Whether the update changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Applies the update to `server` (timestamps and revision are the caller's business).
    pub fn apply_to(self, server: &mut Server) {
        if let Some(shared) = self.shared {
            server.shared = shared;
        }
        if let Some(url) = self.url {
            server.url = url;
        }
        if let Some(transport) = self.transport {
            server.transport = transport;
        }
        if let Some(description) = self.description {
            server.description = description;
        }
        if let Some(tags) = self.tags {
            server.tags = tags;
        }
        if let Some(version) = self.version {
            server.version = version;
        }
        if let Some(status) = self.status {
            server.status = status;
        }
        if let Some(metadata) = self.metadata {
            server.metadata = metadata;
        }
        if let Some(timeout) = self.timeout_secs {
            server.timeout_secs = timeout;
        }
        if let Some(headers) = self.upstream_headers {
            server.has_upstream_credentials = headers.is_some();
        }
    }
}

fn parse_description(raw: &str) -> Result<String> {
    let text = raw.trim();
    if text.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(Error::invalid(
            "description",
            format!("is longer than {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(Error::invalid(
            "description",
            "must not contain control characters",
        ));
    }
    Ok(text.to_owned())
}

/// Validates and normalizes one tag: trimmed, lowercased, 1-50 characters of `a-z0-9._-`,
/// starting with a letter or digit.
pub fn parse_tag(raw: &str, field: &str) -> Result<String> {
    let tag = raw.trim().to_lowercase();
    let ok = !tag.is_empty()
        && tag.chars().count() <= MAX_TAG_CHARS
        && tag.starts_with(|c: char| c.is_ascii_alphanumeric())
        && tag
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(tag)
    } else {
        Err(Error::invalid(
            field,
            format!(
                "{raw:?} is not a valid tag; a tag is 1-{MAX_TAG_CHARS} characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
            ),
        ))
    }
}

fn parse_tags(raw: Vec<String>) -> Result<Vec<String>> {
    if raw.len() > MAX_TAGS {
        return Err(Error::invalid(
            "tags",
            format!("has {} entries; at most {MAX_TAGS} are allowed", raw.len()),
        ));
    }
    let mut tags = raw
        .iter()
        .enumerate()
        .map(|(i, t)| parse_tag(t, &format!("tags[{i}]")))
        .collect::<Result<Vec<_>>>()?;
    tags.sort();
    tags.dedup();
    Ok(tags)
}

fn parse_version(raw: &str) -> Result<String> {
    let v = raw.trim();
    let ok = !v.is_empty()
        && v.len() <= 64
        && v != "latest"
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'));
    if ok {
        Ok(v.to_owned())
    } else {
        Err(Error::invalid(
            "version",
            format!(
                "{raw:?} is not a version; use an exact version such as 1.2.0 (letters, digits, '.', '-', '+'; no ranges)"
            ),
        ))
    }
}

fn parse_metadata(raw: Map<String, Value>) -> Result<Map<String, Value>> {
    let size = serde_json::to_vec(&raw)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_METADATA_BYTES {
        return Err(Error::invalid(
            "metadata",
            format!("is {size} bytes as JSON; at most {MAX_METADATA_BYTES} are allowed"),
        ));
    }
    Ok(raw)
}

/// The order of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerSort {
    /// By name.
    #[default]
    Name,
    /// Healthiest first (healthy, degraded, unknown, unhealthy), then by name.
    Health,
}

impl ServerSort {
    /// Parses `name` or `health`, reporting problems against `field`.
    pub fn parse_field(raw: &str, field: &str) -> Result<Self> {
        match raw {
            "name" => Ok(Self::Name),
            "health" => Ok(Self::Health),
            other => Err(Error::invalid(
                field,
                format!("unknown order '{other}'; use name or health"),
            )),
        }
    }
}

/// Which servers a list returns, and which page of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerQuery {
    /// Which servers the caller may see.
    pub visibility: Visibility,
    /// Only servers carrying this tag.
    pub tag: Option<String>,
    /// Only servers in this status.
    pub status: Option<ServerStatus>,
    /// Only servers whose name, description or tags contain this text (case-insensitive). Always
    /// lowercase.
    pub text: Option<String>,
    /// Only servers changed at or after this time.
    pub updated_since: Option<OffsetDateTime>,
    /// Only servers in this health.
    pub health: Option<crate::health::HealthStatus>,
    /// Start after this name (the cursor); results are in name order.
    pub after: Option<ServerName>,
    /// The order.
    pub sort: ServerSort,
    /// With [`ServerSort::Health`]: the health rank of `after` (see [`crate::HealthStatus::rank`]).
    pub after_rank: Option<u8>,
    /// At most this many servers.
    pub limit: u32,
}

impl Default for ServerQuery {
    fn default() -> Self {
        Self {
            visibility: Visibility::All,
            tag: None,
            status: None,
            text: None,
            updated_since: None,
            health: None,
            after: None,
            sort: ServerSort::Name,
            after_rank: None,
            limit: DEFAULT_PAGE_SIZE,
        }
    }
}

impl ServerQuery {
    /// Builds a query from raw filter values, validating each against its parameter name.
    pub fn parse(
        tag: Option<&str>,
        status: Option<&str>,
        text: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Self> {
        let limit = limit.unwrap_or(DEFAULT_PAGE_SIZE);
        if !(1..=MAX_PAGE_SIZE).contains(&limit) {
            return Err(Error::invalid(
                "limit",
                format!("must be between 1 and {MAX_PAGE_SIZE}"),
            ));
        }
        let text = match text.map(str::trim) {
            None | Some("") => None,
            Some(t) if t.chars().count() > MAX_QUERY_CHARS => {
                return Err(Error::invalid(
                    "q",
                    format!("is longer than {MAX_QUERY_CHARS} characters"),
                ));
            }
            Some(t) if t.contains('\0') => {
                return Err(Error::invalid("q", "must not contain a NUL character"));
            }
            Some(t) => Some(t.to_lowercase()),
        };
        Ok(Self {
            visibility: Visibility::All,
            tag: tag.map(|t| parse_tag(t, "tag")).transpose()?,
            status: status
                .map(|s| ServerStatus::parse_field(s, "status"))
                .transpose()?,
            text,
            updated_since: None,
            health: None,
            after: None,
            sort: ServerSort::Name,
            after_rank: None,
            limit,
        })
    }
}

/// One page of a list, and where the next one starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items, in order.
    pub items: Vec<T>,
    /// The last name on this page when another page follows.
    pub next_after: Option<ServerName>,
    /// With [`ServerSort::Health`]: the health rank of `next_after`.
    pub next_rank: Option<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

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

/// Which servers a caller may see and reach: with tenants, those of its own tenant, those
/// registered without a tenant, and shared ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Visibility {
    /// Every server (the local operator of an unauthenticated gateway, background tasks).
    #[default]
    All,
    /// The caller's tenant (`None`: a caller without one).
    Tenant(Option<String>),
}

impl Visibility {
    /// Whether the caller may change or remove `server`: every server for the local operator;
    /// otherwise only its own tenant's (a server shared with every tenant, or one registered
    /// without a tenant, is visible to callers of other tenants but not theirs to change).
    pub fn owns(&self, server: &Server) -> bool {
        match self {
            Self::All => true,
            Self::Tenant(tenant) => server.tenant == *tenant,
        }
    }

    /// Whether `server` is visible.
    pub fn allows(&self, server: &Server) -> bool {
        match self {
            Self::All => true,
            Self::Tenant(tenant) => {
                server.shared || server.tenant.is_none() || server.tenant == *tenant
            }
        }
    }
}

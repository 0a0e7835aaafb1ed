//! Registering and changing a server: the draft a caller sends, the patch, and the checks each
//! field passes on the way in.

use super::*;

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

pub(super) fn required<T>(patch: Patch<T>, field: &str) -> Result<Option<T>> {
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

pub(super) fn parse_description(raw: &str) -> Result<String> {
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

pub(super) fn parse_tags(raw: Vec<String>) -> Result<Vec<String>> {
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

pub(super) fn parse_version(raw: &str) -> Result<String> {
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

pub(super) fn parse_metadata(raw: Map<String, Value>) -> Result<Map<String, Value>> {
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

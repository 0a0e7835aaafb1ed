//! Storage traits. Each backend (SQLite, PostgreSQL) implements them once, with its own SQL; one
//! conformance suite checks that every backend keeps the same contract.

mod audit;
mod auth;

pub use audit::{AuditFilter, AuditStore};
pub use auth::{AuthStore, GrantRow, Rotation};

use async_trait::async_trait;
use uuid::Uuid;

use time::OffsetDateTime;

use crate::error::Result;
use crate::health::{Health, HealthCheck, HealthStatus};
use crate::server::{Server, ServerName, ServerQuery};

/// What an update does to a server's sealed upstream credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials<'a> {
    /// Leave them as they are.
    Keep,
    /// Remove them.
    Clear,
    /// Replace them with these sealed bytes.
    Set(&'a [u8]),
}

/// Durable storage of server registrations.
#[async_trait]
pub trait ServerStore: Send + Sync + 'static {
    /// Stores a new server, with its sealed upstream credentials if any. Names are unique per
    /// tenant, and among public servers (tenantless or shared): a server with the same name in
    /// the same tenant, or a public server with the same name as another public one →
    /// [`crate::Error::AlreadyExists`].
    async fn insert(&self, server: &Server, credentials: Option<&[u8]>) -> Result<()>;

    /// Every server with this name, of any tenant (at most one per tenant, and at most one of
    /// them public): the tenantless one first, then by tenant. Which one a caller means is
    /// [`crate::Visibility::pick`]'s decision.
    async fn named(&self, name: &ServerName) -> Result<Vec<Server>>;

    /// One page of servers matching `query`, each with its current health (`None`: none
    /// recorded), in one query: in name and id order starting after (`query.after`,
    /// `query.after_id`), or with `query.sort` by health, healthiest first and then by name and
    /// id, starting after (`query.after_rank`, `query.after`, `query.after_id`); at most
    /// `query.limit` of them. Without `after_id`, after every server called `after`.
    async fn list_with_health(&self, query: &ServerQuery) -> Result<Vec<(Server, Option<Health>)>>;

    /// Replaces every mutable field of the stored server with the same id, provided its stored
    /// revision is still `expected_revision`. Returns false when it is not (changed or deleted
    /// meanwhile). Sharing a server whose name another public server has →
    /// [`crate::Error::AlreadyExists`].
    async fn update(
        &self,
        server: &Server,
        expected_revision: i64,
        credentials: Credentials<'_>,
    ) -> Result<bool>;

    /// The sealed upstream credentials of the server with this id, if any.
    async fn credentials(&self, id: Uuid) -> Result<Option<Vec<u8>>>;

    /// Deletes the server with this id. Returns false when there was none.
    async fn delete(&self, id: Uuid) -> Result<bool>;

    /// Checks that the database answers.
    async fn ping(&self) -> Result<()>;
}

/// Named secrets the gateway generates once and every replica shares (e.g. the encryption key
/// of the embedded default).
#[async_trait]
pub trait SecretStore: Send + Sync + 'static {
    /// The secret called `name`; stores `candidate` first if there is none yet. Concurrent
    /// callers all get the one value that was stored first.
    async fn get_or_insert(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>>;
}

/// A tool a registered server offers, as the catalog keeps it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct ToolInfo {
    /// The tool's name on its server.
    pub name: String,
    /// Display title, when the server gives one.
    pub title: Option<String>,
    /// What the tool does.
    pub description: String,
    /// JSON Schema of its arguments.
    #[schema(value_type = Object)]
    pub input_schema: serde_json::Value,
}

impl ToolInfo {
    /// The lowercase text that tool searches match: name, title and description.
    pub fn search_text(&self) -> String {
        format!(
            "{} {} {}",
            self.name.to_lowercase(),
            self.title.as_deref().unwrap_or("").to_lowercase(),
            self.description.to_lowercase()
        )
    }
}

/// A tool found by a catalog search, with its server's name and health.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct ToolHit {
    /// The server offering it.
    #[schema(value_type = String)]
    pub server: ServerName,
    /// That server's tenant (for the per-server policy rules; not shown: a caller sees only
    /// its own tenant's and public servers).
    #[serde(skip)]
    pub tenant: Option<String>,
    /// That server's health.
    pub health: HealthStatus,
    /// The tool.
    pub tool: ToolInfo,
}

/// Which tools a catalog search returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolQuery {
    /// Only tools of servers the caller may see.
    pub visibility: crate::server::Visibility,
    /// Only tools whose name, title or description contains this (lowercase) text.
    pub text: Option<String>,
    /// Only tools of servers in this health.
    pub health: Option<HealthStatus>,
    /// At most this many.
    pub limit: u32,
}

/// Health state and history of servers, shared by every replica; leases make sure each server
/// is probed by one replica at a time.
#[async_trait]
pub trait HealthStore: Send + Sync + 'static {
    /// Leases up to `limit` servers that are due for a probe (not disabled, next check at or
    /// before `now`, no live lease) to `owner` until `now + lease`. Returns their ids and names.
    async fn claim_due(
        &self,
        owner: &str,
        now: OffsetDateTime,
        lease: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<(Uuid, ServerName)>>;

    /// The current health of a server, if it was ever probed.
    async fn health(&self, server_id: Uuid) -> Result<Option<Health>>;

    /// Stores `health` as current, appends its last check to the history, ends any lease.
    /// Returns false, storing nothing, when the server no longer exists (deleted while probed).
    async fn record(&self, health: &Health) -> Result<bool>;

    /// Probes of a server since `since`, newest first, at most `limit`.
    async fn history(
        &self,
        server_id: Uuid,
        since: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<HealthCheck>>;

    /// The status of every server whose health was recorded at or after `since`.
    async fn changed_since(&self, since: OffsetDateTime) -> Result<Vec<(Uuid, HealthStatus)>>;

    /// Deletes history older than `before`; returns how many probes were removed.
    async fn prune(&self, before: OffsetDateTime) -> Result<u64>;
}

/// The tool catalog: each server's tools, refreshed by successful probes.
#[async_trait]
pub trait CatalogStore: Send + Sync + 'static {
    /// Replaces the tools of a server.
    async fn replace_tools(&self, server_id: Uuid, tools: &[ToolInfo]) -> Result<()>;

    /// Tools matching `query`, healthiest servers first, then by server and tool name.
    async fn search_tools(&self, query: &ToolQuery) -> Result<Vec<ToolHit>>;
}

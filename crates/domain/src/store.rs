//! Storage traits. Each backend (SQLite, PostgreSQL) implements them once, with its own SQL; one
//! conformance suite checks that every backend keeps the same contract.

use async_trait::async_trait;
use uuid::Uuid;

use crate::error::Result;
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
    /// Stores a new server, with its sealed upstream credentials if any. A server with the same
    /// name → [`crate::Error::AlreadyExists`].
    async fn insert(&self, server: &Server, credentials: Option<&[u8]>) -> Result<()>;

    /// The server with this name, if any.
    async fn get(&self, name: &ServerName) -> Result<Option<Server>>;

    /// Servers matching `query`, in name order, starting after `query.after`, at most
    /// `query.limit` of them.
    async fn list(&self, query: &ServerQuery) -> Result<Vec<Server>>;

    /// Replaces every mutable field of the stored server with the same id, provided its stored
    /// revision is still `expected_revision`. Returns false when it is not (changed or deleted
    /// meanwhile).
    async fn update(
        &self,
        server: &Server,
        expected_revision: i64,
        credentials: Credentials<'_>,
    ) -> Result<bool>;

    /// The sealed upstream credentials of the server with this id, if any.
    async fn credentials(&self, id: Uuid) -> Result<Option<Vec<u8>>>;

    /// Deletes the server with this name. Returns false when there was none.
    async fn delete(&self, name: &ServerName) -> Result<bool>;

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

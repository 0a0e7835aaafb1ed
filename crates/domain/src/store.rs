//! Storage traits. Each backend (SQLite, PostgreSQL) implements them once, with its own SQL; one
//! conformance suite checks that every backend keeps the same contract.

use async_trait::async_trait;

use crate::error::Result;
use crate::server::{Server, ServerName, ServerQuery};

/// Durable storage of server registrations.
#[async_trait]
pub trait ServerStore: Send + Sync + 'static {
    /// Stores a new server. A server with the same name → [`crate::Error::AlreadyExists`].
    async fn insert(&self, server: &Server) -> Result<()>;

    /// The server with this name, if any.
    async fn get(&self, name: &ServerName) -> Result<Option<Server>>;

    /// Servers matching `query`, in name order, starting after `query.after`, at most
    /// `query.limit` of them.
    async fn list(&self, query: &ServerQuery) -> Result<Vec<Server>>;

    /// Replaces every mutable field of the stored server with the same id, provided its stored
    /// revision is still `expected_revision`. Returns false when it is not (changed or deleted
    /// meanwhile).
    async fn update(&self, server: &Server, expected_revision: i64) -> Result<bool>;

    /// Deletes the server with this name. Returns false when there was none.
    async fn delete(&self, name: &ServerName) -> Result<bool>;

    /// Checks that the database answers.
    async fn ping(&self) -> Result<()>;
}

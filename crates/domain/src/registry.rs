//! The registry service: the one place where servers are created, read, listed, changed and
//! removed. The REST API and the MCP tools both call it, so no rule is implemented twice.

use std::sync::Arc;

use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::principal::Principal;
use crate::server::{Page, Server, ServerDraft, ServerName, ServerPatch, ServerQuery};
use crate::store::ServerStore;

/// How often an update is retried when another writer changed the same server meanwhile.
const UPDATE_ATTEMPTS: usize = 5;

/// Registry operations over a [`ServerStore`].
#[derive(Clone)]
pub struct Registry {
    store: Arc<dyn ServerStore>,
}

/// The current time at the precision every backend stores (microseconds), so that a value read
/// back equals the value written.
pub fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1_000 * 1_000)
        .unwrap_or(t)
}

fn server_not_found(name: &ServerName) -> Error {
    Error::not_found(format!("server '{name}'"))
}

impl Registry {
    /// A registry over `store`.
    pub fn new(store: Arc<dyn ServerStore>) -> Self {
        Self { store }
    }

    /// The store underneath, for readiness checks.
    pub fn store(&self) -> &Arc<dyn ServerStore> {
        &self.store
    }

    /// Registers a server on behalf of `by`.
    pub async fn create(&self, by: &Principal, draft: ServerDraft) -> Result<Server> {
        let server = draft
            .validate()?
            .into_server(&by.subject, by.tenant.as_deref(), now());
        self.store.insert(&server).await?;
        Ok(server)
    }

    /// The server called `name`.
    pub async fn get(&self, name: &str) -> Result<Server> {
        let name =
            ServerName::parse(name).map_err(|_| Error::not_found(format!("server '{name}'")))?;
        self.store
            .get(&name)
            .await?
            .ok_or_else(|| server_not_found(&name))
    }

    /// One page of servers matching `query`.
    pub async fn list(&self, query: &ServerQuery) -> Result<Page<Server>> {
        let mut probe = query.clone();
        probe.limit = query.limit.saturating_add(1);
        let mut items = self.store.list(&probe).await?;
        let more = items.len() > query.limit as usize;
        items.truncate(query.limit as usize);
        let next_after = if more {
            items.last().map(|s| s.name.clone())
        } else {
            None
        };
        Ok(Page { items, next_after })
    }

    /// Applies `patch` to the server called `name`.
    pub async fn update(&self, _by: &Principal, name: &str, patch: ServerPatch) -> Result<Server> {
        let update = patch.validate()?;
        for _ in 0..UPDATE_ATTEMPTS {
            let mut server = self.get(name).await?;
            if update.is_empty() {
                return Ok(server);
            }
            let expected = server.revision;
            update.clone().apply_to(&mut server);
            server.updated_at = now();
            server.revision = expected + 1;
            if self.store.update(&server, expected).await? {
                return Ok(server);
            }
        }
        Err(Error::Unavailable {
            what: format!("server '{name}' (changed concurrently; try again)"),
            source: None,
        })
    }

    /// Removes the server called `name`.
    pub async fn delete(&self, _by: &Principal, name: &str) -> Result<()> {
        let name =
            ServerName::parse(name).map_err(|_| Error::not_found(format!("server '{name}'")))?;
        if self.store.delete(&name).await? {
            Ok(())
        } else {
            Err(server_not_found(&name))
        }
    }
}

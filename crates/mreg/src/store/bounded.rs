//! A bound on every store call. A database that stops answering (a partition: nothing is
//! refused, nothing arrives) would otherwise keep a request waiting for as long as the kernel
//! keeps retransmitting — many minutes. [`Bounded`] answers [`Error::Unavailable`] once a call
//! has taken `MREG_DATABASE_TIMEOUT`, so the request fails with a 503 that names the database and
//! the audit writer spools what it could not write.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use domain::{
    CatalogStore, Credentials, Error, Health, HealthCheck, HealthStatus, HealthStore, Result,
    SecretStore, Server, ServerName, ServerQuery, ServerStore, ToolHit, ToolInfo, ToolQuery,
};
use time::OffsetDateTime;
use uuid::Uuid;

use domain::audit::AuditEvent;
use domain::audit::AuditRecord;
use domain::{AuditFilter, AuditStore, AuthStore, GrantRow, Rotation};

/// A store whose every call ends within a time limit.
#[derive(Clone)]
pub struct Bounded<S> {
    inner: S,
    limit: Duration,
}

impl<S> Bounded<S> {
    /// Bounds each call to `inner` by `limit`.
    pub fn new(inner: S, limit: Duration) -> Self {
        Self { inner, limit }
    }

    /// The store inside.
    pub fn into_inner(self) -> S {
        self.inner
    }

    async fn bound<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        tokio::time::timeout(self.limit, call)
            .await
            .unwrap_or_else(|_| {
                Err(Error::unavailable(
                    "database",
                    format!(
                        "no answer within {} ms (MREG_DATABASE_TIMEOUT)",
                        self.limit.as_millis()
                    ),
                ))
            })
    }
}

/// Implements `$store` for [`Bounded`]: each method of the first list is forwarded within the
/// bound; those after `unbounded` (background maintenance: a retention sweep over a large
/// backlog may take longer than a request should, and no one waits for it) as they are.
macro_rules! bounded {
    ($store:ident {
        bounded { $($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)* }
        $(unbounded { $($free:ident($($farg:ident: $fty:ty),*) -> $fret:ty;)* })?
    }) => {
        #[async_trait]
        impl<S: $store> $store for Bounded<S> {
            $(
                async fn $name(&self, $($arg: $ty),*) -> Result<$ret> {
                    self.bound(self.inner.$name($($arg),*)).await
                }
            )*
            $($(
                async fn $free(&self, $($farg: $fty),*) -> Result<$fret> {
                    self.inner.$free($($farg),*).await
                }
            )*)?
        }
    };
}

bounded!(ServerStore {
    bounded {
        insert(server: &Server, credentials: Option<&[u8]>) -> ();
        named(name: &ServerName) -> Vec<Server>;
        list_with_health(query: &ServerQuery) -> Vec<(Server, Option<Health>)>;
        update(server: &Server, expected_revision: i64, credentials: Credentials<'_>) -> bool;
        credentials(id: Uuid) -> Option<Vec<u8>>;
        delete(id: Uuid) -> bool;
        ping() -> ();
    }
});

bounded!(SecretStore {
    bounded {
        get_or_insert(name: &str, candidate: &[u8]) -> Vec<u8>;
    }
});

bounded!(HealthStore {
    bounded {
        claim_due(owner: &str, now: OffsetDateTime, lease: Duration, limit: u32)
            -> Vec<(Uuid, ServerName)>;
        health(server_id: Uuid) -> Option<Health>;
        record(health: &Health) -> bool;
        history(server_id: Uuid, since: OffsetDateTime, limit: u32) -> Vec<HealthCheck>;
        changed_since(since: OffsetDateTime) -> Vec<(Uuid, HealthStatus)>;
    }
    unbounded {
        prune(before: OffsetDateTime) -> u64;
    }
});

bounded!(CatalogStore {
    bounded {
        replace_tools(server_id: Uuid, tools: &[ToolInfo]) -> ();
        search_tools(query: &ToolQuery) -> Vec<ToolHit>;
    }
});

bounded!(AuthStore {
    bounded {
        insert_client(client_id: &str, metadata: &str, now: i64) -> ();
        client(client_id: &str) -> Option<String>;
        insert_grant(grant: &GrantRow, now: i64) -> ();
        grant_by_refresh(hash: &str) -> Option<GrantRow>;
        spent_refresh(hash: &str) -> Option<String>;
        rotate_refresh(id: &str, old: &str, new: &str, data: &[u8], now: i64) -> Rotation;
        revoke_grant(id: &str, now: i64) -> bool;
        grant_live(id: &str, now: i64) -> bool;
        idle_clients() -> u64;
    }
    unbounded {
        prune_grants(now: i64) -> u64;
        prune_clients(before: i64) -> u64;
    }
});

bounded!(AuditStore {
    bounded {
        append(events: &[AuditEvent], skip_stored: bool) -> u64;
        list(filter: &AuditFilter) -> Vec<AuditRecord>;
        chain_after(seq: i64, limit: i64) -> Vec<AuditRecord>;
        anchor() -> Option<(i64, String)>;
    }
    unbounded {
        prune(before_us: i64, now_us: i64) -> u64;
    }
});

//! The audit log's store: rows in chain order (`seq`), each with the hash of the row before
//! it. Appending is serialised (a transaction-scoped advisory lock in PostgreSQL, the single
//! writer in SQLite) so that every replica extends one chain; an event already stored (same id,
//! e.g. replayed from the spool after a write whose answer was lost) is skipped, so every event
//! is stored exactly once. Pruning removes a prefix and records a checkpoint (the last removed
//! row's position and hash) from which the rest still verifies.

use async_trait::async_trait;

use crate::audit::{AuditEvent, AuditRecord};
use crate::error::Result;

/// Which rows to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Subject or email of the actor.
    pub actor: Option<String>,
    /// Tool called.
    pub tool: Option<String>,
    /// Server addressed.
    pub server: Option<String>,
    /// `allow`, `deny` or `rate_limited`.
    pub decision: Option<String>,
    /// Operation (exact).
    pub operation: Option<String>,
    /// Started at or after (µs since the epoch).
    pub since_us: Option<i64>,
    /// Started before (µs since the epoch).
    pub until_us: Option<i64>,
    /// Actor's tenant (tenant isolation).
    pub tenant: Option<String>,
    /// Only rows before this position (the cursor).
    pub before_seq: Option<i64>,
    /// At most this many rows.
    pub limit: i64,
}

/// The audit table.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Appends `events` to the chain in order. With `skip_stored` (a replay, or a retry after
    /// an attempt whose answer was lost), events already stored are skipped first; without it,
    /// a stored event makes the whole append fail (unique id). Returns how many were stored.
    async fn append(&self, events: &[AuditEvent], skip_stored: bool) -> Result<u64>;
    /// Rows matching `filter`, newest first.
    async fn list(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>>;
    /// Up to `limit` rows after position `seq`, in chain order.
    async fn chain_after(&self, seq: i64, limit: i64) -> Result<Vec<AuditRecord>>;
    /// The latest retention checkpoint: position and hash of the last pruned row.
    async fn anchor(&self) -> Result<Option<(i64, String)>>;
    /// Removes the rows before the first one that started at or after `before_us` (a prefix of
    /// the chain) and records the checkpoint. Returns how many were removed.
    async fn prune(&self, before_us: i64, now_us: i64) -> Result<u64>;
}

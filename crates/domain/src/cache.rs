//! The cache trait: short-lived, TTL-bound shared state (validated tokens, rate counters, OAuth
//! transactions). In process by default; Redis when configured, so replicas share it.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;

/// A key-value cache whose entries expire. Implementations must make [`Cache::incr`] and
/// [`Cache::set_if_absent`] atomic across every user of the same cache.
#[async_trait]
pub trait Cache: Send + Sync + 'static {
    /// The value under `key`, unless it is absent or expired.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// Stores `value` under `key` for `ttl`, replacing any previous value and TTL.
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()>;

    /// Stores `value` under `key` for `ttl` only if no live entry exists. Returns whether it was
    /// stored.
    async fn set_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool>;

    /// Removes `key` and returns its value, if it was live. Of several concurrent callers at most
    /// one gets the value: this is what makes one-time codes single-use.
    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// Removes `key`. Returns whether a live entry was removed.
    async fn delete(&self, key: &str) -> Result<bool>;

    /// Adds `by` to the integer under `key` and returns the new value. A missing key starts at 0
    /// and expires after `ttl`; an existing key keeps its expiry. A value that is not an integer
    /// is an error.
    async fn incr(&self, key: &str, by: i64, ttl: Duration) -> Result<i64>;

    /// Checks that the cache answers.
    async fn ping(&self) -> Result<()>;
}

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

    /// The values under `keys`, in order (one round trip where the cache allows). The default
    /// asks for each key in turn.
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            values.push(self.get(key).await?);
        }
        Ok(values)
    }

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

    /// One rate-limit decision by the generic cell rate algorithm: `limit` requests per `period`
    /// for `key`, with bursts of up to `limit`. Returns `None` when the request is admitted (and
    /// counted), else how long until one would be. Atomic across every user of the cache, so
    /// replicas sharing it share one budget.
    async fn rate(&self, key: &str, limit: u32, period: Duration) -> Result<Option<Duration>>;

    /// Checks that the cache answers.
    async fn ping(&self) -> Result<()>;
}

/// The GCRA step shared by the implementations, in microseconds: given the stored theoretical
/// arrival time `tat` (if any) and `now`, returns the new TAT to store, or how long to wait.
pub fn gcra(tat: Option<u64>, now: u64, limit: u32, period: Duration) -> Result<u64, u64> {
    let limit = u64::from(limit.max(1));
    let interval = (u64::try_from(period.as_micros()).unwrap_or(u64::MAX) / limit).max(1);
    let tolerance = interval * (limit - 1);
    let tat = tat.unwrap_or(now).max(now);
    if tat - now > tolerance {
        return Err(tat - now - tolerance);
    }
    Ok(tat + interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_admits_a_burst_of_limit_then_one_per_interval() {
        let minute = Duration::from_secs(60);
        let mut tat = None;
        for _ in 0..5 {
            tat = Some(gcra(tat, 0, 5, minute).expect("within the burst"));
        }
        let wait = gcra(tat, 0, 5, minute).expect_err("the sixth waits");
        assert_eq!(wait, 12_000_000, "one interval: 60 s / 5");
        assert!(
            gcra(tat, 12_000_000, 5, minute).is_ok(),
            "admitted once the interval passed"
        );
    }
}

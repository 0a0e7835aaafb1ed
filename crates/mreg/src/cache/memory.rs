//! The in-process cache: a map under one mutex, with entries that expire. Every operation is a
//! few map operations, so the lock is held only briefly; expired entries are dropped when they
//! are touched and, in bulk, whenever the map has doubled since the last sweep.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use domain::{Cache, Clock, Error, Result};

struct Entry {
    value: Vec<u8>,
    expires: Instant,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    sweep_at: usize,
}

impl Inner {
    /// The live entry under `key`, dropping it if it has expired.
    fn live(&mut self, key: &str, now: Instant) -> Option<&mut Entry> {
        if self.entries.get(key).is_some_and(|e| e.expires <= now) {
            self.entries.remove(key);
        }
        self.entries.get_mut(key)
    }

    fn insert(&mut self, key: &str, value: Vec<u8>, expires: Instant, now: Instant) {
        self.entries
            .insert(key.to_owned(), Entry { value, expires });
        if self.entries.len() >= self.sweep_at {
            self.entries.retain(|_, e| e.expires > now);
            self.sweep_at = (self.entries.len() * 2).max(1024);
        }
    }
}

/// A cache held in this process's memory. Not shared between replicas.
pub struct MemoryCache {
    inner: Mutex<Inner>,
    clock: Clock,
    /// Where this cache's rate-limit times count from (microseconds since it).
    epoch: Instant,
}

impl Default for MemoryCache {
    fn default() -> Self {
        Self::with_clock(Clock::system())
    }
}

impl MemoryCache {
    /// An empty cache whose entries expire by the system clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty cache whose entries expire by `clock`.
    pub fn with_clock(clock: Clock) -> Self {
        Self {
            inner: Mutex::default(),
            epoch: clock.instant(),
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave an entry half-written, so the data stays
        // usable.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .lock()
            .live(key, self.clock.instant())
            .map(|e| e.value.clone()))
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        let now = self.clock.instant();
        self.lock().insert(key, value.to_vec(), now + ttl, now);
        Ok(())
    }

    async fn set_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool> {
        let now = self.clock.instant();
        let mut inner = self.lock();
        if inner.live(key, now).is_some() {
            return Ok(false);
        }
        inner.insert(key, value.to_vec(), now + ttl, now);
        Ok(true)
    }

    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let now = self.clock.instant();
        let mut inner = self.lock();
        let live = inner.live(key, now).is_some();
        Ok(inner.entries.remove(key).filter(|_| live).map(|e| e.value))
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let now = self.clock.instant();
        let mut inner = self.lock();
        let live = inner.live(key, now).is_some();
        inner.entries.remove(key);
        Ok(live)
    }

    async fn incr(&self, key: &str, by: i64, ttl: Duration) -> Result<i64> {
        let now = self.clock.instant();
        let mut inner = self.lock();
        if let Some(entry) = inner.live(key, now) {
            let current: i64 = std::str::from_utf8(&entry.value)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| Error::Internal(format!("cache key '{key}' is not an integer")))?;
            let next = current
                .checked_add(by)
                .ok_or_else(|| Error::Internal(format!("cache key '{key}' would overflow")))?;
            entry.value = next.to_string().into_bytes();
            return Ok(next);
        }
        inner.insert(key, by.to_string().into_bytes(), now + ttl, now);
        Ok(by)
    }

    async fn rate(&self, key: &str, limit: u32, period: Duration) -> Result<Option<Duration>> {
        let now = self.clock.instant();
        let now_us = u64::try_from(now.duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX);
        let mut inner = self.lock();
        let tat = inner
            .live(key, now)
            .and_then(|e| std::str::from_utf8(&e.value).ok()?.parse::<u64>().ok());
        match domain::cache::gcra(tat, now_us, limit, period) {
            Ok(next) => {
                let expires = now + Duration::from_micros(next.saturating_sub(now_us));
                // A known key is updated in place: no new key or value is allocated.
                if let Some(entry) = inner.entries.get_mut(key) {
                    use std::io::Write;
                    entry.value.clear();
                    write!(entry.value, "{next}").expect("writing to a Vec cannot fail");
                    entry.expires = expires;
                } else {
                    inner.insert(key, next.to_string().into_bytes(), expires, now);
                }
                Ok(None)
            }
            Err(wait) => Ok(Some(Duration::from_micros(wait))),
        }
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}

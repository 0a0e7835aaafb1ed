//! Caches behind the domain's [`Cache`] trait: in process by default, Redis when
//! `MREG_REDIS_URL` is set so that replicas share tokens, counters and OAuth state. Entries of
//! the in-process cache expire by the configuration's clock; Redis's by Redis's own.

mod memory;
mod redis;

use std::sync::Arc;

use domain::Cache;
use secrecy::ExposeSecret;

use crate::config::Config;

pub use self::memory::MemoryCache;
pub use self::redis::RedisCache;

/// The configured cache and its kind (`memory` or `redis`, for logs).
pub async fn connect(config: &Config) -> anyhow::Result<(Arc<dyn Cache>, &'static str)> {
    Ok(match &config.redis_url {
        None => (
            Arc::new(MemoryCache::with_clock(config.clock.clone())),
            "memory",
        ),
        Some(url) => (
            Arc::new(RedisCache::connect(url.expose_secret(), &config.redis_prefix).await?),
            "redis",
        ),
    })
}

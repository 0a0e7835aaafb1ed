//! The shared cache: Redis, through a few multiplexed connections that reconnect on their own.
//! Every key is prefixed (`MREG_REDIS_PREFIX`) so mreg can share a Redis with other programs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use domain::{Cache, Error, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script, SetExpiry, SetOptions};

/// Connections opened to Redis; requests are spread across them round-robin.
const CONNECTIONS: usize = 4;
/// How long one command may take before Redis counts as unavailable.
const TIMEOUT: Duration = Duration::from_secs(2);

/// `INCRBY`, and set the TTL only when the key has none (it was just created).
const INCR_SCRIPT: &str = r"
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
";

/// One GCRA decision (see `domain::cache::gcra`) on Redis's clock, in microseconds: ARGV[1] is
/// the emission interval, ARGV[2] the burst tolerance. Returns 0 when admitted, else the wait.
const RATE_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat - now > tolerance then
  return tat - now - tolerance
end
local next = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', next), 'PX', math.ceil((next - now) / 1000) + 1)
return 0
";

/// A cache in Redis, shared by every replica that uses the same Redis and prefix.
pub struct RedisCache {
    connections: Vec<ConnectionManager>,
    next: AtomicUsize,
    prefix: String,
    incr: Script,
    rate: Script,
}

fn unavailable(e: redis::RedisError) -> Error {
    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) {
        Error::Internal(format!("redis: {e}"))
    } else {
        Error::unavailable("redis", e)
    }
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisCache {
    /// Connects to `url`; keys are written under `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<Self> {
        use redis::IntoConnectionInfo;
        // Commands are small writes answered at once: send each without waiting (no Nagle).
        let info = url
            .into_connection_info()
            .map_err(|e| anyhow::anyhow!("invalid Redis URL: {e}"))?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let client =
            redis::Client::open(info).map_err(|e| anyhow::anyhow!("invalid Redis URL: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(2);
        let mut connections = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            let connection = ConnectionManager::new_with_config(client.clone(), config.clone())
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot connect to Redis at {}: {e}",
                        crate::config::redact_url(url)
                    )
                })?;
            connections.push(connection);
        }
        Ok(Self {
            connections,
            next: AtomicUsize::new(0),
            prefix: prefix.to_owned(),
            incr: Script::new(INCR_SCRIPT),
            rate: Script::new(RATE_SCRIPT),
        })
    }

    fn connection(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        self.connections[i].clone()
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

#[async_trait]
impl Cache for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.connection()
            .get(self.key(key))
            .await
            .map_err(unavailable)
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut command = redis::cmd("MGET");
        for key in keys {
            command.arg(self.key(key));
        }
        command
            .query_async(&mut self.connection())
            .await
            .map_err(unavailable)
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        self.connection()
            .pset_ex(self.key(key), value, millis(ttl))
            .await
            .map_err(unavailable)
    }

    async fn set_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool> {
        let options = SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(SetExpiry::PX(millis(ttl)));
        let reply: Option<String> = self
            .connection()
            .set_options(self.key(key), value, options)
            .await
            .map_err(unavailable)?;
        Ok(reply.is_some())
    }

    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>> {
        redis::cmd("GETDEL")
            .arg(self.key(key))
            .query_async(&mut self.connection())
            .await
            .map_err(unavailable)
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let removed: i64 = self
            .connection()
            .del(self.key(key))
            .await
            .map_err(unavailable)?;
        Ok(removed > 0)
    }

    async fn incr(&self, key: &str, by: i64, ttl: Duration) -> Result<i64> {
        self.incr
            .key(self.key(key))
            .arg(by)
            .arg(millis(ttl))
            .invoke_async(&mut self.connection())
            .await
            .map_err(unavailable)
    }

    async fn rate(&self, key: &str, limit: u32, period: Duration) -> Result<Option<Duration>> {
        let limit = u64::from(limit.max(1));
        let interval = (u64::try_from(period.as_micros()).unwrap_or(u64::MAX) / limit).max(1);
        let wait: i64 = self
            .rate
            .key(self.key(key))
            .arg(interval)
            .arg(interval * (limit - 1))
            .invoke_async(&mut self.connection())
            .await
            .map_err(unavailable)?;
        Ok((wait > 0).then(|| Duration::from_micros(wait as u64)))
    }

    async fn ping(&self) -> Result<()> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.connection())
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

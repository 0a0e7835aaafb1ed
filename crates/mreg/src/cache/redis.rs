//! The shared cache: Redis, through a few multiplexed connections that reconnect on their own.
//! Every key is prefixed (`MREG_REDIS_PREFIX`) so mreg can share a Redis with other programs.
//!
//! A breaker keeps an outage from costing every request a timeout: the first command that finds
//! Redis unreachable opens it, and while it is open every command fails at once (callers fall
//! back to this instance's memory) and a background task pings each connection until all of
//! them answer — which also reconnects them, so no request pays for the reconnection. A
//! connection that stays silent (a partition whose flows were lost on the way: the socket is
//! open, nothing comes back) is replaced by a new one, which is the only way back then.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use domain::{Cache, Error, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script, SetExpiry, SetOptions};

/// Connections opened to Redis; requests are spread across them round-robin.
const CONNECTIONS: usize = 4;
/// How long one command may take before Redis counts as unavailable: commands answer in well
/// under a millisecond, so this only bounds what an outage costs the request that finds it.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the breaker, while open, pings Redis to see whether it is back.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);

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
    /// Replaced one by one when they stop answering (see the module documentation).
    connections: Arc<RwLock<Vec<ConnectionManager>>>,
    /// What new connections are opened with.
    client: redis::Client,
    config: ConnectionManagerConfig,
    next: AtomicUsize,
    /// Open while Redis is unreachable (see the module documentation).
    open: Arc<AtomicBool>,
    prefix: String,
    incr: Script,
    rate: Script,
}

/// Whether an error means Redis (or the way to it) is down, rather than a refused command.
fn is_outage(e: &redis::RedisError) -> bool {
    e.kind() != redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError)
}

fn unavailable(e: redis::RedisError) -> Error {
    if is_outage(&e) {
        Error::unavailable("redis", e)
    } else {
        Error::Internal(format!("redis: {e}"))
    }
}

/// The error of a command skipped while the breaker is open.
fn skipped() -> Error {
    Error::unavailable(
        "redis",
        "unreachable (commands are skipped until a background ping succeeds)",
    )
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
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
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
            connections: Arc::new(RwLock::new(connections)),
            client,
            config,
            next: AtomicUsize::new(0),
            open: Arc::new(AtomicBool::new(false)),
            prefix: prefix.to_owned(),
            incr: Script::new(INCR_SCRIPT),
            rate: Script::new(RATE_SCRIPT),
        })
    }

    /// A connection for the next command, or an error at once while the breaker is open.
    fn connection(&self) -> Result<ConnectionManager> {
        if self.open.load(Ordering::Relaxed) {
            return Err(skipped());
        }
        let connections = self
            .connections
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let i = self.next.fetch_add(1, Ordering::Relaxed) % connections.len();
        Ok(connections[i].clone())
    }

    /// Maps a command's error, opening the breaker when it shows an outage.
    fn failed(&self, e: redis::RedisError) -> Error {
        if is_outage(&e) && !self.open.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %e, "Redis is unreachable: skipping it until it answers again");
            let probe = Probe {
                open: self.open.clone(),
                connections: self.connections.clone(),
                client: self.client.clone(),
                config: self.config.clone(),
            };
            #[allow(
                clippy::disallowed_methods,
                reason = "the cache sits below the task driver; the probe ends once Redis answers"
            )]
            tokio::spawn(probe.until_back());
        }
        unavailable(e)
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

#[async_trait]
impl Cache for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.connection()?
            .get(self.key(key))
            .await
            .map_err(|e| self.failed(e))
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
            .query_async(&mut self.connection()?)
            .await
            .map_err(|e| self.failed(e))
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        self.connection()?
            .pset_ex(self.key(key), value, millis(ttl))
            .await
            .map_err(|e| self.failed(e))
    }

    async fn set_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool> {
        let options = SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(SetExpiry::PX(millis(ttl)));
        let reply: Option<String> = self
            .connection()?
            .set_options(self.key(key), value, options)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(reply.is_some())
    }

    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>> {
        redis::cmd("GETDEL")
            .arg(self.key(key))
            .query_async(&mut self.connection()?)
            .await
            .map_err(|e| self.failed(e))
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let removed: i64 = self
            .connection()?
            .del(self.key(key))
            .await
            .map_err(|e| self.failed(e))?;
        Ok(removed > 0)
    }

    async fn incr(&self, key: &str, by: i64, ttl: Duration) -> Result<i64> {
        self.incr
            .key(self.key(key))
            .arg(by)
            .arg(millis(ttl))
            .invoke_async(&mut self.connection()?)
            .await
            .map_err(|e| self.failed(e))
    }

    async fn rate(&self, key: &str, limit: u32, period: Duration) -> Result<Option<Duration>> {
        let limit = u64::from(limit.max(1));
        let interval = (u64::try_from(period.as_micros()).unwrap_or(u64::MAX) / limit).max(1);
        let wait: i64 = self
            .rate
            .key(self.key(key))
            .arg(interval)
            .arg(interval * (limit - 1))
            .invoke_async(&mut self.connection()?)
            .await
            .map_err(|e| self.failed(e))?;
        Ok((wait > 0).then(|| Duration::from_micros(wait as u64)))
    }

    async fn ping(&self) -> Result<()> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.connection()?)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(())
    }
}

/// What the breaker's background probe needs.
struct Probe {
    open: Arc<AtomicBool>,
    connections: Arc<RwLock<Vec<ConnectionManager>>>,
    client: redis::Client,
    config: ConnectionManagerConfig,
}

/// Whether `connection` answers a `PING` (within its response timeout).
async fn answers(mut connection: ConnectionManager) -> bool {
    let answered: redis::RedisResult<String> =
        redis::cmd("PING").query_async(&mut connection).await;
    answered.is_ok()
}

impl Probe {
    /// Pings every connection each [`PROBE_INTERVAL`] until all of them answer, then closes the
    /// breaker. A connection that lost its socket reconnects on the failed ping; one that does
    /// not answer is replaced by a new connection that does. Once this returns, every
    /// connection is live.
    async fn until_back(self) {
        loop {
            tokio::time::sleep(PROBE_INTERVAL).await;
            let current = self
                .connections
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let probes = current.into_iter().map(|connection| async {
                if answers(connection.clone()).await {
                    return Some(connection);
                }
                let opening =
                    ConnectionManager::new_with_config(self.client.clone(), self.config.clone());
                let fresh = tokio::time::timeout(2 * CONNECT_TIMEOUT, opening)
                    .await
                    .ok()?
                    .ok()?;
                answers(fresh.clone()).await.then_some(fresh)
            });
            let answered: Option<Vec<ConnectionManager>> = futures_util::future::join_all(probes)
                .await
                .into_iter()
                .collect();
            if let Some(live) = answered {
                *self
                    .connections
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = live;
                self.open.store(false, Ordering::Relaxed);
                tracing::info!("Redis answers again");
                return;
            }
        }
    }
}

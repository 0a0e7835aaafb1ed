//! Rate limits: GCRA budgets per principal, per principal × tool and, on the public OAuth
//! endpoints, per client address ([`AddressLimit`]), decided in the cache (one
//! atomic script in Redis, so replicas share one budget). If the shared cache stops answering,
//! decisions fall back to this instance's memory — limits stay on, per instance — and the log
//! and `/readyz` say so until it answers again.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use domain::{Cache, Principal};

use super::Refusal;
use crate::cache::MemoryCache;
use crate::metrics::Metrics;

const MINUTE: Duration = Duration::from_secs(60);

/// The rate limiter of one instance.
#[derive(Default)]
pub struct Limits {
    local: MemoryCache,
    shared_down: AtomicBool,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("shared_down", &self.shared_down.load(Ordering::Relaxed))
            .finish()
    }
}

impl Limits {
    /// Whether decisions are currently per instance because the shared cache is unreachable.
    pub fn degraded(&self) -> bool {
        self.shared_down.load(Ordering::Relaxed)
    }

    /// Spends one request of `principal`'s `budget` per minute (the principal's own, or with
    /// `tool` the principal × tool one) in `cache`.
    pub async fn spend_principal(
        &self,
        cache: &dyn Cache,
        principal: &Principal,
        tool: Option<&str>,
        budget: u32,
    ) -> Result<(), Refusal> {
        let who = format!(
            "{}:{}",
            principal.tenant.as_deref().unwrap_or("-"),
            principal.subject
        );
        let key = match tool {
            None => format!("rate:p:{who}"),
            Some(tool) => format!("rate:t:{who}:{tool}"),
        };
        self.spend(cache, &key, budget).await
    }

    /// Spends one request of the budget under `key`: in the shared cache, or in this instance's
    /// memory while the cache does not answer.
    async fn spend(&self, cache: &dyn Cache, key: &str, budget: u32) -> Result<(), Refusal> {
        let decision = match cache.rate(key, budget, MINUTE).await {
            Ok(decision) => {
                if self.shared_down.swap(false, Ordering::Relaxed) {
                    tracing::info!("the cache answers again: rate limits are shared again");
                }
                decision
            }
            Err(e) => {
                if !self.shared_down.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "the cache is unreachable: rate limits are per instance until it returns");
                }
                self.local.rate(key, budget, MINUTE).await.unwrap_or(None)
            }
        };
        match decision {
            None => Ok(()),
            Some(wait) => Err(Refusal::Limited(wait)),
        }
    }
}

/// The budget per client address of the public OAuth endpoints (client registration,
/// authorization, sign-in, token, revocation), which anyone can call before they have a
/// principal to be limited by.
pub struct AddressLimit {
    per_minute: u32,
    proxy_hops: usize,
    cache: Arc<dyn Cache>,
    /// The instance's limiter, shared with the per-principal budgets (one fallback, one
    /// degraded flag for `/readyz`).
    limits: Arc<Limits>,
    metrics: Metrics,
}

impl std::fmt::Debug for AddressLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddressLimit")
            .field("per_minute", &self.per_minute)
            .field("proxy_hops", &self.proxy_hops)
            .finish()
    }
}

impl AddressLimit {
    /// `per_minute` requests per client address (0: unlimited); the address is the TCP peer's,
    /// or with `proxy_hops` trusted reverse proxies the one in `X-Forwarded-For` that the
    /// outermost of them added. Decided in `cache`, through `limits`.
    pub fn new(
        per_minute: u32,
        proxy_hops: usize,
        cache: Arc<dyn Cache>,
        limits: Arc<Limits>,
        metrics: Metrics,
    ) -> Self {
        Self {
            per_minute,
            proxy_hops,
            cache,
            limits,
            metrics,
        }
    }

    /// Spends one request of the budget of `address` (see [`AddressLimit::client_address`]). A
    /// refusal is counted in `mreg_policy_refusals_total`.
    pub async fn admit(&self, address: &str) -> Result<(), Refusal> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let key = format!("rate:a:{address}");
        let decided = self
            .limits
            .spend(self.cache.as_ref(), &key, self.per_minute)
            .await;
        if let Err(refusal) = &decided {
            self.metrics.refused(refusal.reason());
        }
        decided
    }

    /// The client's address, or `unknown` when the listener did not record the peer.
    pub fn client_address(&self, request: &Request) -> String {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        if self.proxy_hops > 0 {
            let forwarded: Vec<&str> = request
                .headers()
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .collect();
            // Each trusted proxy appends the address it saw: the client is the entry the
            // outermost one added. Entries left of it are whatever the client sent.
            if let Some(entry) = forwarded
                .len()
                .checked_sub(self.proxy_hops)
                .map(|i| forwarded[i])
                // Some proxies (Azure Application Gateway among them) add the port too.
                && let Some(ip) = entry
                    .parse::<IpAddr>()
                    .ok()
                    .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
            {
                return ip.to_string();
            }
        }
        peer.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_minute: u32, hops: usize) -> AddressLimit {
        AddressLimit::new(
            per_minute,
            hops,
            Arc::new(MemoryCache::new()),
            Arc::default(),
            Metrics::new(),
        )
    }

    fn request(forwarded: &[&str]) -> Request {
        let mut builder = Request::builder().uri("/register");
        for value in forwarded {
            builder = builder.header("x-forwarded-for", *value);
        }
        let mut request = builder.body(axum::body::Body::empty()).expect("request");
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 9], 40000))));
        request
    }

    #[test]
    fn the_client_address_is_the_one_the_outermost_trusted_proxy_saw() {
        let spoofed = request(&["192.0.2.66, 203.0.113.7"]);
        assert_eq!(
            limit(2, 0).client_address(&spoofed),
            "10.0.0.9",
            "no proxy: the peer"
        );
        assert_eq!(limit(2, 1).client_address(&spoofed), "203.0.113.7");
        assert_eq!(limit(2, 2).client_address(&spoofed), "192.0.2.66");
        assert_eq!(
            limit(2, 3).client_address(&spoofed),
            "10.0.0.9",
            "fewer entries than proxies: the peer"
        );
        let split = request(&["192.0.2.66", "2001:db8::1 , 203.0.113.7"]);
        assert_eq!(
            limit(2, 2).client_address(&split),
            "2001:db8::1",
            "header lines combine"
        );
        let ported = request(&["192.0.2.66:51234, [2001:db8::2]:443"]);
        assert_eq!(
            limit(2, 1).client_address(&ported),
            "2001:db8::2",
            "with a port"
        );
        assert_eq!(limit(2, 2).client_address(&ported), "192.0.2.66");
        let garbage = request(&["not-an-address"]);
        assert_eq!(limit(2, 1).client_address(&garbage), "10.0.0.9");
        let mut unknown = request(&[]);
        unknown.extensions_mut().clear();
        assert_eq!(limit(2, 0).client_address(&unknown), "unknown");
    }

    #[tokio::test]
    async fn each_address_has_its_own_budget_and_zero_is_unlimited() {
        let two = limit(2, 0);
        assert!(two.admit("192.0.2.1").await.is_ok());
        assert!(two.admit("192.0.2.1").await.is_ok());
        assert!(matches!(
            two.admit("192.0.2.1").await,
            Err(Refusal::Limited(wait)) if wait > Duration::ZERO
        ));
        assert!(two.admit("192.0.2.2").await.is_ok());
        let unlimited = limit(0, 0);
        for _ in 0..100 {
            assert!(unlimited.admit("192.0.2.1").await.is_ok());
        }
    }
}

//! Rate limits: GCRA budgets per principal and per principal × tool, decided in the cache (one
//! atomic script in Redis, so replicas share one budget). If the shared cache stops answering,
//! decisions fall back to this instance's memory — limits stay on, per instance — and the log
//! and `/readyz` say so until it answers again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use domain::{Cache, Principal};

use super::Refusal;
use crate::cache::MemoryCache;
use crate::rest::AppState;

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

    /// Spends one request of `principal`'s budget (for `tool`, when given). The local operator
    /// of an unauthenticated gateway is not limited.
    pub async fn admit(
        &self,
        state: &AppState,
        principal: &Principal,
        tool: Option<&str>,
    ) -> Result<(), Refusal> {
        if state.oauth.is_none() {
            return Ok(());
        }
        let who = format!(
            "{}:{}",
            principal.tenant.as_deref().unwrap_or("-"),
            principal.subject
        );
        let (key, budget) = match tool {
            None => (
                format!("rate:p:{who}"),
                state.policy.principal_budget(principal),
            ),
            Some(tool) => (
                format!("rate:t:{who}:{tool}"),
                state.policy.tool_budget(tool),
            ),
        };
        let decision = match state.cache.rate(&key, budget, MINUTE).await {
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
                self.local.rate(&key, budget, MINUTE).await.unwrap_or(None)
            }
        };
        match decision {
            None => Ok(()),
            Some(wait) => Err(Refusal::Limited(wait)),
        }
    }
}

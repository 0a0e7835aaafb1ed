//! The policy chain after authentication: rate limits, then role-based authorization. Every
//! entry point goes through here — [`Gate::check_request`] for each HTTP request (REST operations by
//! method and route; called by [`crate::authn::AuthLayer`], so the chain is one layer),
//! [`Gate::admit_tool`] for the gateway's own MCP tools, [`Gate::authorize_forward`] and
//! [`Gate::spend_forward`] for every message proxied to a registered server (through
//! `/servers/{name}/mcp` or `proxy_request`; the circuit breaker decides between the two).
//! Handlers never check roles themselves.
//!
//! Roles come from the principal (Entra app roles). The seed document's mapping is the default:
//! `register_server` and `delete_server` need `admin`; `proxy_request` and `get_server_health`
//! need `user` or `admin`; the REST operations that do the same need the same roles. A TOML
//! policy file (`MREG_POLICY_FILE`) overrides tools, REST operations and per-server access:
//!
//! ```toml
//! [tools]
//! proxy_request = ["user", "admin"]
//!
//! [rest]
//! "DELETE /api/v1/servers/{name}" = ["admin"]
//!
//! [servers."*"]                # every server without a rule of its own
//! roles = ["user", "admin"]    # default: the roles of proxy_request
//!
//! [servers.payroll]            # who may use this server through the gateway
//! roles = ["finance"]
//! tools = { run_payroll = ["finance-admin"] }
//!
//! [servers."TENANT-ID/payroll"] # one tenant's payroll (names are per tenant; see
//! roles = ["finance"]           # config::policy::Unqualified for what `payroll` alone governs)
//!
//! [servers."/payroll"]         # the payroll registered without a tenant ("/*": the default
//! roles = ["finance"]          # of such servers)
//!
//! [rate_limits]
//! per_minute = 100             # default: MREG_RATE_LIMIT_PER_MINUTE
//! roles = { admin = 1000 }     # a principal gets the highest of its roles' budgets
//! tools = { proxy_request = 30, "payroll/run_payroll" = 5 }
//!
//! [audit]
//! redact = ["ssn", "card_number"]  # masked in audited arguments, besides the defaults
//! ```

//!
//! The rules themselves (the seed mapping, the file's format, the decisions) are the model in
//! [`crate::config::policy`]; this module applies them to requests.

pub mod answer;
pub mod limits;

use std::sync::Arc;

use domain::{Cache, Principal};

pub use crate::config::policy::{
    DEFAULT_SERVER_RULE, Denial, Policy, RateLimits, Refusal, Roles, ServerRule,
};
use crate::metrics::Metrics;
use limits::Limits;

/// The policy chain after authentication as one service: the rules, this instance's rate
/// limiter and the cache its budgets live in. Built once; every listener asks it (a clone
/// shares it).
#[derive(Clone)]
pub struct Gate {
    rules: Arc<Policy>,
    limits: Arc<Limits>,
    cache: Arc<dyn Cache>,
    metrics: Metrics,
    /// Whether callers are authenticated; without it there is one local operator, who sees
    /// everything and has no budgets.
    authenticated: bool,
}

impl Gate {
    /// The chain for `rules`, limited by `limits` in `cache`; `authenticated` says whether
    /// callers are authenticated (without it, there are no budgets and no tenants).
    pub fn new(
        rules: Arc<Policy>,
        limits: Arc<Limits>,
        cache: Arc<dyn Cache>,
        metrics: Metrics,
        authenticated: bool,
    ) -> Self {
        Self {
            rules,
            limits,
            cache,
            metrics,
            authenticated,
        }
    }

    /// The rules: roles per tool, REST operation and server, budgets, redaction.
    pub fn rules(&self) -> &Arc<Policy> {
        &self.rules
    }

    /// This instance's rate limiter (its degraded flag is part of `/readyz`).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The steps after authentication for one HTTP request: the principal's rate limit when
    /// the request `counts` against it, then, for REST operations (`route`), their roles.
    pub async fn check_request(
        &self,
        principal: &Principal,
        method: &axum::http::Method,
        route: Option<&str>,
        counts: bool,
    ) -> Result<(), Refusal> {
        let decided = async {
            if counts {
                self.spend(principal, None).await?;
            }
            if let Some(route) = route
                && route.starts_with("/api/")
            {
                self.rules
                    .rest(principal, method.as_str(), route)
                    .map_err(Refusal::Denied)?;
            }
            Ok(())
        }
        .await;
        self.counted(decided)
    }

    /// Spends one request of the principal's budget for a message that is otherwise free (a
    /// notification, a response, a `GET` stream, a session's end) but failed (refused, or no
    /// such server or session): failures, each a row, cannot be asked for without end at no
    /// cost (a caller without the server's role sent 6,700 refused notifications in ten
    /// seconds).
    pub async fn spend_refused(&self, principal: &Principal) -> Result<(), Refusal> {
        let spent = self.spend(principal, None).await;
        self.counted(spent)
    }

    /// Admits a call of the gateway tool `tool`: the principal × tool budget, then the roles.
    pub async fn admit_tool(&self, principal: &Principal, tool: &str) -> Result<(), Refusal> {
        let decided = self
            .spend(principal, Some(tool))
            .await
            .and_then(|()| self.rules.tool(principal, tool).map_err(Refusal::Denied));
        self.counted(decided)
    }

    /// Authorizes one message to registered server `server`: the server's roles and, for
    /// `tools/call`, the tool's. Then (after the circuit breaker) [`Gate::spend_forward`].
    pub fn authorize_forward(
        &self,
        principal: &Principal,
        server: &domain::Server,
        method: &str,
        tool: Option<&str>,
    ) -> Result<(), Refusal> {
        let called = called_tool(method, tool);
        let decided = self
            .rules
            .server(
                principal,
                server.tenant.as_deref(),
                server.name.as_str(),
                called,
            )
            .map_err(Refusal::Denied);
        self.noted(decided)
    }

    /// Spends, for a `tools/call` to registered server `server`, the principal × tool budget
    /// (`server/tool`); other messages spend nothing here.
    pub async fn spend_forward(
        &self,
        principal: &Principal,
        server: &domain::Server,
        method: &str,
        tool: Option<&str>,
    ) -> Result<(), Refusal> {
        let called = called_tool(method, tool);
        // Without authentication there are no budgets (and no key to build).
        let Some(tool) = called.filter(|_| self.authenticated) else {
            return Ok(());
        };
        let spent = self
            .spend(principal, Some(&format!("{}/{tool}", server.name)))
            .await;
        self.noted(spent)
    }

    /// A refusal of a forwarded message, noted for its audit row and counted.
    fn noted(&self, decided: Result<(), Refusal>) -> Result<(), Refusal> {
        if let Err(refusal) = &decided {
            crate::audit::note_refusal(refusal);
        }
        self.counted(decided)
    }

    /// Counts a refusal in `mreg_policy_refusals_total`, where it is decided (once, whatever
    /// edge then answers it).
    fn counted(&self, decided: Result<(), Refusal>) -> Result<(), Refusal> {
        if let Err(refusal) = &decided {
            self.metrics.refused(refusal.reason());
        }
        decided
    }

    /// Which servers `principal` may see and reach: its tenant's, tenantless and shared ones
    /// when authentication is on; all of them for the local operator when it is off.
    pub fn visibility(&self, principal: &Principal) -> domain::Visibility {
        if self.authenticated {
            domain::Visibility::Tenant(principal.tenant.clone())
        } else {
            domain::Visibility::All
        }
    }

    /// Spends one request of `principal`'s budget (for `tool`, when given). The local operator
    /// of an unauthenticated gateway is not limited.
    async fn spend(&self, principal: &Principal, tool: Option<&str>) -> Result<(), Refusal> {
        if !self.authenticated {
            return Ok(());
        }
        let budget = match tool {
            None => self.rules.principal_budget(principal),
            Some(tool) => self.rules.tool_budget(tool),
        };
        self.limits
            .spend_principal(self.cache.as_ref(), principal, tool, budget)
            .await
    }
}

impl From<Refusal> for domain::Error {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Limited(wait) => Self::RateLimited { retry_after: wait },
            Refusal::Denied(_) => Self::Forbidden(refusal.message()),
        }
    }
}

/// Keeps the catalog hits `principal` may call: the server's roles and the tool's, as the proxy
/// would decide them (a search does not show what a call would refuse).
pub fn callable_hits(policy: &Policy, principal: &Principal, hits: &mut Vec<domain::ToolHit>) {
    hits.retain(|hit| {
        policy
            .server(
                principal,
                hit.tenant.as_deref(),
                hit.server.as_str(),
                Some(&hit.tool.name),
            )
            .is_ok()
    });
}

/// Removes from a `tools/list` result of `server` the tools `principal` may not call.
pub fn filter_tool_list(
    policy: &Policy,
    principal: &Principal,
    server: &domain::Server,
    result: &mut serde_json::Value,
) {
    let (tenant, name) = (server.tenant.as_deref(), server.name.as_str());
    if let Some(tools) = result.get_mut("tools").and_then(|t| t.as_array_mut()) {
        tools.retain(|tool| {
            tool["name"]
                .as_str()
                .is_some_and(|tool| policy.server(principal, tenant, name, Some(tool)).is_ok())
        });
    }
}

/// The tool a message calls: its name, for a `tools/call`.
fn called_tool<'a>(method: &str, tool: Option<&'a str>) -> Option<&'a str> {
    (method == "tools/call").then_some(tool).flatten()
}

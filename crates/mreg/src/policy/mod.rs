//! The policy chain after authentication: rate limits, then role-based authorization. Every
//! entry point goes through here — [`check_request`] for each HTTP request (REST operations by
//! method and route; called by [`crate::authn::AuthLayer`], so the chain is one layer),
//! [`admit_tool`] for the gateway's own MCP tools, [`admit_forward`] for every message proxied
//! to a registered server (through `/servers/{name}/mcp` or `proxy_request`).
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
//! [rate_limits]
//! per_minute = 100             # default: MREG_RATE_LIMIT_PER_MINUTE
//! roles = { admin = 1000 }     # a principal gets the highest of its roles' budgets
//! tools = { proxy_request = 30, "payroll/run_payroll" = 5 }
//!
//! [audit]
//! redact = ["ssn", "card_number"]  # masked in audited arguments, besides the defaults
//! ```

pub mod limits;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use domain::Principal;
use serde::Deserialize;

use crate::rest::AppState;
use crate::rest::error::ApiError;

/// The name of the `[servers."*"]` rule: what applies to a server without a rule of its own.
pub const DEFAULT_SERVER_RULE: &str = "*";

/// Roles that grant one thing (any of them suffices; empty: anyone authenticated).
pub type Roles = Vec<String>;

/// Access rules of one registered server.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServerRule {
    /// Who may use the server at all (absent: anyone).
    #[serde(default)]
    pub roles: Option<Roles>,
    /// Per-tool roles for `tools/call`; `tools/list` shows only what the caller may call.
    #[serde(default)]
    pub tools: BTreeMap<String, Roles>,
}

/// Rate-limit budgets, in requests per minute.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    /// Budget of a principal (and of a principal for one tool) unless overridden.
    #[serde(default)]
    pub per_minute: Option<u32>,
    /// Per-role budgets of a principal.
    #[serde(default)]
    pub roles: BTreeMap<String, u32>,
    /// Per-tool budgets of a principal × tool.
    #[serde(default)]
    pub tools: BTreeMap<String, u32>,
}

/// The policy file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    tools: BTreeMap<String, Roles>,
    #[serde(default)]
    rest: BTreeMap<String, Roles>,
    #[serde(default)]
    servers: BTreeMap<String, ServerRule>,
    #[serde(default)]
    rate_limits: RateLimits,
    #[serde(default)]
    audit: AuditPolicy,
}

/// The policy file's `[audit]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditPolicy {
    /// Argument keys to mask besides the defaults (matched like them: case and `_`/`-` ignored,
    /// anywhere in the key).
    #[serde(default)]
    redact: Vec<String>,
}

/// The effective policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    tools: BTreeMap<String, Roles>,
    rest: BTreeMap<String, Roles>,
    servers: BTreeMap<String, ServerRule>,
    per_minute: u32,
    role_limits: BTreeMap<String, u32>,
    tool_limits: BTreeMap<String, u32>,
    /// Argument keys the audit log masks besides its defaults.
    pub redact: Vec<String>,
}

/// A refusal: what was asked and which roles would have allowed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// What was refused (`register_server`, `POST /api/v1/servers`, `server payroll`, …).
    pub what: String,
    /// Roles that would have allowed it.
    pub required: Roles,
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requires the role {}",
            self.what,
            self.required.join(" or ")
        )
    }
}

fn roles(list: &[&str]) -> Roles {
    list.iter().map(|r| (*r).to_owned()).collect()
}

fn allowed(principal: &Principal, required: &[String]) -> bool {
    required.is_empty() || required.iter().any(|r| principal.roles.contains(r))
}

impl Policy {
    /// The seed document's mapping, with `per_minute` as every budget.
    pub fn seed(per_minute: u32) -> Self {
        let admin = roles(&["admin"]);
        let user = roles(&["user", "admin"]);
        let tools = [
            ("register_server", admin.clone()),
            ("delete_server", admin.clone()),
            ("proxy_request", user.clone()),
            ("get_server_health", user.clone()),
        ];
        let rest = [
            ("POST /api/v1/servers", admin.clone()),
            ("PATCH /api/v1/servers/{name}", admin.clone()),
            ("DELETE /api/v1/servers/{name}", admin.clone()),
            ("GET /api/v1/audit", admin),
            ("GET /api/v1/servers/{name}/health", user.clone()),
            ("POST /api/v1/servers/{name}/health/check", user),
        ];
        Self {
            tools: tools.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            rest: rest.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            servers: BTreeMap::new(),
            per_minute,
            role_limits: BTreeMap::new(),
            tool_limits: BTreeMap::new(),
            redact: Vec::new(),
        }
    }

    /// The seed mapping overridden by the policy file at `path`.
    pub fn load(path: Option<&Path>, per_minute: u32) -> Result<Self, String> {
        let mut policy = Self::seed(per_minute);
        let Some(path) = path else {
            return Ok(policy);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        policy
            .apply(&text)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(policy)
    }

    fn apply(&mut self, text: &str) -> Result<(), String> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| e.to_string())?;
        for key in file.rest.keys() {
            let ok = key.split_once(' ').is_some_and(|(m, p)| {
                matches!(m, "GET" | "POST" | "PUT" | "PATCH" | "DELETE") && p.starts_with('/')
            });
            if !ok {
                return Err(format!(
                    "rest key '{key}' is not 'METHOD /path' (e.g. \"DELETE /api/v1/servers/{{name}}\")"
                ));
            }
        }
        if let Some(zero) = file
            .rate_limits
            .roles
            .iter()
            .chain(&file.rate_limits.tools)
            .find(|(_, n)| **n == 0)
        {
            return Err(format!("rate limit for '{}' must be at least 1", zero.0));
        }
        self.tools.extend(file.tools);
        self.rest.extend(file.rest);
        self.servers = file.servers;
        if let Some(n) = file.rate_limits.per_minute {
            if n == 0 {
                return Err("rate_limits.per_minute must be at least 1".to_owned());
            }
            self.per_minute = n;
        }
        self.role_limits = file.rate_limits.roles;
        self.tool_limits = file.rate_limits.tools;
        self.redact = file.audit.redact;
        Ok(())
    }

    /// May `principal` call the gateway tool `tool`?
    pub fn tool(&self, principal: &Principal, tool: &str) -> Result<(), Denial> {
        match self.tools.get(tool) {
            Some(required) if !allowed(principal, required) => Err(Denial {
                what: tool.to_owned(),
                required: required.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// May `principal` use the REST operation `method route`? `HEAD` is decided as `GET`: it
    /// answers the same status and length, so it may not be open where `GET` is not.
    pub fn rest(&self, principal: &Principal, method: &str, route: &str) -> Result<(), Denial> {
        let method = if method == "HEAD" { "GET" } else { method };
        let key = format!("{method} {route}");
        match self.rest.get(&key) {
            Some(required) if !allowed(principal, required) => Err(Denial {
                what: key,
                required: required.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// May `principal` use `server` through the gateway, and call `tool` there when given?
    /// The server's own rule decides, else the `[servers."*"]` default, else the roles of
    /// `proxy_request` (the same capability through the gateway's own tool): `/servers/NAME/mcp`
    /// and `proxy_request` admit exactly the same callers.
    pub fn server(
        &self,
        principal: &Principal,
        server: &str,
        tool: Option<&str>,
    ) -> Result<(), Denial> {
        let own = self.servers.get(server);
        let default = self.servers.get(DEFAULT_SERVER_RULE);
        let required = own
            .and_then(|r| r.roles.as_ref())
            .or_else(|| default.and_then(|r| r.roles.as_ref()))
            .or_else(|| self.tools.get("proxy_request"));
        if let Some(required) = required
            && !allowed(principal, required)
        {
            return Err(Denial {
                what: format!("server '{server}'"),
                required: required.clone(),
            });
        }
        if let Some(tool) = tool
            && let Some(required) = own
                .and_then(|r| r.tools.get(tool))
                .or_else(|| default.and_then(|r| r.tools.get(tool)))
            && !allowed(principal, required)
        {
            return Err(Denial {
                what: format!("tool '{tool}' of server '{server}'"),
                required: required.clone(),
            });
        }
        Ok(())
    }

    /// Whether `server` has per-tool rules, its own or the default's (its `tools/list` answers
    /// must be filtered).
    pub fn filters_tools(&self, server: &str) -> bool {
        [server, DEFAULT_SERVER_RULE]
            .iter()
            .filter_map(|name| self.servers.get(*name))
            .any(|r| !r.tools.is_empty())
    }

    /// The per-minute budget of `principal`: the highest of its roles', else the default.
    pub fn principal_budget(&self, principal: &Principal) -> u32 {
        principal
            .roles
            .iter()
            .filter_map(|r| self.role_limits.get(r).copied())
            .max()
            .unwrap_or(self.per_minute)
    }

    /// The per-minute budget of one principal for `tool`.
    pub fn tool_budget(&self, tool: &str) -> u32 {
        self.tool_limits
            .get(tool)
            .copied()
            .unwrap_or(self.per_minute)
    }
}

/// A refusal by the chain.
#[derive(Debug)]
pub enum Refusal {
    /// A role is missing.
    Denied(Denial),
    /// Over budget; retry after this long.
    Limited(Duration),
}

impl Refusal {
    /// The message a person reads.
    pub fn message(&self) -> String {
        match self {
            Self::Denied(d) => format!("access denied: {d}"),
            Self::Limited(wait) => format!(
                "rate limit exceeded; retry in {:.1} s",
                wait.as_secs_f64().max(0.1)
            ),
        }
    }

    /// The label it is counted under in `mreg_policy_refusals_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Denied(_) => "denied",
            Self::Limited(_) => "rate_limited",
        }
    }

    /// The JSON-RPC error code and data an MCP caller gets: forbidden (`data.required_roles`),
    /// or rate limited (`data.retry_after_ms`).
    pub fn rpc_error(&self) -> (i64, Option<serde_json::Value>) {
        match self {
            Self::Denied(denial) => (
                crate::proxy::rpc::FORBIDDEN,
                Some(serde_json::json!({ "required_roles": denial.required })),
            ),
            Self::Limited(wait) => (
                crate::proxy::rpc::RATE_LIMITED,
                Some(serde_json::json!({ "retry_after_ms": wait.as_millis() as u64 })),
            ),
        }
    }

    /// Seconds to wait, rounded up, for `Retry-After`.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::Limited(wait) => Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0)),
            Self::Denied(_) => None,
        }
    }
}

/// The steps after authentication for one HTTP request: the principal's rate limit when the
/// request `counts` against it, then, for REST operations (`route`), their roles.
pub async fn check_request(
    state: &AppState,
    principal: &Principal,
    method: &axum::http::Method,
    route: Option<&str>,
    counts: bool,
) -> Result<(), Refusal> {
    if counts {
        state.limits.admit(state, principal, None).await?;
    }
    if let Some(route) = route
        && route.starts_with("/api/")
    {
        state
            .policy
            .rest(principal, method.as_str(), route)
            .map_err(Refusal::Denied)?;
    }
    Ok(())
}

/// The HTTP answer to a refusal: 403 naming the role, or 429 with `Retry-After`.
pub fn refused(state: &AppState, refusal: &Refusal) -> Response {
    state.metrics.refused(refusal.reason());
    match refusal {
        Refusal::Denied(denial) => ApiError::from(domain::Error::Forbidden(refusal.message()))
            .with_required_roles(denial.required.clone())
            .into_response(),
        Refusal::Limited(wait) => ApiError::rate_limited(refusal.message(), *wait).into_response(),
    }
}

/// Admits a call of the gateway tool `tool`: the principal × tool budget, then the roles.
pub async fn admit_tool(
    state: &AppState,
    principal: &Principal,
    tool: &str,
) -> Result<(), Refusal> {
    state.limits.admit(state, principal, Some(tool)).await?;
    state.policy.tool(principal, tool).map_err(Refusal::Denied)
}

/// Admits one message to registered server `server`: the server's roles and, for
/// `tools/call`, the tool's roles and the principal × tool budget (`server/tool`).
pub async fn admit_forward(
    state: &AppState,
    principal: &Principal,
    server: &str,
    method: &str,
    tool: Option<&str>,
) -> Result<(), Refusal> {
    let called = (method == "tools/call").then_some(tool).flatten();
    let admitted = async {
        state
            .policy
            .server(principal, server, called)
            .map_err(Refusal::Denied)?;
        // Without authentication there are no budgets (and no key to build).
        if let Some(tool) = called.filter(|_| state.oauth.is_some()) {
            state
                .limits
                .admit(state, principal, Some(&format!("{server}/{tool}")))
                .await?;
        }
        Ok(())
    }
    .await;
    if let Err(refusal) = &admitted {
        crate::audit::note_refusal(refusal);
    }
    admitted
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
            .server(principal, hit.server.as_str(), Some(&hit.tool.name))
            .is_ok()
    });
}

/// Removes from a `tools/list` result of `server` the tools `principal` may not call.
pub fn filter_tool_list(
    policy: &Policy,
    principal: &Principal,
    server: &str,
    result: &mut serde_json::Value,
) {
    if let Some(tools) = result.get_mut("tools").and_then(|t| t.as_array_mut()) {
        tools.retain(|tool| {
            tool["name"]
                .as_str()
                .is_some_and(|name| policy.server(principal, server, Some(name)).is_ok())
        });
    }
}

/// Which servers `principal` may see and reach: its tenant's, tenantless and shared ones when
/// authentication is on; all of them for the local operator when it is off.
pub fn visibility(state: &AppState, principal: &Principal) -> domain::Visibility {
    if state.oauth.is_none() {
        domain::Visibility::All
    } else {
        domain::Visibility::Tenant(principal.tenant.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn any_policy_file_is_taken_or_refused_without_panicking(text in any::<String>()) {
                let _ = Policy::seed(100).apply(&text);
            }
        }
    }

    fn who(roles: &[&str]) -> Principal {
        Principal {
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            ..Principal::anonymous()
        }
    }

    #[test]
    fn the_seed_mapping_is_the_default() {
        let policy = Policy::seed(100);
        assert!(policy.tool(&who(&["admin"]), "register_server").is_ok());
        let denial = policy
            .tool(&who(&["user"]), "register_server")
            .expect_err("users cannot register");
        assert_eq!(
            denial.to_string(),
            "register_server requires the role admin"
        );
        assert!(policy.tool(&who(&["user"]), "proxy_request").is_ok());
        assert!(policy.tool(&who(&[]), "proxy_request").is_err());
        assert!(
            policy.tool(&who(&[]), "list_servers").is_ok(),
            "unlisted tools are open"
        );
        assert!(
            policy
                .rest(&who(&["user"]), "POST", "/api/v1/servers")
                .is_err()
        );
        assert!(
            policy
                .rest(&who(&["user"]), "GET", "/api/v1/servers")
                .is_ok()
        );
        assert!(
            policy
                .rest(&who(&["user"]), "HEAD", "/api/v1/audit")
                .is_err(),
            "HEAD is decided as GET"
        );
        assert!(policy.server(&who(&[]), "weather", None).is_err());
        assert!(
            policy.server(&who(&["user"]), "weather", None).is_ok(),
            "servers default to the roles of proxy_request"
        );
    }

    #[test]
    fn a_policy_file_overrides_tools_rest_servers_and_budgets() {
        let mut policy = Policy::seed(100);
        policy
            .apply(
                r#"
                [tools]
                register_server = ["operator"]
                [rest]
                "GET /api/v1/servers" = ["reader"]
                [servers.payroll]
                roles = ["finance"]
                tools = { run = ["finance-admin"] }
                [rate_limits]
                per_minute = 10
                roles = { admin = 1000, user = 50 }
                tools = { "payroll/run" = 2 }
                "#,
            )
            .expect("valid");
        assert!(policy.tool(&who(&["operator"]), "register_server").is_ok());
        assert!(policy.tool(&who(&["admin"]), "register_server").is_err());
        assert!(
            policy.tool(&who(&["user"]), "delete_server").is_err(),
            "seed entries stay"
        );
        assert!(policy.rest(&who(&[]), "GET", "/api/v1/servers").is_err());
        assert!(policy.server(&who(&["user"]), "payroll", None).is_err());
        assert!(
            policy
                .server(&who(&["finance"]), "payroll", Some("list"))
                .is_ok()
        );
        assert!(
            policy
                .server(&who(&["finance"]), "payroll", Some("run"))
                .is_err()
        );
        assert!(
            policy
                .server(&who(&["user"]), "weather", Some("run"))
                .is_ok()
        );
        assert!(policy.filters_tools("payroll") && !policy.filters_tools("weather"));
        assert_eq!(policy.principal_budget(&who(&["user", "admin"])), 1000);
        assert_eq!(policy.principal_budget(&who(&["guest"])), 10);
        assert_eq!(policy.tool_budget("payroll/run"), 2);
        assert_eq!(policy.tool_budget("proxy_request"), 10);
        for bad in [
            "[tools]\nx = \"admin\"",
            "[rest]\n\"/api\" = [\"admin\"]",
            "[rate_limits]\nper_minute = 0",
            "[unknown]\nx = 1",
        ] {
            assert!(Policy::seed(1).apply(bad).is_err(), "{bad}");
        }
    }
}

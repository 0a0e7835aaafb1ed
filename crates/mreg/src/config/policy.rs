//! The policy model: who may call which tool, REST operation and registered server, and with
//! what rate-limit budget; the seed document's mapping, overridden by a TOML policy file
//! (`MREG_POLICY_FILE`; its format is in [`crate::policy`], which applies these rules to each
//! request). Plain data and decisions over a [`Principal`], read once with the configuration.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use domain::Principal;
use serde::Deserialize;

/// The name of the `[servers."*"]` rule: what applies to a server without a rule of its own.
pub const DEFAULT_SERVER_RULE: &str = "*";

/// Which servers a per-server rule that names no tenant (`[servers.NAME]`) governs. Server
/// names are unique per tenant, so in a gateway that admits several tenants `NAME` alone would
/// govern every tenant's server of that name; there, `[servers."TENANT/NAME"]` names one, and
/// `[servers."/NAME"]` the one registered without a tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Unqualified {
    /// Every server of that name (a gateway that admits one tenant: its servers and
    /// tenantless ones are all there are).
    #[default]
    Everywhere,
    /// Tenantless servers and those of the home tenant (`AZURE_TENANT_ID`) only; without a home
    /// tenant, tenantless servers only.
    Home(Option<String>),
}

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
    /// Whether any server rule names its tenant (`TENANT/NAME`, `TENANT/*`, or for servers
    /// without a tenant `/NAME`, `/*`).
    qualified: bool,
    unqualified: Unqualified,
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
            qualified: false,
            unqualified: Unqualified::Everywhere,
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
        let mut servers = BTreeMap::new();
        for (key, rule) in file.servers {
            servers.insert(server_key(&key)?, rule);
        }
        self.qualified = servers.keys().any(|k| k.contains('/'));
        self.tools.extend(file.tools);
        self.rest.extend(file.rest);
        self.servers = servers;
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

    /// Scopes the rules that name no tenant to a gateway admitting `several` tenants, whose home
    /// tenant (`AZURE_TENANT_ID`, when it is a GUID) is `home`: they then govern tenantless
    /// servers and the home tenant's only. Without a home tenant, such a rule could mean any
    /// tenant's server: refused, naming the form that says which.
    pub fn scope_to_tenants(
        &mut self,
        several: bool,
        home: Option<&str>,
        admitted: &[String],
    ) -> Result<(), String> {
        // A rule for a tenant whose users cannot sign in is a typo that would leave the
        // server it meant to the default rule.
        if !admitted.is_empty()
            && let Some(key) = self.servers.keys().find(|k| {
                k.split_once('/').is_some_and(|(t, _)| {
                    !t.is_empty() && !admitted.iter().any(|a| a.eq_ignore_ascii_case(t))
                })
            })
        {
            return Err(format!(
                "[servers.\"{key}\"] names a tenant this gateway does not admit (AZURE_TENANT_ID, \
                 AZURE_ALLOWED_TENANTS: {})",
                admitted.join(", ")
            ));
        }
        if !several {
            self.unqualified = Unqualified::Everywhere;
            return Ok(());
        }
        match home {
            Some(home) => {
                self.unqualified = Unqualified::Home(Some(home.to_ascii_lowercase()));
                Ok(())
            }
            None => match self
                .servers
                .keys()
                .find(|k| *k != DEFAULT_SERVER_RULE && !k.contains('/'))
            {
                Some(name) => Err(format!(
                    "[servers.{name}] names no tenant, and this gateway admits several tenants, \
                     each of which may have a server called '{name}': write \
                     [servers.\"TENANT-ID/{name}\"] for the one it governs, or \
                     [servers.\"/{name}\"] for the one registered without a tenant"
                )),
                None => {
                    self.unqualified = Unqualified::Home(None);
                    Ok(())
                }
            },
        }
    }

    /// The rule of the server `name` of `tenant` and the default rule that applies to it:
    /// `TENANT/NAME`, else `NAME` when it governs that tenant's servers ([`Unqualified`]); and
    /// `TENANT/*`, else `*`.
    fn rules_of(
        &self,
        tenant: Option<&str>,
        name: &str,
    ) -> (Option<&ServerRule>, Option<&ServerRule>) {
        // Every proxied message asks: nothing is allocated unless a rule names a tenant.
        // `/NAME` is the key of a server without a tenant; a tenant id that is empty (a generic
        // provider may send one) names no rule.
        let qualified = |what: &str| {
            let prefix = match tenant {
                _ if !self.qualified => return None,
                None => String::new(),
                Some("") => return None,
                Some(t) => t.to_ascii_lowercase(),
            };
            self.servers.get(&format!("{prefix}/{what}"))
        };
        let unqualified_applies = match &self.unqualified {
            Unqualified::Everywhere => true,
            Unqualified::Home(home) => tenant.is_none_or(|t| {
                home.as_deref()
                    .is_some_and(|home| t.eq_ignore_ascii_case(home))
            }),
        };
        let own = qualified(name).or_else(|| {
            unqualified_applies
                .then(|| self.servers.get(name))
                .flatten()
        });
        let default =
            qualified(DEFAULT_SERVER_RULE).or_else(|| self.servers.get(DEFAULT_SERVER_RULE));
        (own, default)
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

    /// May `principal` use the server called `server` of `tenant` through the gateway, and call
    /// `tool` there when given? The server's own rule decides (`TENANT/NAME`, else `NAME` as
    /// [`Unqualified`] says), else the default rule (`TENANT/*`, else `*`), else the roles of
    /// `proxy_request` (the same capability through the gateway's own tool):
    /// `/servers/NAME/mcp` and `proxy_request` admit exactly the same callers.
    pub fn server(
        &self,
        principal: &Principal,
        tenant: Option<&str>,
        server: &str,
        tool: Option<&str>,
    ) -> Result<(), Denial> {
        let (own, default) = self.rules_of(tenant, server);
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

    /// The servers among `named` (registrations of one name) that the rule `[servers.NAME]`
    /// names but does not govern: in a gateway admitting several tenants, another tenant's own
    /// server of that name without a `TENANT/NAME` rule of its own. They follow the default rule,
    /// which an operator whose rule governed every tenant's server before names were per tenant
    /// should hear about. Empty when no unqualified rule names them.
    pub fn left_to_default<'a>(&self, named: &'a [domain::Server]) -> Vec<&'a domain::Server> {
        if matches!(self.unqualified, Unqualified::Everywhere) {
            return Vec::new();
        }
        named
            .iter()
            .filter(|s| {
                self.servers.contains_key(s.name.as_str())
                    && self
                        .rules_of(s.tenant.as_deref(), s.name.as_str())
                        .0
                        .is_none()
            })
            .collect()
    }

    /// The names of the per-server rules that name no tenant (`[servers.NAME]`, not `*`).
    pub fn unqualified_server_rules(&self) -> impl Iterator<Item = &str> {
        self.servers
            .keys()
            .map(String::as_str)
            .filter(|k| *k != DEFAULT_SERVER_RULE && !k.contains('/'))
    }

    /// Whether the server `server` of `tenant` has per-tool rules, its own or the default's (its
    /// `tools/list` answers must be filtered).
    pub fn filters_tools(&self, tenant: Option<&str>, server: &str) -> bool {
        let (own, default) = self.rules_of(tenant, server);
        [own, default]
            .into_iter()
            .flatten()
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

/// A `[servers]` key as the rules are looked up: `*`, `NAME`, `TENANT/NAME` or `TENANT/*` (the
/// tenant's id, in lowercase), `/NAME` or `/*` (servers registered without a tenant).
fn server_key(key: &str) -> Result<String, String> {
    let (tenant, name) = match key.split_once('/') {
        Some((tenant, name)) => (Some(tenant), name),
        None => (None, key),
    };
    if let Some(tenant) = tenant
        && tenant.contains(char::is_whitespace)
    {
        return Err(format!(
            "[servers.\"{key}\"]: the part before '/' must be a tenant id (or nothing, for \
             servers registered without a tenant)"
        ));
    }
    if name != DEFAULT_SERVER_RULE {
        domain::ServerName::parse(name).map_err(|e| format!("[servers.\"{key}\"]: {e}"))?;
    }
    Ok(match tenant {
        Some(tenant) => format!("{}/{name}", tenant.to_ascii_lowercase()),
        None => name.to_owned(),
    })
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

    /// Seconds to wait, rounded up, for `Retry-After`.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::Limited(wait) => Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0)),
            Self::Denied(_) => None,
        }
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
        assert!(policy.server(&who(&[]), None, "weather", None).is_err());
        assert!(
            policy
                .server(&who(&["user"]), None, "weather", None)
                .is_ok(),
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
        assert!(
            policy
                .server(&who(&["user"]), None, "payroll", None)
                .is_err()
        );
        assert!(
            policy
                .server(&who(&["finance"]), None, "payroll", Some("list"))
                .is_ok()
        );
        assert!(
            policy
                .server(&who(&["finance"]), None, "payroll", Some("run"))
                .is_err()
        );
        assert!(
            policy
                .server(&who(&["user"]), None, "weather", Some("run"))
                .is_ok()
        );
        assert!(policy.filters_tools(None, "payroll") && !policy.filters_tools(None, "weather"));
        assert_eq!(policy.principal_budget(&who(&["user", "admin"])), 1000);
        assert_eq!(policy.principal_budget(&who(&["guest"])), 10);
        assert_eq!(policy.tool_budget("payroll/run"), 2);
        assert_eq!(policy.tool_budget("proxy_request"), 10);
        for bad in [
            "[tools]\nx = \"admin\"",
            "[rest]\n\"/api\" = [\"admin\"]",
            "[rate_limits]\nper_minute = 0",
            "[unknown]\nx = 1",
            "[servers.\"Bad Name\"]\nroles = []",
            "[servers.\"the tenant/payroll\"]\nroles = []",
            "[servers.\"/\"]\nroles = []",
        ] {
            assert!(Policy::seed(1).apply(bad).is_err(), "{bad}");
        }
    }

    const HOME: &str = "11111111-1111-1111-1111-111111111111";
    const OTHER: &str = "44444444-4444-4444-4444-444444444444";

    #[test]
    fn a_rule_without_a_tenant_governs_only_tenantless_and_home_servers_among_several_tenants() {
        let mut policy = Policy::seed(100);
        policy
            .apply(&format!(
                "[servers.payroll]\nroles = [\"finance\"]\n\
                 [servers.\"{}/payroll\"]\nroles = [\"auditor\"]\n\
                 [servers.\"{OTHER}/*\"]\nroles = [\"other-user\"]\n",
                OTHER.to_uppercase()
            ))
            .expect("valid");
        // One tenant admitted: `payroll` is every payroll there is.
        policy
            .scope_to_tenants(false, Some(HOME), &[])
            .expect("one tenant");
        let finance = who(&["finance"]);
        assert!(policy.server(&finance, Some(HOME), "payroll", None).is_ok());
        // Several: the home tenant's and the tenantless payroll follow `payroll`; the other
        // tenant's follows its own qualified rule (tenant ids compared without case), and its
        // other servers its `TENANT/*` default instead of the roles of proxy_request.
        policy
            .scope_to_tenants(true, Some(HOME), &[])
            .expect("a home");
        assert!(policy.server(&finance, Some(HOME), "payroll", None).is_ok());
        assert!(policy.server(&finance, None, "payroll", None).is_ok());
        assert!(
            policy
                .server(&finance, Some(OTHER), "payroll", None)
                .is_err()
        );
        assert!(
            policy
                .server(&who(&["auditor"]), Some(OTHER), "payroll", None)
                .is_ok()
        );
        assert!(
            policy
                .server(&who(&["user"]), Some(OTHER), "weather", None)
                .is_err()
        );
        assert!(
            policy
                .server(&who(&["other-user"]), Some(OTHER), "weather", None)
                .is_ok()
        );
        assert!(
            policy
                .server(&who(&["user"]), Some(HOME), "weather", None)
                .is_ok()
        );
        // A third tenant's payroll is governed by neither rule: the default applies.
        let third = Some("55555555-5555-5555-5555-555555555555");
        assert!(
            policy
                .server(&who(&["user"]), third, "payroll", None)
                .is_ok()
        );
        assert!(policy.server(&finance, third, "payroll", None).is_err());
        // Several tenants and no home: a rule naming no tenant is refused at start.
        let refused = policy
            .scope_to_tenants(true, None, &[])
            .expect_err("ambiguous");
        assert!(refused.contains("TENANT-ID/payroll"), "{refused}");
        let mut qualified_only = Policy::seed(100);
        qualified_only
            .apply(&format!(
                "[servers.\"{OTHER}/payroll\"]\nroles = [\"a\"]\n[servers.\"*\"]\nroles = []"
            ))
            .expect("valid");
        qualified_only
            .clone()
            .scope_to_tenants(true, None, &[OTHER.to_owned()])
            .expect("every rule names an admitted tenant");
        let typo = qualified_only
            .scope_to_tenants(true, None, &[HOME.to_owned()])
            .expect_err("a tenant not admitted");
        assert!(typo.contains("does not admit"), "{typo}");
    }

    #[test]
    fn servers_without_a_tenant_have_rules_of_their_own_among_several_tenants() {
        let mut policy = Policy::seed(100);
        policy
            .apply(&format!(
                "[servers.\"/payroll\"]\nroles = [\"finance\"]\n\
                 [servers.\"/*\"]\nroles = [\"staff\"]\n\
                 [servers.\"{OTHER}/*\"]\nroles = [\"other-user\"]\n"
            ))
            .expect("valid");
        // Several tenants and no home: accepted, since every rule says whose server it means.
        policy
            .scope_to_tenants(true, None, &[OTHER.to_owned(), HOME.to_owned()])
            .expect("no ambiguous rule");
        // (roles, the server's tenant, server, admitted?)
        for (roles, tenant, server, admitted) in [
            // The tenantless payroll follows "/payroll", not "/*".
            ("finance", None, "payroll", true),
            ("staff", None, "payroll", false),
            // Other tenantless servers follow "/*".
            ("staff", None, "weather", true),
            ("finance", None, "weather", false),
            // A tenant's own payroll follows neither: its tenant's default.
            ("finance", Some(OTHER), "payroll", false),
            ("other-user", Some(OTHER), "payroll", true),
            // The home tenant's payroll (none here) follows "*", i.e. the roles of proxy_request.
            ("user", Some(HOME), "payroll", true),
            // A server whose tenant id is empty is not one without a tenant.
            ("staff", Some(""), "weather", false),
        ] {
            assert_eq!(
                policy.server(&who(&[roles]), tenant, server, None).is_ok(),
                admitted,
                "{roles} on {tenant:?}'s {server}"
            );
        }
        // The refusal of an ambiguous rule names both forms.
        let mut ambiguous = Policy::seed(100);
        ambiguous
            .apply("[servers.payroll]\nroles = [\"finance\"]\n")
            .expect("valid");
        let refused = ambiguous
            .scope_to_tenants(true, None, &[])
            .expect_err("ambiguous");
        assert!(refused.contains("[servers.\"/payroll\"]"), "{refused}");
    }
}

//! The registry tools of the gateway's own MCP server. Each tool parses its arguments, calls the
//! same domain services as the REST API, and answers with structured content plus a line of text
//! a person can read. Failures are tool errors (`isError: true`) whose text says what to do.

use std::sync::Arc;

use axum::http::request::Parts;
use domain::{Principal, Server, ServerDraft};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::{Extension, IntoCallToolResult};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ErrorData, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::listing::ServerView;
use crate::state::AppState;

/// The gateway's MCP server: one instance per session (or per stateless request), sharing
/// [`AppState`].
#[derive(Clone)]
pub struct RegistryTools {
    state: AppState,
    /// Built once ([`RegistryTools::router`]) and shared: a stateless request gets an instance
    /// of its own, and building the router (a map of the tools and their schemas) per request
    /// cost a few percent of each call.
    tool_router: Arc<ToolRouter<Self>>,
}

/// Arguments of `register_server`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterServerArgs {
    /// Unique name: 1-63 characters of a-z, 0-9 and '-', starting with a letter.
    pub name: String,
    /// URL of the server's MCP endpoint (http or https).
    pub url: String,
    /// What the server is for.
    #[serde(default)]
    pub description: Option<String>,
    /// Labels for discovery (a-z, 0-9, '.', '_', '-').
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// `streamable-http` (default) or `sse`.
    #[serde(default)]
    pub transport: Option<String>,
}

/// Arguments of the tools that name one server.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerNameArgs {
    /// The server's name.
    pub name: String,
}

/// Arguments of `list_servers`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListServersArgs {
    /// Only servers with this tag.
    #[serde(default)]
    pub tag: Option<String>,
    /// Only servers in this status: active, deprecated or disabled.
    #[serde(default)]
    pub status: Option<String>,
    /// Only servers whose name, description or tags contain this text.
    #[serde(default)]
    pub query: Option<String>,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Page size, 1-500 (default 50).
    #[serde(default)]
    pub limit: Option<u32>,
    /// Only servers in this health: healthy, degraded, unhealthy or unknown.
    #[serde(default)]
    pub health: Option<String>,
    /// Order: name (default) or health (healthiest first).
    #[serde(default)]
    pub sort: Option<String>,
}

/// Arguments of `search_tools`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchToolsArgs {
    /// Text to find in tool names, titles and descriptions.
    pub query: String,
    /// Only tools of servers in this health: healthy, degraded, unhealthy or unknown.
    #[serde(default)]
    pub health: Option<String>,
    /// At most this many (1-500, default 50).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// Arguments of `proxy_request`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProxyRequestArgs {
    /// Name of the registered server.
    pub server: String,
    /// The MCP method, e.g. `tools/list`, `tools/call`, `resources/read`, `prompts/get`.
    pub method: String,
    /// The method's params, e.g. `{"name": "echo", "arguments": {"text": "hi"}}` for tools/call.
    #[serde(default)]
    pub params: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Longest result text shown to people; the structured content is always complete.
const MAX_RESULT_TEXT: usize = 8_000;

/// A successful result: `value` as structured content, `text` for people.
pub fn success(text: impl Into<String>, value: &impl Serialize) -> CallToolResult {
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = serde_json::to_value(value).ok();
    result
}

/// A failed result whose text explains the problem.
pub fn failure(error: domain::Error) -> CallToolResult {
    let text = match error {
        domain::Error::Internal(detail) => {
            tracing::error!(%detail, "internal error in an MCP tool");
            "internal error; the gateway's log has the details".to_owned()
        }
        domain::Error::Unavailable { ref source, .. } => {
            let cause = source.as_deref().map(|s| domain::text::root_cause(s));
            tracing::warn!(error = %error, cause = cause.as_deref(), "dependency unavailable");
            error.to_string()
        }
        domain::Error::Forbidden(_) => {
            crate::audit::note_denied();
            error.to_string()
        }
        other => other.to_string(),
    };
    CallToolResult::error(vec![ContentBlock::text(text)])
}

/// A tool's failure: the error result [`failure`] makes of a domain error, so that tool bodies
/// return `Result<CallToolResult, ToolFailure>` and use `?`.
pub struct ToolFailure(CallToolResult);

impl From<domain::Error> for ToolFailure {
    fn from(error: domain::Error) -> Self {
        Self(failure(error))
    }
}

impl IntoCallToolResult for ToolFailure {
    fn into_call_tool_result(self) -> Result<rmcp::model::CallToolResponse, ErrorData> {
        Ok(self.0.into())
    }
}

fn principal(parts: &Parts) -> Result<Arc<Principal>, domain::Error> {
    parts
        .extensions
        .get::<Arc<Principal>>()
        .cloned()
        .ok_or_else(|| domain::Error::Unauthenticated("no credentials were presented".to_owned()))
}

fn describe(server: &Server) -> String {
    let mut line = format!(
        "{} ({}, {}) at {}",
        server.name,
        server.status.as_str(),
        server.transport.as_str(),
        server.url
    );
    if !server.description.is_empty() {
        line.push_str(&format!(": {}", server.description));
    }
    line
}

/// One line about a server with its health and its endpoint on the gateway.
fn describe_view(view: &ServerView) -> String {
    format!(
        "{}; health {} ({}); reach it at {}",
        describe(&view.server),
        view.health.state.as_str(),
        view.health.reason,
        view.gateway_url
    )
}

/// A refusal as a JSON-RPC error: what is missing, or when to retry (`data.retry_after_ms`).
fn policy_error(refusal: &crate::policy::Refusal) -> ErrorData {
    let (code, data) = crate::policy::answer::rpc(refusal);
    ErrorData::new(
        rmcp::model::ErrorCode(code as i32),
        refusal.message(),
        Some(data),
    )
}

impl RegistryTools {
    /// The server called `name`, if the caller may see it.
    async fn visible_server(&self, parts: &Parts, name: &str) -> Result<Server, domain::Error> {
        let caller = principal(parts)?;
        let visibility = self.state.gate.visibility(&caller);
        self.state.registry.get_visible(name, &visibility).await
    }
}

#[tool_router]
impl RegistryTools {
    /// The gateway's tools as `tools/list` describes them (name, description, argument schema),
    /// for the API documentation.
    pub fn catalog() -> Vec<rmcp::model::Tool> {
        Self::tool_router().list_all()
    }

    /// The tools, to be shared by every instance ([`RegistryTools::new`]).
    pub fn router() -> Arc<ToolRouter<Self>> {
        Arc::new(Self::tool_router())
    }

    /// Tools over `state`, dispatched by `router` (from [`RegistryTools::router`]).
    pub fn new(state: AppState, router: Arc<ToolRouter<Self>>) -> Self {
        Self {
            state,
            tool_router: router,
        }
    }

    #[tool(
        description = "Register an MCP server in the gateway's registry so that it can be discovered and reached through the gateway."
    )]
    async fn register_server(
        &self,
        Parameters(args): Parameters<RegisterServerArgs>,
        Extension(parts): Extension<Parts>,
    ) -> Result<CallToolResult, ToolFailure> {
        let caller = principal(&parts)?;
        let draft = ServerDraft {
            name: args.name,
            url: args.url,
            transport: args.transport,
            description: args.description,
            tags: args.tags,
            ..ServerDraft::default()
        };
        let server = self.state.registry.create(&caller, draft).await?;
        Ok(success(
            format!("Registered {}", describe(&server)),
            &server,
        ))
    }

    #[tool(
        description = "Remove an MCP server from the gateway's registry.",
        annotations(destructive_hint = true)
    )]
    async fn delete_server(
        &self,
        Parameters(args): Parameters<ServerNameArgs>,
        Extension(parts): Extension<Parts>,
    ) -> Result<CallToolResult, ToolFailure> {
        let caller = principal(&parts)?;
        let visibility = self.state.gate.visibility(&caller);
        let deleted = self
            .state
            .registry
            .delete(&caller, &visibility, &args.name)
            .await?;
        self.state.metrics.forget_server(&deleted);
        Ok(success(
            format!("Removed server '{}'", args.name),
            &json!({ "deleted": args.name }),
        ))
    }

    #[tool(
        description = "List registered MCP servers, optionally filtered by tag, status or text, one page at a time.",
        annotations(read_only_hint = true)
    )]
    async fn list_servers(
        &self,
        Parameters(args): Parameters<ListServersArgs>,
        Extension(parts): Extension<Parts>,
    ) -> Result<CallToolResult, ToolFailure> {
        let caller = principal(&parts)?;
        let filter = crate::listing::ServerFilter {
            tag: args.tag.as_deref(),
            status: args.status.as_deref(),
            text: args.query.as_deref(),
            cursor: args.cursor.as_deref(),
            limit: args.limit,
            health: args.health.as_deref(),
            sort: args.sort.as_deref(),
        };
        let (views, next_cursor) =
            crate::listing::servers(&self.state, &caller, &filter, "query").await?;
        let mut text = if views.is_empty() {
            "No servers match.".to_owned()
        } else {
            format!("{} server(s):", views.len())
        };
        for view in &views {
            text.push_str(&format!("\n- {}", describe_view(view)));
        }
        if next_cursor.is_some() {
            text.push_str("\nMore servers follow; pass next_cursor as cursor.");
        }
        Ok(success(
            text,
            &json!({ "servers": views, "next_cursor": next_cursor }),
        ))
    }

    #[tool(
        description = "Forward one MCP request (for example tools/list, tools/call or resources/read) to a registered server and return its result."
    )]
    async fn proxy_request(
        &self,
        Parameters(args): Parameters<ProxyRequestArgs>,
        Extension(parts): Extension<Parts>,
    ) -> Result<CallToolResult, ToolFailure> {
        let caller = principal(&parts)?;
        let route = self.state.proxy.route_for(&caller, &args.server).await?;
        let server = &route.server;
        let params = args.params.map(serde_json::Value::Object);
        let result = crate::proxy::forward::forward_one(
            &self.state.proxy,
            &caller,
            &route,
            &args.method,
            params,
        )
        .await?;
        let mut text = serde_json::to_string(&result).unwrap_or_default();
        if text.len() > MAX_RESULT_TEXT {
            let cut = (0..=MAX_RESULT_TEXT)
                .rev()
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(0);
            text.truncate(cut);
            text.push_str("… (truncated; the structured content has all of it)");
        }
        Ok(success(
            format!("{} answered {}: {text}", server.name, args.method),
            &json!({ "server": server.name, "method": args.method, "result": result }),
        ))
    }

    #[tool(
        description = "Show a registered server's health: its status now, uptime over the last 24 hours and its recent probes.",
        annotations(read_only_hint = true)
    )]
    async fn get_server_health(
        &self,
        Parameters(args): Parameters<ServerNameArgs>,
        Extension(parts): Extension<Parts>,
    ) -> Result<CallToolResult, ToolFailure> {
        let server = self.visible_server(&parts, &args.name).await?;
        let report = self.state.health.report(&server, 24).await?;
        let mut text = format!("{} is {}", server.name, report.current.status.as_str());
        if let Some(check) = &report.current.last_check {
            text.push_str(&format!(
                "; last probe {} ({} ms){}",
                check.outcome.as_str(),
                check.latency_ms,
                check
                    .detail
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            ));
        }
        if let Some(ratio) = report.uptime.ratio {
            text.push_str(&format!(
                "; uptime {:.1}% over {} probes in 24 h",
                ratio * 100.0,
                report.uptime.checks
            ));
        }
        Ok(success(text, &report))
    }

    #[tool(
        description = "Search the tools offered by registered servers (name, title, description); every hit carries its server's health, healthiest first.",
        annotations(read_only_hint = true)
    )]
    async fn search_tools(
        &self,
        Parameters(args): Parameters<SearchToolsArgs>,
        Extension(parts): Extension<Parts>,
    ) -> Result<CallToolResult, ToolFailure> {
        let caller = principal(&parts)?;
        let hits = crate::listing::tools(
            &self.state,
            &caller,
            Some(&args.query),
            args.health.as_deref(),
            args.limit,
            "query",
        )
        .await?;
        let mut text = if hits.is_empty() {
            format!("No tools match '{}'.", args.query)
        } else {
            format!("{} tool(s):", hits.len())
        };
        for hit in &hits {
            text.push_str(&format!(
                "\n- {} on {} ({}): {}",
                hit.tool.name,
                hit.server,
                hit.health.as_str(),
                hit.tool.description
            ));
        }
        Ok(success(text, &json!({ "tools": hits })))
    }

    #[tool(
        description = "Show one registered MCP server.",
        annotations(read_only_hint = true)
    )]
    async fn get_server(
        &self,
        Parameters(args): Parameters<ServerNameArgs>,
        Extension(parts): Extension<Parts>,
    ) -> Result<CallToolResult, ToolFailure> {
        let server = self.visible_server(&parts, &args.name).await?;
        let view = ServerView::of(&self.state, server).await?;
        Ok(success(describe_view(&view), &view))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for RegistryTools {
    /// Every tool call passes the policy chain first: the caller's budget for the tool, then
    /// its roles.
    async fn call_tool(
        &self,
        request: rmcp::model::CallToolRequestParams,
        context: rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, ErrorData> {
        let parts = context.extensions.get::<Parts>();
        let caller = parts.and_then(|parts| parts.extensions.get::<Arc<Principal>>().cloned());
        let Some(caller) = caller else {
            // Only reachable if the listener were mounted without authentication.
            return Err(ErrorData::internal_error(
                "the caller is not known; the request was not run",
                None,
            ));
        };
        let request_id = parts.map_or("-", |parts| crate::http::request_id::of(&parts.extensions));
        let mut entry = self
            .state
            .audit
            .open(&caller, request_id, request.name.as_ref())
            .await
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        let arguments = request.arguments.as_ref();
        let server = arguments
            .and_then(|a| a.get("server").or_else(|| a.get("name")))
            .and_then(|v| v.as_str());
        entry.target(Some(&request.name), server);
        if let Some(arguments) = arguments {
            entry.arguments(serde_json::Value::Object(arguments.clone()));
        }
        if let Err(refusal) = self.state.gate.admit_tool(&caller, &request.name).await {
            let error = policy_error(&refusal);
            entry.refused(&refusal);
            return Err(error);
        }
        // Cancelled by the client (notifications/cancelled) or by shutdown ending the session:
        // the call stops here and its entry, dropped, records that it was cancelled.
        let cancelled = context.ct.clone();
        let cut_off = self.state.tasks.cut_off();
        let changes = matches!(request.name.as_ref(), "register_server" | "delete_server");
        let call = rmcp::handler::server::tool::ToolCallContext::new(self, request, context);
        let (result, watched) = tokio::select! {
            done = crate::audit::watch(self.tool_router.call(call)) => done,
            () = cancelled.cancelled() => {
                drop(entry);
                return Err(ErrorData::internal_error("the call was cancelled", None));
            }
            // The grace period of a shutdown ended first: the caller is told, in its session,
            // before its connection closes (the row says cancelled by the shutdown).
            () = cut_off.cancelled() => {
                drop(entry);
                return Err(ErrorData::internal_error(
                    "the call was cut off: mreg is stopping and its shutdown grace period (MREG_SHUTDOWN_GRACE_SECS) ended before the call did; try again",
                    None,
                ));
            }
        };
        entry.watched(&watched);
        let outcome = match &result {
            Ok(rmcp::model::CallToolResponse::Complete(done)) if done.is_error == Some(true) => {
                Err(done
                    .content
                    .iter()
                    .filter_map(|c| c.as_text().map(|t| t.text.clone()))
                    .collect::<Vec<_>>()
                    .join(" "))
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e.message.to_string()),
        };
        // A change through a tool is answered once its row is kept, as one through REST.
        if changes {
            entry.finish_kept(outcome).await;
        } else {
            entry.finish(outcome);
        }
        result
    }

    /// Lists only the tools the caller may call.
    async fn list_tools(
        &self,
        _request: Option<rmcp::model::PaginatedRequestParams>,
        context: rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<rmcp::model::ListToolsResult, ErrorData> {
        let caller = context
            .extensions
            .get::<Parts>()
            .and_then(|parts| parts.extensions.get::<Arc<Principal>>().cloned());
        let mut tools = self.tool_router.list_all();
        if let Some(caller) = caller {
            tools.retain(|tool| self.state.gate.rules().tool(&caller, &tool.name).is_ok());
        }
        let hints = context
            .protocol_version()
            .is_some_and(|v| v >= rmcp::model::ProtocolVersion::V_2026_07_28);
        Ok(rmcp::model::ListToolsResult {
            result_type: Some(rmcp::model::ResultType::COMPLETE),
            tools,
            meta: None,
            next_cursor: None,
            ttl_ms: hints.then_some(0),
            cache_scope: hints.then_some(rmcp::model::CacheScope::Private),
        })
    }

    /// No resources: an empty list rather than "method not found", which clients that list
    /// everything on connect report as an error.
    async fn list_resources(
        &self,
        _request: Option<rmcp::model::PaginatedRequestParams>,
        _context: rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<rmcp::model::ListResourcesResult, ErrorData> {
        Ok(rmcp::model::ListResourcesResult::default())
    }

    /// No resource templates: an empty list.
    async fn list_resource_templates(
        &self,
        _request: Option<rmcp::model::PaginatedRequestParams>,
        _context: rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<rmcp::model::ListResourceTemplatesResult, ErrorData> {
        Ok(rmcp::model::ListResourceTemplatesResult::default())
    }

    /// No prompts: an empty list.
    async fn list_prompts(
        &self,
        _request: Option<rmcp::model::PaginatedRequestParams>,
        _context: rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<rmcp::model::ListPromptsResult, ErrorData> {
        Ok(rmcp::model::ListPromptsResult::default())
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("mreg", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "mreg is an MCP registry gateway. Use list_servers, get_server and search_tools to discover MCP servers and their tools, get_server_health to see whether a server is up, proxy_request to call a registered server, and register_server / delete_server to manage the registry.",
            )
    }
}

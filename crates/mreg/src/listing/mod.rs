//! Listing servers and tools the same way on every edge (REST, `/v0.1`, the gateway's MCP
//! tools): the view of a server with its gateway URL and health, page cursors, and the tool
//! search query.

pub mod cursor;

use domain::{HealthStatus, Principal, Server, ServerQuery, ToolHit, ToolQuery};
use serde::Serialize;
use utoipa::ToSchema;

use crate::health::summary::HealthSummary;
use crate::state::AppState;

/// A server as the API shows it: the registration, where callers reach it through the
/// gateway, and its health in short.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerView {
    /// The registration.
    #[serde(flatten)]
    pub server: Server,
    /// The server's endpoint on the gateway (`{gateway}/servers/NAME/mcp`): where MCP clients
    /// reach it.
    #[schema(example = "http://127.0.0.1:8001/servers/weather/mcp")]
    pub gateway_url: String,
    /// Its health now.
    pub health: HealthSummary,
}

impl ServerView {
    /// The view of `server`, with its health read from the store.
    pub async fn of(state: &AppState, server: Server) -> domain::Result<Self> {
        let health = state.health.summary(&server).await?;
        Ok(Self::with(state, server, health))
    }

    /// The views of servers read with their health ([`domain::Registry::list_with_health`]).
    pub async fn all_with_health(
        state: &AppState,
        servers: Vec<(Server, Option<domain::Health>)>,
    ) -> domain::Result<Vec<Self>> {
        let healths = state.health.summaries_of(&servers).await?;
        Ok(servers
            .into_iter()
            .zip(healths)
            .map(|((server, _), health)| Self::with(state, server, health))
            .collect())
    }

    fn with(state: &AppState, server: Server, health: HealthSummary) -> Self {
        Self {
            gateway_url: format!("{}/servers/{}/mcp", state.gateway_url, server.name),
            server,
            health,
        }
    }
}

/// Parses tool search parameters (shared with the `search_tools` MCP tool).
pub fn tool_query(
    visibility: domain::Visibility,
    text: Option<&str>,
    health: Option<&str>,
    limit: Option<u32>,
) -> domain::Result<ToolQuery> {
    let limit = limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(domain::Error::invalid("limit", "must be between 1 and 500"));
    }
    let text = text
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase);
    if text.as_ref().is_some_and(|t| t.chars().count() > 200) {
        return Err(domain::Error::invalid("q", "is longer than 200 characters"));
    }
    Ok(ToolQuery {
        visibility,
        text,
        health: health
            .map(|h| HealthStatus::parse_field(h, "health"))
            .transpose()?,
        limit,
    })
}

/// A page of servers as a caller asks for it on any edge; each field is as the caller typed
/// it, and is validated here.
#[derive(Debug, Default)]
pub struct ServerFilter<'a> {
    /// Only servers with this tag.
    pub tag: Option<&'a str>,
    /// Only servers in this status.
    pub status: Option<&'a str>,
    /// Only servers whose name, description or tags contain this text.
    pub text: Option<&'a str>,
    /// Where to continue (a cursor handed out with the previous page).
    pub cursor: Option<&'a str>,
    /// Page size.
    pub limit: Option<u32>,
    /// Only servers in this health.
    pub health: Option<&'a str>,
    /// `name` or `health`.
    pub sort: Option<&'a str>,
}

/// The page of servers `caller` asked for with `filter`, and the cursor of the next page.
/// `text_param` is what the edge calls the text filter (`q` on REST, `query` for the MCP
/// tool), so that an error names the parameter the caller sent.
pub async fn servers(
    state: &AppState,
    caller: &Principal,
    filter: &ServerFilter<'_>,
    text_param: &str,
) -> domain::Result<(Vec<ServerView>, Option<String>)> {
    let mut query = ServerQuery::parse(filter.tag, filter.status, filter.text, filter.limit)
        .map_err(|e| renamed(e, text_param))?;
    query.sort = filter
        .sort
        .map(|s| domain::ServerSort::parse_field(s, "sort"))
        .transpose()?
        .unwrap_or_default();
    cursor::apply(&mut query, filter.cursor)?;
    query.health = filter
        .health
        .map(|h| HealthStatus::parse_field(h, "health"))
        .transpose()?;
    query.visibility = state.gate.visibility(caller);
    let page = state.registry.list_with_health(&query).await?;
    let next_cursor = cursor::next(&page, query.sort);
    Ok((
        ServerView::all_with_health(state, page.items).await?,
        next_cursor,
    ))
}

/// The catalog's tools matching `text` (and `health`) that `caller` may see and call, at most
/// `limit`; `text_param` as for [`servers`].
pub async fn tools(
    state: &AppState,
    caller: &Principal,
    text: Option<&str>,
    health: Option<&str>,
    limit: Option<u32>,
    text_param: &str,
) -> domain::Result<Vec<ToolHit>> {
    let query = tool_query(state.gate.visibility(caller), text, health, limit)
        .map_err(|e| renamed(e, text_param))?;
    let mut hits = state.stores.catalog.search_tools(&query).await?;
    crate::policy::callable_hits(state.gate.rules(), caller, &mut hits);
    Ok(hits)
}

/// An invalid text filter, named as the edge names it.
fn renamed(error: domain::Error, text_param: &str) -> domain::Error {
    match error {
        domain::Error::Invalid { field, message } if field == "q" && text_param != "q" => {
            domain::Error::invalid(text_param, message)
        }
        other => other,
    }
}

//! Listing servers and tools the same way on every edge (REST, `/v0.1`, the gateway's MCP
//! tools): the view of a server with its gateway URL and health, page cursors, and the tool
//! search query.

pub mod cursor;

use domain::{HealthStatus, Server, ToolQuery};
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

//! `GET /api/v1/audit`: the audit log, newest first, with filters and cursor paging. Admins
//! only by default (`GET /api/v1/audit` in the policy file); with authentication on, a caller
//! from a tenant sees only rows of actors from that tenant.

use axum::Json;
use axum::extract::State;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use domain::Error;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::Query;
use crate::authn::Caller;
use domain::AuditFilter;
use domain::audit::AuditRecord;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit))
}

/// Filters and paging of `GET /api/v1/audit`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Actor's subject or e-mail.
    #[serde(default, deserialize_with = "super::extract::empty_as_none")]
    actor: Option<String>,
    /// Tool called.
    #[serde(default, deserialize_with = "super::extract::empty_as_none")]
    tool: Option<String>,
    /// Registered server addressed.
    #[serde(default, deserialize_with = "super::extract::empty_as_none")]
    server: Option<String>,
    /// `allow`, `deny` or `rate_limited`.
    #[serde(default, deserialize_with = "super::extract::empty_as_none")]
    decision: Option<String>,
    /// Operation, e.g. `register_server`, `tools/call`, `POST /api/v1/servers`, `oauth.token`.
    #[serde(default, deserialize_with = "super::extract::empty_as_none")]
    operation: Option<String>,
    /// Only rows from this time on (RFC 3339).
    #[serde(default, deserialize_with = "super::extract::empty_as_none")]
    since: Option<String>,
    /// Only rows before this time (RFC 3339).
    #[serde(default, deserialize_with = "super::extract::empty_as_none")]
    until: Option<String>,
    /// Where to continue: the `next_cursor` of the previous page.
    #[serde(default, deserialize_with = "super::extract::empty_as_none")]
    cursor: Option<String>,
    /// Page size, 1-500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
}

/// Who did it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Actor {
    /// Subject (Entra object id); `anonymous` with authentication off, `unauthenticated` for
    /// OAuth requests before sign-in.
    pub subject: String,
    /// E-mail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// OAuth client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// One audit row.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    /// Position in the hash chain.
    pub seq: i64,
    /// Event id.
    pub id: String,
    /// When it started (RFC 3339).
    pub time: String,
    /// The request id (`x-request-id`).
    pub request_id: String,
    /// Who.
    pub actor: Actor,
    /// What.
    pub operation: String,
    /// Tool called.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// Server addressed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The tenant of the server addressed, when it has one (names are per tenant).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_tenant: Option<String>,
    /// Arguments, redacted: the JSON that was sent (an object, or for a batch an array), or,
    /// over 16 KiB, its size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub arguments: Option<serde_json::Value>,
    /// `allow`, `deny` or `rate_limited`.
    pub decision: String,
    /// `ok`, `error` or `cancelled`.
    pub outcome: String,
    /// Why it failed or was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Duration in milliseconds.
    pub duration_ms: f64,
    /// This row's chain hash.
    pub hash: String,
}

impl From<AuditRecord> for AuditEntry {
    fn from(r: AuditRecord) -> Self {
        let e = r.event;
        let time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(e.at_us) * 1000)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default();
        Self {
            seq: r.seq,
            id: e.id,
            time,
            request_id: e.request_id,
            actor: Actor {
                subject: e.actor_subject,
                email: e.actor_email,
                tenant: e.actor_tenant,
                client_id: e.actor_client_id,
            },
            operation: e.operation,
            tool: e.tool,
            server: e.server,
            server_tenant: e.server_tenant,
            arguments: e
                .arguments
                .map(|a| serde_json::from_str(&a).unwrap_or(serde_json::Value::String(a))),
            decision: e.decision,
            outcome: e.outcome,
            error: e.error,
            duration_ms: e.duration_us as f64 / 1000.0,
            hash: r.hash,
        }
    }
}

/// One page of the audit log.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// Rows, newest first.
    pub entries: Vec<AuditEntry>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

const CURSOR_PREFIX: &str = "a1:";

fn micros(field: &'static str, text: &str) -> Result<i64, Error> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
            Error::invalid(
                field,
                "is not an RFC 3339 time such as 2026-11-27T08:00:00Z",
            )
        })?;
    Ok((t.unix_timestamp_nanos() / 1000) as i64)
}

fn short(field: &'static str, value: Option<String>) -> Result<Option<String>, Error> {
    match value {
        Some(v) if v.len() > 256 => Err(Error::invalid(field, "is longer than 256 characters")),
        Some(v) if v.is_empty() => Ok(None),
        other => Ok(other),
    }
}

/// Parses the query into a filter.
pub fn filter(params: AuditParams) -> Result<AuditFilter, Error> {
    let limit = match params.limit {
        None => 50,
        Some(n @ 1..=500) => i64::from(n),
        Some(_) => return Err(Error::invalid("limit", "must be from 1 to 500")),
    };
    let decision = short("decision", params.decision)?;
    if let Some(d) = &decision
        && !matches!(d.as_str(), "allow" | "deny" | "rate_limited")
    {
        return Err(Error::invalid(
            "decision",
            "must be allow, deny or rate_limited",
        ));
    }
    let before_seq = match params.cursor {
        None => None,
        Some(c) => {
            let bad = || Error::invalid("cursor", "is not a cursor returned by this API");
            let bytes = URL_SAFE_NO_PAD.decode(&c).map_err(|_| bad())?;
            let text = String::from_utf8(bytes).map_err(|_| bad())?;
            let seq = text
                .strip_prefix(CURSOR_PREFIX)
                .and_then(|n| n.parse::<i64>().ok())
                .ok_or_else(bad)?;
            Some(seq)
        }
    };
    let since_us = params
        .since
        .as_deref()
        .map(|t| micros("since", t))
        .transpose()?;
    let until_us = params
        .until
        .as_deref()
        .map(|t| micros("until", t))
        .transpose()?;
    Ok(AuditFilter {
        actor: short("actor", params.actor)?,
        tool: short("tool", params.tool)?,
        server: short("server", params.server)?,
        decision,
        operation: short("operation", params.operation)?,
        since_us,
        until_us,
        tenant: None,
        before_seq,
        limit,
    })
}

/// The audit log, newest first: who did what to which tool or server, what the policy decided
/// and how it ended. Arguments are redacted.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditParams),
    responses(
        (status = 200, description = "One page of the audit log", body = AuditPage),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "The caller is not an administrator", body = ErrorBody),
        (status = 422, description = "A parameter is invalid", body = ErrorBody),
    ))]
async fn list_audit(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(params): Query<AuditParams>,
) -> Result<Json<AuditPage>, ApiError> {
    let mut filter = filter(params)?;
    if let domain::Visibility::Tenant(Some(tenant)) = state.gate.visibility(&caller) {
        filter.tenant = Some(tenant);
    }
    let rows = state.stores.audit.list(&filter).await?;
    let next_cursor = (rows.len() as i64 == filter.limit)
        .then(|| {
            rows.last()
                .map(|r| URL_SAFE_NO_PAD.encode(format!("{CURSOR_PREFIX}{}", r.seq)))
        })
        .flatten();
    Ok(Json(AuditPage {
        entries: rows.into_iter().map(AuditEntry::from).collect(),
        next_cursor,
    }))
}

//! Reading servers back: the query (filters, order, page), the page, and what a caller may see.

use super::*;

/// The order of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerSort {
    /// By name.
    #[default]
    Name,
    /// Healthiest first (healthy, degraded, unknown, unhealthy), then by name.
    Health,
}

impl ServerSort {
    /// Parses `name` or `health`, reporting problems against `field`.
    pub fn parse_field(raw: &str, field: &str) -> Result<Self> {
        match raw {
            "name" => Ok(Self::Name),
            "health" => Ok(Self::Health),
            other => Err(Error::invalid(
                field,
                format!("unknown order '{other}'; use name or health"),
            )),
        }
    }
}

/// Which servers a list returns, and which page of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerQuery {
    /// Which servers the caller may see.
    pub visibility: Visibility,
    /// Only servers carrying this tag.
    pub tag: Option<String>,
    /// Only servers in this status.
    pub status: Option<ServerStatus>,
    /// Only servers whose name, description or tags contain this text (case-insensitive). Always
    /// lowercase.
    pub text: Option<String>,
    /// Only servers changed at or after this time.
    pub updated_since: Option<OffsetDateTime>,
    /// Only servers in this health.
    pub health: Option<crate::health::HealthStatus>,
    /// Start after this name (the cursor); results are in name order.
    pub after: Option<ServerName>,
    /// With `after`: the id of the server it names. Servers of one name (several tenants' own)
    /// follow each other in id order, so a page may end between them; without an id (a cursor
    /// made before ids were part of it), the list continues after every server of that name.
    pub after_id: Option<uuid::Uuid>,
    /// The order.
    pub sort: ServerSort,
    /// With [`ServerSort::Health`]: the health rank of `after` (see [`crate::HealthStatus::rank`]).
    pub after_rank: Option<u8>,
    /// At most this many servers.
    pub limit: u32,
}

impl Default for ServerQuery {
    fn default() -> Self {
        Self {
            visibility: Visibility::All,
            tag: None,
            status: None,
            text: None,
            updated_since: None,
            health: None,
            after: None,
            after_id: None,
            sort: ServerSort::Name,
            after_rank: None,
            limit: DEFAULT_PAGE_SIZE,
        }
    }
}

impl ServerQuery {
    /// Builds a query from raw filter values, validating each against its parameter name.
    pub fn parse(
        tag: Option<&str>,
        status: Option<&str>,
        text: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Self> {
        let limit = limit.unwrap_or(DEFAULT_PAGE_SIZE);
        if !(1..=MAX_PAGE_SIZE).contains(&limit) {
            return Err(Error::invalid(
                "limit",
                format!("must be between 1 and {MAX_PAGE_SIZE}"),
            ));
        }
        let text = match text.map(str::trim) {
            None | Some("") => None,
            Some(t) if t.chars().count() > MAX_QUERY_CHARS => {
                return Err(Error::invalid(
                    "q",
                    format!("is longer than {MAX_QUERY_CHARS} characters"),
                ));
            }
            Some(t) if t.contains('\0') => {
                return Err(Error::invalid("q", "must not contain a NUL character"));
            }
            Some(t) => Some(t.to_lowercase()),
        };
        Ok(Self {
            visibility: Visibility::All,
            tag: tag.map(|t| parse_tag(t, "tag")).transpose()?,
            status: status
                .map(|s| ServerStatus::parse_field(s, "status"))
                .transpose()?,
            text,
            updated_since: None,
            health: None,
            after: None,
            after_id: None,
            sort: ServerSort::Name,
            after_rank: None,
            limit,
        })
    }
}

/// One page of a list, and where the next one starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items, in order.
    pub items: Vec<T>,
    /// The last name on this page when another page follows.
    pub next_after: Option<ServerName>,
    /// The id of the server `next_after` names.
    pub next_after_id: Option<uuid::Uuid>,
    /// With [`ServerSort::Health`]: the health rank of `next_after`.
    pub next_rank: Option<u8>,
}

/// Which servers a caller may see and reach: with tenants, those of its own tenant, those
/// registered without a tenant, and shared ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum Visibility {
    /// Every server (the local operator of an unauthenticated gateway, background tasks).
    #[default]
    All,
    /// The caller's tenant (`None`: a caller without one).
    Tenant(Option<String>),
}

impl Visibility {
    /// Whether the caller may change or remove `server`: every server for the local operator;
    /// otherwise only its own tenant's (a server shared with every tenant, or one registered
    /// without a tenant, is visible to callers of other tenants but not theirs to change).
    pub fn owns(&self, server: &Server) -> bool {
        match self {
            Self::All => true,
            Self::Tenant(tenant) => server.tenant == *tenant,
        }
    }

    /// Whether `server` is visible.
    pub fn allows(&self, server: &Server) -> bool {
        match self {
            Self::All => true,
            Self::Tenant(tenant) => {
                server.shared || server.tenant.is_none() || server.tenant == *tenant
            }
        }
    }

    /// The one server a name means to the caller, among `candidates` (every server with that
    /// name, of any tenant). Names are unique within a tenant and among public servers
    /// (tenantless or shared), so a caller of a tenant means its own tenant's server when there
    /// is one, else the public one: a shared server of another tenant never hides the caller's
    /// own. The local operator ([`Visibility::All`]) means the tenantless or shared one, else
    /// the only one; `Err` holds how many private servers of different tenants share the name
    /// when none of them is public.
    pub fn pick(&self, mut candidates: Vec<Server>) -> std::result::Result<Option<Server>, usize> {
        let public = |s: &Server| s.shared || s.tenant.is_none();
        match self {
            Self::Tenant(tenant) => {
                let own = |s: &Server| tenant.is_some() && s.tenant == *tenant;
                let at = (candidates.iter().position(own))
                    .or_else(|| candidates.iter().position(public));
                Ok(at.map(|i| candidates.swap_remove(i)))
            }
            Self::All => {
                if candidates.len() <= 1 {
                    return Ok(candidates.into_iter().next());
                }
                let count = candidates.len();
                candidates.into_iter().find(public).map(Some).ok_or(count)
            }
        }
    }
}

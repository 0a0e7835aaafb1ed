//! The registry service: the one place where servers are created, read, listed, changed and
//! removed. The REST API and the MCP tools both call it, so no rule is implemented twice.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::health::{Health, HealthStatus};
use crate::principal::Principal;
use crate::server::{
    Page, Server, ServerDraft, ServerName, ServerPatch, ServerQuery, ServerSort, Visibility,
};
use crate::store::{Credentials, ServerStore};
use crate::upstream::{Sealer, UpstreamHeaders};

/// Purpose under which upstream credentials are sealed.
const CREDENTIALS_PURPOSE: &str = "upstream-credentials/v1";

/// Most routes cached before expired ones are dropped.
const MAX_CACHED_ROUTES: usize = 10_000;

/// How often an update is retried when another writer changed the same server meanwhile.
const UPDATE_ATTEMPTS: usize = 5;

/// Decides whether the gateway may connect to a server's URL (an egress policy); consulted
/// whenever a URL is registered or changed.
#[async_trait::async_trait]
pub trait UrlGuard: Send + Sync {
    /// `Ok` when `url` may be used; otherwise why not, for a person.
    async fn admit(&self, url: &str) -> std::result::Result<(), String>;
}

/// Registry operations over a [`ServerStore`].
#[derive(Clone)]
pub struct Registry {
    store: Arc<dyn ServerStore>,
    sealer: Arc<dyn Sealer>,
    routes: Arc<RwLock<RouteCache>>,
    guard: Option<Arc<dyn UrlGuard>>,
    observer: Option<Resolved>,
}

/// Told of every server a name was resolved to for a caller (the audit row names its tenant).
pub type Resolved = Arc<dyn Fn(&Server) + Send + Sync>;

/// Routes by server name, then by the view each was resolved in, with the time it was resolved
/// (looked up without allocating; a name's routes in every view drop together).
type RouteCache = HashMap<String, HashMap<Visibility, (Instant, Arc<Route>)>>;

/// How long a resolved [`Route`] is reused before the store is asked again. Changes made through
/// this instance take effect at once; changes made by another replica within this time.
pub const ROUTE_TTL: Duration = Duration::from_secs(2);

/// What the gateway needs to reach a server: its registration and its opened credentials.
#[derive(Debug)]
pub struct Route {
    /// The registration.
    pub server: Server,
    /// Its upstream credentials, opened.
    pub upstream_headers: Option<UpstreamHeaders>,
}

/// The current time at the precision every backend stores (microseconds), so that a value read
/// back equals the value written.
pub fn now() -> OffsetDateTime {
    #[allow(
        clippy::disallowed_methods,
        reason = "the one place the gateway reads the clock"
    )]
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1_000 * 1_000)
        .unwrap_or(t)
}

fn server_not_found(name: &ServerName) -> Error {
    Error::not_found(format!("server '{name}'"))
}

impl Registry {
    /// A registry over `store`, sealing upstream credentials with `sealer`.
    pub fn new(store: Arc<dyn ServerStore>, sealer: Arc<dyn Sealer>) -> Self {
        Self {
            store,
            sealer,
            routes: Arc::default(),
            guard: None,
            observer: None,
        }
    }

    /// The registry, telling `observer` of every server a caller's name is resolved to (reads,
    /// routes, changes, a registration).
    pub fn with_observer(mut self, observer: Resolved) -> Self {
        self.observer = Some(observer);
        self
    }

    fn observed(&self, server: &Server) {
        if let Some(observer) = &self.observer {
            observer(server);
        }
    }

    /// The registry, refusing URLs that `guard` does not admit.
    pub fn with_url_guard(mut self, guard: Arc<dyn UrlGuard>) -> Self {
        self.guard = Some(guard);
        self
    }

    async fn admit_url(&self, url: &str) -> Result<()> {
        match &self.guard {
            Some(guard) => guard
                .admit(url)
                .await
                .map_err(|why| Error::invalid("url", why)),
            None => Ok(()),
        }
    }

    /// The route to the server `name` means to a caller with `visibility` (see
    /// [`Visibility::pick`]), from a short-lived cache (see [`ROUTE_TTL`]) so that the proxy's
    /// hot path does not ask the database on every message.
    pub async fn route(&self, name: &str, visibility: &Visibility) -> Result<Arc<Route>> {
        let now = Instant::now();
        if let Ok(routes) = self.routes.read()
            && let Some((at, route)) = routes.get(name).and_then(|views| views.get(visibility))
            && now.duration_since(*at) < ROUTE_TTL
        {
            self.observed(&route.server);
            return Ok(route.clone());
        }
        let server = self.get_visible(name, visibility).await?;
        let upstream_headers = self.upstream_headers(&server).await?;
        let route = Arc::new(Route {
            server,
            upstream_headers,
        });
        if let Ok(mut routes) = self.routes.write() {
            if routes.len() >= MAX_CACHED_ROUTES {
                routes.retain(|_, views| {
                    views.retain(|_, (at, _)| now.duration_since(*at) < ROUTE_TTL);
                    !views.is_empty()
                });
            }
            routes
                .entry(name.to_owned())
                .or_default()
                .insert(visibility.clone(), (now, route.clone()));
        }
        Ok(route)
    }

    /// Drops the cached routes of `name`, in every view (a change in one tenant can change
    /// what the name means in another: a server shared or unshared).
    fn forget_route(&self, name: &str) {
        if let Ok(mut routes) = self.routes.write() {
            routes.remove(name);
        }
    }

    fn seal(&self, headers: &UpstreamHeaders) -> Result<Vec<u8>> {
        let plain = serde_json::to_vec(headers).map_err(|e| Error::Internal(e.to_string()))?;
        Ok(self.sealer.seal(CREDENTIALS_PURPOSE, &plain))
    }

    /// The upstream credentials stored for `server`, opened.
    pub async fn upstream_headers(&self, server: &Server) -> Result<Option<UpstreamHeaders>> {
        if !server.has_upstream_credentials {
            return Ok(None);
        }
        let Some(sealed) = self.store.credentials(server.id).await? else {
            return Ok(None);
        };
        let plain = self.sealer.open(CREDENTIALS_PURPOSE, &sealed).map_err(|_| {
            Error::Internal(format!(
                "the upstream credentials of server '{}' cannot be decrypted (was MREG_ENCRYPTION_KEY changed?)",
                server.name
            ))
        })?;
        serde_json::from_slice(&plain).map(Some).map_err(|e| {
            Error::Internal(format!("stored upstream credentials are unreadable: {e}"))
        })
    }

    /// Registers a server on behalf of `by`, in `by`'s tenant. Its name must be free in that
    /// tenant, and, for a public server (shared or tenantless), among public servers; another
    /// tenant's private server of the same name is neither a conflict nor revealed. A tenant's
    /// own server may take the name of a public one: its users then reach their own (so a name
    /// another tenant shares first can never be kept from the tenant that wants it).
    pub async fn create(&self, by: &Principal, draft: ServerDraft) -> Result<Server> {
        let new = draft.validate()?;
        if new.shared {
            may_share(by)?;
        }
        self.admit_url(new.url.as_str()).await?;
        let sealed = new
            .upstream_headers
            .as_ref()
            .map(|h| self.seal(h))
            .transpose()?;
        let server = new.into_server(&by.subject, by.tenant.as_deref(), now());
        self.store.insert(&server, sealed.as_deref()).await?;
        self.forget_route(server.name.as_str());
        self.observed(&server);
        Ok(server)
    }

    /// The server `name` means to a caller with `visibility`, if any.
    async fn find(&self, name: &ServerName, visibility: &Visibility) -> Result<Option<Server>> {
        let candidates = self.store.named(name).await?;
        visibility.pick(candidates).map_err(|count| {
            Error::invalid(
                "name",
                format!(
                    "{count} servers of different tenants are called '{name}' and none is \
                     shared; with authentication on, each tenant's admins reach their own"
                ),
            )
        })
    }

    /// The server `name` means to a caller with `visibility` (its own tenant's first, else the
    /// public one; see [`Visibility::pick`]); a name it cannot see is not found.
    pub async fn get_visible(&self, name: &str, visibility: &Visibility) -> Result<Server> {
        let parsed =
            ServerName::parse(name).map_err(|_| Error::not_found(format!("server '{name}'")))?;
        let server = self
            .find(&parsed, visibility)
            .await?
            .ok_or_else(|| server_not_found(&parsed))?;
        self.observed(&server);
        Ok(server)
    }

    /// The server with this id and name, if it still exists (the health monitor's claims).
    pub async fn get_by_id(&self, id: uuid::Uuid, name: &ServerName) -> Result<Server> {
        self.store
            .named(name)
            .await?
            .into_iter()
            .find(|s| s.id == id)
            .ok_or_else(|| server_not_found(name))
    }

    /// One page of servers matching `query`, in its order, each with its current health
    /// (`None`: never recorded), read in the same query.
    pub async fn list_with_health(
        &self,
        query: &ServerQuery,
    ) -> Result<Page<(Server, Option<Health>)>> {
        let mut probe = query.clone();
        probe.limit = query.limit.saturating_add(1);
        let limit = query.limit as usize;
        let mut items = self.store.list_with_health(&probe).await?;
        let more = items.len() > limit;
        items.truncate(limit);
        let last = more.then(|| items.last()).flatten();
        Ok(Page {
            next_after: last.map(|(s, _)| s.name.clone()),
            next_after_id: last.map(|(s, _)| s.id),
            next_rank: match query.sort {
                ServerSort::Health => last.map(|(_, h)| {
                    h.as_ref()
                        .map_or(HealthStatus::Unknown, |h| h.status)
                        .rank()
                }),
                ServerSort::Name => None,
            },
            items,
        })
    }

    /// Applies `patch` to the server called `name`, if `visibility` lets the caller see it.
    pub async fn update(
        &self,
        by: &Principal,
        visibility: &Visibility,
        name: &str,
        patch: ServerPatch,
    ) -> Result<Server> {
        let update = patch.validate()?;
        if update.shared.is_some() {
            may_share(by)?;
        }
        if let Some(url) = &update.url {
            self.admit_url(url.as_str()).await?;
        }
        let sealed = match &update.upstream_headers {
            Some(Some(headers)) => Some(self.seal(headers)?),
            _ => None,
        };
        let credentials = match (&update.upstream_headers, &sealed) {
            (None, _) => Credentials::Keep,
            (Some(None), _) | (Some(Some(_)), None) => Credentials::Clear,
            (Some(Some(_)), Some(bytes)) => Credentials::Set(bytes),
        };
        for _ in 0..UPDATE_ATTEMPTS {
            let mut server = self.get_visible(name, visibility).await?;
            may_modify(visibility, &server)?;
            if update.is_empty() {
                return Ok(server);
            }
            let expected = server.revision;
            // Stored credentials were given for one host: a new URL drops them, unless the same
            // request gives them again.
            let moves = update.url.as_ref().is_some_and(|url| *url != server.url);
            let credentials = match credentials {
                Credentials::Keep if moves && server.has_upstream_credentials => Credentials::Clear,
                other => other,
            };
            update.clone().apply_to(&mut server);
            if matches!(credentials, Credentials::Clear) {
                server.has_upstream_credentials = false;
            }
            server.updated_at = now();
            server.revision = expected + 1;
            let stored = self.store.update(&server, expected, credentials).await;
            if let Err(Error::AlreadyExists { .. }) = stored {
                return Err(Error::AlreadyExists {
                    what: format!("a shared or tenantless server called '{name}'"),
                });
            }
            if stored? {
                self.forget_route(name);
                return Ok(server);
            }
        }
        Err(Error::Unavailable {
            what: format!("server '{name}' (changed concurrently; try again)"),
            source: None,
        })
    }

    /// Removes the server `name` means to the caller (see [`Registry::get_visible`]), if it
    /// is the caller's to remove; returns it.
    pub async fn delete(
        &self,
        _by: &Principal,
        visibility: &Visibility,
        name: &str,
    ) -> Result<Server> {
        let server = self.get_visible(name, visibility).await?;
        may_modify(visibility, &server)?;
        if self.store.delete(server.id).await? {
            self.forget_route(name);
            Ok(server)
        } else {
            Err(server_not_found(&server.name))
        }
    }
}

/// Only the owning tenant changes or removes a server, even one it shares with every tenant.
fn may_modify(visibility: &Visibility, server: &Server) -> Result<()> {
    if visibility.owns(server) {
        Ok(())
    } else {
        Err(Error::Forbidden(format!(
            "server '{}' belongs to another tenant: only its own tenant's admins may change or delete it",
            server.name
        )))
    }
}

/// Sharing a server with every tenant is an administrator's decision.
fn may_share(by: &Principal) -> Result<()> {
    if by.roles.iter().any(|r| r == "admin") {
        Ok(())
    } else {
        Err(Error::Forbidden(
            "only an admin can share a server with every tenant (shared)".to_owned(),
        ))
    }
}

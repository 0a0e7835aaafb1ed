//! Authentication: the resource-server side of OAuth. Every protected route passes
//! [`AuthLayer`], which turns the bearer token into a [`Principal`] or answers 401 with
//! `WWW-Authenticate: Bearer resource_metadata="…", scope="…"` (403 `insufficient_scope` when a
//! required scope is missing). Accepted are the access tokens mreg mints (ES256, `aud` = the
//! gateway, its `/mcp`, or the server endpoint being called) and the upstream provider's access
//! tokens issued to this app (`aud` = client id or `api://{client id}`). Validated tokens are
//! cached in the cache layer for at most `AZURE_TOKEN_CACHE_TTL`, never past their expiry.
//! With authentication off (`MREG_AUTH=none`) everyone is the anonymous local operator. The rest
//! of the policy chain (rate limit, REST roles: [`crate::policy::Gate::check_request`]) runs here too,
//! so that the whole chain is one layer.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use domain::{Cache, Principal};
use futures_util::future::{BoxFuture, Either};
use serde::{Deserialize, Serialize};
use tower::{Layer, Service, ServiceExt};

use crate::audit::Auditor;
use crate::http::error::ApiError;
use crate::oauth::upstream::Kind;
use crate::oauth::{Identity, OAuth, grant_revoked_key, sha256_hex};
use crate::policy::Gate;
use crate::store::auth::AuthStore;

/// The authenticated caller of a request. Shared, not copied: every request of one caller points
/// at the same principal.
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<Principal>);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Arc<Principal>>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| {
                domain::Error::Unauthenticated("no credentials were presented".to_owned()).into()
            })
    }
}

/// A validated token as the cache keeps it.
#[derive(Serialize, Deserialize)]
struct Validated {
    principal: Principal,
    /// Audiences of an mreg token; empty for an upstream token issued to this app (valid on
    /// every route).
    aud: Vec<String>,
    /// Whether the token was delegated by a user (scopes apply) rather than app-only.
    delegated: bool,
    /// The grant an mreg token was issued from: while it is marked revoked, the token is
    /// refused, cached or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    grant: Option<String>,
}

/// Most decoded tokens [`Decoded`] keeps; it is emptied when full.
const DECODED_MAX: usize = 4096;

/// Token cache hits already decoded, by cache key. The cache is still asked on every request, so
/// a revoked or expired token is refused at once; only when it answers with exactly the bytes
/// decoded before is the decoded token reused instead of parsing them again.
#[derive(Default)]
struct Decoded(std::sync::Mutex<std::collections::HashMap<String, Arc<Memo>>>);

/// A decoded cache entry.
struct Memo {
    /// The cached bytes it was decoded from.
    bytes: Vec<u8>,
    principal: Arc<Principal>,
    aud: Vec<String>,
    delegated: bool,
    grant: Option<String>,
}

impl Memo {
    fn new(validated: Validated, bytes: Vec<u8>) -> Arc<Self> {
        Arc::new(Self {
            bytes,
            principal: Arc::new(validated.principal),
            aud: validated.aud,
            delegated: validated.delegated,
            grant: validated.grant,
        })
    }
}

impl Decoded {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Arc<Memo>>> {
        // Entries are inserted whole, so a poisoned map is still consistent.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The token cached as `bytes` under `key`, decoded (again only if the bytes changed).
    fn decode(&self, key: &str, bytes: Vec<u8>) -> Option<Arc<Memo>> {
        if let Some(memo) = self.lock().get(key).filter(|m| m.bytes == bytes) {
            return Some(memo.clone());
        }
        let validated = serde_json::from_slice::<Validated>(&bytes).ok()?;
        let memo = Memo::new(validated, bytes);
        self.remember(key, memo.clone());
        Some(memo)
    }

    /// The grant of the token decoded before under `key`, if any: its revocation marker can
    /// then be asked for together with the cache entry.
    fn grant_of(&self, key: &str) -> Option<String> {
        self.lock().get(key).and_then(|m| m.grant.clone())
    }

    fn remember(&self, key: &str, memo: Arc<Memo>) {
        let mut map = self.lock();
        if map.len() >= DECODED_MAX {
            map.clear();
        }
        map.insert(key.to_owned(), memo);
    }
}

/// Why a request is refused.
enum Refusal {
    /// No usable token: 401.
    Invalid(String),
    /// A required scope is missing: 403.
    Scope,
    /// Validation could not be completed: 503.
    Unavailable(domain::Error),
}

/// Layer: establishes the caller of every request and runs the rest of the policy chain (rate
/// limit, REST roles, the audit entry of a REST mutation) before the route. A plain tower layer
/// rather than `from_fn`: it wraps every request of the proxy's hot path, and without
/// authentication a request that is neither refused nor audited here goes straight to the
/// route, with nothing boxed or cloned.
#[derive(Clone)]
pub struct AuthLayer {
    state: Arc<Authenticator>,
}

impl AuthLayer {
    /// The layer of `authenticator` (shared by every listener's layer).
    pub fn new(authenticator: Arc<Authenticator>) -> Self {
        Self {
            state: authenticator,
        }
    }
}

/// What the chain before a route needs: the OAuth server whose tokens it accepts (everyone is
/// the anonymous operator without one), the token cache, the policy gate and the audit log.
/// Built once; both listeners' [`AuthLayer`]s share it.
pub struct Authenticator {
    oauth: Option<Arc<OAuth>>,
    gate: Gate,
    audit: Auditor,
    cache: Arc<dyn Cache>,
    /// The grants, asked whether one is live while the cache is down.
    grants: Arc<dyn AuthStore>,
    max_body_bytes: usize,
    /// Validated tokens decoded from the cache.
    decoded: Decoded,
}

impl Authenticator {
    /// The chain for tokens of `oauth` cached in `cache` (their grants in `grants`), decided
    /// by `gate`, recorded in `audit`; a REST mutation's body is read up to `max_body_bytes`
    /// for its audit row.
    pub fn new(
        oauth: Option<Arc<OAuth>>,
        gate: Gate,
        audit: Auditor,
        cache: Arc<dyn Cache>,
        grants: Arc<dyn AuthStore>,
        max_body_bytes: usize,
    ) -> Self {
        Self {
            oauth,
            gate,
            audit,
            cache,
            grants,
            max_body_bytes,
            decoded: Decoded::default(),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            state: self.state.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around each route.
#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    state: Arc<Authenticator>,
}

impl<S> Service<Request> for Authenticate<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        if self.state.oauth.is_none() && !checked_here(&request) {
            // The anonymous operator, who has every role and no budget: nothing to decide.
            request.extensions_mut().insert(anonymous());
            return Either::Left(self.inner.call(request));
        }
        // The ready service handles this request; a fresh clone waits for the next one.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let state = self.state.clone();
        Either::Right(Box::pin(async move {
            Ok(authenticate(&state, request, inner).await)
        }))
    }
}

/// The anonymous operator of a gateway without authentication.
fn anonymous() -> Arc<Principal> {
    static ANONYMOUS: OnceLock<Arc<Principal>> = OnceLock::new();
    ANONYMOUS
        .get_or_init(|| Arc::new(Principal::anonymous()))
        .clone()
}

/// Whether [`admit`] has anything to do for `request` besides naming the caller: the REST roles
/// and the audit entry of a mutation concern `/api/` routes only.
fn checked_here(request: &Request) -> bool {
    request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .is_some_and(|route| route.as_str().starts_with("/api/"))
}

/// Establishes the caller, then runs the rest of the chain and `inner`.
async fn authenticate<S>(state: &Authenticator, request: Request, inner: S) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let Some(oauth) = state.oauth.as_ref() else {
        return admit(state, anonymous(), request, inner).await;
    };
    let resource = resource_of(oauth, request.uri().path());
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    let Some(token) = token else {
        return challenge(oauth, &resource, None);
    };
    match principal(oauth, state, token, &resource).await {
        Ok(principal) => admit(state, principal, request, inner).await,
        Err(Refusal::Invalid(why)) => {
            tracing::info!(reason = %why, "bearer token refused");
            challenge(oauth, &resource, Some(&why))
        }
        Err(Refusal::Scope) => insufficient_scope(oauth, &resource),
        Err(Refusal::Unavailable(e)) => ApiError::from(e).into_response(),
    }
}

/// The token of an `Authorization: Bearer …` value; the scheme is matched without regard to
/// case (RFC 7235 §2.1, RFC 6750 §2.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Runs `request` through `inner` (the route), which is always ready.
async fn run<S>(inner: S, request: Request) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let Ok(response) = inner.oneshot(request).await;
    response
}

/// The rest of the chain for an authenticated request: rate limit and REST roles (a refusal is
/// audited), then the audit entry of a REST mutation (its redacted JSON body as arguments, its
/// status as outcome), then the handler. MCP messages are audited where they are read: by the
/// gateway's tools and by the proxy.
async fn admit<S>(
    state: &Authenticator,
    principal: Arc<Principal>,
    mut request: Request,
    inner: S,
) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    // Nothing is allocated for the common case (an admitted read or MCP message): the audit
    // names are made only for a refusal or a mutation.
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .cloned();
    let route = route.as_ref().map(axum::extract::MatchedPath::as_str);
    // A budget counts REST requests and JSON-RPC requests; an MCP notification, response,
    // stream or session end is free.
    let counts = route.is_some_and(|r| r.starts_with("/api/"))
        || request
            .extensions()
            .get::<crate::jsonrpc::Peeked>()
            .is_some_and(crate::jsonrpc::Peeked::is_request);
    if let Err(refusal) = state
        .gate
        .check_request(&principal, request.method(), route, counts)
        .await
    {
        let (request_id, operation) = audit_names(&request, route);
        match state.audit.open(&principal, &request_id, operation).await {
            Ok(mut entry) => {
                let server = server_in_path(request.uri().path());
                entry.target(None, server);
                // A refused MCP message keeps its JSON-RPC method (and tool) in the row.
                if let Some(crate::jsonrpc::Peeked(Ok(call))) = request.extensions().get() {
                    entry.operation(&call.method);
                    if call.method == "tools/call" {
                        entry.target(call.name.as_deref(), server);
                    }
                }
                entry.refused(&refusal);
            }
            Err(e) => return audit_unavailable(&e),
        }
        return state.gate.refused(&refusal);
    }
    let mutation = !matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    ) && route.is_some_and(|r| r.starts_with("/api/"));
    if !mutation {
        request.extensions_mut().insert(principal);
        return run(inner, request).await;
    }
    request.extensions_mut().insert(principal.clone());
    let (request_id, operation) = audit_names(&request, route);
    let path = request.uri().path().to_owned();
    let mut entry = match state.audit.open(&principal, &request_id, operation).await {
        Ok(entry) => entry,
        Err(e) => return audit_unavailable(&e),
    };
    entry.target(None, server_in_path(&path));
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, state.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(e) if !crate::http::too_large(&e) => {
            let message = format!(
                "the request body cannot be read: {}",
                domain::text::root_cause(&e)
            );
            entry.finish(Err(message.clone()));
            return ApiError::new(axum::http::StatusCode::BAD_REQUEST, "bad_request", message)
                .into_response();
        }
        Err(_) => {
            let message = format!(
                "the request body is larger than {} bytes (MREG_MAX_BODY_BYTES)",
                state.max_body_bytes
            );
            entry.finish(Err(message.clone()));
            return ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                message,
            )
            .into_response();
        }
    };
    if let Ok(arguments) = serde_json::from_slice::<serde_json::Value>(&bytes) {
        // A registration names its server in the body.
        if server_in_path(&path).is_none()
            && path.starts_with("/api/v1/servers")
            && let Some(name) = arguments.get("name").and_then(|n| n.as_str())
        {
            entry.target(None, Some(name));
        }
        entry.arguments(arguments);
    }
    let response = run(
        inner,
        Request::from_parts(parts, axum::body::Body::from(bytes)),
    )
    .await;
    // A change is answered once its row is kept: a crash the next moment loses no change.
    if response.status().is_success() {
        entry.finish_kept(Ok(())).await;
        return response;
    }
    // A failed mutation's row says why: the error body's message (small; read and put back).
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("HTTP {}", parts.status.as_u16()));
    entry.finish_kept(Err(message)).await;
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// The request id and the operation (`METHOD /route`) of a request, for its audit row.
fn audit_names(request: &Request, route: Option<&str>) -> (String, String) {
    let request_id = crate::http::request_id::of(request.extensions()).to_owned();
    let operation = format!(
        "{} {}",
        request.method(),
        route.unwrap_or(request.uri().path())
    );
    (request_id, operation)
}

/// The registered server a path names (`/api/v1/servers/{name}…`, `/servers/{name}/mcp`).
fn server_in_path(path: &str) -> Option<&str> {
    let rest = path
        .strip_prefix("/api/v1/servers/")
        .or_else(|| path.strip_prefix("/servers/"))?;
    let name = rest.split('/').next()?;
    (!name.is_empty()).then_some(name)
}

/// 503 when the audit log cannot take another entry: the request is not run.
pub fn audit_unavailable(e: &crate::audit::AuditUnavailable) -> Response {
    ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "audit_unavailable",
        e.to_string(),
    )
    .into_response()
}

/// The resource a request path belongs to: a server's endpoint, or the gateway's `/mcp`.
fn resource_of(oauth: &OAuth, path: &str) -> String {
    if let Some(rest) = path.strip_prefix("/servers/")
        && let Some((name, tail)) = rest.split_once('/')
        && tail == "mcp"
    {
        let resource = format!("{}/servers/{name}/mcp", oauth.issuer);
        if oauth.is_resource(&resource) {
            return resource;
        }
    }
    oauth.mcp_resource()
}

async fn principal(
    oauth: &OAuth,
    state: &Authenticator,
    token: &str,
    resource: &str,
) -> Result<Arc<Principal>, Refusal> {
    let key = format!("auth:token:{}", sha256_hex(token));
    // A token decoded here before names its grant: the grant's revocation marker is fetched in
    // the same round trip as the cache entry.
    let known = state.decoded.grant_of(&key);
    let (hit, known_revoked) = match &known {
        Some(grant) => {
            let marker = grant_revoked_key(grant);
            match state.cache.get_many(&[key.as_str(), marker.as_str()]).await {
                Ok(mut values) => {
                    let revoked = values.pop().flatten().is_some();
                    (Ok(values.pop().flatten()), Some(revoked))
                }
                Err(e) => (Err(e), None),
            }
        }
        None => (state.cache.get(&key).await, None),
    };
    let cached = match hit {
        Ok(hit) => hit.and_then(|bytes| state.decoded.decode(&key, bytes)),
        Err(e) => {
            // A cache outage must not lock everyone out: validate without it.
            tracing::warn!(error = %e, "token cache unavailable");
            None
        }
    };
    let validated = match cached {
        Some(memo) => {
            // A cached token must not outlive its grant's revocation.
            if let Some(grant) = &memo.grant {
                let revoked = match known_revoked {
                    Some(revoked) if known.as_deref() == Some(grant.as_str()) => revoked,
                    _ => state
                        .cache
                        .get(&grant_revoked_key(grant))
                        .await
                        .map_err(Refusal::Unavailable)?
                        .is_some(),
                };
                if revoked {
                    return Err(Refusal::Invalid("the token's grant was revoked".to_owned()));
                }
            }
            memo
        }
        None => {
            let (validated, exp) = validate(oauth, state, token).await?;
            let left = exp - time::OffsetDateTime::now_utc().unix_timestamp();
            let ttl = oauth
                .token_cache_ttl
                .min(Duration::from_secs(left.max(0) as u64));
            let bytes = serde_json::to_vec(&validated).unwrap_or_default();
            if !ttl.is_zero()
                && !bytes.is_empty()
                && let Err(e) = state.cache.set(&key, &bytes, ttl).await
            {
                tracing::warn!(error = %e, "cannot cache a validated token");
            }
            let memo = Memo::new(validated, bytes);
            if !ttl.is_zero() {
                state.decoded.remember(&key, memo.clone());
            }
            memo
        }
    };
    if !validated.aud.is_empty()
        && !validated
            .aud
            .iter()
            .any(|a| oauth.accepts_audience(a, resource))
    {
        return Err(Refusal::Invalid(format!(
            "the token is for another resource, not {resource}"
        )));
    }
    if validated.delegated
        && !oauth
            .required_scopes
            .iter()
            .all(|s| validated.principal.scopes.contains(s))
    {
        return Err(Refusal::Scope);
    }
    Ok(validated.principal.clone())
}

/// Validates a token not found in the cache. Returns it and its expiry.
async fn validate(
    oauth: &OAuth,
    state: &Authenticator,
    token: &str,
) -> Result<(Validated, i64), Refusal> {
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| Refusal::Invalid("the token is not a JWT".to_owned()))?;
    let ours = header
        .kid
        .as_deref()
        .is_some_and(|k| k.starts_with("mreg-"));
    if ours {
        let claims = oauth
            .keys
            .verify(token, &oauth.issuer, None, oauth.skew)
            .await
            .map_err(Refusal::Invalid)?;
        let revoked_jti = format!("oauth:revoked:{}", claims.jti);
        let revoked_grant = claims.gid.as_deref().map(grant_revoked_key);
        let mut keys = vec![revoked_jti.as_str()];
        keys.extend(revoked_grant.as_deref());
        match state.cache.get_many(&keys).await {
            Ok(markers) => {
                if markers.first().is_some_and(Option::is_some) {
                    return Err(Refusal::Invalid("the token was revoked".to_owned()));
                }
                if markers.get(1).is_some_and(Option::is_some) {
                    return Err(Refusal::Invalid("the token's grant was revoked".to_owned()));
                }
            }
            // The cache is down: its markers are a copy of what the database decides for grants
            // (revoking a refresh token, reuse detection, a replayed code all revoke the grant
            // there), so ask the database. Only single access tokens revoked through /revoke,
            // which are marked in the cache alone, cannot be checked until it is back.
            Err(e) => {
                if let Some(grant) = claims.gid.as_deref() {
                    let now = time::OffsetDateTime::now_utc().unix_timestamp();
                    let live = state
                        .grants
                        .grant_live(grant, now)
                        .await
                        .map_err(Refusal::Unavailable)?;
                    if !live {
                        return Err(Refusal::Invalid("the token's grant was revoked".to_owned()));
                    }
                }
                tracing::debug!(error = %e, "revocation markers unavailable: grant checked in the database");
            }
        }
        let principal = Principal {
            subject: claims.sub,
            email: claims.email,
            name: claims.name,
            tenant: claims.tid,
            roles: claims.roles,
            scopes: claims.scope.split_whitespace().map(str::to_owned).collect(),
            client_id: Some(claims.client_id),
        };
        return Ok((
            Validated {
                principal,
                aud: vec![claims.aud],
                delegated: true,
                grant: claims.gid,
            },
            claims.exp,
        ));
    }
    let audiences = oauth.upstream.app_audiences();
    let audiences: Vec<&str> = audiences.iter().map(String::as_str).collect();
    let claims = oauth
        .upstream
        .validate(token, &audiences)
        .await
        .map_err(Refusal::Invalid)?;
    let access = provider_access(&claims, matches!(oauth.upstream.kind, Kind::Oidc))
        .map_err(|why| Refusal::Invalid(why.to_owned()))?;
    let identity = Identity::from_claims(&claims)
        .ok_or_else(|| Refusal::Invalid("the token names no subject".to_owned()))?;
    let exp = claims["exp"].as_i64().unwrap_or(0);
    Ok((
        Validated {
            principal: identity.principal(access.scopes, Some(access.client_id)),
            aud: Vec::new(),
            delegated: access.delegated,
            grant: None,
        },
        exp,
    ))
}

/// What a provider access token grants, as read from its claims.
#[derive(Debug, PartialEq, Eq)]
struct ProviderAccess {
    client_id: String,
    scopes: Vec<String>,
    delegated: bool,
}

/// Tells a provider access token for this app from an ID token with the same audience (the
/// provider's ID tokens for mreg have `aud` = the client id too). Refused are tokens carrying
/// `nonce`, `at_hash` or `c_hash` (ID-token claims), tokens naming no client (`azp`, `appid`;
/// also `client_id`, RFC 9068, for a generic provider), and tokens with neither delegated scopes
/// (`scp`, or `scope` for a generic provider) nor app roles. Entra's `idtyp` decides between
/// delegated (`user`: needs `scp`) and app-only (`app`: needs `roles`); without it a token
/// with scopes is delegated and one with only roles is app-only.
fn provider_access(
    claims: &serde_json::Value,
    generic: bool,
) -> Result<ProviderAccess, &'static str> {
    if ["nonce", "at_hash", "c_hash"]
        .iter()
        .any(|c| !claims[*c].is_null())
    {
        return Err("an ID token is not an access token");
    }
    let text = |k: &str| claims[k].as_str().filter(|v| !v.is_empty());
    let client_id = text("azp")
        .or_else(|| text("appid"))
        .or_else(|| if generic { text("client_id") } else { None })
        .ok_or("the token names no client (azp or appid)")?
        .to_owned();
    let scp = text("scp").or_else(|| if generic { text("scope") } else { None });
    let scopes: Vec<String> = scp
        .map(|s| s.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let has_roles = claims["roles"]
        .as_array()
        .is_some_and(|r| r.iter().any(|x| x.as_str().is_some_and(|s| !s.is_empty())));
    let delegated = match text("idtyp") {
        Some("app") => false,
        Some(_) => true,
        None => !scopes.is_empty(),
    };
    if delegated && scopes.is_empty() {
        return Err("a delegated token without scopes (scp) is not an access token for this app");
    }
    if !delegated && !has_roles {
        return Err("an app-only token without roles grants nothing");
    }
    Ok(ProviderAccess {
        client_id,
        scopes,
        delegated,
    })
}

fn quoted(text: &str) -> String {
    text.replace(['"', '\\'], "'")
}

/// 401 with the `WWW-Authenticate` challenge that leads a client to the metadata.
fn challenge(oauth: &OAuth, resource: &str, error: Option<&str>) -> Response {
    let mut value = format!(
        "Bearer resource_metadata=\"{}\", scope=\"{}\"",
        oauth.resource_metadata_url(resource),
        quoted(&oauth.scope_hint())
    );
    if let Some(error) = error {
        value.push_str(&format!(
            ", error=\"invalid_token\", error_description=\"{}\"",
            quoted(error)
        ));
    }
    let message = error.unwrap_or("a bearer token is required");
    let mut response =
        ApiError::from(domain::Error::Unauthenticated(message.to_owned())).into_response();
    if let Ok(value) = HeaderValue::from_str(&value) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// 403 `insufficient_scope`, naming the scopes to ask for (step-up).
fn insufficient_scope(oauth: &OAuth, resource: &str) -> Response {
    let scopes = quoted(&oauth.required_scopes.join(" "));
    let value = format!(
        "Bearer error=\"insufficient_scope\", scope=\"{scopes}\", resource_metadata=\"{}\"",
        oauth.resource_metadata_url(resource)
    );
    let mut response = ApiError::from(domain::Error::Forbidden(format!(
        "the token lacks a required scope ({scopes})"
    )))
    .into_response();
    if let Ok(value) = HeaderValue::from_str(&value) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(subject: &str, roles: &[&str]) -> Vec<u8> {
        let mut principal = Principal::anonymous();
        principal.subject = subject.to_owned();
        principal.roles = roles.iter().map(|r| (*r).to_owned()).collect();
        serde_json::to_vec(&Validated {
            principal,
            aud: vec!["https://gw.example/mcp".to_owned()],
            delegated: true,
            grant: None,
        })
        .expect("json")
    }

    #[test]
    fn a_decoded_token_is_reused_only_while_the_cache_holds_the_same_bytes() {
        let decoded = Decoded::default();
        let first = decoded
            .decode("auth:token:a", cached("alice", &["admin"]))
            .expect("decoded");
        assert_eq!(first.principal.roles, ["admin"]);
        assert_eq!(first.aud, ["https://gw.example/mcp"]);
        assert!(first.delegated);
        let again = decoded
            .decode("auth:token:a", cached("alice", &["admin"]))
            .expect("decoded");
        assert!(
            Arc::ptr_eq(&first, &again),
            "the same bytes are not parsed again"
        );

        // Another replica re-validated the token with fewer roles: the new bytes win.
        let changed = decoded
            .decode("auth:token:a", cached("alice", &["user"]))
            .expect("decoded");
        assert!(!Arc::ptr_eq(&first, &changed));
        assert_eq!(changed.principal.roles, ["user"]);

        assert!(
            decoded
                .decode("auth:token:b", b"not json".to_vec())
                .is_none()
        );
        assert_eq!(
            decoded
                .decode("auth:token:b", cached("bob", &[]))
                .expect("decoded")
                .principal
                .subject,
            "bob",
            "keys are kept apart"
        );
    }

    #[test]
    fn the_bearer_scheme_is_matched_without_regard_to_case() {
        for value in ["Bearer abc", "bearer abc", "BEARER abc", "bEaReR  abc "] {
            assert_eq!(bearer_token(value), Some("abc"), "{value}");
        }
        for value in ["Basic abc", "Bearer", "Bearer ", "Bearerabc", "abc"] {
            assert_eq!(bearer_token(value), None, "{value}");
        }
    }

    #[test]
    fn provider_id_tokens_are_not_access_tokens() {
        let base = serde_json::json!({"azp": "app", "scp": "access_as_user", "idtyp": "user"});
        let with = |k: &str, v: serde_json::Value| {
            let mut c = base.clone();
            c[k] = v;
            c
        };
        let delegated = provider_access(&base, false).expect("a delegated token");
        assert!(delegated.delegated);
        assert_eq!(delegated.scopes, ["access_as_user"]);
        for claim in ["nonce", "at_hash", "c_hash"] {
            assert!(
                provider_access(&with(claim, serde_json::json!("x")), false).is_err(),
                "{claim}"
            );
        }
        let mut no_client = base.clone();
        no_client.as_object_mut().expect("object").remove("azp");
        assert!(provider_access(&no_client, false).is_err(), "no azp/appid");
        assert!(
            provider_access(&with("client_id", serde_json::json!("app")), false).is_ok(),
            "azp is still there"
        );
        let mut user_without_scp = base.clone();
        user_without_scp
            .as_object_mut()
            .expect("object")
            .remove("scp");
        user_without_scp["roles"] = serde_json::json!(["admin"]);
        assert!(
            provider_access(&user_without_scp, false).is_err(),
            "idtyp user needs scp"
        );
        let app = serde_json::json!({"appid": "svc", "roles": ["admin"], "idtyp": "app"});
        let access = provider_access(&app, false).expect("app-only");
        assert!(!access.delegated);
        assert_eq!(access.client_id, "svc");
        let mut no_roles = app.clone();
        no_roles["roles"] = serde_json::json!([]);
        assert!(
            provider_access(&no_roles, false).is_err(),
            "app without roles"
        );
        assert!(
            provider_access(&serde_json::json!({"azp": "app"}), false).is_err(),
            "neither scp nor roles"
        );
        let rfc9068 = serde_json::json!({"client_id": "c", "scope": "read"});
        assert!(provider_access(&rfc9068, true).is_ok(), "generic provider");
        assert!(provider_access(&rfc9068, false).is_err(), "Entra names azp");
    }

    #[test]
    fn the_decoded_tokens_stay_bounded() {
        let decoded = Decoded::default();
        for i in 0..DECODED_MAX + 10 {
            decoded.decode(&format!("auth:token:{i}"), cached("alice", &[]));
        }
        assert!(decoded.lock().len() <= DECODED_MAX);
    }
}

//! The OAuth 2.1 authorization server MCP clients talk to, with Entra ID (or another OpenID
//! Connect provider) as its upstream identity provider.
//!
//! A sign-in: `/authorize` checks the client, its redirect URI, PKCE and the resource, stores a
//! transaction and sends the browser to the consent page; approving there (CSRF token plus the
//! browser cookie set at `/authorize`) sends it to the provider with mreg's own PKCE pair, state
//! and nonce; `/auth/callback` checks the same cookie, exchanges the code, validates the ID token
//! and hands the client a one-time code of mreg's own; `/token` trades that (with the client's
//! PKCE verifier) for an access token mreg signs and a refresh token that rotates on every use.
//! Provider tokens stay sealed in the database; clients never see them.

pub mod cimd;
mod endpoints;
pub mod keys;
mod metadata;
pub mod registrations;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use axum::Router;
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use domain::{Cache, Principal, Result};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::config::Config;
use crate::crypto::Cipher;
use domain::AuthStore;
use keys::Keys;
use upstream::Upstream;

/// How long a sign-in may take from `/authorize` to `/auth/callback`.
const TRANSACTION_TTL: Duration = Duration::from_secs(15 * 60);

/// The authorization server and resource-server checks of one gateway.
pub struct OAuth {
    /// mreg's issuer identifier: the public base URL of the MCP listener, without a trailing `/`.
    pub issuer: String,
    callback: Url,
    /// The upstream identity provider.
    pub upstream: Upstream,
    /// mreg's signing keys.
    pub keys: Keys,
    store: Arc<dyn AuthStore>,
    cache: Arc<dyn Cache>,
    /// What "now" is for registrations, grants and codes.
    clock: domain::Clock,
    cipher: Arc<Cipher>,
    secure_cookies: bool,
    access_ttl: Duration,
    refresh_ttl: Duration,
    code_ttl: Duration,
    /// Tolerated clock skew.
    pub skew: Duration,
    /// Upper bound on caching a validated token.
    pub token_cache_ttl: Duration,
    /// Scopes every delegated token must carry.
    pub required_scopes: Vec<String>,
    default_scopes: Vec<String>,
    supported_scopes: Vec<String>,
    cimd_allow_private: bool,
    max_idle_clients: u64,
    /// The audit log.
    audit: crate::audit::Auditor,
    /// The budget per client address of the public endpoints.
    address_limit: Option<crate::policy::limits::AddressLimit>,
    /// Where revocation markers are kept trying while the cache is down.
    tasks: crate::tasks::Tasks,
}

impl std::fmt::Debug for OAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth")
            .field("issuer", &self.issuer)
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

/// Who signed in, as the provider's ID token says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Identity {
    /// Stable subject: Entra `oid`, else the provider's `sub`.
    pub subject: String,
    /// Entra object id.
    pub oid: Option<String>,
    /// Entra tenant id.
    pub tid: Option<String>,
    /// E-mail or UPN.
    pub email: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// App roles.
    pub roles: Vec<String>,
}

impl Identity {
    /// Reads the identity from validated ID-token (or access-token) claims.
    pub fn from_claims(claims: &serde_json::Value) -> Option<Self> {
        let text = |k: &str| claims[k].as_str().map(str::to_owned);
        let subject = text("oid").or_else(|| text("sub"))?;
        Some(Self {
            subject,
            oid: text("oid"),
            tid: text("tid"),
            email: text("email")
                .or_else(|| text("preferred_username"))
                .or_else(|| text("upn")),
            name: text("name"),
            roles: claims["roles"]
                .as_array()
                .map(|r| {
                    r.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// The principal this identity is, for `client_id` with `scopes`.
    pub fn principal(&self, scopes: Vec<String>, client_id: Option<String>) -> Principal {
        Principal {
            subject: self.subject.clone(),
            email: self.email.clone(),
            name: self.name.clone(),
            tenant: self.tid.clone(),
            roles: self.roles.clone(),
            scopes,
            client_id,
        }
    }
}

/// The cache key that marks grant `id` revoked. Set when a grant is revoked, for as long as an
/// access token issued from it can live; the resource server refuses those tokens while it is
/// there (shared through Redis when configured).
pub fn grant_revoked_key(id: &str) -> String {
    format!("oauth:grant-revoked:{id}")
}

/// Random URL-safe text of `bytes` random bytes.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0_u8; bytes];
    SystemRandom::new()
        .fill(&mut buf)
        .unwrap_or_else(|_| panic!("the system random generator failed"));
    URL_SAFE_NO_PAD.encode(buf)
}

/// SHA-256 of `text`, hex.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(digest::digest(&digest::SHA256, text.as_bytes()))
}

/// The S256 PKCE challenge of `verifier`.
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, verifier.as_bytes()))
}

impl OAuth {
    /// The authorization server of `config`, when authentication is on. `mcp_base` is the
    /// MCP listener's address, used when `MREG_PUBLIC_URL` is unset.
    #[allow(
        clippy::too_many_arguments,
        reason = "each is a service the server is built from; a struct of them would repeat the fields"
    )]
    pub fn new(
        config: &Config,
        mcp_base: &str,
        upstream: Upstream,
        stores: &crate::store::Stores,
        cache: Arc<dyn Cache>,
        cipher: Arc<Cipher>,
        audit: crate::audit::Auditor,
        tasks: crate::tasks::Tasks,
    ) -> anyhow::Result<Self> {
        let issuer = config
            .public_url
            .as_ref()
            .map(|u| u.as_str().trim_end_matches('/').to_owned())
            .unwrap_or_else(|| mcp_base.trim_end_matches('/').to_owned());
        let callback = match &config.azure.callback_url {
            Some(url) => url.clone(),
            None => Url::parse(&format!("{issuer}/auth/callback"))?,
        };
        if callback.origin() != Url::parse(&issuer)?.origin() {
            anyhow::bail!(
                "OAUTH_CALLBACK_URL ({callback}) must be on the gateway's own origin ({issuer}): the browser cookie set at /authorize is checked at the callback. Set MREG_PUBLIC_URL to the origin browsers and clients use (e.g. http://localhost:8001)"
            );
        }
        let supported_scopes = upstream.supported_scopes();
        let default_scopes = upstream.sign_in_scopes.clone();
        Ok(Self {
            secure_cookies: issuer.starts_with("https://"),
            keys: Keys::new(
                cipher.clone(),
                stores.secrets.clone(),
                config.auth.signing_key_rotation,
            ),
            issuer,
            callback,
            upstream,
            store: stores.auth.clone(),
            cache,
            clock: config.clock.clone(),
            cipher,
            access_ttl: config.auth.access_token_ttl,
            refresh_ttl: config.auth.refresh_token_ttl,
            code_ttl: config.auth.code_ttl,
            skew: config.azure.clock_skew,
            token_cache_ttl: config.azure.token_cache_ttl,
            required_scopes: config.auth.required_scopes.clone(),
            default_scopes,
            supported_scopes,
            cimd_allow_private: config.auth.cimd_allow_private,
            max_idle_clients: config.auth.max_idle_clients,
            audit,
            address_limit: None,
            tasks,
        })
    }

    /// The time now in Unix seconds, by the gateway's clock.
    fn unix_now(&self) -> i64 {
        self.clock.unix()
    }

    /// Limits the requests per client address to client registration, sign-in, token and
    /// revocation.
    #[must_use]
    pub fn limiting(mut self, limit: crate::policy::limits::AddressLimit) -> Self {
        self.address_limit = Some(limit);
        self
    }

    /// The canonical resource of the gateway's own MCP endpoint.
    pub fn mcp_resource(&self) -> String {
        format!("{}/mcp", self.issuer)
    }

    /// Resources a token may be issued for: the gateway, its `/mcp`, or one server's endpoint.
    pub fn is_resource(&self, resource: &str) -> bool {
        let Some(path) = resource.strip_prefix(&self.issuer) else {
            return false;
        };
        if path.is_empty() || path == "/mcp" {
            return true;
        }
        path.strip_prefix("/servers/")
            .and_then(|rest| rest.strip_suffix("/mcp"))
            .is_some_and(|name| {
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                    && name != "."
                    && name != ".."
            })
    }

    /// Whether a token for `audience` is accepted on a route whose own resource is `resource`:
    /// the route's resource, or the gateway as a whole (its base URL or its `/mcp`). Compares
    /// without building strings, because it runs on every authenticated request.
    pub fn accepts_audience(&self, audience: &str, resource: &str) -> bool {
        audience == resource
            || matches!(
                audience.strip_prefix(self.issuer.as_str()),
                Some("" | "/mcp")
            )
    }

    /// The protected-resource metadata URL for `resource`.
    pub fn resource_metadata_url(&self, resource: &str) -> String {
        let path = resource.strip_prefix(&self.issuer).unwrap_or("/mcp");
        format!("{}/.well-known/oauth-protected-resource{path}", self.issuer)
    }

    /// The `scope` hint in `WWW-Authenticate`.
    pub fn scope_hint(&self) -> String {
        if self.required_scopes.is_empty() {
            self.default_scopes.join(" ")
        } else {
            self.required_scopes.join(" ")
        }
    }

    fn seal_json<T: Serialize>(&self, purpose: &str, value: &T) -> Result<Vec<u8>> {
        let json = serde_json::to_vec(value)
            .map_err(|e| domain::Error::Internal(format!("cannot encode {purpose}: {e}")))?;
        Ok(domain::Sealer::seal(self.cipher.as_ref(), purpose, &json))
    }

    fn open_json<T: for<'de> Deserialize<'de>>(&self, purpose: &str, sealed: &[u8]) -> Result<T> {
        let json = domain::Sealer::open(self.cipher.as_ref(), purpose, sealed)?;
        serde_json::from_slice(&json)
            .map_err(|e| domain::Error::Internal(format!("cannot decode {purpose}: {e}")))
    }
}

impl OAuth {
    /// The path of the sign-in callback (`/auth/callback` unless `OAUTH_CALLBACK_URL` says
    /// otherwise).
    pub fn callback_path(&self) -> &str {
        self.callback.path()
    }
}

/// The authorization server's routes (all public: they are how one gets a token).
pub fn router(oauth: Arc<OAuth>) -> Router {
    let callback_path = oauth.callback.path().to_owned();
    Router::new()
        .route(
            "/.well-known/oauth-authorization-server",
            get(metadata::authorization_server),
        )
        .route(
            "/.well-known/openid-configuration",
            get(metadata::authorization_server),
        )
        .route(
            "/.well-known/oauth-protected-resource",
            get(metadata::protected_resource_root),
        )
        .route(
            "/.well-known/oauth-protected-resource/{*path}",
            get(metadata::protected_resource),
        )
        .route("/.well-known/jwks.json", get(metadata::jwks))
        .merge(
            Router::new()
                .route("/authorize", get(endpoints::authorize))
                .route(
                    "/consent",
                    get(endpoints::consent_page).post(endpoints::consent),
                )
                .route_layer(axum::middleware::from_fn_with_state(
                    oauth.clone(),
                    endpoints::limited,
                )),
        )
        .merge(
            Router::new()
                .route("/register", post(endpoints::register))
                .route(&callback_path, get(endpoints::callback))
                .route("/token", post(endpoints::token))
                .route("/revoke", post(endpoints::revoke))
                .route_layer(axum::middleware::from_fn_with_state(
                    oauth.clone(),
                    endpoints::audited,
                )),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_OAUTH_BODY_BYTES))
        .layer(axum::middleware::map_response(oauth_shaped))
        .with_state(oauth)
}

/// Largest body an OAuth endpoint reads.
const MAX_OAUTH_BODY_BYTES: usize = 64 * 1024;

/// A body the endpoints could not read (too large, not text) is refused the RFC 6749 way, as
/// JSON, rather than with the framework's plain-text rejection.
async fn oauth_shaped(response: axum::response::Response) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    let description = match response.status() {
        StatusCode::PAYLOAD_TOO_LARGE if plain => {
            format!("the request body is larger than {MAX_OAUTH_BODY_BYTES} bytes")
        }
        StatusCode::BAD_REQUEST if plain => "the request body cannot be read".to_owned(),
        _ => return response,
    };
    let status = response.status();
    let mut answer = (
        status,
        axum::Json(serde_json::json!({
            "error": "invalid_request",
            "error_description": description,
        })),
    )
        .into_response();
    answer.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    answer
}

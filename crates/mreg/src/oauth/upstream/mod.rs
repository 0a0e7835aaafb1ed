//! The upstream identity provider: Entra ID (the preset) or any OpenID Connect provider. Its
//! endpoints come from its discovery document; its signing keys are cached and fetched again for
//! an unknown `kid` at most once a minute, so a flood of made-up key ids cannot turn mreg into a
//! JWKS-fetching amplifier.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::{Error, Result};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};
use url::Url;

use crate::config::Config;

/// Scopes OpenID Connect defines; never prefixed, never checked as API scopes.
pub const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// The least time between two JWKS fetches caused by unknown key ids.
const JWKS_REFETCH: Duration = Duration::from_secs(60);
/// Keys are refreshed on use after this long even when every `kid` is known.
const JWKS_MAX_AGE: Duration = Duration::from_secs(3600);
/// Upstream calls give up after this long.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(15);

/// Which kind of provider.
#[derive(Debug, Clone)]
pub enum Kind {
    /// Entra ID: v2 endpoints, `api://` scope prefixes, issuer per tenant.
    Azure {
        /// `AZURE_TENANT_ID`.
        tenant: String,
        /// Tenants allowed to sign in (empty: only the configured one).
        allowed_tenants: Vec<String>,
        /// Custom scopes of mreg's app.
        api_scopes: Vec<String>,
        /// Graph base URL when users are confirmed with `/me`.
        graph: Option<Url>,
    },
    /// A generic OpenID Connect provider.
    Oidc,
}

/// The endpoints from the discovery document.
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    /// Issuer (Entra's multi-tenant documents contain a `{tenantid}` placeholder).
    pub issuer: String,
    /// Authorization endpoint.
    pub authorization_endpoint: Url,
    /// Token endpoint.
    pub token_endpoint: Url,
    /// Key set.
    pub jwks_uri: Url,
}

/// Tokens from the upstream token endpoint (no `Debug`: nothing may print them).
#[derive(Clone, Deserialize, serde::Serialize)]
pub struct TokenSet {
    /// Access token (for Graph, never handed to clients).
    #[serde(default)]
    pub access_token: Option<String>,
    /// ID token.
    #[serde(default)]
    pub id_token: Option<String>,
    /// Refresh token.
    #[serde(default)]
    pub refresh_token: Option<String>,
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, DecodingKey>,
    /// When the set was last fetched successfully.
    fetched: Option<Instant>,
    /// When a fetch was last tried; tries are at most [`JWKS_REFETCH`] apart.
    attempted: Option<Instant>,
}

/// The configured upstream provider.
pub struct Upstream {
    /// Its kind.
    pub kind: Kind,
    /// mreg's client id there.
    pub client_id: String,
    client_secret: SecretString,
    discovery: Url,
    /// Scopes requested at sign-in (`OAUTH_SCOPES`, or `openid profile email`).
    pub sign_in_scopes: Vec<String>,
    skew: Duration,
    http: reqwest::Client,
    metadata: RwLock<Option<Arc<Metadata>>>,
    keys: RwLock<KeyCache>,
    /// Held while the key set is being fetched, so that only one request fetches at a time.
    fetching: Mutex<()>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("kind", &self.kind)
            .field("client_id", &self.client_id)
            .field("discovery", &self.discovery.as_str())
            .finish_non_exhaustive()
    }
}

fn trimmed(url: &Url) -> &str {
    url.as_str().trim_end_matches('/')
}

impl Upstream {
    /// The provider of `config`, if one is configured.
    pub fn from_config(config: &Config) -> anyhow::Result<Option<Self>> {
        let http = reqwest::Client::builder()
            .timeout(UPSTREAM_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let skew = config.azure.clock_skew;
        if let Some(oidc) = &config.auth.oidc {
            let discovery = Url::parse(&format!(
                "{}/.well-known/openid-configuration",
                trimmed(&oidc.issuer)
            ))?;
            return Ok(Some(Self {
                kind: Kind::Oidc,
                client_id: oidc.client_id.clone(),
                client_secret: oidc.client_secret.clone(),
                discovery,
                sign_in_scopes: config.azure.scopes.clone(),
                skew,
                http,
                metadata: RwLock::new(None),
                keys: RwLock::new(KeyCache::default()),
                fetching: Mutex::new(()),
            }));
        }
        let azure = &config.azure;
        let (Some(tenant), Some(client_id), Some(secret)) =
            (&azure.tenant_id, &azure.client_id, &azure.client_secret)
        else {
            return Ok(None);
        };
        let discovery = Url::parse(&format!(
            "{}/{tenant}/v2.0/.well-known/openid-configuration",
            trimmed(&azure.authority_host)
        ))?;
        Ok(Some(Self {
            kind: Kind::Azure {
                tenant: tenant.clone(),
                allowed_tenants: azure.allowed_tenants.clone(),
                api_scopes: azure.api_scopes.clone(),
                graph: azure.validate_with_graph.then(|| azure.graph_url.clone()),
            },
            client_id: client_id.clone(),
            client_secret: secret.clone(),
            discovery,
            sign_in_scopes: azure.scopes.clone(),
            skew,
            http,
            metadata: RwLock::new(None),
            keys: RwLock::new(KeyCache::default()),
            fetching: Mutex::new(()),
        }))
    }

    /// Scopes a client may ask mreg for: OIDC scopes, the sign-in scopes and the app's own.
    pub fn supported_scopes(&self) -> Vec<String> {
        let mut scopes: Vec<String> = self.sign_in_scopes.clone();
        if let Kind::Azure { api_scopes, .. } = &self.kind {
            scopes.extend(api_scopes.iter().cloned());
        }
        for s in OIDC_SCOPES {
            if !scopes.iter().any(|x| x == s) {
                scopes.push(s.to_owned());
            }
        }
        scopes
    }

    /// How `scopes` (as the client asked for them) are spelled towards the provider, with
    /// `openid` and `offline_access` always added. Entra wants custom scopes as
    /// `api://{client id}/NAME`.
    pub fn upstream_scopes(&self, scopes: &[String]) -> Vec<String> {
        let mut out: Vec<String> = scopes
            .iter()
            .map(|s| match &self.kind {
                Kind::Azure { api_scopes, .. } if api_scopes.contains(s) => {
                    format!("api://{}/{s}", self.client_id)
                }
                _ => s.clone(),
            })
            .collect();
        // Confirming the user with Graph needs a Graph token, whatever the client asked for.
        let graph = matches!(&self.kind, Kind::Azure { graph: Some(_), .. });
        let extra: &[&str] = if graph {
            &["openid", "offline_access", "User.Read"]
        } else {
            &["openid", "offline_access"]
        };
        for s in extra {
            if !out.iter().any(|x| x.eq_ignore_ascii_case(s)) {
                out.push((*s).to_owned());
            }
        }
        out
    }

    /// The scopes to send with a code or refresh exchange. Entra issues a token for one
    /// resource at a time (AADSTS28000), so when sign-in scopes of another resource (Graph) are
    /// present the app's own scopes are left out, and the other way round.
    pub fn exchange_scopes(&self, scopes: &[String]) -> String {
        let upstream = self.upstream_scopes(scopes);
        let foreign: Vec<&String> = upstream
            .iter()
            .filter(|s| !OIDC_SCOPES.contains(&s.as_str()) && !s.starts_with("api://"))
            .collect();
        let keep = |s: &&String| {
            OIDC_SCOPES.contains(&s.as_str()) || (foreign.is_empty() == s.starts_with("api://"))
        };
        upstream
            .iter()
            .filter(keep)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The discovery document, fetched once and kept.
    pub async fn metadata(&self) -> Result<Arc<Metadata>> {
        if let Some(meta) = self.metadata.read().await.as_ref() {
            return Ok(meta.clone());
        }
        let mut slot = self.metadata.write().await;
        if let Some(meta) = slot.as_ref() {
            return Ok(meta.clone());
        }
        let response = self
            .http
            .get(self.discovery.clone())
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| Error::unavailable("identity provider", e))?;
        let meta: Metadata = response
            .json()
            .await
            .map_err(|e| Error::unavailable("identity provider", e))?;
        if let Kind::Oidc = self.kind {
            let expected = self
                .discovery
                .as_str()
                .trim_end_matches("/.well-known/openid-configuration");
            if meta.issuer.trim_end_matches('/') != expected {
                return Err(Error::Internal(format!(
                    "the provider's discovery document names issuer {} instead of {expected}",
                    meta.issuer
                )));
            }
        }
        let meta = Arc::new(meta);
        *slot = Some(meta.clone());
        Ok(meta)
    }

    /// The key `kid`, fetching the key set when it is unknown (at most once a minute) or old.
    /// Only one request fetches at a time; requests for known keys never wait for a fetch (an
    /// old set keeps serving while one request refreshes it).
    async fn key(&self, kid: &str) -> std::result::Result<DecodingKey, String> {
        {
            let cache = self.keys.read().await;
            if let Some(key) = cache.keys.get(kid) {
                let stale = cache.fetched.is_none_or(|t| t.elapsed() > JWKS_MAX_AGE)
                    && cache.attempted.is_none_or(|t| t.elapsed() > JWKS_REFETCH);
                let key = key.clone();
                drop(cache);
                if stale && let Ok(_fetching) = self.fetching.try_lock() {
                    self.refresh_keys().await;
                }
                return Ok(key);
            }
        }
        let _fetching = self.fetching.lock().await;
        let may_fetch = {
            let cache = self.keys.read().await;
            if let Some(key) = cache.keys.get(kid) {
                return Ok(key.clone());
            }
            cache.attempted.is_none_or(|t| t.elapsed() > JWKS_REFETCH)
        };
        if may_fetch {
            self.refresh_keys().await;
        }
        self.keys
            .read()
            .await
            .keys
            .get(kid)
            .cloned()
            .ok_or_else(|| format!("the signing key '{kid}' is unknown"))
    }

    /// Fetches the key set; on failure keeps the old one.
    async fn refresh_keys(&self) {
        let fetched = self.fetch_keys().await;
        let mut cache = self.keys.write().await;
        cache.attempted = Some(Instant::now());
        match fetched {
            Ok(keys) => {
                cache.keys = keys;
                cache.fetched = cache.attempted;
            }
            Err(e) => tracing::warn!(error = %e, "cannot fetch the identity provider's keys"),
        }
    }

    async fn fetch_keys(&self) -> Result<HashMap<String, DecodingKey>> {
        let meta = self.metadata().await?;
        let set: JwkSet = self
            .http
            .get(meta.jwks_uri.clone())
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| Error::unavailable("identity provider keys", e))?
            .json()
            .await
            .map_err(|e| Error::unavailable("identity provider keys", e))?;
        Ok(set
            .keys
            .iter()
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                let rsa = matches!(
                    jwk.algorithm,
                    jsonwebtoken::jwk::AlgorithmParameters::RSA(_)
                );
                let key = DecodingKey::from_jwk(jwk).ok()?;
                rsa.then_some((kid, key))
            })
            .collect())
    }

    /// Checks the issuer of a token: the document's issuer, with Entra's `{tenantid}`
    /// placeholder filled from the token's `tid`, and the tenant on the allowlist.
    fn check_issuer(&self, meta: &Metadata, claims: &Value) -> std::result::Result<(), String> {
        let iss = claims["iss"].as_str().ok_or("the token has no issuer")?;
        let expected = self.tenant_issuer(meta, claims["tid"].as_str())?;
        if iss != expected {
            return Err(format!("issuer {iss} is not {expected}"));
        }
        Ok(())
    }

    /// The issuer a token of tenant `tid` must name; for Entra, an error when that tenant may
    /// not sign in (not on `AZURE_ALLOWED_TENANTS`, or not the app's own tenant).
    fn tenant_issuer(
        &self,
        meta: &Metadata,
        tid: Option<&str>,
    ) -> std::result::Result<String, String> {
        match &self.kind {
            Kind::Oidc => Ok(meta.issuer.clone()),
            Kind::Azure {
                allowed_tenants, ..
            } => {
                let tid = tid
                    .ok_or("the token has no tenant (tid)")?
                    .to_ascii_lowercase();
                if !allowed_tenants.is_empty() && !allowed_tenants.contains(&tid) {
                    return Err(format!("tenant {tid} is not allowed to sign in"));
                }
                if meta.issuer.contains("{tenantid}") {
                    Ok(meta.issuer.replace("{tenantid}", &tid))
                } else if meta
                    .issuer
                    .split('/')
                    .any(|segment| segment.eq_ignore_ascii_case(&tid))
                {
                    Ok(meta.issuer.clone())
                } else {
                    Err(format!("tenant {tid} is not this app's tenant"))
                }
            }
        }
    }

    /// Whether users of tenant `tid` may (still) sign in, by the configuration of now: checked
    /// on every refresh, so that a tenant taken off `AZURE_ALLOWED_TENANTS` loses its grants.
    /// Always true for a generic OpenID Connect provider (one issuer, no tenants). A refusal is
    /// [`Error::Forbidden`]; a provider that cannot be asked for its metadata is an error too.
    pub async fn check_tenant(&self, tid: Option<&str>) -> Result<()> {
        if let Kind::Oidc = self.kind {
            return Ok(());
        }
        let meta = self.metadata().await?;
        self.tenant_issuer(&meta, tid)
            .map(|_| ())
            .map_err(Error::Forbidden)
    }

    /// Validates a token the provider signed (RS256 only) for one of `audiences`, and returns its
    /// claims.
    pub async fn validate(
        &self,
        token: &str,
        audiences: &[&str],
    ) -> std::result::Result<Value, String> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
        if header.alg != Algorithm::RS256 {
            return Err(format!("algorithm {:?} is not accepted", header.alg));
        }
        let kid = header.kid.ok_or("the token names no key")?;
        let key = self.key(&kid).await?;
        let meta = self.metadata().await.map_err(|e| e.to_string())?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = self.skew.as_secs();
        validation.set_audience(audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(|e| format!("invalid token: {e}"))?
            .claims;
        self.check_issuer(&meta, &claims)?;
        Ok(claims)
    }

    /// Audiences of access tokens the provider issues for this app.
    pub fn app_audiences(&self) -> Vec<String> {
        match self.kind {
            Kind::Azure { .. } => vec![self.client_id.clone(), format!("api://{}", self.client_id)],
            Kind::Oidc => vec![self.client_id.clone()],
        }
    }

    /// Exchanges an authorization code (with mreg's PKCE verifier).
    pub async fn exchange_code(
        &self,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
        scope: &str,
    ) -> Result<TokenSet> {
        self.token_request(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
            ("scope", scope),
        ])
        .await
    }

    /// Refreshes the upstream tokens.
    pub async fn refresh(&self, refresh_token: &str, scope: &str) -> Result<TokenSet> {
        self.token_request(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("scope", scope),
        ])
        .await
    }

    async fn token_request(&self, form: &[(&str, &str)]) -> Result<TokenSet> {
        let meta = self.metadata().await?;
        let mut body: Vec<(&str, &str)> = form.to_vec();
        body.push(("client_id", &self.client_id));
        body.push(("client_secret", self.client_secret.expose_secret()));
        let response = self
            .http
            .post(meta.token_endpoint.clone())
            .form(&body)
            .send()
            .await
            .map_err(|e| Error::unavailable("identity provider", e))?;
        let status = response.status();
        if !status.is_success() {
            // The error body names the problem (AADSTS…) and holds no secrets.
            let detail: Value = response.json().await.unwrap_or(Value::Null);
            let error = detail["error"].as_str().unwrap_or("error");
            let description = detail["error_description"].as_str().unwrap_or("");
            return Err(Error::Forbidden(format!(
                "the identity provider refused the exchange ({status}): {error} {description}"
            )));
        }
        response
            .json()
            .await
            .map_err(|e| Error::unavailable("identity provider", e))
    }

    /// Confirms the user with Microsoft Graph `/me` when configured: the call must succeed and
    /// name the same object id.
    pub async fn confirm_with_graph(
        &self,
        access_token: Option<&str>,
        oid: Option<&str>,
    ) -> Result<()> {
        let Kind::Azure {
            graph: Some(graph), ..
        } = &self.kind
        else {
            return Ok(());
        };
        let token = access_token.ok_or_else(|| {
            Error::Forbidden("the identity provider returned no access token for Graph".to_owned())
        })?;
        let url = format!("{}/v1.0/me", trimmed(graph));
        let response = self
            .http
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| Error::unavailable("Microsoft Graph", e))?;
        if !response.status().is_success() {
            return Err(Error::Forbidden(format!(
                "Microsoft Graph did not confirm the user ({})",
                response.status()
            )));
        }
        let me: Value = response
            .json()
            .await
            .map_err(|e| Error::unavailable("Microsoft Graph", e))?;
        match (oid, me["id"].as_str()) {
            (Some(oid), Some(id)) if oid.eq_ignore_ascii_case(id) => Ok(()),
            (None, Some(_)) => Ok(()),
            _ => Err(Error::Forbidden(
                "Microsoft Graph names a different user than the ID token".to_owned(),
            )),
        }
    }

    /// The upstream authorization URL for one sign-in.
    pub fn authorize_url(
        &self,
        meta: &Metadata,
        redirect_uri: &str,
        scopes: &[String],
        state: &str,
        nonce: &str,
        challenge: &str,
    ) -> Url {
        let mut url = meta.authorization_endpoint.clone();
        url.query_pairs_mut()
            .append_pair("client_id", &self.client_id)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("response_mode", "query")
            .append_pair("scope", &self.upstream_scopes(scopes).join(" "))
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", challenge)
            .append_pair("code_challenge_method", "S256");
        url
    }
}

#[cfg(test)]
mod tests;

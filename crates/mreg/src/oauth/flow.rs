//! The authorization-server endpoints: `/register`, `/authorize`, `/consent`, the upstream
//! callback, `/token` and `/revoke`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use url::Url;

use super::cimd;
use super::clients::{self, Client, RegistrationRequest};
use super::keys::AccessClaims;
use super::{
    Identity, OAuth, TRANSACTION_TTL, grant_revoked_key, pkce_challenge, random_token, sha256_hex,
    unix_now,
};
use crate::store::auth::{GrantRow, Rotation};

const TXN_PURPOSE: &str = "oauth-transaction";
const CODE_PURPOSE: &str = "oauth-code";
const GRANT_PURPOSE: &str = "oauth-grant";
/// Longest `state` accepted at `/authorize` (it is stored with the sign-in and sent back).
const MAX_STATE: usize = 512;

/// A sign-in between `/authorize` and `/auth/callback` (no `Debug`: it holds the PKCE verifier).
#[derive(Serialize, Deserialize)]
struct Transaction {
    client_id: String,
    client_name: Option<String>,
    redirect_uri: String,
    native: bool,
    state: Option<String>,
    challenge: String,
    scopes: Vec<String>,
    resource: String,
    csrf: String,
    browser: String,
    verifier: String,
    nonce: String,
    approved: bool,
}

/// What mreg's one-time code stands for (no `Debug`: it holds the provider's refresh token).
#[derive(Serialize, Deserialize)]
struct CodeGrant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    scopes: Vec<String>,
    resource: String,
    identity: Identity,
    upstream_refresh: Option<String>,
    /// Expiry of the provider's ID token (Unix seconds).
    #[serde(default)]
    upstream_expires_at: Option<i64>,
}

/// What a refresh-token family stands for (sealed in the database; no `Debug`).
#[derive(Serialize, Deserialize)]
struct GrantData {
    scopes: Vec<String>,
    resource: String,
    identity: Identity,
    upstream_refresh: Option<String>,
    /// Expiry of the provider's ID token at sign-in (Unix seconds): without a provider refresh
    /// token, the grant ends then.
    #[serde(default)]
    upstream_expires_at: Option<i64>,
}

// ---------------------------------------------------------------- helpers

/// Query or form parameters; a parameter given twice is an error (RFC 6749 §3.1).
fn params(raw: &str) -> Result<HashMap<String, String>, String> {
    let mut map = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
        if map.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!("parameter '{k}' is given more than once"));
        }
    }
    Ok(map)
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;color:#222}}\
         .host{{font-size:1.3rem;font-weight:bold}}button{{font-size:1rem;padding:.5rem 1.5rem;margin-right:1rem}}\
         code{{background:#eee;padding:0 .2rem}}</style></head><body><h1>{title}</h1>{body}</body></html>",
        title = escape(title)
    );
    let mut response = (status, Html(html)).into_response();
    let h = response.headers_mut();
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn error_page(status: StatusCode, message: &str) -> Response {
    let response = page(
        status,
        "Sign-in cannot continue",
        &format!("<p>{}</p>", escape(message)),
    );
    note(response, |n| n.error = Some(message.to_owned()))
}

// ---------------------------------------------------------------- audit

/// What an OAuth endpoint tells the audit layer ([`audited`]) about a request it handled,
/// carried in the response's extensions.
#[derive(Debug, Clone, Default)]
struct AuditNote {
    operation: Option<&'static str>,
    actor: Option<domain::Principal>,
    client_id: Option<String>,
    error: Option<String>,
}

fn note(mut response: Response, f: impl FnOnce(&mut AuditNote)) -> Response {
    let extensions = response.extensions_mut();
    if extensions.get::<AuditNote>().is_none() {
        extensions.insert(AuditNote::default());
    }
    if let Some(n) = extensions.get_mut::<AuditNote>() {
        f(n);
    }
    response
}

impl OAuth {
    /// The caller's address, when requests are limited per address.
    fn address_of(&self, request: &axum::extract::Request) -> Option<String> {
        self.address_limit
            .as_ref()
            .map(|limit| limit.client_address(request))
    }

    /// Spends one request of the budget of `address` (from [`OAuth::address_of`]).
    async fn admit_address(&self, address: Option<String>) -> Result<(), crate::policy::Refusal> {
        match (&self.address_limit, address) {
            (Some(limit), Some(address)) => limit.admit(&address).await,
            _ => Ok(()),
        }
    }
}

/// The answer to a caller over its address budget.
fn too_many(refusal: &crate::policy::Refusal) -> Response {
    let mut response = token_error(
        StatusCode::TOO_MANY_REQUESTS,
        "temporarily_unavailable",
        &format!("too many requests from this address: {}", refusal.message()),
    );
    if let Some(secs) = refusal.retry_after_secs() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// Middleware of the authorization pages (`/authorize`, `/consent`): each request spends the
/// caller's address budget, since each stores a sign-in transaction (and may fetch a client
/// metadata document). Only a refusal is audited; the sign-in itself is, at the callback.
pub async fn limited(
    State(oauth): State<Arc<OAuth>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Err(refusal) = oauth.admit_address(oauth.address_of(&request)).await else {
        return next.run(request).await;
    };
    let request_id = crate::http::request_id::of(request.extensions()).to_owned();
    let operation = match request.uri().path() {
        "/consent" => "oauth.consent",
        _ => "oauth.authorize",
    };
    match oauth
        .audit
        .open(&unauthenticated(), &request_id, operation)
        .await
    {
        Ok(entry) => entry.refused(&refusal),
        Err(e) => {
            return token_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                &e.to_string(),
            );
        }
    }
    too_many(&refusal)
}

/// The actor of a request made before sign-in.
fn unauthenticated() -> domain::Principal {
    domain::Principal {
        subject: "unauthenticated".to_owned(),
        roles: Vec::new(),
        ..domain::Principal::anonymous()
    }
}

/// Middleware of the audited OAuth endpoints: client registration, sign-in (the callback),
/// token issue and refresh, revocation. One row each, success or failure; when the audit log
/// cannot take it, the request is refused before it runs.
pub async fn audited(
    State(oauth): State<Arc<OAuth>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let operation = match request.uri().path() {
        "/register" => "oauth.register",
        "/token" => "oauth.token",
        "/revoke" => "oauth.revoke",
        _ => "oauth.login",
    };
    let request_id = crate::http::request_id::of(request.extensions()).to_owned();
    let mut entry = match oauth
        .audit
        .open(&unauthenticated(), &request_id, operation)
        .await
    {
        Ok(entry) => entry,
        Err(e) => {
            return token_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                &e.to_string(),
            );
        }
    };
    if let Err(refusal) = oauth.admit_address(oauth.address_of(&request)).await {
        entry.refused(&refusal);
        return too_many(&refusal);
    }
    let response = next.run(request).await;
    let n = response
        .extensions()
        .get::<AuditNote>()
        .cloned()
        .unwrap_or_default();
    if let Some(op) = n.operation {
        entry.operation(op);
    }
    if let Some(actor) = &n.actor {
        entry.actor(actor);
    }
    if let Some(client) = &n.client_id {
        entry.client(client);
    }
    let status = response.status();
    let ok = (status.is_success() || status.is_redirection()) && n.error.is_none();
    entry.finish(if ok {
        Ok(())
    } else {
        Err(n
            .error
            .unwrap_or_else(|| format!("HTTP {}", status.as_u16())))
    });
    response
}

fn redirect(location: &str) -> Response {
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Sends the browser back to the client with an error (RFC 6749 §4.1.2.1, with `iss`).
fn redirect_error(
    oauth: &OAuth,
    redirect_uri: &str,
    error: &str,
    description: &str,
    state: Option<&str>,
) -> Response {
    let Ok(mut url) = Url::parse(redirect_uri) else {
        return error_page(StatusCode::BAD_REQUEST, description);
    };
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("error", error);
        q.append_pair("error_description", description);
        if let Some(state) = state {
            q.append_pair("state", state);
        }
        q.append_pair("iss", &oauth.issuer);
    }
    note(redirect(url.as_str()), |n| {
        n.error = Some(format!("{error}: {description}"));
    })
}

fn cookie_name(oauth: &OAuth) -> &'static str {
    if oauth.secure_cookies {
        "__Host-mreg_consent"
    } else {
        "mreg_consent"
    }
}

/// The browser-binding value from the request's cookie, if present and well-formed.
fn browser_cookie(oauth: &OAuth, headers: &HeaderMap) -> Option<String> {
    let name = cookie_name(oauth);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| {
            v.len() == 43
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn set_cookie(oauth: &OAuth, value: &str) -> HeaderValue {
    let secure = if oauth.secure_cookies { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        cookie_name(oauth),
        TRANSACTION_TTL.as_secs()
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn same(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

fn is_pkce_value(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

impl OAuth {
    /// A registered client, or the client a metadata document URL describes (fetched once and
    /// then cached). A document that cannot be used is [`domain::Error::Forbidden`] naming why.
    async fn client(&self, client_id: &str) -> domain::Result<Option<Client>> {
        if cimd::is_document_url(client_id) {
            let key = format!("oauth:cimd:{}", sha256_hex(client_id));
            if let Some(bytes) = self.cache.get(&key).await?
                && let Ok(client) = serde_json::from_slice::<Client>(&bytes)
            {
                return Ok(Some(client));
            }
            // A document that could not be used is not fetched again for a while: each request
            // naming it would otherwise make mreg connect somewhere.
            let failed = format!("oauth:cimd-failed:{}", sha256_hex(client_id));
            if let Some(why) = self.cache.get(&failed).await? {
                return Err(domain::Error::Forbidden(format!(
                    "{} (remembered for up to {} s)",
                    String::from_utf8_lossy(&why),
                    cimd::NEGATIVE_TTL.as_secs()
                )));
            }
            let (client, ttl) = match cimd::fetch(
                client_id,
                self.cimd_allow_private,
                &self.supported_scopes,
            )
            .await
            {
                Ok(found) => found,
                Err(r) => {
                    if let Err(e) = self
                        .cache
                        .set(&failed, r.description.as_bytes(), cimd::NEGATIVE_TTL)
                        .await
                    {
                        tracing::warn!(error = %e, "cannot remember a failed metadata document");
                    }
                    return Err(domain::Error::Forbidden(r.description));
                }
            };
            if let Ok(bytes) = serde_json::to_vec(&client) {
                self.cache.set(&key, &bytes, ttl).await?;
            }
            return Ok(Some(client));
        }
        if client_id.len() > 100 {
            return Ok(None);
        }
        let Some(json) = self.store.client(client_id).await? else {
            return Ok(None);
        };
        serde_json::from_str(&json)
            .map(Some)
            .map_err(|e| domain::Error::Internal(format!("stored client {client_id}: {e}")))
    }

    async fn load_transaction(&self, id: &str) -> domain::Result<Option<Transaction>> {
        match self.cache.get(&format!("oauth:txn:{id}")).await? {
            Some(sealed) => self.open_json(TXN_PURPOSE, &sealed).map(Some),
            None => Ok(None),
        }
    }

    async fn save_transaction(&self, id: &str, txn: &Transaction) -> domain::Result<()> {
        let sealed = self.seal_json(TXN_PURPOSE, txn)?;
        self.cache
            .set(&format!("oauth:txn:{id}"), &sealed, TRANSACTION_TTL)
            .await
    }

    /// Revokes grant `id`: its refresh token is refused from now on, and so are the access
    /// tokens issued from it (their `gid`), through a marker in the shared cache that lives as
    /// long as any of them can; and in the database, which decides while the cache is down.
    /// Returns whether the database recorded it.
    async fn end_grant(&self, id: &str, now: i64) -> bool {
        let ttl = self.access_ttl + self.skew + std::time::Duration::from_secs(60);
        mark_until_done(self.cache.clone(), grant_revoked_key(id), ttl).await;
        match self.store.revoke_grant(id, now).await {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(error = %e, grant = %id, "cannot revoke the grant in the database");
                false
            }
        }
    }
}

/// Sets the revocation marker `key` in the cache for `ttl`. When the cache does not answer, keeps
/// trying in the background (every second, for as long as the marker would live), so that once
/// it is back every replica sees the revocation — meanwhile the database decides. Returns
/// whether the marker was set at once.
async fn mark_until_done(
    cache: Arc<dyn domain::Cache>,
    key: String,
    ttl: std::time::Duration,
) -> bool {
    if cache.set(&key, b"1", ttl).await.is_ok() {
        return true;
    }
    tracing::warn!("the cache does not answer: a revocation marker is set once it is back");
    let until = std::time::Instant::now() + ttl;
    tokio::spawn(async move {
        while std::time::Instant::now() < until {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() || cache.set(&key, b"1", left).await.is_ok() {
                return;
            }
        }
    });
    false
}

// ---------------------------------------------------------------- /register

/// `POST /register` (RFC 7591).
pub async fn register(State(oauth): State<Arc<OAuth>>, body: axum::body::Bytes) -> Response {
    let refusal = |error: &str, description: &str| {
        let response = (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": error, "error_description": description})),
        )
            .into_response();
        note(response, |n| {
            n.error = Some(format!("{error}: {description}"))
        })
    };
    let request: RegistrationRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return refusal(
                "invalid_client_metadata",
                &format!("the body is not a client registration: {e}"),
            );
        }
    };
    let client_id = uuid::Uuid::new_v4().to_string();
    let client = match clients::register(request, &oauth.supported_scopes, client_id, unix_now()) {
        Ok(c) => c,
        Err(r) => return refusal(r.error, &r.description),
    };
    // Open registration must not grow the table without bound: clients that never signed in
    // are pruned after a week, and until then at most `MREG_OAUTH_MAX_IDLE_CLIENTS` exist.
    match oauth.store.idle_clients().await {
        Ok(idle) if idle >= oauth.max_idle_clients => {
            tracing::warn!(
                idle,
                "client registration refused: too many clients without a sign-in"
            );
            let description =
                "too many clients are registered without having signed in; try again later";
            let mut response = (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "temporarily_unavailable", "error_description": description})),
            )
                .into_response();
            let h = response.headers_mut();
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("3600"));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return note(response, |n| {
                n.error = Some(format!("temporarily_unavailable: {description}"))
            });
        }
        Ok(_) => {}
        Err(e) => return error_status(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
    let stored = match serde_json::to_string(&client) {
        Ok(s) => s,
        Err(e) => return error_status(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    if let Err(e) = oauth
        .store
        .insert_client(&client.client_id, &stored, unix_now())
        .await
    {
        return error_status(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
    }
    tracing::info!(client_id = %client.client_id, name = client.client_name.as_deref(), "client registered");
    let mut response = (StatusCode::CREATED, Json(&client)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    note(response, |n| n.client_id = Some(client.client_id.clone()))
}

fn error_status(status: StatusCode, message: &str) -> Response {
    tracing::error!(error = message, "authorization server failure");
    let response = (
        status,
        Json(json!({"error": "server_error", "error_description": "the authorization server could not complete the request"})),
    )
        .into_response();
    note(response, |n| n.error = Some(message.to_owned()))
}

// ---------------------------------------------------------------- /authorize

/// `GET /authorize`: checks the request and starts a transaction, then shows the consent page.
pub async fn authorize(
    State(oauth): State<Arc<OAuth>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let p = match params(query.as_deref().unwrap_or("")) {
        Ok(p) => p,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e),
    };
    let Some(client_id) = p.get("client_id") else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "The request names no client (client_id).",
        );
    };
    let client = match oauth.client(client_id).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "This client is not registered here. The application should register again.",
            );
        }
        Err(domain::Error::Forbidden(why)) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                &format!("This client cannot be used: {why}"),
            );
        }
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let redirect_uri = match (p.get("redirect_uri"), client.redirect_uris.as_slice()) {
        (Some(r), _) => r.clone(),
        (None, [only]) => only.clone(),
        (None, _) => {
            return error_page(StatusCode::BAD_REQUEST, "The request has no redirect_uri.");
        }
    };
    let native = client.application_type == "native";
    if !clients::redirect_matches(&client.redirect_uris, &redirect_uri)
        || clients::check_redirect_uri(&redirect_uri, native).is_err()
    {
        return error_page(
            StatusCode::BAD_REQUEST,
            "The redirect_uri is not one this client registered.",
        );
    }
    // Every client here registered itself (or is a metadata document anyone can publish), so
    // its redirect URI proves nothing: until the user has seen the consent page, errors are
    // shown here rather than sent to the redirect URI (no open redirector).
    let fail = |error: &str, description: &str| {
        note(
            error_page(
                StatusCode::BAD_REQUEST,
                &format!(
                    "The application's sign-in request is not valid: {description} ({error})."
                ),
            ),
            |n| n.error = Some(format!("{error}: {description}")),
        )
    };
    let state = p.get("state").cloned();
    if state.as_ref().is_some_and(|s| s.len() > MAX_STATE) {
        return fail(
            "invalid_request",
            &format!("state is longer than {MAX_STATE} characters"),
        );
    }
    if p.get("response_type").map(String::as_str) != Some("code") {
        return fail("unsupported_response_type", "response_type must be code");
    }
    let Some(challenge) = p.get("code_challenge") else {
        return fail(
            "invalid_request",
            "code_challenge is required (PKCE with S256)",
        );
    };
    if p.get("code_challenge_method").map(String::as_str) != Some("S256") {
        return fail("invalid_request", "code_challenge_method must be S256");
    }
    if challenge.len() != 43 || !is_pkce_value(challenge) {
        return fail("invalid_request", "code_challenge is not an S256 challenge");
    }
    let resource = match p.get("resource") {
        Some(r) if oauth.is_resource(r.trim_end_matches('/')) => r.trim_end_matches('/').to_owned(),
        Some(_) => {
            return fail(
                "invalid_target",
                &format!(
                    "resource must be this gateway ({}) or one of its MCP endpoints",
                    oauth.mcp_resource()
                ),
            );
        }
        None => oauth.mcp_resource(),
    };
    let scopes: Vec<String> = match p
        .get("scope")
        .map(|s| s.split_whitespace().collect::<Vec<_>>())
    {
        Some(s) if !s.is_empty() => s.into_iter().map(str::to_owned).collect(),
        _ => oauth.default_scopes.clone(),
    };
    if let Some(bad) = scopes.iter().find(|s| !oauth.supported_scopes.contains(s)) {
        return fail(
            "invalid_scope",
            &format!("scope '{bad}' is not offered by this server"),
        );
    }
    let (browser, new_cookie) = match browser_cookie(&oauth, &headers) {
        Some(value) => (value, false),
        None => (random_token(32), true),
    };
    let verifier = random_token(48);
    let txn = Transaction {
        client_id: client.client_id.clone(),
        client_name: client.client_name.clone(),
        redirect_uri: redirect_uri.clone(),
        native,
        state: state.clone(),
        challenge: challenge.clone(),
        scopes,
        resource,
        csrf: random_token(32),
        browser: sha256_hex(&browser),
        verifier,
        nonce: random_token(24),
        approved: false,
    };
    let id = random_token(32);
    if let Err(e) = oauth.save_transaction(&id, &txn).await {
        return error_page(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
    }
    let mut response = redirect(&format!("{}/consent?txn={id}", oauth.issuer));
    if new_cookie {
        response
            .headers_mut()
            .append(header::SET_COOKIE, set_cookie(&oauth, &browser));
    }
    response
}

// ---------------------------------------------------------------- /consent

async fn bound_transaction(
    oauth: &OAuth,
    headers: &HeaderMap,
    id: &str,
) -> Result<Transaction, Response> {
    let txn = match oauth.load_transaction(id).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            return Err(error_page(
                StatusCode::BAD_REQUEST,
                "This sign-in has expired or was already used. Start again from the application.",
            ));
        }
        Err(e) => return Err(error_page(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())),
    };
    let bound = browser_cookie(oauth, headers).is_some_and(|b| same(&sha256_hex(&b), &txn.browser));
    if !bound {
        return Err(error_page(
            StatusCode::FORBIDDEN,
            "This sign-in was started in another browser. Start again from the application, in this browser.",
        ));
    }
    Ok(txn)
}

/// `GET /consent?txn=…`: which client, which redirect host, which scopes; Allow or Deny.
/// Showing the page again (a reload, a prefetch) shows the same form, with the same token.
pub async fn consent_page(
    State(oauth): State<Arc<OAuth>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let p = params(query.as_deref().unwrap_or("")).unwrap_or_default();
    let Some(id) = p.get("txn") else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "The consent request names no sign-in.",
        );
    };
    let txn = match bound_transaction(&oauth, &headers, id).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let host = Url::parse(&txn.redirect_uri)
        .ok()
        .and_then(|u| {
            u.host_str()
                .map(str::to_owned)
                .or_else(|| Some(u.scheme().to_owned()))
        })
        .unwrap_or_default();
    let name = txn
        .client_name
        .clone()
        .unwrap_or_else(|| "An application without a name".to_owned());
    let scopes: String = txn
        .scopes
        .iter()
        .map(|s| format!("<li><code>{}</code></li>", escape(s)))
        .collect();
    let vouched = if cimd::is_document_url(&txn.client_id) {
        let domain = Url::parse(&txn.client_id)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        format!(
            "<p>This client's description is published by <strong>{}</strong>.</p>",
            escape(&domain)
        )
    } else {
        String::new()
    };
    let body = format!(
        "<p><strong>{name}</strong> (client <code>{client}</code>) asks to use the MCP gateway \
         <code>{resource}</code> as you.</p>{vouched}\
         <p>After you sign in, you will be sent to:</p><p class=\"host\">{host}</p>\
         <p><small>{redirect}</small></p>\
         <p>It asks for:</p><ul>{scopes}</ul>\
         <p>Only allow this if you started this sign-in from that application just now.</p>\
         <form method=\"post\" action=\"/consent\">\
         <input type=\"hidden\" name=\"txn\" value=\"{id}\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <button type=\"submit\" name=\"decision\" value=\"allow\">Allow</button>\
         <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form>",
        name = escape(&name),
        client = escape(&txn.client_id),
        resource = escape(&txn.resource),
        host = escape(&host),
        redirect = escape(&txn.redirect_uri),
        id = escape(id),
        csrf = escape(&txn.csrf),
    );
    page(StatusCode::OK, "Allow access?", &body)
}

/// `POST /consent`: the decision, checked against the CSRF token and the browser cookie.
pub async fn consent(
    State(oauth): State<Arc<OAuth>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let p = match params(&body) {
        Ok(p) => p,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e),
    };
    let (Some(id), Some(decision)) = (p.get("txn"), p.get("decision")) else {
        return error_page(StatusCode::BAD_REQUEST, "The consent form is incomplete.");
    };
    let mut txn = match bound_transaction(&oauth, &headers, id).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    if !p.get("csrf").is_some_and(|c| same(c, &txn.csrf)) {
        return error_page(
            StatusCode::FORBIDDEN,
            "The consent form is stale or was not sent by this page. Start again from the application.",
        );
    }
    if decision != "allow" {
        let _ = oauth.cache.delete(&format!("oauth:txn:{id}")).await;
        return redirect_error(
            &oauth,
            &txn.redirect_uri,
            "access_denied",
            "the user denied access",
            txn.state.as_deref(),
        );
    }
    let meta = match oauth.upstream.metadata().await {
        Ok(m) => m,
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    txn.approved = true;
    if let Err(e) = oauth.save_transaction(id, &txn).await {
        return error_page(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
    }
    let url = oauth.upstream.authorize_url(
        &meta,
        oauth.callback.as_str(),
        &txn.scopes,
        id,
        &txn.nonce,
        &pkce_challenge(&txn.verifier),
    );
    redirect(url.as_str())
}

// ---------------------------------------------------------------- /auth/callback

/// The provider's redirect back: checks state and the browser cookie, exchanges the code,
/// validates the ID token, and sends the client its own one-time code.
pub async fn callback(
    State(oauth): State<Arc<OAuth>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let p = params(query.as_deref().unwrap_or("")).unwrap_or_default();
    let Some(id) = p.get("state") else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "The identity provider's answer has no state.",
        );
    };
    let txn = match bound_transaction(&oauth, &headers, id).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    // Single use from here on, whatever happens next.
    match oauth.cache.take(&format!("oauth:txn:{id}")).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "This sign-in was already completed.",
            );
        }
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
    if !txn.approved {
        return error_page(
            StatusCode::FORBIDDEN,
            "This sign-in was not approved on the consent page.",
        );
    }
    if clients::check_redirect_uri(&txn.redirect_uri, txn.native).is_err() {
        return error_page(
            StatusCode::BAD_REQUEST,
            "The client's redirect URI is no longer acceptable.",
        );
    }
    let fail = |error: &str, description: &str| {
        redirect_error(
            &oauth,
            &txn.redirect_uri,
            error,
            description,
            txn.state.as_deref(),
        )
    };
    if let Some(error) = p.get("error") {
        tracing::info!(error = %error, "the identity provider ended the sign-in with an error");
        let error = if error == "access_denied" {
            "access_denied"
        } else {
            "server_error"
        };
        return fail(error, "the identity provider did not sign the user in");
    }
    let Some(code) = p.get("code") else {
        return fail("server_error", "the identity provider returned no code");
    };
    let scope = oauth.upstream.exchange_scopes(&txn.scopes);
    let tokens = match oauth
        .upstream
        .exchange_code(code, oauth.callback.as_str(), &txn.verifier, &scope)
        .await
    {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "code exchange with the identity provider failed");
            return fail("server_error", "the identity provider refused the sign-in");
        }
    };
    let Some(id_token) = tokens.id_token.as_deref() else {
        return fail("server_error", "the identity provider returned no ID token");
    };
    let client_id = oauth.upstream.client_id.clone();
    let claims = match oauth
        .upstream
        .validate(id_token, &[client_id.as_str()])
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "ID token rejected");
            return fail(
                "access_denied",
                "the identity provider's ID token was not valid",
            );
        }
    };
    if !claims["nonce"]
        .as_str()
        .is_some_and(|n| same(n, &txn.nonce))
    {
        tracing::warn!("ID token nonce mismatch");
        return fail(
            "access_denied",
            "the identity provider's ID token was not for this sign-in",
        );
    }
    let Some(identity) = Identity::from_claims(&claims) else {
        return fail("access_denied", "the ID token names no user");
    };
    if let Err(e) = oauth
        .upstream
        .confirm_with_graph(tokens.access_token.as_deref(), identity.oid.as_deref())
        .await
    {
        tracing::warn!(error = %e, "Graph did not confirm the user");
        return fail(
            "access_denied",
            "the user could not be confirmed with Microsoft Graph",
        );
    }
    tracing::info!(subject = %identity.subject, tenant = identity.tid.as_deref(), client_id = %txn.client_id, "user signed in");
    let actor = identity.principal(txn.scopes.clone(), Some(txn.client_id.clone()));
    let code = random_token(32);
    let grant = CodeGrant {
        client_id: txn.client_id.clone(),
        redirect_uri: txn.redirect_uri.clone(),
        challenge: txn.challenge.clone(),
        scopes: txn.scopes.clone(),
        resource: txn.resource.clone(),
        identity,
        upstream_refresh: tokens.refresh_token,
        upstream_expires_at: claims["exp"].as_i64(),
    };
    let stored = match oauth.seal_json(CODE_PURPOSE, &grant) {
        Ok(s) => s,
        Err(e) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    if let Err(e) = oauth
        .cache
        .set(
            &format!("oauth:code:{}", sha256_hex(&code)),
            &stored,
            oauth.code_ttl,
        )
        .await
    {
        return error_page(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
    }
    let Ok(mut url) = Url::parse(&txn.redirect_uri) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "The client's redirect URI is not valid.",
        );
    };
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("code", &code);
        if let Some(state) = &txn.state {
            q.append_pair("state", state);
        }
        q.append_pair("iss", &oauth.issuer);
    }
    note(redirect(url.as_str()), |n| n.actor = Some(actor))
}

// ---------------------------------------------------------------- /token

fn token_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut response = (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response();
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"mreg\""),
        );
    }
    note(response, |n| {
        n.error = Some(format!("{error}: {description}"))
    })
}

fn invalid_grant(description: &str) -> Response {
    token_error(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

/// The client id of a token or revocation request: the form's, or HTTP Basic's user name.
fn client_id_of(p: &HashMap<String, String>, headers: &HeaderMap) -> Option<String> {
    if let Some(id) = p.get("client_id") {
        return Some(id.clone());
    }
    let basic = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, basic).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, _) = text.split_once(':')?;
    Some(
        url::form_urlencoded::parse(format!("x={id}").as_bytes())
            .next()
            .map(|(_, v)| v.to_string())
            .unwrap_or_default(),
    )
}

#[allow(
    clippy::result_large_err,
    reason = "the error is the finished response, built once per bad request"
)]
fn form_body(headers: &HeaderMap, body: &str) -> Result<HashMap<String, String>, Response> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form {
        return Err(token_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    params(body).map_err(|e| token_error(StatusCode::BAD_REQUEST, "invalid_request", &e))
}

/// The form of a token or revocation request and its client, which must be known: a client
/// the server forgot gets 401 `invalid_client`, on which MCP clients register again.
#[allow(
    clippy::result_large_err,
    reason = "the error is the finished response, built once per bad request"
)]
async fn client_form(
    oauth: &OAuth,
    headers: &HeaderMap,
    body: &str,
) -> Result<(HashMap<String, String>, String), Response> {
    let p = form_body(headers, body)?;
    let Some(client_id) = client_id_of(&p, headers) else {
        return Err(token_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client_id is required",
        ));
    };
    match oauth.client(&client_id).await {
        Ok(Some(_)) => Ok((p, client_id)),
        Ok(None) => Err(token_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "this client is not registered; register again",
        )),
        Err(domain::Error::Forbidden(why)) => Err(token_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            &why,
        )),
        Err(e) => Err(error_status(
            StatusCode::SERVICE_UNAVAILABLE,
            &e.to_string(),
        )),
    }
}

/// `POST /token`: `authorization_code` (with PKCE) and `refresh_token` (rotating).
pub async fn token(State(oauth): State<Arc<OAuth>>, headers: HeaderMap, body: String) -> Response {
    let (p, client_id) = match client_form(&oauth, &headers, &body).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    let response = match p.get("grant_type").map(String::as_str) {
        Some("authorization_code") => code_grant(&oauth, &client_id, &p).await,
        Some("refresh_token") => note(refresh_grant(&oauth, &client_id, &p).await, |n| {
            n.operation = Some("oauth.refresh");
        }),
        Some(other) => token_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            &format!("grant type '{other}' is not supported"),
        ),
        None => token_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "grant_type is required",
        ),
    };
    note(response, |n| n.client_id = Some(client_id))
}

async fn code_grant(oauth: &OAuth, client_id: &str, p: &HashMap<String, String>) -> Response {
    let Some(code) = p.get("code") else {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "code is required",
        );
    };
    let code_hash = sha256_hex(code);
    let used_key = format!("oauth:code-used:{code_hash}");
    let taken = match oauth.cache.take(&format!("oauth:code:{code_hash}")).await {
        Ok(t) => t,
        Err(e) => return error_status(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let Some(sealed) = taken else {
        // A code presented again was intercepted, or its first redemption was: end what was
        // issued for it (RFC 6749 §4.1.2).
        if let Ok(Some(grant_id)) = oauth.cache.take(&used_key).await {
            let grant_id = String::from_utf8_lossy(&grant_id).into_owned();
            oauth.end_grant(&grant_id, unix_now()).await;
            tracing::warn!(grant = %grant_id, client_id, "authorization code replayed; its grant is revoked");
            return invalid_grant(
                "the code was already used; the tokens issued for it are revoked",
            );
        }
        return invalid_grant("the code is invalid, expired or already used");
    };
    // The grant's id is chosen now and remembered under the spent code (before any check), so
    // that a replay racing this redemption still finds what to revoke.
    let grant_id = uuid::Uuid::new_v4().to_string();
    let used_ttl = oauth.access_ttl.max(oauth.code_ttl);
    if let Err(e) = oauth
        .cache
        .set(&used_key, grant_id.as_bytes(), used_ttl)
        .await
    {
        tracing::warn!(error = %e, "cannot remember a spent code; a replay would not revoke its grant");
    }
    let Ok(grant) = oauth.open_json::<CodeGrant>(CODE_PURPOSE, &sealed) else {
        return invalid_grant("the code is invalid, expired or already used");
    };
    if grant.client_id != client_id {
        return invalid_grant("the code was issued to another client");
    }
    if p.get("redirect_uri") != Some(&grant.redirect_uri) {
        return invalid_grant("redirect_uri does not match the authorization request");
    }
    let Some(verifier) = p.get("code_verifier") else {
        return invalid_grant("code_verifier is required (PKCE)");
    };
    if !is_pkce_value(verifier) || !same(&pkce_challenge(verifier), &grant.challenge) {
        return invalid_grant("the code_verifier does not match the code_challenge");
    }
    if let Some(resource) = p.get("resource")
        && resource.trim_end_matches('/') != grant.resource
    {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            "resource does not match the authorization request",
        );
    }
    let data = GrantData {
        scopes: grant.scopes,
        resource: grant.resource,
        identity: grant.identity,
        upstream_refresh: grant.upstream_refresh,
        upstream_expires_at: grant.upstream_expires_at,
    };
    let refresh = random_token(32);
    let sealed = match oauth.seal_json(GRANT_PURPOSE, &data) {
        Ok(s) => s,
        Err(e) => return error_status(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let now = unix_now();
    let mut expires_at = now + oauth.refresh_ttl.as_secs() as i64;
    if data.upstream_refresh.is_none() {
        // Without a provider refresh token the provider cannot be asked again whether the
        // user may still sign in: the grant ends with the provider's ID token.
        expires_at = expires_at.min(data.upstream_expires_at.unwrap_or(now));
    }
    let row = GrantRow {
        id: grant_id,
        client_id: client_id.to_owned(),
        subject: data.identity.subject.clone(),
        refresh_hash: sha256_hex(&refresh),
        data: sealed,
        expires_at,
        revoked_at: None,
    };
    if let Err(e) = oauth.store.insert_grant(&row, now).await {
        return error_status(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
    }
    tracing::info!(subject = %data.identity.subject, client_id, "tokens issued");
    issue(oauth, client_id, &row.id, &data, &data.scopes, &refresh).await
}

async fn refresh_grant(oauth: &OAuth, client_id: &str, p: &HashMap<String, String>) -> Response {
    let Some(presented) = p.get("refresh_token") else {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "refresh_token is required",
        );
    };
    let hash = sha256_hex(presented);
    let now = unix_now();
    let row = match oauth.store.grant_by_refresh(&hash).await {
        Ok(r) => r,
        Err(e) => return error_status(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let Some(row) = row else {
        // Not current: a spent token presented again means it leaked; end its family.
        return match oauth.store.spent_refresh(&hash).await {
            Ok(Some(grant_id)) => {
                oauth.end_grant(&grant_id, now).await;
                tracing::warn!(grant = %grant_id, client_id, "refresh token reused; grant revoked");
                invalid_grant(
                    "this refresh token was already used; the grant is revoked, sign in again",
                )
            }
            Ok(None) => invalid_grant("the refresh token is invalid"),
            Err(e) => error_status(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        };
    };
    if row.revoked_at.is_some() {
        return invalid_grant("the grant was revoked; sign in again");
    }
    if row.expires_at <= now {
        return invalid_grant("the refresh token has expired; sign in again");
    }
    if row.client_id != client_id {
        return invalid_grant("the refresh token was issued to another client");
    }
    let Ok(mut data) = oauth.open_json::<GrantData>(GRANT_PURPOSE, &row.data) else {
        return invalid_grant("the grant cannot be read; sign in again");
    };
    // A narrower scope (RFC 6749 §6) is what the new access token gets; the grant keeps the
    // scopes the user approved, for later refreshes.
    let scopes: Vec<String> = match p.get("scope") {
        Some(scope) if !scope.trim().is_empty() => {
            let mut requested: Vec<String> = Vec::new();
            for s in scope.split_whitespace() {
                if !data.scopes.iter().any(|x| x == s) {
                    return token_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_scope",
                        &format!("scope '{s}' was not granted"),
                    );
                }
                if !requested.iter().any(|x| x == s) {
                    requested.push(s.to_owned());
                }
            }
            requested
        }
        _ => data.scopes.clone(),
    };
    if let Some(resource) = p.get("resource")
        && resource.trim_end_matches('/') != data.resource
    {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            "resource does not match the grant",
        );
    }
    // The user's tenant must still be one that may sign in, by today's configuration.
    match oauth
        .upstream
        .check_tenant(data.identity.tid.as_deref())
        .await
    {
        Ok(()) => {}
        Err(domain::Error::Forbidden(why)) => {
            oauth.end_grant(&row.id, now).await;
            tracing::warn!(reason = %why, grant = %row.id, "the grant's tenant may no longer sign in; grant revoked");
            return invalid_grant("this sign-in's tenant may no longer sign in; sign in again");
        }
        Err(e) => return error_status(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
    // The user must still be good at the provider: refresh there too.
    match data.upstream_refresh.clone() {
        Some(upstream_refresh) => {
            let scope = oauth.upstream.exchange_scopes(&data.scopes);
            match oauth.upstream.refresh(&upstream_refresh, &scope).await {
                Ok(tokens) => {
                    if let Some(id_token) = tokens.id_token.as_deref() {
                        match refreshed_identity(oauth, id_token, &data.identity).await {
                            Ok(identity) => data.identity = identity,
                            Err(why) => {
                                oauth.end_grant(&row.id, now).await;
                                tracing::warn!(reason = %why, grant = %row.id, "refreshed ID token rejected; grant revoked");
                                return invalid_grant(
                                    "the identity provider's refreshed ID token is not valid for this sign-in; the grant is revoked, sign in again",
                                );
                            }
                        }
                    }
                    if tokens.refresh_token.is_some() {
                        data.upstream_refresh = tokens.refresh_token;
                    }
                }
                Err(domain::Error::Unavailable { .. }) => {
                    return error_status(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the identity provider is unreachable",
                    );
                }
                Err(e) => {
                    oauth.end_grant(&row.id, now).await;
                    tracing::info!(error = %e, grant = %row.id, "the identity provider refused the refresh; grant revoked");
                    return invalid_grant(
                        "the identity provider no longer accepts this sign-in; sign in again",
                    );
                }
            }
        }
        None => {
            // The provider issued no refresh token, so it cannot be asked again: the grant ends
            // with the ID token it was issued with (also for grants stored before this rule).
            if data.upstream_expires_at.is_none_or(|exp| exp <= now) {
                oauth.end_grant(&row.id, now).await;
                return invalid_grant(
                    "this sign-in has expired (the identity provider issued no refresh token); sign in again",
                );
            }
        }
    }
    let refresh = random_token(32);
    let sealed = match oauth.seal_json(GRANT_PURPOSE, &data) {
        Ok(s) => s,
        Err(e) => return error_status(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    match oauth
        .store
        .rotate_refresh(&row.id, &hash, &sha256_hex(&refresh), &sealed, now)
        .await
    {
        Ok(Rotation::Rotated) => issue(oauth, client_id, &row.id, &data, &scopes, &refresh).await,
        Ok(Rotation::Lost) => {
            oauth.end_grant(&row.id, now).await;
            tracing::warn!(grant = %row.id, client_id, "refresh token used twice at once; grant revoked");
            invalid_grant(
                "this refresh token was already used; the grant is revoked, sign in again",
            )
        }
        Err(e) => error_status(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// The identity in a refreshed ID token: valid (signature, audience, issuer and tenant, times),
/// and naming the same user in the same tenant as the grant. Anything else is a reason to end
/// the grant, never to keep the earlier claims.
async fn refreshed_identity(
    oauth: &OAuth,
    id_token: &str,
    earlier: &Identity,
) -> Result<Identity, String> {
    let audience = oauth.upstream.client_id.clone();
    let claims = oauth
        .upstream
        .validate(id_token, &[audience.as_str()])
        .await?;
    let identity = Identity::from_claims(&claims).ok_or("the ID token names no user")?;
    if identity.subject != earlier.subject {
        return Err("the ID token names another user".to_owned());
    }
    if identity.tid != earlier.tid {
        return Err("the ID token names another tenant".to_owned());
    }
    Ok(identity)
}

/// Mints an access token of grant `grant_id` with `scopes` (the grant's, or fewer) and answers
/// with it and the new refresh token.
async fn issue(
    oauth: &OAuth,
    client_id: &str,
    grant_id: &str,
    data: &GrantData,
    scopes: &[String],
    refresh: &str,
) -> Response {
    let now = unix_now();
    let ttl = oauth.access_ttl.as_secs() as i64;
    let claims = AccessClaims {
        iss: oauth.issuer.clone(),
        sub: data.identity.subject.clone(),
        aud: data.resource.clone(),
        exp: now + ttl,
        iat: now,
        nbf: now,
        jti: uuid::Uuid::new_v4().to_string(),
        oid: data.identity.oid.clone(),
        tid: data.identity.tid.clone(),
        email: data.identity.email.clone(),
        name: data.identity.name.clone(),
        roles: data.identity.roles.clone(),
        scope: scopes.join(" "),
        client_id: client_id.to_owned(),
        gid: Some(grant_id.to_owned()),
    };
    let access = match oauth.keys.sign(&claims).await {
        Ok(t) => t,
        Err(e) => return error_status(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let mut response = Json(json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": ttl,
        "refresh_token": refresh,
        "scope": claims.scope,
    }))
    .into_response();
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    let actor = data
        .identity
        .principal(scopes.to_vec(), Some(client_id.to_owned()));
    note(response, |n| n.actor = Some(actor))
}

// ---------------------------------------------------------------- /revoke

/// `POST /revoke` (RFC 7009): a refresh token ends its family; an access token is refused from
/// now until it expires. Answers 200 whether or not the token was known.
pub async fn revoke(State(oauth): State<Arc<OAuth>>, headers: HeaderMap, body: String) -> Response {
    let (p, client_id) = match client_form(&oauth, &headers, &body).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    let Some(token) = p.get("token") else {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "token is required",
        );
    };
    let now = unix_now();
    if let Ok(Some(row)) = oauth.store.grant_by_refresh(&sha256_hex(token)).await
        && row.client_id == client_id
    {
        oauth.end_grant(&row.id, now).await;
        tracing::info!(grant = %row.id, client_id, "refresh token revoked");
    } else if let Ok(claims) = oauth
        .keys
        .verify(token, &oauth.issuer, None, oauth.skew)
        .await
        && claims.client_id == client_id
    {
        let left = (claims.exp - now).max(0) as u64 + oauth.skew.as_secs() + 1;
        let ttl = std::time::Duration::from_secs(left);
        let marked = mark_until_done(
            oauth.cache.clone(),
            format!("oauth:revoked:{}", claims.jti),
            ttl,
        )
        .await;
        let _ = oauth
            .cache
            .delete(&format!("auth:token:{}", sha256_hex(token)))
            .await;
        // The grant it was issued from ends too (RFC 7009 §2.1 allows it): the database keeps
        // that decision, so the token stays refused while the cache is down, where its own
        // marker lives.
        let ended = match claims.gid.as_deref() {
            Some(grant) => oauth.end_grant(grant, now).await,
            None => false,
        };
        if !marked && !ended {
            // Nothing was recorded: say so (RFC 7009 §2.2.1) rather than answer 200.
            return token_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the revocation cannot be recorded now; try again",
            );
        }
        tracing::info!(jti = %claims.jti, client_id, "access token revoked, and its grant");
    }
    let mut response = StatusCode::OK.into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    note(response, |n| n.client_id = Some(client_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(3000))]

            #[test]
            fn parameters_parse_or_refuse_a_repeat_without_panicking(raw in any::<String>()) {
                if let Ok(map) = params(&raw) {
                    let pairs = url::form_urlencoded::parse(raw.as_bytes()).count();
                    prop_assert_eq!(map.len(), pairs, "no parameter was silently dropped");
                }
            }
        }
    }

    #[test]
    fn repeated_parameters_are_refused() {
        assert!(params("a=1&b=2").is_ok());
        assert!(params("a=1&a=2").is_err());
        assert_eq!(params("scope=a+b").expect("ok")["scope"], "a b");
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn pkce_values_follow_rfc_7636() {
        assert!(is_pkce_value(&"a".repeat(43)));
        assert!(!is_pkce_value(&"a".repeat(42)));
        assert!(!is_pkce_value(&"a".repeat(129)));
        assert!(!is_pkce_value(&format!("{}+", "a".repeat(43))));
        // RFC 7636 appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}

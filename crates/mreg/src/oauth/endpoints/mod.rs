//! The authorization-server endpoints, one file each: `/register`, `/authorize` and `/consent`,
//! the upstream callback, `/token` and `/revoke`; the middleware every one passes ([`edge`]),
//! the pages and the browser cookie. What they share lives here: the sealed shapes of a
//! sign-in, a code and a grant, parameter parsing, redirects.

mod authorize;
mod callback;
mod consent;
mod cookie;
mod edge;
mod error;
mod pages;
mod register;
mod revoke;
mod token;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use url::Url;

use crate::audit::Note;
use crate::oauth::cimd;
use crate::oauth::keys::AccessClaims;
use crate::oauth::registrations::{self, Client, RegistrationRequest};
use crate::oauth::{
    Identity, OAuth, TRANSACTION_TTL, grant_revoked_key, pkce_challenge, random_token, sha256_hex,
};
use domain::{GrantRow, Rotation};

pub use authorize::authorize;
pub use callback::callback;
use consent::bound_transaction;
pub use consent::{consent, consent_page};
use cookie::*;
pub use edge::{audited, limited};
pub use error::AuthorizeError;
use error::OAuthError;
use pages::*;
pub use register::register;
pub use revoke::revoke;
pub use token::token;
use token::*;

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
        self.mark_until_done(grant_revoked_key(id), ttl).await;
        match self.store.revoke_grant(id, now).await {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(error = %e, grant = %id, "cannot revoke the grant in the database");
                false
            }
        }
    }
}

impl OAuth {
    /// Sets the revocation marker `key` in the cache for `ttl`. When the cache does not answer, keeps
    /// trying in the background (every second, for as long as the marker would live), so that once
    /// it is back every replica sees the revocation — meanwhile the database decides. Returns
    /// whether the marker was set at once.
    async fn mark_until_done(&self, key: String, ttl: std::time::Duration) -> bool {
        if self.cache.set(&key, b"1", ttl).await.is_ok() {
            return true;
        }
        tracing::warn!("the cache does not answer: a revocation marker is set once it is back");
        let until = std::time::Instant::now() + ttl;
        let cache = self.cache.clone();
        // At shutdown it stops: the database has recorded the revocation, and a pending marker
        // must not hold the exit (and the audit writer's drain) for a grace period.
        let stop = self.tasks.stopping();
        self.tasks.spawn("revocation_marker", async move {
            while std::time::Instant::now() < until {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
                let left = until.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() || cache.set(&key, b"1", left).await.is_ok() {
                    return;
                }
            }
        });
        false
    }
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

    #[tokio::test]
    async fn what_a_page_shows_is_escaped() {
        let response = error_page(StatusCode::BAD_REQUEST, "<script>alert('&')</script>\"");
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        let page = String::from_utf8(bytes.to_vec()).expect("utf-8");
        assert!(!page.contains("<script>"), "{page}");
        assert!(
            page.contains("&lt;script&gt;alert('&amp;')&lt;/script&gt;&quot;"),
            "{page}"
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

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

mod admit;
mod challenge;
mod token;

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
use headers::authorization::Bearer;
use headers::{Authorization, HeaderMapExt};
use serde::{Deserialize, Serialize};
use tower::{Layer, Service, ServiceExt};

use crate::audit::Auditor;
use crate::http::error::ApiError;
use crate::oauth::upstream::Kind;
use crate::oauth::{Identity, OAuth, grant_revoked_key, sha256_hex};
use crate::policy::Gate;
use admit::*;
use challenge::*;
use domain::AuthStore;
use token::*;

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

/// Why a request is refused.
enum Rejection {
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
    let Some(authorization) = bearer(request.headers()) else {
        return challenge(oauth, &resource, None);
    };
    match principal(oauth, state, authorization.token().trim(), &resource).await {
        Ok(principal) => admit(state, principal, request, inner).await,
        Err(Rejection::Invalid(why)) => {
            tracing::info!(reason = %why, "bearer token refused");
            challenge(oauth, &resource, Some(&why))
        }
        Err(Rejection::Scope) => insufficient_scope(oauth, &resource),
        Err(Rejection::Unavailable(e)) => ApiError::from(e).into_response(),
    }
}

/// The request's `Authorization: Bearer …` credentials (the `headers` crate matches the scheme
/// without regard to case, RFC 7235 §2.1, RFC 6750 §2.1), if its token is not empty; the token
/// is `.token().trim()`, borrowed from the header rather than copied on every request.
fn bearer(headers: &axum::http::HeaderMap) -> Option<Authorization<Bearer>> {
    headers
        .typed_get::<Authorization<Bearer>>()
        .filter(|authorization| !authorization.token().trim().is_empty())
}

/// Runs `request` through `inner` (the route), which is always ready.
async fn run<S>(inner: S, request: Request) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let Ok(response) = inner.oneshot(request).await;
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
        let token = |value: &str| {
            let mut headers = axum::http::HeaderMap::new();
            headers.insert(
                header::AUTHORIZATION,
                axum::http::HeaderValue::from_str(value).expect("value"),
            );
            bearer(&headers).map(|a| a.token().trim().to_owned())
        };
        for value in ["Bearer abc", "bearer abc", "BEARER abc", "bEaReR  abc "] {
            assert_eq!(token(value).as_deref(), Some("abc"), "{value}");
        }
        for value in [
            "Basic abc",
            "Bearer",
            "Bearer ",
            "Bearer   ",
            "Bearerabc",
            "abc",
        ] {
            assert_eq!(token(value), None, "{value}");
        }
        assert!(bearer(&axum::http::HeaderMap::new()).is_none());
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

//! What every OAuth endpoint passes on its way in and out: the per-address budget and the audit row
//! (the endpoints tell the row their outcome through a [`Note`] on the response).

use super::*;

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
            return OAuthError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                e.to_string(),
            )
            .into_response();
        }
    }
    crate::policy::answer::oauth(&refusal)
}

/// The actor of a request made before sign-in.
pub(super) fn unauthenticated() -> domain::Principal {
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
            return OAuthError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                e.to_string(),
            )
            .into_response();
        }
    };
    if let Err(refusal) = oauth.admit_address(oauth.address_of(&request)).await {
        entry.refused(&refusal);
        return crate::policy::answer::oauth(&refusal);
    }
    let response = next.run(request).await;
    let n = Note::of(&response).cloned().unwrap_or_default();
    if let Some(op) = n.operation {
        entry.operation(op);
    }
    if let Some(actor) = &n.actor {
        entry.actor(actor);
    }
    if let Some(client) = &n.client_id {
        entry.client(client);
    }
    if let Some(decision) = n.decision {
        entry.decided(decision);
    }
    entry.finish(Note::outcome(&response, true));
    response
}

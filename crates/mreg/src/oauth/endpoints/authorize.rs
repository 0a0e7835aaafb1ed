//! `GET /authorize`: a sign-in starts here. The request is checked (client, redirect URI, PKCE,
//! resource, scopes), a transaction is stored, and the browser goes on to the consent page
//! (`consent.rs`). Until the user has consented, every error is a page, never a redirect.

use super::*;

/// What a client asks for at `/authorize` (RFC 6749 §4.1.1, RFC 7636 §4.3, RFC 8707 §2).
struct AuthorizeRequest {
    client_id: String,
    redirect_uri: Option<String>,
    response_type: Option<String>,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    resource: Option<String>,
    scope: Option<String>,
}

impl AuthorizeRequest {
    /// Reads the query string: each parameter at most once, `client_id` required.
    fn read(query: &str) -> Result<Self, AuthorizeError> {
        let mut p = params(query).map_err(AuthorizeError::bad)?;
        let client_id = p
            .remove("client_id")
            .ok_or_else(|| AuthorizeError::bad("The request names no client (client_id)."))?;
        Ok(Self {
            client_id,
            redirect_uri: p.remove("redirect_uri"),
            response_type: p.remove("response_type"),
            state: p.remove("state"),
            code_challenge: p.remove("code_challenge"),
            code_challenge_method: p.remove("code_challenge_method"),
            resource: p.remove("resource"),
            scope: p.remove("scope"),
        })
    }
}

/// `GET /authorize`: checks the request and starts a transaction, then shows the consent page.
pub async fn authorize(
    State(oauth): State<Arc<OAuth>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, AuthorizeError> {
    let request = AuthorizeRequest::read(query.as_deref().unwrap_or(""))?;
    let client = match oauth.client(&request.client_id).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return Err(AuthorizeError::bad(
                "This client is not registered here. The application should register again.",
            ));
        }
        Err(domain::Error::Forbidden(why)) => {
            return Err(AuthorizeError::bad(format!(
                "This client cannot be used: {why}"
            )));
        }
        Err(e) => return Err(AuthorizeError::unavailable(e)),
    };
    let redirect_uri = match (&request.redirect_uri, client.redirect_uris.as_slice()) {
        (Some(r), _) => r.clone(),
        (None, [only]) => only.clone(),
        (None, _) => return Err(AuthorizeError::bad("The request has no redirect_uri.")),
    };
    let native = client.application_type == "native";
    if !registrations::redirect_matches(&client.redirect_uris, &redirect_uri)
        || registrations::check_redirect_uri(&redirect_uri, native).is_err()
    {
        return Err(AuthorizeError::bad(
            "The redirect_uri is not one this client registered.",
        ));
    }
    let (challenge, resource, scopes) = checked(&oauth, &request)?;
    let (browser, new_cookie) = match browser_cookie(&oauth, &headers) {
        Some(value) => (value, false),
        None => (random_token(32), true),
    };
    let txn = Transaction {
        client_id: client.client_id.clone(),
        client_name: client.client_name.clone(),
        redirect_uri,
        native,
        state: request.state,
        challenge,
        scopes,
        resource,
        csrf: random_token(32),
        browser: sha256_hex(&browser),
        verifier: random_token(48),
        nonce: random_token(24),
        approved: false,
    };
    let id = random_token(32);
    oauth
        .save_transaction(&id, &txn)
        .await
        .map_err(AuthorizeError::unavailable)?;
    let mut response = redirect(&format!("{}/consent?txn={id}", oauth.issuer));
    if new_cookie {
        response
            .headers_mut()
            .append(header::SET_COOKIE, set_cookie(&oauth, &browser));
    }
    Ok(response)
}

/// The request's PKCE challenge, resource and scopes, once each is checked.
fn checked(
    oauth: &OAuth,
    request: &AuthorizeRequest,
) -> Result<(String, String, Vec<String>), AuthorizeError> {
    if request.state.as_ref().is_some_and(|s| s.len() > MAX_STATE) {
        return Err(AuthorizeError::invalid(
            "invalid_request",
            format!("state is longer than {MAX_STATE} characters"),
        ));
    }
    if request.response_type.as_deref() != Some("code") {
        return Err(AuthorizeError::invalid(
            "unsupported_response_type",
            "response_type must be code",
        ));
    }
    let Some(challenge) = &request.code_challenge else {
        return Err(AuthorizeError::invalid(
            "invalid_request",
            "code_challenge is required (PKCE with S256)",
        ));
    };
    if request.code_challenge_method.as_deref() != Some("S256") {
        return Err(AuthorizeError::invalid(
            "invalid_request",
            "code_challenge_method must be S256",
        ));
    }
    if challenge.len() != 43 || !is_pkce_value(challenge) {
        return Err(AuthorizeError::invalid(
            "invalid_request",
            "code_challenge is not an S256 challenge",
        ));
    }
    let resource = match request.resource.as_deref().map(|r| r.trim_end_matches('/')) {
        Some(r) if oauth.is_resource(r) => r.to_owned(),
        Some(_) => {
            return Err(AuthorizeError::invalid(
                "invalid_target",
                format!(
                    "resource must be this gateway ({}) or one of its MCP endpoints",
                    oauth.mcp_resource()
                ),
            ));
        }
        None => oauth.mcp_resource(),
    };
    let asked: Vec<&str> = request
        .scope
        .as_deref()
        .map(|s| s.split_whitespace().collect())
        .unwrap_or_default();
    let scopes: Vec<String> = if asked.is_empty() {
        oauth.default_scopes.clone()
    } else {
        asked.into_iter().map(str::to_owned).collect()
    };
    if let Some(bad) = scopes.iter().find(|s| !oauth.supported_scopes.contains(s)) {
        return Err(AuthorizeError::invalid(
            "invalid_scope",
            format!("scope '{bad}' is not offered by this server"),
        ));
    }
    Ok((challenge.clone(), resource, scopes))
}

//! `GET /authorize` and the consent page (`GET`/`POST /consent`): a sign-in starts here and goes
//! on to the upstream provider.

use super::*;

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
    if !registrations::redirect_matches(&client.redirect_uris, &redirect_uri)
        || registrations::check_redirect_uri(&redirect_uri, native).is_err()
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
        Note::on(
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

pub(super) async fn bound_transaction(
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

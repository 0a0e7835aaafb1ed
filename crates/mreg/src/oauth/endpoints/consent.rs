//! The consent page (`GET`/`POST /consent`): which client, which redirect host, which scopes;
//! Allow goes on to the upstream provider, Deny back to the client with `access_denied`.

use super::*;

/// The sign-in `id`, provided it was started in this browser (its cookie).
pub(super) async fn bound_transaction(
    oauth: &OAuth,
    headers: &HeaderMap,
    id: &str,
) -> Result<Transaction, AuthorizeError> {
    let txn = oauth
        .load_transaction(id)
        .await
        .map_err(AuthorizeError::unavailable)?
        .ok_or_else(|| {
            AuthorizeError::bad(
                "This sign-in has expired or was already used. Start again from the application.",
            )
        })?;
    let bound = browser_cookie(oauth, headers).is_some_and(|b| same(&sha256_hex(&b), &txn.browser));
    if !bound {
        return Err(AuthorizeError::forbidden(
            "This sign-in was started in another browser. Start again from the application, in \
             this browser.",
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
) -> Result<Response, AuthorizeError> {
    let p = params(query.as_deref().unwrap_or("")).map_err(AuthorizeError::bad)?;
    let id = p
        .get("txn")
        .ok_or_else(|| AuthorizeError::bad("The consent request names no sign-in."))?;
    let txn = bound_transaction(&oauth, &headers, id).await?;
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
    // A client described by a metadata document (CIMD) is vouched for by its domain.
    let publisher = cimd::is_document_url(&txn.client_id).then(|| {
        Url::parse(&txn.client_id)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default()
    });
    let body = maud::html! {
        p {
            strong { (name) } " (client " code { (txn.client_id) } ") asks to use the MCP gateway "
            code { (txn.resource) } " as you."
        }
        @if let Some(domain) = &publisher {
            p { "This client's description is published by " strong { (domain) } "." }
        }
        p { "After you sign in, you will be sent to:" }
        p.host { (host) }
        p { small { (txn.redirect_uri) } }
        p { "It asks for:" }
        ul { @for scope in &txn.scopes { li { code { (scope) } } } }
        p { "Only allow this if you started this sign-in from that application just now." }
        form method="post" action="/consent" {
            input type="hidden" name="txn" value=(id);
            input type="hidden" name="csrf" value=(txn.csrf);
            button type="submit" name="decision" value="allow" { "Allow" }
            button type="submit" name="decision" value="deny" { "Deny" }
        }
    };
    Ok(page(StatusCode::OK, "Allow access?", body))
}

/// `POST /consent`: the decision, checked against the CSRF token and the browser cookie.
pub async fn consent(
    State(oauth): State<Arc<OAuth>>,
    headers: HeaderMap,
    body: String,
) -> Result<Response, AuthorizeError> {
    let p = params(&body).map_err(AuthorizeError::bad)?;
    let (Some(id), Some(decision)) = (p.get("txn"), p.get("decision")) else {
        return Err(AuthorizeError::bad("The consent form is incomplete."));
    };
    let mut txn = bound_transaction(&oauth, &headers, id).await?;
    if !p.get("csrf").is_some_and(|c| same(c, &txn.csrf)) {
        return Err(AuthorizeError::forbidden(
            "The consent form is stale or was not sent by this page. Start again from the \
             application.",
        ));
    }
    if decision != "allow" {
        let _ = oauth.cache.delete(&format!("oauth:txn:{id}")).await;
        return Err(AuthorizeError::to_client(
            &oauth,
            &txn,
            "access_denied",
            "the user denied access",
        ));
    }
    let meta = oauth
        .upstream
        .metadata()
        .await
        .map_err(AuthorizeError::unavailable)?;
    txn.approved = true;
    oauth
        .save_transaction(id, &txn)
        .await
        .map_err(AuthorizeError::unavailable)?;
    let url = oauth.upstream.authorize_url(
        &meta,
        oauth.callback.as_str(),
        &txn.scopes,
        id,
        &txn.nonce,
        &pkce_challenge(&txn.verifier),
    );
    Ok(redirect(url.as_str()))
}

//! The upstream provider's callback: the sign-in ends here with a one-time code for the client.

use super::*;

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
    if registrations::check_redirect_uri(&txn.redirect_uri, txn.native).is_err() {
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
    Note::on(redirect(url.as_str()), |n| n.actor = Some(actor))
}

//! The upstream provider's callback: the sign-in ends here with a one-time code for the client.

use super::*;

/// The provider's redirect back: checks state and the browser cookie, exchanges the code,
/// validates the ID token, and sends the client its own one-time code.
pub async fn callback(
    State(oauth): State<Arc<OAuth>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, AuthorizeError> {
    let p = params(query.as_deref().unwrap_or("")).map_err(AuthorizeError::bad)?;
    let id = p
        .get("state")
        .ok_or_else(|| AuthorizeError::bad("The identity provider's answer has no state."))?;
    let txn = bound_transaction(&oauth, &headers, id).await?;
    // Single use from here on, whatever happens next.
    oauth
        .cache
        .take(&format!("oauth:txn:{id}"))
        .await
        .map_err(AuthorizeError::unavailable)?
        .ok_or_else(|| AuthorizeError::bad("This sign-in was already completed."))?;
    if !txn.approved {
        return Err(AuthorizeError::forbidden(
            "This sign-in was not approved on the consent page.",
        ));
    }
    if registrations::check_redirect_uri(&txn.redirect_uri, txn.native).is_err() {
        return Err(AuthorizeError::bad(
            "The client's redirect URI is no longer acceptable.",
        ));
    }
    let fail = |error: &'static str, description: &str| {
        Err(AuthorizeError::to_client(&oauth, &txn, error, description))
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
    let stored = oauth
        .seal_json(CODE_PURPOSE, &grant)
        .map_err(AuthorizeError::internal)?;
    oauth
        .cache
        .set(
            &format!("oauth:code:{}", sha256_hex(&code)),
            &stored,
            oauth.code_ttl,
        )
        .await
        .map_err(AuthorizeError::unavailable)?;
    let mut url = Url::parse(&txn.redirect_uri)
        .map_err(|_| AuthorizeError::bad("The client's redirect URI is not valid."))?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("code", &code);
        if let Some(state) = &txn.state {
            q.append_pair("state", state);
        }
        q.append_pair("iss", &oauth.issuer);
    }
    Ok(Note::on(redirect(url.as_str()), |n| n.actor = Some(actor)))
}

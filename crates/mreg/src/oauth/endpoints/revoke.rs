//! `POST /revoke` (RFC 7009).

use super::*;

/// `POST /revoke` (RFC 7009): a refresh token ends its family; an access token is refused from
/// now until it expires. Answers 200 whether or not the token was known.
pub async fn revoke(State(oauth): State<Arc<OAuth>>, headers: HeaderMap, body: String) -> Response {
    let (p, client_id) = match client_form(&oauth, &headers, &body).await {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let Some(token) = p.get("token") else {
        return OAuthError::invalid_request("token is required").into_response();
    };
    let now = oauth.unix_now();
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
        let marked = oauth
            .mark_until_done(format!("oauth:revoked:{}", claims.jti), ttl)
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
            return OAuthError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the revocation cannot be recorded now; try again",
            )
            .into_response();
        }
        tracing::info!(jti = %claims.jti, client_id, "access token revoked, and its grant");
    }
    let mut response = StatusCode::OK.into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Note::on(response, |n| n.client_id = Some(client_id))
}

//! `POST /token`: the authorization-code and refresh-token grants, and the tokens they issue.

use super::*;

/// The client id of a token or revocation request: the form's, or HTTP Basic's user name.
pub(super) fn client_id_of(p: &HashMap<String, String>, headers: &HeaderMap) -> Option<String> {
    if let Some(id) = p.get("client_id") {
        return Some(id.clone());
    }
    use headers::HeaderMapExt;
    let basic = headers.typed_get::<headers::Authorization<headers::authorization::Basic>>()?;
    // The client id is form-encoded before it is put into Basic (RFC 6749 §2.3.1).
    let id = basic.username();
    Some(
        url::form_urlencoded::parse(format!("x={id}").as_bytes())
            .next()
            .map(|(_, v)| v.to_string())
            .unwrap_or_default(),
    )
}

pub(super) fn form_body(
    headers: &HeaderMap,
    body: &str,
) -> Result<HashMap<String, String>, OAuthError> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        // The media type, before any parameters (`; charset=UTF-8`), compared whole.
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form {
        return Err(OAuthError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    params(body).map_err(OAuthError::invalid_request)
}

/// The form of a token or revocation request and its client, which must be known: a client
/// the server forgot gets 401 `invalid_client`, on which MCP clients register again.
pub(super) async fn client_form(
    oauth: &OAuth,
    headers: &HeaderMap,
    body: &str,
) -> Result<(HashMap<String, String>, String), OAuthError> {
    let p = form_body(headers, body)?;
    let Some(client_id) = client_id_of(&p, headers) else {
        return Err(OAuthError::invalid_client("client_id is required"));
    };
    match oauth.client(&client_id).await {
        Ok(Some(_)) => Ok((p, client_id)),
        Ok(None) => Err(OAuthError::invalid_client(
            "this client is not registered; register again",
        )),
        Err(domain::Error::Forbidden(why)) => Err(OAuthError::invalid_client(why)),
        Err(e) => Err(OAuthError::unavailable(e)),
    }
}

/// `POST /token`: `authorization_code` (with PKCE) and `refresh_token` (rotating).
pub async fn token(State(oauth): State<Arc<OAuth>>, headers: HeaderMap, body: String) -> Response {
    let (form, client_id) = match client_form(&oauth, &headers, &body).await {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let response = match TokenRequest::read(&form) {
        Ok(TokenRequest::AuthorizationCode(request)) => {
            answer(code_grant(&oauth, &client_id, request).await)
        }
        Ok(TokenRequest::RefreshToken(request)) => Note::on(
            answer(refresh_grant(&oauth, &client_id, request).await),
            |n| n.operation = Some("oauth.refresh"),
        ),
        Err(e) => e.into_response(),
    };
    Note::on(response, |n| n.client_id = Some(client_id))
}

/// The answer of a grant: the tokens, or the error.
fn answer(result: Result<Response, OAuthError>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

/// A token request, read from its form once (RFC 6749 §4.1.3 and §6).
pub(super) enum TokenRequest<'a> {
    /// `grant_type=authorization_code`.
    AuthorizationCode(CodeRequest<'a>),
    /// `grant_type=refresh_token`.
    RefreshToken(RefreshRequest<'a>),
}

/// The parameters of an authorization-code grant.
pub(super) struct CodeRequest<'a> {
    code: &'a str,
    redirect_uri: Option<&'a str>,
    code_verifier: Option<&'a str>,
    resource: Option<&'a str>,
}

/// The parameters of a refresh-token grant.
pub(super) struct RefreshRequest<'a> {
    refresh_token: &'a str,
    scope: Option<&'a str>,
    resource: Option<&'a str>,
}

impl<'a> TokenRequest<'a> {
    /// The request `form` makes: a missing grant type or parameter is `invalid_request`, another
    /// grant type `unsupported_grant_type`.
    pub(super) fn read(form: &'a HashMap<String, String>) -> Result<Self, OAuthError> {
        let get = |name: &str| form.get(name).map(String::as_str);
        let required = |name: &'static str| {
            get(name).ok_or_else(|| OAuthError::invalid_request(format!("{name} is required")))
        };
        match get("grant_type") {
            Some("authorization_code") => Ok(Self::AuthorizationCode(CodeRequest {
                code: required("code")?,
                redirect_uri: get("redirect_uri"),
                code_verifier: get("code_verifier"),
                resource: get("resource"),
            })),
            Some("refresh_token") => Ok(Self::RefreshToken(RefreshRequest {
                refresh_token: required("refresh_token")?,
                scope: get("scope"),
                resource: get("resource"),
            })),
            Some(other) => Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!("grant type '{other}' is not supported"),
            )),
            None => Err(OAuthError::invalid_request("grant_type is required")),
        }
    }
}

pub(super) async fn code_grant(
    oauth: &OAuth,
    client_id: &str,
    request: CodeRequest<'_>,
) -> Result<Response, OAuthError> {
    let code = request.code;
    let code_hash = sha256_hex(code);
    let used_key = format!("oauth:code-used:{code_hash}");
    let taken = oauth
        .cache
        .take(&format!("oauth:code:{code_hash}"))
        .await
        .map_err(OAuthError::unavailable)?;
    let Some(sealed) = taken else {
        // A code presented again was intercepted, or its first redemption was: end what was
        // issued for it (RFC 6749 §4.1.2).
        if let Ok(Some(grant_id)) = oauth.cache.take(&used_key).await {
            let grant_id = String::from_utf8_lossy(&grant_id).into_owned();
            oauth.end_grant(&grant_id, oauth.unix_now()).await;
            tracing::warn!(grant = %grant_id, client_id, "authorization code replayed; its grant is revoked");
            return Err(OAuthError::invalid_grant(
                "the code was already used; the tokens issued for it are revoked",
            )
            .denied());
        }
        return Err(OAuthError::invalid_grant(
            "the code is invalid, expired or already used",
        ));
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
        return Err(OAuthError::invalid_grant(
            "the code is invalid, expired or already used",
        ));
    };
    if grant.client_id != client_id {
        return Err(OAuthError::invalid_grant(
            "the code was issued to another client",
        ));
    }
    if request.redirect_uri != Some(grant.redirect_uri.as_str()) {
        return Err(OAuthError::invalid_grant(
            "redirect_uri does not match the authorization request",
        ));
    }
    let Some(verifier) = request.code_verifier else {
        return Err(OAuthError::invalid_grant(
            "code_verifier is required (PKCE)",
        ));
    };
    if !is_pkce_value(verifier) || !same(&pkce_challenge(verifier), &grant.challenge) {
        return Err(OAuthError::invalid_grant(
            "the code_verifier does not match the code_challenge",
        ));
    }
    if let Some(resource) = request.resource
        && resource.trim_end_matches('/') != grant.resource
    {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            "resource does not match the authorization request",
        ));
    }
    let data = GrantData {
        scopes: grant.scopes,
        resource: grant.resource,
        identity: grant.identity,
        upstream_refresh: grant.upstream_refresh,
        upstream_expires_at: grant.upstream_expires_at,
    };
    let refresh = random_token(32);
    let sealed = oauth
        .seal_json(GRANT_PURPOSE, &data)
        .map_err(OAuthError::internal)?;
    let now = oauth.unix_now();
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
    oauth
        .store
        .insert_grant(&row, now)
        .await
        .map_err(OAuthError::unavailable)?;
    tracing::info!(subject = %data.identity.subject, client_id, "tokens issued");
    issue(oauth, client_id, &row.id, &data, &data.scopes, &refresh).await
}

/// A refresh token presented again (`how`: reused later, or used twice at once): it leaked, so
/// its grant ends (RFC 9700 §4.14.2) and the answer says so.
async fn reused(oauth: &OAuth, grant_id: &str, now: i64, client_id: &str, how: &str) -> OAuthError {
    oauth.end_grant(grant_id, now).await;
    tracing::warn!(grant = %grant_id, client_id, "refresh token {how}; grant revoked");
    OAuthError::invalid_grant(
        "this refresh token was already used; the grant is revoked, sign in again",
    )
    .denied()
}

pub(super) async fn refresh_grant(
    oauth: &OAuth,
    client_id: &str,
    request: RefreshRequest<'_>,
) -> Result<Response, OAuthError> {
    let presented = request.refresh_token;
    let hash = sha256_hex(presented);
    let now = oauth.unix_now();
    let row = oauth
        .store
        .grant_by_refresh(&hash)
        .await
        .map_err(OAuthError::unavailable)?;
    let Some(row) = row else {
        // Not current: a spent token presented again means it leaked; end its family.
        return match oauth.store.spent_refresh(&hash).await {
            Ok(Some(grant_id)) => Err(reused(oauth, &grant_id, now, client_id, "reused").await),
            Ok(None) => Err(OAuthError::invalid_grant("the refresh token is invalid")),
            Err(e) => Err(OAuthError::unavailable(e)),
        };
    };
    if row.revoked_at.is_some() {
        return Err(OAuthError::invalid_grant(
            "the grant was revoked; sign in again",
        ));
    }
    if row.expires_at <= now {
        return Err(OAuthError::invalid_grant(
            "the refresh token has expired; sign in again",
        ));
    }
    if row.client_id != client_id {
        return Err(OAuthError::invalid_grant(
            "the refresh token was issued to another client",
        ));
    }
    let Ok(mut data) = oauth.open_json::<GrantData>(GRANT_PURPOSE, &row.data) else {
        return Err(OAuthError::invalid_grant(
            "the grant cannot be read; sign in again",
        ));
    };
    // A narrower scope (RFC 6749 §6) is what the new access token gets; the grant keeps the
    // scopes the user approved, for later refreshes.
    let scopes: Vec<String> = match request.scope {
        Some(scope) if !scope.trim().is_empty() => {
            let mut requested: Vec<String> = Vec::new();
            for s in scope.split_whitespace() {
                if !data.scopes.iter().any(|x| x == s) {
                    return Err(OAuthError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_scope",
                        format!("scope '{s}' was not granted"),
                    ));
                }
                if !requested.iter().any(|x| x == s) {
                    requested.push(s.to_owned());
                }
            }
            requested
        }
        _ => data.scopes.clone(),
    };
    if let Some(resource) = request.resource
        && resource.trim_end_matches('/') != data.resource
    {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            "resource does not match the grant",
        ));
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
            return Err(OAuthError::invalid_grant(
                "this sign-in's tenant may no longer sign in; sign in again",
            ));
        }
        Err(e) => return Err(OAuthError::unavailable(e)),
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
                                return Err(OAuthError::invalid_grant(
                                    "the identity provider's refreshed ID token is not valid for this sign-in; the grant is revoked, sign in again",
                                ));
                            }
                        }
                    }
                    if tokens.refresh_token.is_some() {
                        data.upstream_refresh = tokens.refresh_token;
                    }
                }
                Err(domain::Error::Unavailable { .. }) => {
                    return Err(OAuthError::server(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the identity provider is unreachable",
                    ));
                }
                Err(e) => {
                    oauth.end_grant(&row.id, now).await;
                    tracing::info!(error = %e, grant = %row.id, "the identity provider refused the refresh; grant revoked");
                    return Err(OAuthError::invalid_grant(
                        "the identity provider no longer accepts this sign-in; sign in again",
                    ));
                }
            }
        }
        None => {
            // The provider issued no refresh token, so it cannot be asked again: the grant ends
            // with the ID token it was issued with (also for grants stored before this rule).
            if data.upstream_expires_at.is_none_or(|exp| exp <= now) {
                oauth.end_grant(&row.id, now).await;
                return Err(OAuthError::invalid_grant(
                    "this sign-in has expired (the identity provider issued no refresh token); sign in again",
                ));
            }
        }
    }
    let refresh = random_token(32);
    let sealed = oauth
        .seal_json(GRANT_PURPOSE, &data)
        .map_err(OAuthError::internal)?;
    match oauth
        .store
        .rotate_refresh(&row.id, &hash, &sha256_hex(&refresh), &sealed, now)
        .await
    {
        Ok(Rotation::Rotated) => issue(oauth, client_id, &row.id, &data, &scopes, &refresh).await,
        Ok(Rotation::Lost) => {
            Err(reused(oauth, &row.id, now, client_id, "used twice at once").await)
        }
        Err(e) => Err(OAuthError::unavailable(e)),
    }
}

/// The identity in a refreshed ID token: valid (signature, audience, issuer and tenant, times),
/// and naming the same user in the same tenant as the grant. Anything else is a reason to end
/// the grant, never to keep the earlier claims.
pub(super) async fn refreshed_identity(
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
pub(super) async fn issue(
    oauth: &OAuth,
    client_id: &str,
    grant_id: &str,
    data: &GrantData,
    scopes: &[String],
    refresh: &str,
) -> Result<Response, OAuthError> {
    let now = oauth.unix_now();
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
    let access = oauth
        .keys
        .sign(&claims)
        .await
        .map_err(OAuthError::unavailable)?;
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
    Ok(Note::on(response, |n| n.actor = Some(actor)))
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, header};

    #[test]
    fn only_a_form_is_a_form() {
        let with = |content_type: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            super::form_body(&headers, "grant_type=x").is_ok()
        };
        assert!(with("application/x-www-form-urlencoded"));
        assert!(with("application/x-www-form-urlencoded; charset=UTF-8"));
        assert!(with("Application/X-WWW-Form-URLencoded"));
        assert!(!with("application/x-www-form-urlencodedfoo"));
        assert!(!with("application/json"));
        assert!(super::form_body(&HeaderMap::new(), "grant_type=x").is_err());
    }
}

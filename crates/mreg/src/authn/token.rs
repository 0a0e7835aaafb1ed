//! From a bearer token to a principal: mreg's own tokens and the provider's, validated once and then
//! cached (the decoded form kept beside the cache entry), revocation checked on every request.

use super::*;

/// A validated token as the cache keeps it.
#[derive(Serialize, Deserialize)]
pub(super) struct Validated {
    pub(super) principal: Principal,
    /// Audiences of an mreg token; empty for an upstream token issued to this app (valid on
    /// every route).
    pub(super) aud: Vec<String>,
    /// Whether the token was delegated by a user (scopes apply) rather than app-only.
    pub(super) delegated: bool,
    /// The grant an mreg token was issued from: while it is marked revoked, the token is
    /// refused, cached or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) grant: Option<String>,
}

/// Most decoded tokens [`Decoded`] keeps; it is emptied when full.
pub(super) const DECODED_MAX: usize = 4096;

/// Token cache hits already decoded, by cache key. The cache is still asked on every request, so
/// a revoked or expired token is refused at once; only when it answers with exactly the bytes
/// decoded before is the decoded token reused instead of parsing them again.
#[derive(Default)]
pub(super) struct Decoded(
    pub(super) std::sync::Mutex<std::collections::HashMap<String, Arc<Memo>>>,
);

/// A decoded cache entry.
pub(super) struct Memo {
    /// The cached bytes it was decoded from.
    pub(super) bytes: Vec<u8>,
    pub(super) principal: Arc<Principal>,
    pub(super) aud: Vec<String>,
    pub(super) delegated: bool,
    pub(super) grant: Option<String>,
}

impl Memo {
    pub(super) fn new(validated: Validated, bytes: Vec<u8>) -> Arc<Self> {
        Arc::new(Self {
            bytes,
            principal: Arc::new(validated.principal),
            aud: validated.aud,
            delegated: validated.delegated,
            grant: validated.grant,
        })
    }
}

impl Decoded {
    pub(super) fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Arc<Memo>>> {
        // Entries are inserted whole, so a poisoned map is still consistent.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The token cached as `bytes` under `key`, decoded (again only if the bytes changed).
    pub(super) fn decode(&self, key: &str, bytes: Vec<u8>) -> Option<Arc<Memo>> {
        if let Some(memo) = self.lock().get(key).filter(|m| m.bytes == bytes) {
            return Some(memo.clone());
        }
        let validated = serde_json::from_slice::<Validated>(&bytes).ok()?;
        let memo = Memo::new(validated, bytes);
        self.remember(key, memo.clone());
        Some(memo)
    }

    /// The grant of the token decoded before under `key`, if any: its revocation marker can
    /// then be asked for together with the cache entry.
    pub(super) fn grant_of(&self, key: &str) -> Option<String> {
        self.lock().get(key).and_then(|m| m.grant.clone())
    }

    pub(super) fn remember(&self, key: &str, memo: Arc<Memo>) {
        let mut map = self.lock();
        if map.len() >= DECODED_MAX {
            map.clear();
        }
        map.insert(key.to_owned(), memo);
    }
}

/// The resource a request path belongs to: a server's endpoint, or the gateway's `/mcp`.
pub(super) fn resource_of(oauth: &OAuth, path: &str) -> String {
    if let Some(rest) = path.strip_prefix("/servers/")
        && let Some((name, tail)) = rest.split_once('/')
        && tail == "mcp"
    {
        let resource = format!("{}/servers/{name}/mcp", oauth.issuer);
        if oauth.is_resource(&resource) {
            return resource;
        }
    }
    oauth.mcp_resource()
}

pub(super) async fn principal(
    oauth: &OAuth,
    state: &Authenticator,
    token: &str,
    resource: &str,
) -> Result<Arc<Principal>, Rejection> {
    let key = format!("auth:token:{}", sha256_hex(token));
    // A token decoded here before names its grant: the grant's revocation marker is fetched in
    // the same round trip as the cache entry.
    let known = state.decoded.grant_of(&key);
    let (hit, known_revoked) = match &known {
        Some(grant) => {
            let marker = grant_revoked_key(grant);
            match state.cache.get_many(&[key.as_str(), marker.as_str()]).await {
                Ok(mut values) => {
                    let revoked = values.pop().flatten().is_some();
                    (Ok(values.pop().flatten()), Some(revoked))
                }
                Err(e) => (Err(e), None),
            }
        }
        None => (state.cache.get(&key).await, None),
    };
    let cached = match hit {
        Ok(hit) => hit.and_then(|bytes| state.decoded.decode(&key, bytes)),
        Err(e) => {
            // A cache outage must not lock everyone out: validate without it. (The outage is
            // logged once, where the cache finds it; a line per request would flood the log.)
            tracing::debug!(error = %e, "token cache unavailable");
            None
        }
    };
    let validated = match cached {
        Some(memo) => {
            // A cached token must not outlive its grant's revocation.
            if let Some(grant) = &memo.grant {
                let revoked = match known_revoked {
                    Some(revoked) if known.as_deref() == Some(grant.as_str()) => revoked,
                    _ => state
                        .cache
                        .get(&grant_revoked_key(grant))
                        .await
                        .map_err(Rejection::Unavailable)?
                        .is_some(),
                };
                if revoked {
                    return Err(Rejection::Invalid(
                        "the token's grant was revoked".to_owned(),
                    ));
                }
            }
            memo
        }
        None => {
            let (validated, exp) = validate(oauth, state, token).await?;
            let left = exp - domain::now().unix_timestamp();
            let ttl = oauth
                .token_cache_ttl
                .min(Duration::from_secs(left.max(0) as u64));
            let bytes = serde_json::to_vec(&validated).unwrap_or_default();
            if !ttl.is_zero()
                && !bytes.is_empty()
                && let Err(e) = state.cache.set(&key, &bytes, ttl).await
            {
                tracing::debug!(error = %e, "cannot cache a validated token");
            }
            let memo = Memo::new(validated, bytes);
            if !ttl.is_zero() {
                state.decoded.remember(&key, memo.clone());
            }
            memo
        }
    };
    if !validated.aud.is_empty()
        && !validated
            .aud
            .iter()
            .any(|a| oauth.accepts_audience(a, resource))
    {
        return Err(Rejection::Invalid(format!(
            "the token is for another resource, not {resource}"
        )));
    }
    if validated.delegated
        && !oauth
            .required_scopes
            .iter()
            .all(|s| validated.principal.scopes.contains(s))
    {
        return Err(Rejection::Scope);
    }
    Ok(validated.principal.clone())
}

/// Validates a token not found in the cache. Returns it and its expiry.
pub(super) async fn validate(
    oauth: &OAuth,
    state: &Authenticator,
    token: &str,
) -> Result<(Validated, i64), Rejection> {
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| Rejection::Invalid("the token is not a JWT".to_owned()))?;
    let ours = header
        .kid
        .as_deref()
        .is_some_and(|k| k.starts_with("mreg-"));
    if ours {
        let claims = oauth
            .keys
            .verify(token, &oauth.issuer, None, oauth.skew)
            .await
            .map_err(Rejection::Invalid)?;
        let revoked_jti = format!("oauth:revoked:{}", claims.jti);
        let revoked_grant = claims.gid.as_deref().map(grant_revoked_key);
        let mut keys = vec![revoked_jti.as_str()];
        keys.extend(revoked_grant.as_deref());
        match state.cache.get_many(&keys).await {
            Ok(markers) => {
                if markers.first().is_some_and(Option::is_some) {
                    return Err(Rejection::Invalid("the token was revoked".to_owned()));
                }
                if markers.get(1).is_some_and(Option::is_some) {
                    return Err(Rejection::Invalid(
                        "the token's grant was revoked".to_owned(),
                    ));
                }
            }
            // The cache is down: its markers are a copy of what the database decides for grants
            // (revoking a refresh token, reuse detection, a replayed code all revoke the grant
            // there), so ask the database. Only single access tokens revoked through /revoke,
            // which are marked in the cache alone, cannot be checked until it is back.
            Err(e) => {
                if let Some(grant) = claims.gid.as_deref() {
                    let now = domain::now().unix_timestamp();
                    let live = state
                        .grants
                        .grant_live(grant, now)
                        .await
                        .map_err(Rejection::Unavailable)?;
                    if !live {
                        return Err(Rejection::Invalid(
                            "the token's grant was revoked".to_owned(),
                        ));
                    }
                }
                tracing::debug!(error = %e, "revocation markers unavailable: grant checked in the database");
            }
        }
        let principal = Principal {
            subject: claims.sub,
            email: claims.email,
            name: claims.name,
            tenant: claims.tid,
            roles: claims.roles,
            scopes: claims.scope.split_whitespace().map(str::to_owned).collect(),
            client_id: Some(claims.client_id),
        };
        return Ok((
            Validated {
                principal,
                aud: vec![claims.aud],
                delegated: true,
                grant: claims.gid,
            },
            claims.exp,
        ));
    }
    let audiences = oauth.upstream.app_audiences();
    let audiences: Vec<&str> = audiences.iter().map(String::as_str).collect();
    let claims = oauth
        .upstream
        .validate(token, &audiences)
        .await
        .map_err(Rejection::Invalid)?;
    let access = provider_access(&claims, matches!(oauth.upstream.kind, Kind::Oidc))
        .map_err(|why| Rejection::Invalid(why.to_owned()))?;
    let identity = Identity::from_claims(&claims)
        .ok_or_else(|| Rejection::Invalid("the token names no subject".to_owned()))?;
    let exp = claims["exp"].as_i64().unwrap_or(0);
    Ok((
        Validated {
            principal: identity.principal(access.scopes, Some(access.client_id)),
            aud: Vec::new(),
            delegated: access.delegated,
            grant: None,
        },
        exp,
    ))
}

/// What a provider access token grants, as read from its claims.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ProviderAccess {
    pub(super) client_id: String,
    pub(super) scopes: Vec<String>,
    pub(super) delegated: bool,
}

/// Tells a provider access token for this app from an ID token with the same audience (the
/// provider's ID tokens for mreg have `aud` = the client id too). Refused are tokens carrying
/// `nonce`, `at_hash` or `c_hash` (ID-token claims), tokens naming no client (`azp`, `appid`;
/// also `client_id`, RFC 9068, for a generic provider), and tokens with neither delegated scopes
/// (`scp`, or `scope` for a generic provider) nor app roles. Entra's `idtyp` decides between
/// delegated (`user`: needs `scp`) and app-only (`app`: needs `roles`); without it a token
/// with scopes is delegated and one with only roles is app-only.
pub(super) fn provider_access(
    claims: &serde_json::Value,
    generic: bool,
) -> Result<ProviderAccess, &'static str> {
    if ["nonce", "at_hash", "c_hash"]
        .iter()
        .any(|c| !claims[*c].is_null())
    {
        return Err("an ID token is not an access token");
    }
    let text = |k: &str| claims[k].as_str().filter(|v| !v.is_empty());
    let client_id = text("azp")
        .or_else(|| text("appid"))
        .or_else(|| if generic { text("client_id") } else { None })
        .ok_or("the token names no client (azp or appid)")?
        .to_owned();
    let scp = text("scp").or_else(|| if generic { text("scope") } else { None });
    let scopes: Vec<String> = scp
        .map(|s| s.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let has_roles = claims["roles"]
        .as_array()
        .is_some_and(|r| r.iter().any(|x| x.as_str().is_some_and(|s| !s.is_empty())));
    let delegated = match text("idtyp") {
        Some("app") => false,
        Some(_) => true,
        None => !scopes.is_empty(),
    };
    if delegated && scopes.is_empty() {
        return Err("a delegated token without scopes (scp) is not an access token for this app");
    }
    if !delegated && !has_roles {
        return Err("an app-only token without roles grants nothing");
    }
    Ok(ProviderAccess {
        client_id,
        scopes,
        delegated,
    })
}

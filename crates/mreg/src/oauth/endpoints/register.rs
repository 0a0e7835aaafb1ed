//! `POST /register`: dynamic client registration (RFC 7591).

use super::*;

/// A registration that has not signed in after this long (seconds) is abandoned: at the bound of
/// idle clients it makes room for a new one (its client, coming back, registers again on
/// `invalid_client`, as MCP clients do).
const ABANDONED_SECS: i64 = 600;

/// `POST /register` (RFC 7591).
pub async fn register(State(oauth): State<Arc<OAuth>>, body: axum::body::Bytes) -> Response {
    let refusal = |error: &str, description: &str| {
        let response = (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": error, "error_description": description})),
        )
            .into_response();
        Note::on(response, |n| {
            n.error = Some(format!("{error}: {description}"))
        })
    };
    let request: RegistrationRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return refusal(
                "invalid_client_metadata",
                &format!("the body is not a client registration: {e}"),
            );
        }
    };
    let client_id = uuid::Uuid::new_v4().to_string();
    let client = match registrations::register(
        request,
        &oauth.supported_scopes,
        client_id,
        oauth.unix_now(),
    ) {
        Ok(c) => c,
        Err(r) => return refusal(r.error, &r.description),
    };
    // Open registration must not grow the table without bound: clients that never signed in
    // are pruned after a week, and until then at most `MREG_OAUTH_MAX_IDLE_CLIENTS` exist. At
    // the bound, registrations left unused for ABANDONED_SECS make room first: a burst of
    // registrations that nobody signs in with (anyone may send them) then holds registration
    // shut for minutes, not for the week until the prune.
    let mut idle = oauth.store.idle_clients().await;
    if idle
        .as_ref()
        .is_ok_and(|idle| *idle >= oauth.max_idle_clients)
    {
        match oauth
            .store
            .prune_clients(oauth.unix_now() - ABANDONED_SECS)
            .await
        {
            Ok(0) => {}
            Ok(pruned) => {
                tracing::warn!(
                    pruned,
                    "registrations left unused for {} minutes were removed to make room",
                    ABANDONED_SECS / 60
                );
                idle = oauth.store.idle_clients().await;
            }
            Err(e) => return OAuthError::unavailable(e).into_response(),
        }
    }
    match idle {
        Ok(idle) if idle >= oauth.max_idle_clients => {
            tracing::warn!(
                idle,
                "client registration refused: too many clients without a sign-in"
            );
            let description =
                "too many clients are registered without having signed in; try again later";
            let mut response = (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "temporarily_unavailable", "error_description": description})),
            )
                .into_response();
            let h = response.headers_mut();
            h.insert(header::RETRY_AFTER, HeaderValue::from(ABANDONED_SECS));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return Note::on(response, |n| {
                n.error = Some(format!("temporarily_unavailable: {description}"))
            });
        }
        Ok(_) => {}
        Err(e) => {
            return OAuthError::unavailable(e).into_response();
        }
    }
    let stored = match serde_json::to_string(&client) {
        Ok(s) => s,
        Err(e) => {
            return OAuthError::internal(e).into_response();
        }
    };
    if let Err(e) = oauth
        .store
        .insert_client(&client.client_id, &stored, oauth.unix_now())
        .await
    {
        return OAuthError::unavailable(e).into_response();
    }
    tracing::info!(client_id = %client.client_id, name = client.client_name.as_deref(), "client registered");
    let mut response = (StatusCode::CREATED, Json(&client)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Note::on(response, |n| n.client_id = Some(client.client_id.clone()))
}

//! Discovery documents: authorization-server metadata (RFC 8414, also served as OpenID
//! configuration), protected-resource metadata (RFC 9728) for `/mcp` and every
//! `/servers/{name}/mcp`, and mreg's public keys.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::OAuth;

fn cacheable(body: Value) -> Response {
    let mut response = Json(body).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

/// `GET /.well-known/oauth-authorization-server` (and `/.well-known/openid-configuration`).
pub async fn authorization_server(State(oauth): State<Arc<OAuth>>) -> Response {
    let issuer = &oauth.issuer;
    cacheable(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "registration_endpoint": format!("{issuer}/register"),
        "revocation_endpoint": format!("{issuer}/revoke"),
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "scopes_supported": oauth.supported_scopes,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
        "client_id_metadata_document_supported": true,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    }))
}

fn resource_document(oauth: &OAuth, resource: String) -> Response {
    cacheable(json!({
        "resource": resource,
        "authorization_servers": [oauth.issuer],
        "scopes_supported": oauth.supported_scopes,
        "bearer_methods_supported": ["header"],
        "resource_signing_alg_values_supported": ["ES256", "RS256"],
        "resource_name": "mreg MCP gateway",
    }))
}

/// `GET /.well-known/oauth-protected-resource`: the gateway as a whole.
pub async fn protected_resource_root(State(oauth): State<Arc<OAuth>>) -> Response {
    let resource = oauth.issuer.clone();
    resource_document(&oauth, resource)
}

/// `GET /.well-known/oauth-protected-resource/{path}`: `/mcp` or `/servers/{name}/mcp`.
pub async fn protected_resource(
    State(oauth): State<Arc<OAuth>>,
    Path(path): Path<String>,
) -> Response {
    let resource = format!("{}/{path}", oauth.issuer);
    if !oauth.is_resource(&resource) {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "not_found", "message": "no such protected resource"})),
        )
            .into_response();
    }
    resource_document(&oauth, resource)
}

/// `GET /.well-known/jwks.json`.
pub async fn jwks(State(oauth): State<Arc<OAuth>>) -> Response {
    match oauth.keys.jwks().await {
        Ok(keys) => cacheable(keys),
        Err(e) => {
            tracing::error!(error = %e, "cannot load the signing keys");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "unavailable", "message": "signing keys are unavailable"})),
            )
                .into_response()
        }
    }
}

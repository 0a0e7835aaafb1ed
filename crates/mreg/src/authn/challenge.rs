//! The 401 and 403 answers of RFC 6750 and RFC 9728: `WWW-Authenticate` names the resource
//! metadata, the scopes and what was wrong with the token.

use super::*;

pub(super) fn quoted(text: &str) -> String {
    text.replace(['"', '\\'], "'")
}

/// 401 with the `WWW-Authenticate` challenge that leads a client to the metadata.
pub(super) fn challenge(oauth: &OAuth, resource: &str, error: Option<&str>) -> Response {
    let mut value = format!(
        "Bearer resource_metadata=\"{}\", scope=\"{}\"",
        oauth.resource_metadata_url(resource),
        quoted(&oauth.scope_hint())
    );
    if let Some(error) = error {
        value.push_str(&format!(
            ", error=\"invalid_token\", error_description=\"{}\"",
            quoted(error)
        ));
    }
    let message = error.unwrap_or("a bearer token is required");
    let mut response =
        ApiError::from(domain::Error::Unauthenticated(message.to_owned())).into_response();
    if let Ok(value) = HeaderValue::from_str(&value) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// 403 `insufficient_scope`, naming the scopes to ask for (step-up).
pub(super) fn insufficient_scope(oauth: &OAuth, resource: &str) -> Response {
    let scopes = quoted(&oauth.required_scopes.join(" "));
    let value = format!(
        "Bearer error=\"insufficient_scope\", scope=\"{scopes}\", resource_metadata=\"{}\"",
        oauth.resource_metadata_url(resource)
    );
    let mut response = ApiError::from(domain::Error::Forbidden(format!(
        "the token lacks a required scope ({scopes})"
    )))
    .into_response();
    if let Ok(value) = HeaderValue::from_str(&value) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

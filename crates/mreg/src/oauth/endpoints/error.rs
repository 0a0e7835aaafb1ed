//! The error answer of the token, revocation and registration endpoints (RFC 6749 §5.2,
//! RFC 7009 §2.2.1, RFC 7591 §3.2.2): one type, rendered in one place (`error`,
//! `error_description`, never cached; `WWW-Authenticate` for a client that must authenticate)
//! and noted for the request's audit row. A failure of the server itself says nothing of its
//! cause to the caller; the cause is logged and kept in the audit row.

use super::*;

/// An error answer of an OAuth endpoint.
#[derive(Debug)]
pub(super) struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
    /// What went wrong inside, for the log and the audit row only (`server_error`).
    internal: Option<String>,
}

impl OAuthError {
    /// `error` with `description`, answered with `status`.
    pub(super) fn new(
        status: StatusCode,
        error: &'static str,
        description: impl Into<String>,
    ) -> Self {
        Self {
            status,
            error,
            description: description.into(),
            internal: None,
        }
    }

    /// 400 `invalid_request`: a parameter is missing, repeated or malformed.
    pub(super) fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    /// 400 `invalid_grant`: the code or refresh token cannot be used (and says why).
    pub(super) fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
    }

    /// 401 `invalid_client`: the client is unknown or unusable; MCP clients register again.
    pub(super) fn invalid_client(description: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", description)
    }

    /// `server_error` with `status`: the server could not complete the request because of
    /// `internal` (a store, the cache, the provider), which the caller is not told.
    pub(super) fn server(status: StatusCode, internal: impl Into<String>) -> Self {
        Self {
            internal: Some(internal.into()),
            ..Self::new(
                status,
                "server_error",
                "the authorization server could not complete the request",
            )
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let noted = match self.internal {
            Some(internal) => {
                tracing::error!(error = %internal, "authorization server failure");
                internal
            }
            None => format!("{}: {}", self.error, self.description),
        };
        let mut response = (
            self.status,
            Json(json!({"error": self.error, "error_description": self.description})),
        )
            .into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"mreg\""),
            );
        }
        Note::failed(response, noted)
    }
}

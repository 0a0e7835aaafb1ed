//! The two error answers of the authorization server, each rendered in one place and noted for
//! the request's audit row. A failure of the server itself says nothing of its cause to the
//! caller; the cause is logged and kept in the audit row.
//!
//! - [`OAuthError`]: the token, revocation and registration endpoints answer a client
//!   (RFC 6749 §5.2, RFC 7009 §2.2.1, RFC 7591 §3.2.2): `error`, `error_description`, never
//!   cached; `WWW-Authenticate` for a client that must authenticate.
//! - [`AuthorizeError`]: the browser's side of a sign-in (`/authorize`, `/consent`, the
//!   provider's callback) answers a person: a page before consent, and after it a redirect to
//!   the client with `error` (RFC 6749 §4.1.2.1).

use super::*;

/// An error answer of an OAuth endpoint.
#[derive(Debug)]
pub(super) struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
    /// What went wrong inside, for the log and the audit row only (`server_error`).
    internal: Option<String>,
    /// A refusal of something presented that must not be (a replayed code or refresh token):
    /// its audit row says `deny`, where an auditor looks for attacks.
    denied: bool,
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
            denied: false,
        }
    }

    /// This refusal, audited as `deny` (a replayed code or refresh token: a leak, or an attack).
    pub(super) fn denied(self) -> Self {
        Self {
            denied: true,
            ..self
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

    /// 503 `server_error`: a store, the cache or the provider does not answer; `cause` is
    /// logged and noted, not told.
    pub(super) fn unavailable(cause: impl std::fmt::Display) -> Self {
        Self::server(StatusCode::SERVICE_UNAVAILABLE, cause.to_string())
    }

    /// 500 `server_error`: the server failed (`cause` is logged and noted, not told).
    pub(super) fn internal(cause: impl std::fmt::Display) -> Self {
        Self::server(StatusCode::INTERNAL_SERVER_ERROR, cause.to_string())
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
        let response = Note::failed(response, noted);
        if self.denied {
            return Note::on(response, |n| {
                n.decision = Some(crate::audit::decision::DENY)
            });
        }
        response
    }
}

/// Why the browser's side of a sign-in stops.
#[derive(Debug)]
pub enum AuthorizeError {
    /// A page for the person in the browser. Before the user has consented nothing is sent to
    /// the client's redirect URI: every client here registered itself (or is a metadata document
    /// anyone can publish), so its redirect URI proves nothing (no open redirector, RFC 9700
    /// §4.11.2).
    Page {
        /// 400 for a bad request, 403 for one from the wrong browser or form, 5xx for the server.
        status: StatusCode,
        /// What the page says.
        message: String,
        /// What went wrong inside, for the log and the audit row only.
        internal: Option<String>,
    },
    /// After consent: the browser goes back to the client with `error` (and `state`, `iss`).
    ToClient {
        /// Where the client registered to get its answer.
        redirect_uri: String,
        /// The OAuth error code.
        error: &'static str,
        /// What went wrong, for the client.
        description: String,
        /// The client's `state`.
        state: Option<String>,
        /// This server (RFC 9207).
        issuer: String,
    },
}

impl AuthorizeError {
    /// 400: the request cannot go on; `message` says why.
    pub(super) fn bad(message: impl Into<String>) -> Self {
        Self::page(StatusCode::BAD_REQUEST, message)
    }

    /// 403: the request came from another browser or a stale form.
    pub(super) fn forbidden(message: impl Into<String>) -> Self {
        Self::page(StatusCode::FORBIDDEN, message)
    }

    /// 400: a parameter of the client's request is wrong; `error` is the OAuth code it would
    /// have been sent back with.
    pub(super) fn invalid(error: &'static str, description: impl std::fmt::Display) -> Self {
        Self::Page {
            status: StatusCode::BAD_REQUEST,
            message: format!(
                "The application's sign-in request is not valid: {description} ({error})."
            ),
            internal: Some(format!("{error}: {description}")),
        }
    }

    /// 503: a service the sign-in needs (the database, the cache, the identity provider's
    /// metadata) does not answer; `cause` is logged, not shown.
    pub(super) fn unavailable(cause: impl std::fmt::Display) -> Self {
        Self::Page {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "The sign-in cannot go on now: a service it needs does not answer. Try again \
                      in a moment."
                .to_owned(),
            internal: Some(cause.to_string()),
        }
    }

    /// 500: the server failed; `cause` is logged, not shown.
    pub(super) fn internal(cause: impl std::fmt::Display) -> Self {
        Self::Page {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "The sign-in failed inside the gateway. Start again from the application."
                .to_owned(),
            internal: Some(cause.to_string()),
        }
    }

    /// The browser goes back to the client of `txn` with `error` and `description`.
    pub(super) fn to_client(
        oauth: &OAuth,
        txn: &Transaction,
        error: &'static str,
        description: impl Into<String>,
    ) -> Self {
        Self::ToClient {
            redirect_uri: txn.redirect_uri.clone(),
            error,
            description: description.into(),
            state: txn.state.clone(),
            issuer: oauth.issuer.clone(),
        }
    }

    fn page(status: StatusCode, message: impl Into<String>) -> Self {
        Self::Page {
            status,
            message: message.into(),
            internal: None,
        }
    }
}

impl IntoResponse for AuthorizeError {
    fn into_response(self) -> Response {
        match self {
            Self::Page {
                status,
                message,
                internal,
            } => {
                let page = error_page(status, &message);
                match internal {
                    Some(internal) => {
                        if status.is_server_error() {
                            tracing::error!(error = %internal, "sign-in failed");
                        }
                        Note::failed(page, internal)
                    }
                    None => page,
                }
            }
            Self::ToClient {
                redirect_uri,
                error,
                description,
                state,
                issuer,
            } => {
                let Ok(mut url) = Url::parse(&redirect_uri) else {
                    return error_page(StatusCode::BAD_REQUEST, &description);
                };
                {
                    let mut q = url.query_pairs_mut();
                    q.append_pair("error", error);
                    q.append_pair("error_description", &description);
                    if let Some(state) = &state {
                        q.append_pair("state", state);
                    }
                    q.append_pair("iss", &issuer);
                }
                Note::failed(redirect(url.as_str()), format!("{error}: {description}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn a_server_failure_shows_a_page_without_its_cause_and_notes_the_cause() {
        let response =
            AuthorizeError::unavailable("redis: connection refused at 10.0.0.7").into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            Note::error_of(&response),
            Some("redis: connection refused at 10.0.0.7")
        );
        assert!(response.headers().get(header::LOCATION).is_none());
        let body = body_of(response).await;
        assert!(
            body.contains("a service it needs does not answer"),
            "{body}"
        );
        assert!(!body.contains("10.0.0.7"), "{body}");
    }

    #[tokio::test]
    async fn an_invalid_request_is_a_page_naming_the_parameter_and_the_oauth_code() {
        let response =
            AuthorizeError::invalid("invalid_scope", "scope 'x' is not offered").into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(response.headers().get(header::LOCATION).is_none());
        assert_eq!(
            Note::error_of(&response),
            Some("invalid_scope: scope 'x' is not offered")
        );
        let body = body_of(response).await;
        assert!(
            body.contains("scope 'x' is not offered (invalid_scope)"),
            "{body}"
        );
    }

    #[test]
    fn after_consent_the_client_gets_the_error_with_its_state_and_the_issuer() {
        let response = AuthorizeError::ToClient {
            redirect_uri: "http://127.0.0.1:9/cb?keep=1".to_owned(),
            error: "access_denied",
            description: "the user denied access".to_owned(),
            state: Some("s&1".to_owned()),
            issuer: "http://127.0.0.1:8001".to_owned(),
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::FOUND);
        let location = response.headers()[header::LOCATION]
            .to_str()
            .expect("ascii");
        let url = Url::parse(location).expect("url");
        let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(query["keep"], "1");
        assert_eq!(query["error"], "access_denied");
        assert_eq!(query["state"], "s&1");
        assert_eq!(query["iss"], "http://127.0.0.1:8001");
        assert_eq!(
            Note::error_of(&response),
            Some("access_denied: the user denied access")
        );
    }
}

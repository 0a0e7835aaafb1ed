//! How errors leave the REST API: one JSON shape, `{ error, message, request_id }` (plus
//! `field` for invalid input), with the status chosen by one exhaustive match over the domain's
//! error. Internal details are logged here, once, and never sent.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::request_id;

/// An error as the REST API reports it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    retry_after: Option<u64>,
    retry_after_ms: Option<u64>,
    required_roles: Option<Vec<String>>,
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Machine-readable code: `not_found`, `already_exists`, `invalid`, `bad_request`,
    /// `payload_too_large`, `unsupported_media_type`, `method_not_allowed`, `unauthenticated`,
    /// `forbidden`, `rate_limited`, `unavailable` or `internal`.
    #[schema(example = "invalid")]
    pub error: String,
    /// What went wrong, for a person.
    #[schema(example = "url: scheme 'ftp' is not allowed; use http or https")]
    pub message: String,
    /// The input field at fault, for `invalid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "url")]
    pub field: Option<String>,
    /// For `rate_limited`: how long to wait before retrying, in milliseconds (`Retry-After`
    /// has it in whole seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = 2500)]
    pub retry_after_ms: Option<u64>,
    /// For `forbidden` by a role rule: the roles that would have allowed the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = json!(["admin"]))]
    pub required_roles: Option<Vec<String>>,
    /// The request's id, also in the `x-request-id` response header; quote it in bug reports.
    pub request_id: String,
}

impl ApiError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
            retry_after_ms: None,
            required_roles: None,
        }
    }

    /// 429: over budget, retry after `wait` (`Retry-After` in whole seconds, rounded up).
    pub fn rate_limited(message: impl Into<String>, wait: std::time::Duration) -> Self {
        Self {
            retry_after: Some((wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)),
            retry_after_ms: Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        }
    }

    /// Names the roles that would have allowed the request.
    pub fn with_required_roles(mut self, roles: Vec<String>) -> Self {
        self.required_roles = Some(roles);
        self
    }

    /// 404 for a path that names no route.
    pub fn no_route() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<domain::Error> for ApiError {
    fn from(e: domain::Error) -> Self {
        use domain::Error as E;
        let message = e.to_string();
        match e {
            E::NotFound { .. } => Self::new(StatusCode::NOT_FOUND, "not_found", message),
            E::AlreadyExists { .. } => Self::new(StatusCode::CONFLICT, "already_exists", message),
            E::Invalid { field, .. } => Self {
                field: Some(field),
                ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
            },
            E::Unauthenticated(_) => {
                Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
            }
            E::Forbidden(_) => {
                crate::audit::note_denied();
                Self::new(StatusCode::FORBIDDEN, "forbidden", message)
            }
            E::RateLimited { retry_after } => Self::rate_limited(message, retry_after),
            E::Unavailable { ref source, .. } => {
                let cause = source.as_deref().map(|s| domain::text::root_cause(s));
                tracing::warn!(error = %e, cause = cause.as_deref(), "dependency unavailable");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
            E::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; the server log has details under this request id",
                )
            }
        }
    }
}

impl ApiError {
    /// A JSON body that did not deserialize: malformed JSON is 400; a value of the wrong shape
    /// is 422 naming its path (`tags[0]`), or the field an unknown or missing field error names.
    pub fn from_json(error: serde_path_to_error::Error<serde_json::Error>) -> Self {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if !inner.is_data() {
            return Self::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("the body is not well-formed JSON: {inner}"),
            );
        }
        let text = without_strings(&inner.to_string());
        let (field, message) = if path == "." {
            (field_of(&text), text)
        } else {
            (Some(path.clone()), format!("{path}: {text}"))
        };
        Self {
            field,
            ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        let text = rejection.body_text();
        Self {
            field: field_of(&text),
            ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", text)
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            rejection.body_text(),
        )
    }
}

/// A serde error's text without the strings it quotes from the input (`invalid type: string
/// "Bearer sk-…", expected a map` becomes `invalid type: a string, expected a map`): the text is
/// kept in the audit row, where a credential sent in the wrong place must not land unredacted.
fn without_strings(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("string \"") {
        out.push_str(&rest[..at]);
        out.push_str("a string");
        // Skip the quoted value (Debug-escaped: a `\` escapes the next character).
        let mut chars = rest[at + "string \"".len()..].char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    end = Some(i + 1);
                    break;
                }
                _ => {}
            }
        }
        match end {
            Some(end) => rest = &rest[at + "string \"".len() + end..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

/// The field path serde names in a data error (`...: tags[0]: invalid type...` or
/// `unknown field `x``).
fn field_of(text: &str) -> Option<String> {
    if let Some(rest) = text.split("unknown field `").nth(1) {
        return rest.split('`').next().map(str::to_owned);
    }
    if let Some(rest) = text.split("missing field `").nth(1) {
        return rest.split('`').next().map(str::to_owned);
    }
    let detail = text.split_once(": ")?.1;
    let (path, _) = detail.split_once(": ")?;
    (!path.contains(' ') && path != ".").then(|| path.to_owned())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The audit row of the request reads why it failed from here, not from the body.
        let noted = self.message.clone();
        let body = ErrorBody {
            error: self.code.to_owned(),
            message: self.message,
            field: self.field,
            retry_after_ms: self.retry_after_ms,
            required_roles: self.required_roles,
            request_id: request_id::current(),
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        crate::audit::Note::failed(response, noted)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn data_errors_do_not_repeat_the_strings_they_refused() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code, reason = "only deserialized")]
        struct Body {
            upstream_headers: std::collections::HashMap<String, String>,
        }
        let json = r#"{"upstream_headers": "Bearer sk-\"secret\"-1"}"#;
        let error = serde_path_to_error::deserialize::<_, Body>(
            &mut serde_json::Deserializer::from_str(json),
        )
        .expect_err("a string is not a map");
        let refused = ApiError::from_json(error);
        assert!(!refused.message.contains("secret"), "{}", refused.message);
        assert!(
            refused
                .message
                .contains("upstream_headers: invalid type: a string, expected a map"),
            "{}",
            refused.message
        );
        assert_eq!(
            without_strings(r#"a string "x\"y" and string "z" end"#),
            "a a string and a string end"
        );
        assert_eq!(without_strings(r#"cut string "open"#), "cut a string");
    }
    use super::{ApiError, field_of, without_strings};

    #[test]
    fn serde_messages_yield_the_field_path() {
        assert_eq!(
            field_of("Failed to deserialize the JSON body into the target type: tags[0]: invalid type: integer `5`, expected a string at line 1 column 30").as_deref(),
            Some("tags[0]")
        );
        assert_eq!(
            field_of("Failed to deserialize the JSON body into the target type: unknown field `nmae`, expected one of `name`").as_deref(),
            Some("nmae")
        );
        assert_eq!(
            field_of("Failed to deserialize the JSON body into the target type: missing field `url` at line 1 column 2").as_deref(),
            Some("url")
        );
    }
}

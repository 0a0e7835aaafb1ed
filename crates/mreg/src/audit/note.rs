//! What a handler tells the audit row about the request it answered: the one way every edge
//! reports an outcome. It travels in the response's extensions — the REST error answer, every
//! JSON-RPC error the gateway makes, and the OAuth endpoints all put one there — and whoever
//! opened the row reads it as the response leaves ([`Note::outcome`]), so no one parses an error
//! body back. (Decisions made deep inside a tool call travel the other way, through
//! [`super::watch`]; answers streamed as SSE complete their row when the stream ends.)

use axum::response::Response;

/// The outcome a handler reports, and what it learnt about the request on the way.
#[derive(Debug, Clone, Default)]
pub struct Note {
    /// A more precise operation than the one the row was opened with (`oauth.token.refresh`).
    pub operation: Option<&'static str>,
    /// Who the request turned out to be for (a sign-in, the holder of a refresh token).
    pub actor: Option<domain::Principal>,
    /// The OAuth client concerned.
    pub client_id: Option<String>,
    /// Why the request failed, in the words the caller got.
    pub error: Option<String>,
    /// The row's decision when it is not `allow` (a refusal the handler decided).
    pub decision: Option<&'static str>,
}

impl Note {
    /// `response` with its note changed by `change` (an empty note is added first).
    pub fn on(mut response: Response, change: impl FnOnce(&mut Note)) -> Response {
        let extensions = response.extensions_mut();
        if extensions.get::<Note>().is_none() {
            extensions.insert(Note::default());
        }
        if let Some(note) = extensions.get_mut::<Note>() {
            change(note);
        }
        response
    }

    /// `response`, noted as failed with `message`.
    pub fn failed(response: Response, message: impl Into<String>) -> Response {
        let message = message.into();
        Self::on(response, |note| note.error = Some(message))
    }

    /// The note of `response`, if a handler left one.
    pub fn of(response: &Response) -> Option<&Note> {
        response.extensions().get::<Note>()
    }

    /// The failure `response` was noted with, if any.
    pub fn error_of(response: &Response) -> Option<&str> {
        Self::of(response).and_then(|note| note.error.as_deref())
    }

    /// The row's outcome for `response`: a failure when it was noted as one, or when its
    /// status is not a success (nor, with `redirects_succeed`, a redirection).
    pub fn outcome(response: &Response, redirects_succeed: bool) -> Result<(), String> {
        let status = response.status();
        match Self::error_of(response) {
            Some(error) => Err(error.to_owned()),
            None if status.is_success() || (redirects_succeed && status.is_redirection()) => Ok(()),
            None => Err(format!("HTTP {}", status.as_u16())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;

    #[test]
    fn a_noted_failure_wins_over_the_status_and_the_status_speaks_otherwise() {
        let ok = StatusCode::OK.into_response();
        assert_eq!(Note::outcome(&ok, false), Ok(()));
        let failed = Note::failed(StatusCode::OK.into_response(), "upstream said no");
        assert_eq!(
            Note::outcome(&failed, false),
            Err("upstream said no".to_owned())
        );
        let redirect = StatusCode::FOUND.into_response();
        assert_eq!(Note::outcome(&redirect, true), Ok(()));
        assert_eq!(Note::outcome(&redirect, false), Err("HTTP 302".to_owned()));
        let named = Note::on(StatusCode::OK.into_response(), |n| {
            n.client_id = Some("c".into())
        });
        let named = Note::on(named, |n| n.operation = Some("oauth.token.refresh"));
        let note = Note::of(&named).expect("a note");
        assert_eq!(
            (note.client_id.as_deref(), note.operation),
            (Some("c"), Some("oauth.token.refresh"))
        );
    }
}

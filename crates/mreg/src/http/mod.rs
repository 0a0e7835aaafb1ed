//! What every HTTP route of both listeners shares, below the routes themselves: the error
//! answer of the REST API ([`error::ApiError`]) and the request id each answer carries
//! ([`request_id`]), and how a body that was too large is told apart.

pub mod error;
pub mod request_id;

/// Whether reading a body failed because it passed the limit (rather than because it was
/// malformed, e.g. a broken chunked encoding, or cut off).
pub fn too_large(e: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = cause {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = error.source();
    }
    false
}

//! Authentication seam. Every handler takes a [`Caller`]; the layer in front of the routes
//! decides who that is. Until the OAuth proxy is configured the layer admits everyone as the
//! anonymous local operator, which is why the listeners bind to loopback by default.

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use domain::Principal;

use crate::rest::error::ApiError;

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| {
                domain::Error::Unauthenticated("no credentials were presented".to_owned()).into()
            })
    }
}

/// Middleware: establishes the caller. With authentication disabled, everyone is
/// [`Principal::anonymous`].
pub async fn authenticate(mut request: Request, next: Next) -> Response {
    request.extensions_mut().insert(Principal::anonymous());
    next.run(request).await
}

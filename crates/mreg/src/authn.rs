//! Authentication seam. Every handler takes a [`Caller`]; the layer in front of the routes
//! decides who that is. Until the OAuth proxy is configured the layer admits everyone as the
//! anonymous local operator, which is why the listeners bind to loopback by default.

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use std::sync::{Arc, OnceLock};

use domain::Principal;

use crate::rest::error::ApiError;

/// The authenticated caller of a request. Shared, not copied: every request of one caller points
/// at the same principal.
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<Principal>);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Arc<Principal>>()
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
    static ANONYMOUS: OnceLock<Arc<Principal>> = OnceLock::new();
    let anonymous = ANONYMOUS.get_or_init(|| Arc::new(Principal::anonymous()));
    request.extensions_mut().insert(anonymous.clone());
    next.run(request).await
}

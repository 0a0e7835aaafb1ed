//! `GET /api/v1/whoami`: the principal the gateway sees for the presented token.

use axum::Json;
use domain::Principal;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::authn::Caller;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(whoami))
}

/// Who the caller is: subject, e-mail, tenant, roles, scopes and OAuth client.
#[utoipa::path(get, path = "/api/v1/whoami", tag = "identity",
    responses(
        (status = 200, description = "The caller", body = Principal),
        (status = 401, description = "No valid bearer token", body = super::error::ErrorBody),
    ))]
async fn whoami(Caller(caller): Caller) -> Json<Principal> {
    Json(caller.as_ref().clone())
}

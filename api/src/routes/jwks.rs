//! `GET /sso/jwks/{clientId}`: the public keys that verify this deployment's access tokens, for
//! the SDKs' session helpers (`PyJWKClient` and the like). Public (no API key), answered from
//! memory (`crate::tokens`); it never reveals anything but public keys.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::error::ApiError;
use crate::schemas;
use crate::state::AppState;

/// `Cache-Control` of the JWKS: short, since a rotation makes a new key active at once (clients
/// that meet an unknown kid fetch again anyway).
pub const CACHE_CONTROL: &str = "public, max-age=60";

/// The JWKS of this deployment's client id; another client id is 404.
#[utoipa::path(get, path = "/sso/jwks/{clientId}", tag = "sso", operation_id = "get_jwks",
    summary = "Get the JWKS that verifies access tokens (no API key)",
    params(("clientId" = String, Path, description = "This deployment's client id (`keyledger client-id`)")),
    responses((status = 200, description = "The JSON Web Key Set", body = schemas::Jwks),
        (status = 404, description = "Not this deployment's client id", body = schemas::ErrorBody)))]
pub async fn jwks(State(state): State<AppState>, Path(client_id): Path<String>) -> Response {
    if client_id != state.tokens.client_id() {
        return ApiError::not_found("client").into_response();
    }
    let keys = state.tokens.jwks_shared().await;
    ([(header::CACHE_CONTROL, CACHE_CONTROL)], Json(keys.as_ref())).into_response()
}

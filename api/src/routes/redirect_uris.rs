//! `POST`/`GET /user_management/redirect_uris`: the environment's registered redirect URIs,
//! where the hosted sign-in may send a browser (`crate::redirect_uris`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use utoipa::ToSchema;

use super::{id_page, list_response, object, ListParams};
use crate::error::ApiError;
use crate::extract::{AppJson, QueryPairs};
use crate::redirect_uris;
use crate::schemas;
use crate::state::AppState;

/// The WorkOS `CreateRedirectUriDto`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateRedirectUri)]
pub struct CreateBody {
    /// The redirect URI: `https`, or `http` on a loopback host; no credentials, no fragment.
    #[schema(max_length = 2048)]
    uri: String,
}

#[utoipa::path(post, path = "/user_management/redirect_uris", tag = "user_management",
    operation_id = "create_redirect_uri", summary = "Register a redirect URI",
    request_body = CreateBody,
    responses((status = 201, description = "The registered redirect URI", body = schemas::RedirectUri),
        (status = 422, description = "Invalid or already registered", body = schemas::ErrorBody)))]
pub async fn create(State(state): State<AppState>, AppJson(b): AppJson<CreateBody>) -> Result<Response, ApiError> {
    let uri = redirect_uris::parse("uri", &b.uri)?;
    match redirect_uris::create(&state, &uri).await? {
        Some(created) => Ok(object(StatusCode::CREATED, created)),
        None => Err(ApiError::invalid(
            "uri",
            "redirect_uri_already_exists",
            format!("Redirect URI '{uri}' already exists."),
        )),
    }
}

#[utoipa::path(get, path = "/user_management/redirect_uris", tag = "user_management",
    operation_id = "list_redirect_uris", summary = "List the registered redirect URIs",
    params(ListParams),
    responses((status = 200, description = "A page of redirect URIs", body = schemas::RedirectUriList),
        (status = 422, description = "Invalid paging", body = schemas::ErrorBody)))]
pub async fn list(State(state): State<AppState>, q: QueryPairs) -> Result<Response, ApiError> {
    let page = id_page(&q, "redirect_uri")?;
    Ok(list_response(redirect_uris::list(&state, &page).await?))
}

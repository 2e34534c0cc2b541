//! A user's sessions: list, revoke (the application), log out (the user's browser).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use keyledger_domain::session::{RevokeReason, Session, SessionCommand};
use keyledger_projections::queries;
use keyledger_store::append::SideRows;
use keyledger_store::commands::Mode;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::{id_page, list_response, ListParams};
use crate::error::{command_error, ApiError};
use crate::extract::{AppJson, PathParam, QueryPairs};
use crate::schemas;
use crate::state::{AppState, PublicContext, RequestContext};

#[utoipa::path(get, path = "/user_management/users/{id}/sessions", tag = "user_management",
    operation_id = "list_sessions", summary = "List a user's sessions",
    params(("id" = String, Path, description = "The user's id"), ListParams),
    responses((status = 200, description = "A page of sessions", body = schemas::SessionList),
        (status = 404, description = "No such user", body = schemas::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    PathParam(id): PathParam,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let page = id_page(&q, "session")?;
    if queries::user(&state.pool, &id).await?.is_none() {
        return Err(ApiError::not_found("user"));
    }
    Ok(list_response(queries::sessions(&state.pool, &id, &page).await?))
}

/// Ends a session: its refresh tokens stop working at once (before the event is appended, so a
/// failure in between leaves it revoked, never alive), then `SessionRevoked` is appended.
pub async fn end(
    state: &AppState,
    ctx: &RequestContext,
    session_id: &str,
    reason: RevokeReason,
) -> Result<(), ApiError> {
    if queries::session(&state.pool, session_id).await?.is_none()
        && crate::sessions::load(&state.pool, session_id).await?.is_none()
    {
        return Err(ApiError::not_found("session"));
    }
    crate::sessions::revoke(&state.pool, session_id).await?;
    state
        .execute::<Session>(
            ctx,
            session_id,
            SessionCommand::Revoke { reason, at: Utc::now() },
            SideRows::default(),
            Mode::Retry,
        )
        .await
        .map_err(|e| command_error(e, super::authenticate::session_error))?;
    Ok(())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RevokeSession)]
pub struct RevokeBody {
    /// The session to end (the access token's `sid`).
    session_id: String,
}

#[utoipa::path(post, path = "/user_management/sessions/revoke", tag = "user_management",
    operation_id = "revoke_session", summary = "Revoke a session", request_body = RevokeBody,
    responses((status = 200, description = "Revoked (also when it already was)"),
        (status = 404, description = "No such session", body = schemas::ErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    ctx: RequestContext,
    AppJson(b): AppJson<RevokeBody>,
) -> Result<Response, ApiError> {
    end(&state, &ctx, b.session_id.trim(), RevokeReason::Revoked).await?;
    Ok((StatusCode::OK, Json(json!({}))).into_response())
}

#[utoipa::path(get, path = "/user_management/sessions/logout", tag = "user_management",
    operation_id = "logout", summary = "Log out: end the session, then redirect to return_to (no API key)",
    params(("session_id" = String, Query, description = "The session to end (the access token's `sid`)"),
        ("return_to" = Option<String>, Query, description = "Where to send the browser afterwards: exactly a registered redirect URI")),
    responses((status = 302, description = "Ended; redirect to return_to"),
        (status = 200, description = "Ended; no return_to given"),
        (status = 404, description = "No such session", body = schemas::ErrorBody),
        (status = 422, description = "Missing session_id or a return_to that is not allowed", body = schemas::ErrorBody)))]
pub async fn logout(State(state): State<AppState>, ctx: PublicContext, q: QueryPairs) -> Result<Response, ApiError> {
    let session_id = q
        .one("session_id")?
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| ApiError::invalid("session_id", "required", "session_id is required"))?;
    let return_to = q.one("return_to")?;
    // Checked before anything changes: a refused redirect must not have logged anybody out.
    if let Some(r) = &return_to {
        // Exactly a registered redirect URI; anything else would make logout an open redirect.
        if !crate::redirect_uris::redirect_uri_allowed(&state, r).await? {
            return Err(ApiError::invalid(
                "return_to",
                "invalid_return_to",
                "return_to must be exactly a registered redirect URI (POST /user_management/redirect_uris or KEYLEDGER_REDIRECT_URIS)",
            ));
        }
    }
    let ctx = ctx.anonymous();
    end(&state, &ctx, session_id.trim(), RevokeReason::LoggedOut).await?;
    Ok(match return_to {
        Some(r) => (StatusCode::FOUND, [(header::LOCATION, r)]).into_response(),
        None => (StatusCode::OK, Json(json!({}))).into_response(),
    })
}

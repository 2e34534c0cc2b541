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

/// Whether `return_to` may be redirected to: exactly a configured redirect URI, or under one
/// (same scheme, host and port, and a path below the configured one). Anything else would make
/// the logout endpoint an open redirect.
pub fn allowed_return_to(allowed: &[String], return_to: &str) -> bool {
    let Ok(target) = url::Url::parse(return_to) else {
        return false;
    };
    if !matches!(target.scheme(), "http" | "https") || target.username() != "" || target.password().is_some() {
        return false;
    }
    allowed.iter().filter_map(|a| url::Url::parse(a).ok()).any(|a| {
        a.scheme() == target.scheme()
            && a.host_str() == target.host_str()
            && a.port_or_known_default() == target.port_or_known_default()
            && (target.path() == a.path()
                || target
                    .path()
                    .starts_with(&format!("{}/", a.path().trim_end_matches('/'))))
    })
}

#[utoipa::path(get, path = "/user_management/sessions/logout", tag = "user_management",
    operation_id = "logout", summary = "Log out: end the session, then redirect to return_to (no API key)",
    params(("session_id" = String, Query, description = "The session to end (the access token's `sid`)"),
        ("return_to" = Option<String>, Query, description = "Where to send the browser afterwards: a configured redirect URI (KEYLEDGER_REDIRECT_URIS)")),
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
        if !allowed_return_to(&state.auth.redirect_uris, r) {
            return Err(ApiError::invalid(
                "return_to",
                "invalid_return_to",
                "return_to must be one of the configured redirect URIs (KEYLEDGER_REDIRECT_URIS)",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_to_must_sit_under_a_configured_redirect_uri() {
        let allowed = vec![
            "https://app.example.com/after".to_string(),
            "http://127.0.0.1:3000".to_string(),
        ];
        for ok in [
            "https://app.example.com/after",
            "https://app.example.com/after/logout?x=1",
            "http://127.0.0.1:3000/",
            "http://127.0.0.1:3000/anything",
        ] {
            assert!(allowed_return_to(&allowed, ok), "{ok}");
        }
        for bad in [
            "https://evil.example.com/after",
            "https://app.example.com/afterwards",
            "https://app.example.com.evil.com/after",
            "http://app.example.com/after",
            "https://user@app.example.com/after",
            "//evil.example.com",
            "javascript:alert(1)",
            "http://127.0.0.1:3001/",
            "",
        ] {
            assert!(!allowed_return_to(&allowed, bad), "{bad}");
        }
    }
}

//! Admin Portal links (table `portal_link`): `POST /portal/generate_link` issues one for an
//! organization and an intent; `GET /portal/launch` spends it. Only the SHA-256 of a link's
//! secret is stored; a link opens once and for five minutes, and spending it is one conditional
//! UPDATE, so two browsers racing on one link cannot both win.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use keyledger_projections::queries;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::session::Intent;
use crate::error::ApiError;
use crate::extract::AppJson;
use crate::schemas;
use crate::secrets::token_hash;
use crate::state::{AppState, RequestContext};

/// How long a link may wait to be opened (WorkOS's figure).
pub const TTL_SECS: i64 = 5 * 60;

/// A link as the SDKs' `portal.generate_link` sends it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = GenerateLink)]
pub struct GenerateLinkBody {
    /// The organization the portal is for (`org_...`).
    organization: String,
    /// `sso`, `domain_verification` or `audit_logs` (default `sso`).
    #[serde(default)]
    intent: Option<String>,
    /// Linked from every portal page ("Back to the application").
    #[serde(default)]
    return_url: Option<String>,
    /// Linked from every portal page ("Done").
    #[serde(default)]
    success_url: Option<String>,
    /// Accepted for compatibility; not used.
    #[serde(default)]
    external_user_id: Option<String>,
    /// Accepted for compatibility; not used.
    #[serde(default)]
    it_contact_emails: Option<Vec<String>>,
    /// Accepted for compatibility; not used.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    intent_options: Option<serde_json::Value>,
}

/// WorkOS's `PortalLinkResponse`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = PortalLink)]
pub struct PortalLinkResponse {
    /// Opens the portal once, within five minutes.
    link: String,
}

fn intent(given: Option<&str>) -> Result<Intent, ApiError> {
    let given = given.unwrap_or("sso");
    Intent::parse(given).ok_or_else(|| {
        ApiError::invalid(
            "intent",
            "invalid_intent",
            format!("intent {given:?} is not served by keyledger's Admin Portal; use sso, domain_verification or audit_logs"),
        )
    })
}

#[utoipa::path(post, path = "/portal/generate_link", tag = "portal",
    operation_id = "generate_portal_link", summary = "Generate an Admin Portal link",
    description = "As the SDKs' `portal.generate_link` sends it. The link opens keyledger's own Admin Portal \
        pages for this organization only, once, within five minutes.",
    request_body = GenerateLinkBody,
    responses((status = 201, description = "The link", body = PortalLinkResponse),
        (status = 404, description = "No such organization", body = schemas::ErrorBody),
        (status = 422, description = "Invalid intent or URL", body = schemas::ErrorBody)))]
pub async fn generate_link(
    State(state): State<AppState>,
    ctx: RequestContext,
    AppJson(b): AppJson<GenerateLinkBody>,
) -> Result<Response, ApiError> {
    let intent = intent(b.intent.as_deref())?;
    let return_url = b
        .return_url
        .as_deref()
        .map(|u| crate::routes::connections::web_url("return_url", u).map(String::from))
        .transpose()?;
    let success_url = b
        .success_url
        .as_deref()
        .map(|u| crate::routes::connections::web_url("success_url", u).map(String::from))
        .transpose()?;
    let _ = (&b.external_user_id, &b.it_contact_emails, &b.intent_options);
    if b.organization.len() > 128 || queries::organization(&state.pool, &b.organization).await?.is_none() {
        return Err(ApiError::not_found("organization"));
    }
    let secret = crate::secrets::random_token(32).map_err(|e| {
        tracing::error!(error = %e, "drawing a portal link secret failed");
        ApiError::internal()
    })?;
    let expires_at = Utc::now() + chrono::Duration::seconds(TTL_SECS);
    sqlx::query(
        "insert into portal_link (secret_hash, organization_id, intent, return_url, success_url, expires_at) \
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(token_hash(&secret))
    .bind(&b.organization)
    .bind(intent.as_str())
    .bind(&return_url)
    .bind(&success_url)
    .bind(expires_at)
    .execute(&state.pool)
    .await?;
    // A link changes no identity state: a log line (who asked, for which organization), no event.
    tracing::info!(
        organization_id = %b.organization,
        intent = intent.as_str(),
        actor_id = %ctx.actor.id,
        "admin portal link generated"
    );
    let link = format!("{}{}?secret={secret}", state.public_base, super::paths::LAUNCH);
    Ok((StatusCode::CREATED, Json(PortalLinkResponse { link })).into_response())
}

/// What an opened link grants.
pub struct Opened {
    pub organization_id: String,
    pub intent: Intent,
    pub return_url: Option<String>,
    pub success_url: Option<String>,
}

/// Why a link did not open.
pub enum NotOpened {
    /// No such link.
    Unknown,
    /// Expired or already opened.
    Spent,
}

/// Spends link `secret` (once: a conditional UPDATE).
pub async fn open(state: &AppState, secret: &str) -> Result<Result<Opened, NotOpened>, ApiError> {
    if secret.is_empty() || secret.len() > 128 {
        return Ok(Err(NotOpened::Unknown));
    }
    let hash = token_hash(secret);
    let row: Option<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
        "update portal_link set used_at = now() where secret_hash = $1 and used_at is null and expires_at > now() \
         returning organization_id, intent, return_url, success_url",
    )
    .bind(&hash)
    .fetch_optional(&state.pool)
    .await?;
    if let Some((organization_id, intent, return_url, success_url)) = row {
        let Some(intent) = Intent::parse(&intent) else {
            return Ok(Err(NotOpened::Unknown));
        };
        return Ok(Ok(Opened {
            organization_id,
            intent,
            return_url,
            success_url,
        }));
    }
    let known: Option<(i32,)> = sqlx::query_as("select 1 from portal_link where secret_hash = $1")
        .bind(&hash)
        .fetch_optional(&state.pool)
        .await?;
    Ok(Err(if known.is_some() {
        NotOpened::Spent
    } else {
        NotOpened::Unknown
    }))
}

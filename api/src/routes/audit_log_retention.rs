//! `GET /organizations/{id}/audit_log_configuration` and `GET`/`PUT
//! /organizations/{id}/audit_logs_retention`: how long an organization's audit log events are to
//! be kept. A change is an `OrganizationAuditLogsRetentionChanged` event of the organization,
//! which the audit trail shows (`keyledger_projections::audit`). Nothing is ever deleted here.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use keyledger_domain::organization::{Organization, OrganizationCommand};
use keyledger_projections::audit;
use keyledger_projections::queries;
use keyledger_store::append::SideRows;
use keyledger_store::commands::Mode;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::organizations::organization_error;
use super::{now, object};
use crate::error::{command_error, ApiError};
use crate::extract::{AppJson, PathParam};
use crate::schemas;
use crate::state::{AppState, RequestContext};

/// The retention periods the spec allows (`UpdateAuditLogsRetentionDto`: "Valid values are 30
/// and 365").
const ALLOWED_DAYS: [u32; 2] = [30, 365];

/// What the configuration reports while no retention was ever set.
const DEFAULT_DAYS: u32 = 30;

async fn existing(state: &AppState, id: &str) -> Result<(), ApiError> {
    match queries::organization(&state.pool, id).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found("organization")),
    }
}

#[utoipa::path(get, path = "/organizations/{id}/audit_log_configuration", tag = "audit_logs",
    operation_id = "get_audit_log_configuration", summary = "Get an organization's audit log configuration",
    params(("id" = String, Path, description = "The organization's id")),
    responses((status = 200, description = "The configuration", body = schemas::AuditLogConfiguration),
        (status = 404, description = "No such organization", body = schemas::ErrorBody)))]
pub async fn configuration(State(state): State<AppState>, PathParam(id): PathParam) -> Result<Response, ApiError> {
    existing(&state, &id).await?;
    let days = audit::retention(&state.pool, &id).await?.unwrap_or(DEFAULT_DAYS);
    // Audit logs are always on; keyledger has no log streams, so `log_stream` is absent.
    Ok(object(
        StatusCode::OK,
        json!({ "organization_id": id, "retention_period_in_days": days, "state": "active" }),
    ))
}

#[utoipa::path(get, path = "/organizations/{id}/audit_logs_retention", tag = "audit_logs",
    operation_id = "get_audit_logs_retention", summary = "Get an organization's audit log retention",
    params(("id" = String, Path, description = "The organization's id")),
    responses((status = 200, description = "The retention (null while never set)", body = schemas::AuditLogsRetention),
        (status = 404, description = "No such organization", body = schemas::ErrorBody)))]
pub async fn get(State(state): State<AppState>, PathParam(id): PathParam) -> Result<Response, ApiError> {
    existing(&state, &id).await?;
    let days = audit::retention(&state.pool, &id).await?;
    Ok(object(StatusCode::OK, json!({ "retention_period_in_days": days })))
}

/// The spec's body is `retention_period_in_days`; the Python SDK may send `retention_period`
/// (`1_MONTH`, `1_YEAR`, ...) instead, of which the two the spec allows are accepted.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetBody {
    /// 30 or 365.
    #[serde(default)]
    retention_period_in_days: Option<i64>,
    /// The Python SDK's form: `1_MONTH` or `1_YEAR`.
    #[serde(default)]
    retention_period: Option<String>,
}

fn days(b: SetBody) -> Result<u32, ApiError> {
    let allowed = || format!("one of {}", ALLOWED_DAYS.map(|d| d.to_string()).join(", "));
    match (b.retention_period_in_days, b.retention_period) {
        (Some(_), Some(_)) => Err(ApiError::invalid(
            "retention_period",
            "invalid_retention_period",
            "give retention_period_in_days or retention_period, not both",
        )),
        (None, None) => Err(ApiError::invalid(
            "retention_period_in_days",
            "required",
            "retention_period_in_days is required",
        )),
        (Some(d), None) => u32::try_from(d)
            .ok()
            .filter(|d| ALLOWED_DAYS.contains(d))
            .ok_or_else(|| {
                ApiError::invalid(
                    "retention_period_in_days",
                    "invalid_retention_period",
                    format!("retention_period_in_days must be {}", allowed()),
                )
            }),
        (None, Some(p)) => match p.as_str() {
            "1_MONTH" => Ok(30),
            "1_YEAR" => Ok(365),
            _ => Err(ApiError::invalid(
                "retention_period",
                "invalid_retention_period",
                "retention_period must be 1_MONTH (30 days) or 1_YEAR (365 days)",
            )),
        },
    }
}

#[utoipa::path(put, path = "/organizations/{id}/audit_logs_retention", tag = "audit_logs",
    operation_id = "set_audit_logs_retention", summary = "Set an organization's audit log retention",
    params(("id" = String, Path, description = "The organization's id")), request_body = SetBody,
    responses((status = 200, description = "The new retention", body = schemas::AuditLogsRetention),
        (status = 404, description = "No such organization", body = schemas::ErrorBody),
        (status = 422, description = "Invalid retention period", body = schemas::ErrorBody)))]
pub async fn set(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParam(id): PathParam,
    AppJson(b): AppJson<SetBody>,
) -> Result<Response, ApiError> {
    let days = days(b)?;
    let cmd = OrganizationCommand::SetAuditLogsRetention {
        retention_period_in_days: days,
        at: now(),
    };
    state
        .execute::<Organization>(&ctx, &id, cmd, SideRows::default(), Mode::Retry)
        .await
        .map_err(|e| command_error(e, organization_error))?;
    Ok(object(StatusCode::OK, json!({ "retention_period_in_days": days })))
}

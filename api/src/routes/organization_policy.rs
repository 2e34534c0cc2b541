//! `GET`/`PUT /organizations/{id}/policy` (keyledger's extension, docs/API.md): the policy an
//! organization sets for the users of its verified domains. A change is an
//! `OrganizationPolicyChanged` event of the organization (public event
//! `organization.policy_updated`, audit action `organization_policy.updated`); reading it
//! `as_of` folds the organization's stream. The policy's effects live in `crate::jit` and
//! `crate::policy`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use keyledger_domain::organization::{
    AuthenticationPolicy, MembershipPolicy, Organization, OrganizationCommand, OrganizationEvent,
};
use keyledger_domain::values::RoleSlug;
use keyledger_projections::history::History;
use keyledger_projections::objects::{default_policy_doc, policy_doc};
use keyledger_projections::{queries, tenant_reads};
use keyledger_store::append::SideRows;
use keyledger_store::commands::Mode;
use serde::Deserialize;
use utoipa::ToSchema;

use super::organizations::organization_error;
use super::{as_of, now, object, AsOfParams};
use crate::error::{command_error, ApiError};
use crate::extract::{AppJson, PathParam, QueryPairs};
use crate::schemas;
use crate::state::{AppState, RequestContext};
use crate::tenant::Tenant;

const ID: &str = "The organization's id (`org_...`).";

#[utoipa::path(get, path = "/organizations/{id}/policy", tag = "organizations",
    operation_id = "get_organization_policy",
    summary = "Get an organization's policy for the users of its verified domains (keyledger extension)",
    params(("id" = String, Path, description = ID), AsOfParams),
    responses((status = 200, description = "The policy (the defaults, with updated_at null, while never set)",
            body = schemas::OrganizationPolicy),
        (status = 404, description = "No such organization", body = schemas::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    tenant: Tenant,
    PathParam(id): PathParam,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let at = as_of(&q)?;
    if let Some(own) = tenant.organization_id() {
        // Another organization's id is 404 whether or not it exists.
        if at.is_some() {
            tenant.refuse_as_of()?;
        }
        tenant_reads::organization(&state.pool, own, &id)
            .await?
            .ok_or_else(|| ApiError::not_found("organization"))?;
        let policy = tenant_reads::organization_policy(&state.pool, own, &id).await?;
        return Ok(object(
            StatusCode::OK,
            policy.unwrap_or_else(|| default_policy_doc(&id)),
        ));
    }
    let policy = match at {
        Some(at) => {
            let (_, policy) = History::default()
                .organization_policy(&state.pool, &id, at)
                .await?
                .ok_or_else(|| ApiError::not_found("organization"))?;
            policy
        }
        None => {
            queries::organization(&state.pool, &id)
                .await?
                .ok_or_else(|| ApiError::not_found("organization"))?;
            queries::organization_policy(&state.pool, &id).await?
        }
    };
    Ok(object(
        StatusCode::OK,
        policy.unwrap_or_else(|| default_policy_doc(&id)),
    ))
}

/// Each field is optional: a missing (or null) one keeps its current value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = UpdateOrganizationPolicy)]
pub struct SetBody {
    /// `auto` (users with a verified email at a verified domain join with `default_role`) or
    /// `invite_only`.
    #[serde(default)]
    membership: Option<String>,
    /// The role slug of members who join by domain (`member`, `admin`).
    #[serde(default)]
    default_role: Option<String>,
    /// `any` or `sso_required` (password and Magic Auth sign-in answer `sso_required`).
    #[serde(default)]
    authentication: Option<String>,
}

/// Parses every given field; all invalid ones are reported together.
fn parse(b: SetBody) -> Result<OrganizationCommand, ApiError> {
    let membership = b
        .membership
        .as_deref()
        .map(|m| MembershipPolicy::parse("membership", m));
    let default_role = b.default_role.as_deref().map(|r| RoleSlug::parse("default_role", r));
    let authentication = b
        .authentication
        .as_deref()
        .map(|a| AuthenticationPolicy::parse("authentication", a));
    let mut error: Option<ApiError> = None;
    let mut note = |e: keyledger_domain::values::InvalidValue| {
        let e = ApiError::from(e);
        error = Some(match error.take() {
            Some(first) => first.also(e),
            None => e,
        });
    };
    let membership = match membership.transpose() {
        Ok(v) => v,
        Err(e) => {
            note(e);
            None
        }
    };
    let default_role = match default_role.transpose() {
        Ok(v) => v,
        Err(e) => {
            note(e);
            None
        }
    };
    let authentication = match authentication.transpose() {
        Ok(v) => v,
        Err(e) => {
            note(e);
            None
        }
    };
    if let Some(e) = error {
        return Err(e);
    }
    Ok(OrganizationCommand::SetPolicy {
        membership,
        default_role,
        authentication,
        at: now(),
    })
}

#[utoipa::path(put, path = "/organizations/{id}/policy", tag = "organizations",
    operation_id = "set_organization_policy",
    summary = "Set an organization's policy for the users of its verified domains (keyledger extension)",
    params(("id" = String, Path, description = ID)), request_body = SetBody,
    responses((status = 200, description = "The policy after the change", body = schemas::OrganizationPolicy),
        (status = 404, description = "No such organization", body = schemas::ErrorBody),
        (status = 422, description = "Invalid values, each in `errors`", body = schemas::ErrorBody)))]
pub async fn set(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParam(id): PathParam,
    AppJson(b): AppJson<SetBody>,
) -> Result<Response, ApiError> {
    let cmd = parse(b)?;
    let done = state
        .execute::<Organization>(&ctx, &id, cmd, SideRows::default(), Mode::Retry)
        .await
        .map_err(|e| command_error(e, organization_error))?;
    // The policy as the change left it (no change: as it stands).
    let changed = done.events.iter().rev().find_map(|e| match e {
        OrganizationEvent::OrganizationPolicyChanged {
            membership,
            default_role,
            authentication,
            at,
            ..
        } => Some(policy_doc(
            &id,
            membership.as_str(),
            default_role.as_str(),
            authentication.as_str(),
            Some(at),
        )),
        _ => None,
    });
    let policy = match changed {
        Some(p) => p,
        None => queries::organization_policy(&state.pool, &id)
            .await?
            .unwrap_or_else(|| default_policy_doc(&id)),
    };
    Ok(object(StatusCode::OK, policy))
}

//! `/user_management/organization_memberships`: users' memberships of organizations.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use keyledger_domain::ids::new_id;
use keyledger_domain::membership::{MembershipCommand, MembershipError, MembershipEvent, OrganizationMembership};
use keyledger_domain::values::RoleSlug;
use keyledger_domain::ClaimKind;
use keyledger_projections::history::History;
use keyledger_projections::queries::{self, MembershipFilter};
use keyledger_projections::tenant_reads;
use keyledger_store::append::SideRows;
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::{as_of, created, id_page, list_response, now, object, AsOfParams, ListParams};
use crate::error::{command_error, ApiError};
use crate::extract::{AppJson, PathParam, QueryPairs};
use crate::schemas;
use crate::state::{AppState, RequestContext};
use crate::tenant::Tenant;
use keyledger_projections::objects::Kind;
use keyledger_store::commands::{CommandError, Mode};
use keyledger_store::decode::AnyEvent;

fn membership_error(e: MembershipError) -> ApiError {
    match e {
        MembershipError::NotFound => ApiError::not_found("organization membership"),
        MembershipError::AlreadyExists => ApiError::conflict("the organization membership already exists"),
        MembershipError::Pending => ApiError::bad_request(
            "cannot_reactivate_pending_organization_membership",
            "a pending organization membership cannot be reactivated; the user needs to accept the invitation",
        ),
    }
}

/// A create that matches an active membership (the claim's own answer, `error::command_error`).
fn already_member() -> ApiError {
    ApiError::invalid(
        "user_id",
        "organization_membership_already_exists",
        "the user is already a member of this organization",
    )
}

const STATUSES: [&str; 3] = ["active", "inactive", "pending"];

/// The membership list's filters (besides [`ListParams`]): `organization_id` or `user_id` is
/// required (`as_of` needs `organization_id`).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListFilters {
    pub organization_id: Option<String>,
    pub user_id: Option<String>,
    /// Any of these statuses.
    #[param(inline)]
    pub statuses: Option<Vec<schemas::MembershipStatus>>,
    /// RFC 3339 instant: the list as it was then (needs `organization_id`).
    #[param(format = DateTime)]
    pub as_of: Option<String>,
}

const ID: &str = "The membership's id (`om_...`).";

#[utoipa::path(get, path = "/user_management/organization_memberships", tag = "organization_memberships",
    operation_id = "list_organization_memberships", summary = "List organization memberships",
    params(ListParams, ListFilters),
    responses((status = 200, description = "A page of memberships", body = schemas::OrganizationMembershipList),
        (status = 400, description = "Neither organization_id nor user_id", body = schemas::ErrorBody)))]
pub async fn list(State(state): State<AppState>, tenant: Tenant, q: QueryPairs) -> Result<Response, ApiError> {
    let page = id_page(&q, "om")?;
    let mut statuses = q.many("statuses");
    if let Some(bad) = statuses.iter().find(|s| !STATUSES.contains(&s.as_str())) {
        return Err(ApiError::invalid(
            "statuses",
            "invalid_status",
            format!("status {bad} is not one of active, inactive, pending"),
        ));
    }
    // The spec: "By default only active memberships are returned".
    if statuses.is_empty() {
        statuses.push("active".to_string());
    }
    let filter = MembershipFilter {
        // With an access token: the token's organization, whatever the query says (403 if another).
        organization_id: tenant.list_filter(q.one("organization_id")?)?,
        user_id: q.one("user_id")?,
        statuses,
    };
    if let Some(at) = as_of(&q)? {
        tenant.refuse_as_of()?;
        let Some(org) = filter.organization_id.clone() else {
            return Err(ApiError::invalid(
                "organization_id",
                "missing_filter",
                "as_of on the membership list needs organization_id",
            ));
        };
        let r = History::default()
            .memberships(&state.pool, &org, &filter, &page, at)
            .await?;
        return Ok(list_response(r));
    }
    if filter.organization_id.is_none() && filter.user_id.is_none() {
        // The spec's code for this 400.
        return Err(ApiError::bad_request(
            "missing_user_id_or_organization_id",
            "give organization_id or user_id",
        ));
    }
    Ok(list_response(queries::memberships(&state.pool, &filter, &page).await?))
}

async fn find(state: &AppState, id: &str) -> Result<Value, ApiError> {
    queries::membership(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found("organization membership"))
}

#[utoipa::path(get, path = "/user_management/organization_memberships/{id}", tag = "organization_memberships",
    operation_id = "get_organization_membership", summary = "Get an organization membership",
    params(("id" = String, Path, description = ID), AsOfParams),
    responses((status = 200, description = "The membership", body = schemas::OrganizationMembership),
        (status = 404, description = "No such membership", body = schemas::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    tenant: Tenant,
    PathParam(id): PathParam,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    if let Some(own) = tenant.organization_id() {
        if as_of(&q)?.is_some() {
            tenant.refuse_as_of()?;
        }
        let m = tenant_reads::membership(&state.pool, own, &id)
            .await?
            .ok_or_else(|| ApiError::not_found("organization membership"))?;
        return Ok(object(StatusCode::OK, m));
    }
    if let Some(at) = as_of(&q)? {
        let m = History::default()
            .membership(&state.pool, &id, at)
            .await?
            .ok_or_else(|| ApiError::not_found("organization membership"))?;
        return Ok(object(StatusCode::OK, m));
    }
    Ok(object(StatusCode::OK, find(&state, &id).await?))
}

/// `role_slug` or `role_slugs` (one role per membership here). The spec names these refusals
/// codes at the top level of the 422 (`invalid_role`, `multiple_roles_not_enabled`).
fn role(role_slug: Option<String>, role_slugs: Option<Vec<String>>) -> Result<Option<RoleSlug>, ApiError> {
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let parse = |field: &'static str, r: &str| {
        RoleSlug::parse(field, r).map_err(|e| ApiError::invalid_as(unprocessable, e.field, e.code, e.message))
    };
    match (role_slug, role_slugs) {
        (Some(_), Some(_)) => Err(ApiError::invalid_as(
            unprocessable,
            "role_slugs",
            "invalid_role",
            "give role_slug or role_slugs, not both",
        )),
        (Some(r), None) => Ok(Some(parse("role_slug", &r)?)),
        (None, Some(list)) => match list.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(parse("role_slugs", one)?)),
            _ => Err(ApiError::invalid_as(
                unprocessable,
                "role_slugs",
                "multiple_roles_not_enabled",
                "a membership has exactly one role",
            )),
        },
        (None, None) => Ok(None),
    }
}

/// `role_slug` or `role_slugs` (one role per membership; default `member`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateOrganizationMembership)]
pub struct CreateBody {
    user_id: String,
    organization_id: String,
    #[serde(default)]
    #[schema(value_type = Option<schemas::RoleSlug>)]
    role_slug: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Vec<schemas::RoleSlug>>, max_items = 1)]
    role_slugs: Option<Vec<String>>,
}

#[utoipa::path(post, path = "/user_management/organization_memberships", tag = "organization_memberships",
    operation_id = "create_organization_membership", summary = "Create an organization membership",
    request_body = CreateBody,
    responses((status = 201, description = "The new membership", body = schemas::OrganizationMembership),
        (status = 404, description = "No such user or organization", body = schemas::ErrorBody),
        (status = 422, description = "Invalid role, or already a member", body = schemas::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    ctx: RequestContext,
    AppJson(b): AppJson<CreateBody>,
) -> Result<Response, ApiError> {
    let role = role(b.role_slug, b.role_slugs)?.unwrap_or_else(RoleSlug::member);
    if queries::user(&state.pool, &b.user_id).await?.is_none() {
        return Err(ApiError::not_found("user"));
    }
    let org = queries::organization(&state.pool, &b.organization_id)
        .await?
        .ok_or_else(|| ApiError::not_found("organization"))?;
    let organization_name = org.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
    let claim = MembershipEvent::claim_value(&b.organization_id, &b.user_id);
    // The spec: a create that matches an inactive membership activates it with the given role.
    // The membership claim names the match, even one the read model has not seen yet.
    if let Some(existing) = queries::claim_holder(&state.pool, ClaimKind::Membership.as_str(), &claim).await? {
        return rejoin(&state, &ctx, &existing, role).await;
    }
    let id = new_id("om");
    let cmd = MembershipCommand::Create {
        user_id: b.user_id,
        organization_id: b.organization_id,
        organization_name,
        role: role.clone(),
        at: now(),
    };
    let done = match state
        .execute::<OrganizationMembership>(&ctx, &id, cmd, SideRows::default(), Mode::New)
        .await
    {
        Ok(done) => done,
        // Lost a race with another create of the same pair: that one is the match now.
        Err(CommandError::Claim(c)) if c.kind == ClaimKind::Membership.as_str() => {
            return match queries::claim_holder(&state.pool, ClaimKind::Membership.as_str(), &claim).await? {
                Some(existing) => rejoin(&state, &ctx, &existing, role).await,
                None => Err(ApiError::conflict(
                    "the object was changed concurrently; retry the request",
                )),
            };
        }
        Err(e) => return Err(command_error(e, membership_error)),
    };
    let events = done.events.into_iter().map(AnyEvent::Membership).collect();
    let m = created(
        queries::membership(&state.pool, &id).await,
        &id,
        events,
        Kind::Membership,
        &id,
    )?;
    Ok(object(StatusCode::CREATED, m))
}

/// Reactivates the inactive membership `id` with `role` (a create that matched it): 201 with the
/// membership; an active match is the usual "already a member".
async fn rejoin(state: &AppState, ctx: &RequestContext, id: &str, role: RoleSlug) -> Result<Response, ApiError> {
    state
        .execute::<OrganizationMembership>(
            ctx,
            id,
            MembershipCommand::Rejoin { role, at: now() },
            SideRows::default(),
            Mode::Retry,
        )
        .await
        .map_err(|e| match e {
            CommandError::Domain(MembershipError::AlreadyExists) => already_member(),
            other => command_error(other, membership_error),
        })?;
    Ok(object(StatusCode::CREATED, find(state, id).await?))
}

/// `role_slug` or `role_slugs`; without either the membership is returned unchanged.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = UpdateOrganizationMembership)]
pub struct UpdateBody {
    #[serde(default)]
    #[schema(value_type = Option<schemas::RoleSlug>)]
    role_slug: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Vec<schemas::RoleSlug>>, max_items = 1)]
    role_slugs: Option<Vec<String>>,
}

async fn run(state: &AppState, ctx: &RequestContext, id: &str, cmd: MembershipCommand) -> Result<Response, ApiError> {
    state
        .execute::<OrganizationMembership>(ctx, id, cmd, SideRows::default(), Mode::Retry)
        .await
        .map_err(|e| command_error(e, membership_error))?;
    Ok(object(StatusCode::OK, find(state, id).await?))
}

#[utoipa::path(put, path = "/user_management/organization_memberships/{id}", tag = "organization_memberships",
    operation_id = "update_organization_membership", summary = "Change a membership's role",
    params(("id" = String, Path, description = ID)), request_body = UpdateBody,
    responses((status = 200, description = "The membership", body = schemas::OrganizationMembership),
        (status = 404, description = "No such membership", body = schemas::ErrorBody),
        (status = 422, description = "Invalid role", body = schemas::ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParam(id): PathParam,
    AppJson(b): AppJson<UpdateBody>,
) -> Result<Response, ApiError> {
    match role(b.role_slug, b.role_slugs)? {
        Some(role) => run(&state, &ctx, &id, MembershipCommand::ChangeRole { role, at: now() }).await,
        None => Ok(object(StatusCode::OK, find(&state, &id).await?)),
    }
}

#[utoipa::path(put, path = "/user_management/organization_memberships/{id}/deactivate",
    tag = "organization_memberships", operation_id = "deactivate_organization_membership",
    summary = "Deactivate a membership", params(("id" = String, Path, description = ID)),
    responses((status = 200, description = "The membership, `inactive`", body = schemas::OrganizationMembership),
        (status = 404, description = "No such membership", body = schemas::ErrorBody)))]
pub async fn deactivate(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    run(&state, &ctx, &id, MembershipCommand::Deactivate { at: now() }).await
}

#[utoipa::path(put, path = "/user_management/organization_memberships/{id}/reactivate",
    tag = "organization_memberships", operation_id = "reactivate_organization_membership",
    summary = "Reactivate a membership", params(("id" = String, Path, description = ID)),
    responses((status = 200, description = "The membership, `active`", body = schemas::OrganizationMembership),
        (status = 404, description = "No such membership", body = schemas::ErrorBody)))]
pub async fn reactivate(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    run(&state, &ctx, &id, MembershipCommand::Reactivate { at: now() }).await
}

#[utoipa::path(delete, path = "/user_management/organization_memberships/{id}", tag = "organization_memberships",
    operation_id = "delete_organization_membership", summary = "Delete an organization membership",
    params(("id" = String, Path, description = ID)),
    responses((status = 200, description = "Deleted; empty body"),
        (status = 404, description = "No such membership", body = schemas::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    state
        .execute::<OrganizationMembership>(
            &ctx,
            &id,
            MembershipCommand::Delete { at: now() },
            SideRows::default(),
            Mode::Retry,
        )
        .await
        .map_err(|e| command_error(e, membership_error))?;
    Ok(axum::response::IntoResponse::into_response(StatusCode::OK))
}

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
use keyledger_projections::store::AppendExtras;
use serde::Deserialize;
use serde_json::Value;

use super::{as_of, created, id_page, list_response, now, object};
use crate::error::{command_error, ApiError};
use crate::extract::{AppJson, PathParam, QueryPairs};
use crate::state::{AppState, RequestContext};
use keyledger_projections::commands::{CommandError, Mode};
use keyledger_projections::decode::AnyEvent;
use keyledger_projections::objects::Kind;

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

pub async fn list(State(state): State<AppState>, q: QueryPairs) -> Result<Response, ApiError> {
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
        organization_id: q.one("organization_id")?,
        user_id: q.one("user_id")?,
        statuses,
    };
    if let Some(at) = as_of(&q)? {
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

pub async fn get(State(state): State<AppState>, PathParam(id): PathParam, q: QueryPairs) -> Result<Response, ApiError> {
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    user_id: String,
    organization_id: String,
    #[serde(default)]
    role_slug: Option<String>,
    #[serde(default)]
    role_slugs: Option<Vec<String>>,
}

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
        .execute::<OrganizationMembership>(&ctx, &id, cmd, AppendExtras::default(), Mode::New)
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
        queries::membership(&state.pool, &id).await?,
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
            AppendExtras::default(),
            Mode::Retry,
        )
        .await
        .map_err(|e| match e {
            CommandError::Domain(MembershipError::AlreadyExists) => already_member(),
            other => command_error(other, membership_error),
        })?;
    Ok(object(StatusCode::CREATED, find(state, id).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    #[serde(default)]
    role_slug: Option<String>,
    #[serde(default)]
    role_slugs: Option<Vec<String>>,
}

async fn run(state: &AppState, ctx: &RequestContext, id: &str, cmd: MembershipCommand) -> Result<Response, ApiError> {
    state
        .execute::<OrganizationMembership>(ctx, id, cmd, AppendExtras::default(), Mode::Retry)
        .await
        .map_err(|e| command_error(e, membership_error))?;
    Ok(object(StatusCode::OK, find(state, id).await?))
}

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

pub async fn deactivate(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    run(&state, &ctx, &id, MembershipCommand::Deactivate { at: now() }).await
}

pub async fn reactivate(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    run(&state, &ctx, &id, MembershipCommand::Reactivate { at: now() }).await
}

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
            AppendExtras::default(),
            Mode::Retry,
        )
        .await
        .map_err(|e| command_error(e, membership_error))?;
    Ok(axum::response::IntoResponse::into_response(StatusCode::OK))
}

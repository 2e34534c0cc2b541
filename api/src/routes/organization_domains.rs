//! `/organization_domains`: domains of an organization and their DNS verification.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use keyledger_domain::ids::new_id;
use keyledger_domain::organization::{
    DomainState, NewDomain, Organization, OrganizationCommand, OrganizationError, VERIFICATION_PREFIX,
};
use keyledger_domain::values::DomainName;
use keyledger_projections::history::History;
use keyledger_projections::queries;
use keyledger_projections::tenant_reads;
use keyledger_store::append::SideRows;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::organizations::{organization_error, verification_token};
use super::{as_of, created, now, object, AsOfParams};
use crate::dns::Verification;
use crate::error::{command_error, ApiError};
use crate::extract::{AppJson, PathParam, QueryPairs};
use crate::schemas;
use crate::state::{AppState, RequestContext};
use crate::tenant::Tenant;
use keyledger_projections::objects::Kind;
use keyledger_store::commands::Mode;
use keyledger_store::decode::AnyEvent;

fn domain_error(e: OrganizationError) -> ApiError {
    match e {
        OrganizationError::DuplicateDomain(d) => ApiError::new(
            StatusCode::CONFLICT,
            "domain_already_exists",
            format!("the domain {d} is already attached to this organization"),
        ),
        other => organization_error(other),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateOrganizationDomain)]
pub struct CreateBody {
    #[schema(format = Hostname)]
    domain: String,
    organization_id: String,
}

const ID: &str = "The domain's id (`org_domain_...`).";

#[utoipa::path(post, path = "/organization_domains", tag = "organization_domains",
    operation_id = "create_organization_domain", summary = "Add a domain to an organization (pending)",
    request_body = CreateBody,
    responses((status = 201, description = "The new domain", body = schemas::OrganizationDomain),
        (status = 404, description = "No such organization", body = schemas::ErrorBody),
        (status = 409, description = "The domain is already attached", body = schemas::ErrorBody),
        (status = 422, description = "Invalid domain", body = schemas::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    ctx: RequestContext,
    AppJson(b): AppJson<CreateBody>,
) -> Result<Response, ApiError> {
    let d = add_domain(&state, &ctx, &b.organization_id, &b.domain).await?;
    Ok(object(StatusCode::CREATED, d))
}

/// Adds `domain` (pending) to organization `organization_id` (the one path for the JSON API and
/// the Admin Portal's form) and answers the new domain.
pub(crate) async fn add_domain(
    state: &AppState,
    ctx: &RequestContext,
    organization_id: &str,
    domain: &str,
) -> Result<Value, ApiError> {
    let domain = DomainName::parse("domain", domain)?;
    if queries::organization(&state.pool, organization_id).await?.is_none() {
        return Err(ApiError::not_found("organization"));
    }
    let id = new_id("org_domain");
    let cmd = OrganizationCommand::AddDomain {
        domain: NewDomain {
            id: id.clone(),
            domain,
            state: DomainState::Pending,
            verification_token: verification_token(),
        },
        at: now(),
    };
    let done = state
        .execute::<Organization>(ctx, organization_id, cmd, SideRows::default(), Mode::Retry)
        .await
        .map_err(|e| command_error(e, domain_error))?;
    let events = done.events.into_iter().map(AnyEvent::Organization).collect();
    let found = queries::organization_domain(&state.pool, &id).await;
    created(found, organization_id, events, Kind::OrganizationDomain, &id)
}

pub(crate) async fn find(state: &AppState, id: &str) -> Result<Value, ApiError> {
    queries::organization_domain(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found("organization domain"))
}

fn field<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}

#[utoipa::path(get, path = "/organization_domains/{id}", tag = "organization_domains",
    operation_id = "get_organization_domain", summary = "Get an organization domain",
    params(("id" = String, Path, description = ID), AsOfParams),
    responses((status = 200, description = "The domain", body = schemas::OrganizationDomain),
        (status = 404, description = "No such domain", body = schemas::ErrorBody)))]
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
        let d = tenant_reads::organization_domain(&state.pool, own, &id)
            .await?
            .ok_or_else(|| ApiError::not_found("organization domain"))?;
        return Ok(object(StatusCode::OK, d));
    }
    if let Some(at) = as_of(&q)? {
        let d = History::default()
            .organization_domain(&state.pool, &id, at)
            .await?
            .ok_or_else(|| ApiError::not_found("organization domain"))?;
        return Ok(object(StatusCode::OK, d));
    }
    Ok(object(StatusCode::OK, find(&state, &id).await?))
}

/// Looks up `<prefix>.<domain>` TXT now and records the outcome as an event.
#[utoipa::path(post, path = "/organization_domains/{id}/verify", tag = "organization_domains",
    operation_id = "verify_organization_domain", summary = "Verify a domain by DNS TXT lookup",
    params(("id" = String, Path, description = ID)),
    responses((status = 201, description = "The domain, now `verified` or `failed`", body = schemas::OrganizationDomain),
        (status = 400, description = "Already verified", body = schemas::ErrorBody),
        (status = 404, description = "No such domain", body = schemas::ErrorBody),
        (status = 409, description = "Verified by another organization", body = schemas::ErrorBody)))]
pub async fn verify(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let d = find(&state, &id).await?;
    Ok(object(StatusCode::CREATED, verify_domain(&state, &ctx, d).await?))
}

/// Runs the DNS TXT check of domain `d` (its document) and records the outcome (the one path for
/// the JSON API and the Admin Portal's "Check now"); answers the domain as it now is.
pub(crate) async fn verify_domain(state: &AppState, ctx: &RequestContext, d: Value) -> Result<Value, ApiError> {
    let id = field(&d, "id").to_string();
    if field(&d, "state") == "verified" {
        return Err(ApiError::bad_request(
            "domain_already_verified",
            "the domain is already verified",
        ));
    }
    let org_id = field(&d, "organization_id").to_string();
    // The DNS lookup happens before (never inside) the append's transaction.
    let outcome = state
        .verifier
        .verify(
            field(&d, "domain"),
            VERIFICATION_PREFIX,
            field(&d, "verification_token"),
        )
        .await;
    let (verified, reason) = match outcome {
        Verification::Verified => (true, None),
        Verification::Failed { reason } => (false, Some(reason)),
    };
    let cmd = OrganizationCommand::RecordVerification {
        domain_id: id.clone(),
        verified,
        reason,
        at: now(),
    };
    state
        .execute::<Organization>(ctx, &org_id, cmd, SideRows::default(), Mode::Retry)
        .await
        .map_err(|e| command_error(e, domain_error))?;
    find(state, &id).await
}

#[utoipa::path(delete, path = "/organization_domains/{id}", tag = "organization_domains",
    operation_id = "delete_organization_domain", summary = "Delete an organization domain",
    params(("id" = String, Path, description = ID)),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "No such domain", body = schemas::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let d = find(&state, &id).await?;
    let org_id = field(&d, "organization_id").to_string();
    state
        .execute::<Organization>(
            &ctx,
            &org_id,
            OrganizationCommand::RemoveDomain {
                domain_id: id,
                at: now(),
            },
            SideRows::default(),
            Mode::Retry,
        )
        .await
        .map_err(|e| command_error(e, domain_error))?;
    Ok(axum::response::IntoResponse::into_response(StatusCode::NO_CONTENT))
}

//! `/organizations`: WorkOS organizations, with their domains.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use keyledger_domain::ids::new_id;
use keyledger_domain::organization::{
    DomainState, NewDomain, Organization, OrganizationCommand, OrganizationError, UpdateOrganization,
};
use keyledger_domain::values::{validate_external_id, validate_metadata, validate_text, DomainName, Metadata};
use keyledger_projections::history::History;
use keyledger_projections::queries::{self, OrganizationFilter};
use keyledger_projections::tenant_reads;
use keyledger_store::append::SideRows;
use keyledger_store::cascade::Parent;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::{as_of, created_new, id_page, list_response, now, nullable, object, AsOfParams, ListParams};
use crate::error::{command_error, ApiError};
use crate::extract::{AppJson, PathParam, QueryPairs};
use crate::schemas;
use crate::state::{AppState, RequestContext};
use crate::tenant::Tenant;
use keyledger_projections::objects::Kind;
use keyledger_store::commands::Mode;
use keyledger_store::decode::AnyEvent;

pub fn organization_error(e: OrganizationError) -> ApiError {
    match e {
        OrganizationError::NotFound => ApiError::not_found("organization"),
        OrganizationError::DomainNotFound => ApiError::not_found("organization domain"),
        OrganizationError::AlreadyExists => ApiError::conflict("the organization already exists"),
        OrganizationError::DuplicateDomain(d) => ApiError::invalid(
            "domains",
            "duplicate_domain",
            format!("the domain {d} is listed more than once or already attached"),
        ),
    }
}

/// A fresh verification token: 24 random bytes, hex.
pub fn verification_token() -> String {
    let mut b = [0u8; 24];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut b);
    hex::encode(b)
}

/// The organization list's filters (besides [`ListParams`]).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListFilters {
    /// Organizations with any of these domains (`domains=a.com,b.com`, repeated, or `domains[]=`).
    pub domains: Option<Vec<String>>,
    /// Case-insensitive substring of the name.
    pub search: Option<String>,
}

const ID: &str = "The organization's id (`org_...`).";

#[utoipa::path(get, path = "/organizations", tag = "organizations", operation_id = "list_organizations",
    summary = "List organizations", params(ListParams, ListFilters),
    responses((status = 200, description = "A page of organizations", body = schemas::OrganizationList)))]
pub async fn list(State(state): State<AppState>, q: QueryPairs) -> Result<Response, ApiError> {
    let page = id_page(&q, "org")?;
    let mut domains = Vec::new();
    for d in q.many("domains") {
        domains.push(DomainName::parse("domains", &d)?.as_str().to_string());
    }
    let filter = OrganizationFilter {
        domains,
        search: q.one("search")?,
    };
    Ok(list_response(
        queries::organizations(&state.pool, &filter, &page).await?,
    ))
}

#[utoipa::path(get, path = "/organizations/{id}", tag = "organizations", operation_id = "get_organization",
    summary = "Get an organization", params(("id" = String, Path, description = ID), AsOfParams),
    responses((status = 200, description = "The organization", body = schemas::Organization),
        (status = 404, description = "No such organization", body = schemas::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    tenant: Tenant,
    PathParam(id): PathParam,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    if let Some(own) = tenant.organization_id() {
        // Another organization's id is 404 whether or not it exists.
        let at = as_of(&q)?;
        if at.is_some() {
            tenant.refuse_as_of()?;
        }
        let org = tenant_reads::organization(&state.pool, own, &id)
            .await?
            .ok_or_else(|| ApiError::not_found("organization"))?;
        return Ok(object(StatusCode::OK, org));
    }
    let org = match as_of(&q)? {
        Some(at) => History::default().organization(&state.pool, &id, at).await?,
        None => queries::organization(&state.pool, &id).await?,
    }
    .ok_or_else(|| ApiError::not_found("organization"))?;
    Ok(object(StatusCode::OK, org))
}

#[utoipa::path(get, path = "/organizations/external_id/{external_id}", tag = "organizations",
    operation_id = "get_organization_by_external_id", summary = "Get an organization by external id",
    params(("external_id" = String, Path, description = "The organization's external_id")),
    responses((status = 200, description = "The organization", body = schemas::Organization),
        (status = 404, description = "No such organization", body = schemas::ErrorBody)))]
pub async fn get_by_external_id(
    State(state): State<AppState>,
    PathParam(ext): PathParam,
) -> Result<Response, ApiError> {
    let org = queries::organization_by_external_id(&state.pool, &ext)
        .await?
        .ok_or_else(|| ApiError::not_found("organization"))?;
    Ok(object(StatusCode::OK, org))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DomainData {
    #[schema(format = Hostname)]
    domain: String,
    #[schema(value_type = schemas::NewDomainState)]
    state: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateOrganization)]
pub struct CreateBody {
    /// Not blank (it is trimmed).
    #[schema(min_length = 1, max_length = 256, pattern = r"\S")]
    name: String,
    #[serde(default)]
    allow_profiles_outside_organization: Option<bool>,
    /// Deprecated: use `domain_data`.
    #[serde(default)]
    domains: Option<Vec<String>>,
    #[serde(default)]
    domain_data: Option<Vec<DomainData>>,
    #[serde(default)]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    metadata: Option<Metadata>,
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128)]
    external_id: Option<String>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// `domain_data` (with states) or the deprecated `domains` (pending), parsed.
fn new_domains(
    domains: Option<Vec<String>>,
    domain_data: Option<Vec<DomainData>>,
) -> Result<Option<Vec<NewDomain>>, ApiError> {
    let mut out = Vec::new();
    match (domains, domain_data) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "domain_data",
                "invalid_domain_data",
                "give domain_data or domains, not both",
            ));
        }
        (None, None) => return Ok(None),
        (Some(list), None) => {
            for d in list {
                out.push((DomainName::parse("domains", &d)?, DomainState::Pending));
            }
        }
        (None, Some(list)) => {
            for d in list {
                let state = match d.state.as_str() {
                    "pending" => DomainState::Pending,
                    "verified" => DomainState::Verified,
                    other => {
                        return Err(ApiError::invalid(
                            "domain_data",
                            "invalid_domain_state",
                            format!("domain state {other} is not one of pending, verified"),
                        ))
                    }
                };
                out.push((DomainName::parse("domain_data", &d.domain)?, state));
            }
        }
    }
    Ok(Some(
        out.into_iter()
            .map(|(domain, state)| NewDomain {
                id: new_id("org_domain"),
                domain,
                state,
                verification_token: verification_token(),
            })
            .collect(),
    ))
}

fn name(n: &str) -> Result<String, ApiError> {
    let n = n.trim();
    if n.is_empty() {
        return Err(ApiError::invalid("name", "invalid_name", "name must not be empty"));
    }
    validate_text("name", n, 256)?;
    Ok(n.to_string())
}

#[utoipa::path(post, path = "/organizations", tag = "organizations", operation_id = "create_organization",
    summary = "Create an organization", request_body = CreateBody,
    responses((status = 201, description = "The new organization", body = schemas::Organization),
        (status = 409, description = "external_id taken, or a domain verified by another organization",
            body = schemas::ErrorBody),
        (status = 422, description = "Invalid field", body = schemas::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    ctx: RequestContext,
    AppJson(b): AppJson<CreateBody>,
) -> Result<Response, ApiError> {
    let name = name(&b.name)?;
    if let Some(x) = &b.external_id {
        validate_external_id("external_id", x)?;
    }
    let metadata = b.metadata.unwrap_or_default();
    validate_metadata("metadata", &metadata)?;
    let domains = new_domains(b.domains, b.domain_data)?.unwrap_or_default();
    // Honoured before the handler runs, like the header (`crate::idempotency`).
    let _ = b.idempotency_key;
    let id = new_id("org");
    let cmd = OrganizationCommand::Create {
        name,
        external_id: b.external_id,
        metadata,
        allow_profiles_outside_organization: b.allow_profiles_outside_organization.unwrap_or(false),
        domains,
        at: now(),
    };
    let done = state
        .execute::<Organization>(&ctx, &id, cmd, SideRows::default(), Mode::New)
        .await
        .map_err(|e| command_error(e, organization_error))?;
    let events: Vec<AnyEvent> = done.events.into_iter().map(AnyEvent::Organization).collect();
    let org = created_new(&id, &events, Kind::Organization, &id)?;
    Ok(object(StatusCode::CREATED, org))
}

/// `domains`/`domain_data`, when given, replace the whole domain set.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = UpdateOrganization)]
pub struct UpdateBody {
    /// Not blank (it is trimmed).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 256, pattern = r"\S")]
    name: Option<String>,
    #[serde(default)]
    allow_profiles_outside_organization: Option<bool>,
    #[serde(default)]
    domains: Option<Vec<String>>,
    #[serde(default)]
    domain_data: Option<Vec<DomainData>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 256)]
    stripe_customer_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    metadata: Option<Option<Metadata>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 128)]
    external_id: Option<Option<String>>,
}

#[utoipa::path(put, path = "/organizations/{id}", tag = "organizations", operation_id = "update_organization",
    summary = "Update an organization", params(("id" = String, Path, description = ID)), request_body = UpdateBody,
    responses((status = 200, description = "The updated organization", body = schemas::Organization),
        (status = 404, description = "No such organization", body = schemas::ErrorBody),
        (status = 409, description = "external_id taken, or a domain verified by another organization",
            body = schemas::ErrorBody),
        (status = 422, description = "Invalid field", body = schemas::ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParam(id): PathParam,
    AppJson(b): AppJson<UpdateBody>,
) -> Result<Response, ApiError> {
    let name = b.name.as_deref().map(name).transpose()?;
    if let Some(Some(x)) = &b.external_id {
        validate_external_id("external_id", x)?;
    }
    if let Some(Some(x)) = &b.stripe_customer_id {
        validate_text("stripe_customer_id", x, 256)?;
    }
    let metadata = b.metadata.map(Option::unwrap_or_default);
    if let Some(m) = &metadata {
        validate_metadata("metadata", m)?;
    }
    let domains = new_domains(b.domains, b.domain_data)?;
    let cmd = OrganizationCommand::Update(UpdateOrganization {
        name,
        external_id: b.external_id,
        metadata,
        allow_profiles_outside_organization: b.allow_profiles_outside_organization,
        stripe_customer_id: b.stripe_customer_id,
        domains,
        at: now(),
    });
    state
        .execute::<Organization>(&ctx, &id, cmd, SideRows::default(), Mode::Retry)
        .await
        .map_err(|e| command_error(e, organization_error))?;
    let org = queries::organization(&state.pool, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("organization"))?;
    Ok(object(StatusCode::OK, org))
}

#[utoipa::path(delete, path = "/organizations/{id}", tag = "organizations", operation_id = "delete_organization",
    summary = "Delete an organization (its memberships and domains go with it)",
    params(("id" = String, Path, description = ID)),
    responses((status = 200, description = "Deleted; empty body"),
        (status = 404, description = "No such organization", body = schemas::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    if queries::organization(&state.pool, &id).await?.is_none() {
        return Err(ApiError::not_found("organization"));
    }
    // Its memberships, then its domains, then the organization, in one append
    // (docs/EVENTS.md, "Cascades").
    state
        .delete_with_memberships::<Organization>(
            &ctx,
            Parent::Organization,
            &id,
            OrganizationCommand::Delete { at: now() },
            SideRows::default(),
        )
        .await
        .map_err(|e| command_error(e, organization_error))?;
    // Then its SSO connections, each its own append (none can be created any more).
    crate::connections::delete_all_of_organization(&state, &ctx, &id).await?;
    Ok(axum::response::IntoResponse::into_response(StatusCode::OK))
}

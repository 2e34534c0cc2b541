//! `/user_management/users`: WorkOS users.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use keyledger_domain::ids::new_id;
use keyledger_domain::user::{CreateUser, UpdateUser, User, UserCommand, UserError};
use keyledger_domain::values::{validate_external_id, validate_metadata, validate_text, Email, Metadata};
use keyledger_projections::history::History;
use keyledger_projections::queries::{self, UserFilter};
use keyledger_store::append::SideRows;
use keyledger_store::cascade::Parent;
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::{as_of, created_new, id_page, list_response, now, nullable, object, AsOfParams, ListParams};
use crate::error::{command_error, ApiError};
use crate::extract::{AppJson, PathParam, QueryPairs};
use crate::password;
use crate::schemas;
use crate::state::{AppState, RequestContext};
use keyledger_projections::objects::Kind;
use keyledger_store::commands::Mode;
use keyledger_store::decode::AnyEvent;

fn user_error(e: UserError) -> ApiError {
    match e {
        UserError::NotFound => ApiError::not_found("user"),
        UserError::AlreadyExists => ApiError::conflict("the user already exists"),
    }
}

/// The user list's filters (besides [`ListParams`]).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListFilters {
    /// Exact email, case-insensitive.
    pub email: Option<String>,
    /// Members of this organization.
    pub organization_id: Option<String>,
    /// Alias of `organization_id`.
    pub organization: Option<String>,
}

const ID: &str = "The user's id (`user_...`).";

#[utoipa::path(get, path = "/user_management/users", tag = "users", operation_id = "list_users",
    summary = "List users", params(ListParams, ListFilters),
    responses((status = 200, description = "A page of users", body = schemas::UserList)))]
pub async fn list(State(state): State<AppState>, q: QueryPairs) -> Result<Response, ApiError> {
    let page = id_page(&q, "user")?;
    let filter = UserFilter {
        // Normalised as stored emails are (NFC, lower case), so every spelling finds the user.
        email: q.one("email")?.map(|e| Email::lookup_key(&e)),
        organization_id: q.one("organization_id")?.or(q.one("organization")?),
    };
    Ok(list_response(queries::users(&state.pool, &filter, &page).await?))
}

#[utoipa::path(get, path = "/user_management/users/{id}", tag = "users", operation_id = "get_user",
    summary = "Get a user", params(("id" = String, Path, description = ID), AsOfParams),
    responses((status = 200, description = "The user", body = schemas::User),
        (status = 404, description = "No such user", body = schemas::ErrorBody)))]
pub async fn get(State(state): State<AppState>, PathParam(id): PathParam, q: QueryPairs) -> Result<Response, ApiError> {
    let user = match as_of(&q)? {
        Some(at) => History::default().user(&state.pool, &id, at).await?,
        None => queries::user(&state.pool, &id).await?,
    }
    .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(object(StatusCode::OK, user))
}

#[utoipa::path(get, path = "/user_management/users/external_id/{external_id}", tag = "users",
    operation_id = "get_user_by_external_id", summary = "Get a user by external id",
    params(("external_id" = String, Path, description = "The user's external_id")),
    responses((status = 200, description = "The user", body = schemas::User),
        (status = 404, description = "No such user", body = schemas::ErrorBody)))]
pub async fn get_by_external_id(
    State(state): State<AppState>,
    PathParam(ext): PathParam,
) -> Result<Response, ApiError> {
    let user = queries::user_by_external_id(&state.pool, &ext)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(object(StatusCode::OK, user))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateUser)]
pub struct CreateBody {
    #[schema(format = Email, max_length = 254)]
    email: String,
    #[serde(default)]
    #[schema(max_length = 256)]
    first_name: Option<String>,
    #[serde(default)]
    #[schema(max_length = 256)]
    last_name: Option<String>,
    #[serde(default)]
    email_verified: Option<bool>,
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128)]
    external_id: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    metadata: Option<Metadata>,
    #[serde(default)]
    #[schema(min_length = 8, max_length = 1024)]
    password: Option<String>,
    #[serde(default)]
    password_hash: Option<String>,
    #[serde(default)]
    password_hash_type: Option<String>,
    #[serde(default)]
    name: Option<String>,
    /// Where the salt sits relative to the password in an `ssha`/`ssha256` hash's input
    /// (`prefix` or `suffix`, the default); refused with other types.
    #[serde(default)]
    password_salt_position: Option<String>,
    /// The end user's request, on whose behalf the call is made: recorded in the event's
    /// metadata (`end_user_ip_address`, `end_user_user_agent`, `radar_signals_id`).
    #[serde(default)]
    ip_address: Option<String>,
    #[serde(default)]
    user_agent: Option<String>,
    #[serde(default)]
    signals_id: Option<String>,
}

fn names(first: &Option<String>, last: &Option<String>, full: &Option<String>) -> Result<(), ApiError> {
    for (field, v) in [("first_name", first), ("last_name", last), ("name", full)] {
        if let Some(v) = v {
            validate_text(field, v, 256)?;
        }
    }
    Ok(())
}

/// The end user's request details of a create body, checked, as event metadata entries.
fn end_user(b: &CreateBody) -> Result<Vec<(&'static str, String)>, ApiError> {
    let mut out = Vec::new();
    if let Some(ip) = &b.ip_address {
        let ip: std::net::IpAddr = ip.trim().parse().map_err(|_| {
            ApiError::invalid(
                "ip_address",
                "invalid_ip_address",
                "ip_address must be an IPv4 or IPv6 address",
            )
        })?;
        out.push(("end_user_ip_address", ip.to_string()));
    }
    if let Some(ua) = &b.user_agent {
        validate_text("user_agent", ua, 1024)?;
        out.push(("end_user_user_agent", ua.clone()));
    }
    if let Some(sig) = &b.signals_id {
        validate_text("signals_id", sig, 256)?;
        out.push(("radar_signals_id", sig.clone()));
    }
    Ok(out)
}

/// The password fields of a create or update body.
struct PasswordFields {
    password: Option<String>,
    password_hash: Option<String>,
    password_hash_type: Option<String>,
    password_salt_position: Option<String>,
}

/// Resolves `password` / `password_hash` + `password_hash_type` (+ `password_salt_position`)
/// into the hash to store, if any: a new password is hashed with argon2id, an imported hash is
/// checked and stored in a form that names its type (`password::import`).
async fn credential(state: &AppState, f: PasswordFields) -> Result<Option<String>, ApiError> {
    match (f.password, f.password_hash, f.password_hash_type) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(ApiError::invalid(
            "password",
            "password_and_password_hash_provided",
            "give either password or password_hash with password_hash_type, not both",
        )),
        (_, None, None) if f.password_salt_position.is_some() => Err(ApiError::invalid(
            "password_salt_position",
            "unsupported_password_hash_type",
            "password_salt_position applies only to ssha and ssha256 password hashes",
        )),
        (Some(p), None, None) => {
            password::validate("password", &p)?;
            Ok(Some(password::hash(state, p).await?))
        }
        (None, Some(h), Some(t)) => Ok(Some(password::import(&t, &h, f.password_salt_position.as_deref())?)),
        (None, Some(_), None) | (None, None, Some(_)) => Err(ApiError::invalid(
            "password_hash_type",
            "invalid_password_hash",
            "password_hash and password_hash_type go together",
        )),
        (None, None, None) => Ok(None),
    }
}

#[utoipa::path(post, path = "/user_management/users", tag = "users", operation_id = "create_user",
    summary = "Create a user", request_body = CreateBody,
    responses((status = 201, description = "The new user", body = schemas::User),
        (status = 422, description = "Invalid or taken field", body = schemas::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    ctx: RequestContext,
    AppJson(b): AppJson<CreateBody>,
) -> Result<Response, ApiError> {
    let user = create_user(&state, ctx, b).await?;
    Ok(object(StatusCode::CREATED, user))
}

impl CreateBody {
    /// The body of a sign-up on the hosted pages: an email, a password, optional names.
    pub(crate) fn sign_up(
        email: String,
        password: String,
        first_name: Option<String>,
        last_name: Option<String>,
    ) -> Self {
        Self {
            email,
            first_name,
            last_name,
            email_verified: None,
            external_id: None,
            metadata: None,
            password: Some(password),
            password_hash: None,
            password_hash_type: None,
            name: None,
            password_salt_position: None,
            ip_address: None,
            user_agent: None,
            signals_id: None,
        }
    }
}

/// Creates a user (`UserCreated`, with its credential): the API's create and the hosted
/// sign-up. Returns the new user object.
pub(crate) async fn create_user(state: &AppState, ctx: RequestContext, b: CreateBody) -> Result<Value, ApiError> {
    let email = Email::parse("email", &b.email)?;
    names(&b.first_name, &b.last_name, &b.name)?;
    let ctx = ctx.with_metadata(end_user(&b)?);
    if let Some(x) = &b.external_id {
        validate_external_id("external_id", x)?;
    }
    let metadata = b.metadata.unwrap_or_default();
    validate_metadata("metadata", &metadata)?;
    let id = new_id("user");
    let hash = credential(
        state,
        PasswordFields {
            password: b.password,
            password_hash: b.password_hash,
            password_hash_type: b.password_hash_type,
            password_salt_position: b.password_salt_position,
        },
    )
    .await?;
    let extras = SideRows {
        credential: hash.as_ref().map(|h| (id.clone(), h.clone())),
        ..Default::default()
    };
    let cmd = UserCommand::Create(CreateUser {
        email,
        first_name: b.first_name,
        last_name: b.last_name,
        name: b.name,
        email_verified: b.email_verified.unwrap_or(false),
        external_id: b.external_id,
        metadata,
        with_password: hash.is_some(),
        at: now(),
    });
    let done = state
        .execute::<User>(&ctx, &id, cmd, extras, Mode::New)
        .await
        .map_err(|e| command_error(e, user_error))?;
    if done.state.email_verified {
        // Right after the creation (a membership requires its user to exist already).
        crate::jit::join_after(state, &ctx, &id).await;
    }
    let events: Vec<AnyEvent> = done.events.into_iter().map(AnyEvent::User).collect();
    created_new(&id, &events, Kind::User, &id)
}

/// `null` clears a nullable field; `metadata: null` means `{}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = UpdateUser)]
pub struct UpdateBody {
    #[serde(default)]
    #[schema(format = Email, max_length = 254)]
    email: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 256)]
    first_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 256)]
    last_name: Option<Option<String>>,
    #[serde(default)]
    email_verified: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 128)]
    external_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    metadata: Option<Option<Metadata>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 35)]
    locale: Option<Option<String>>,
    #[serde(default)]
    #[schema(min_length = 8, max_length = 1024)]
    password: Option<String>,
    #[serde(default)]
    password_hash: Option<String>,
    #[serde(default)]
    password_hash_type: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    name: Option<Option<String>>,
    #[serde(default)]
    password_salt_position: Option<String>,
}

#[utoipa::path(put, path = "/user_management/users/{id}", tag = "users", operation_id = "update_user",
    summary = "Update a user", params(("id" = String, Path, description = ID)), request_body = UpdateBody,
    responses((status = 200, description = "The updated user", body = schemas::User),
        (status = 404, description = "No such user", body = schemas::ErrorBody),
        (status = 422, description = "Invalid or taken field", body = schemas::ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParam(id): PathParam,
    AppJson(b): AppJson<UpdateBody>,
) -> Result<Response, ApiError> {
    let email = b.email.as_deref().map(|e| Email::parse("email", e)).transpose()?;
    names(
        &b.first_name.clone().flatten(),
        &b.last_name.clone().flatten(),
        &b.name.clone().flatten(),
    )?;
    if let Some(Some(x)) = &b.external_id {
        validate_external_id("external_id", x)?;
    }
    let metadata = b.metadata.map(Option::unwrap_or_default);
    if let Some(m) = &metadata {
        validate_metadata("metadata", m)?;
    }
    if let Some(Some(l)) = &b.locale {
        validate_text("locale", l, 35)?;
    }
    if queries::user(&state.pool, &id).await?.is_none() {
        return Err(ApiError::not_found("user"));
    }
    let hash = credential(
        &state,
        PasswordFields {
            password: b.password,
            password_hash: b.password_hash,
            password_hash_type: b.password_hash_type,
            password_salt_position: b.password_salt_position,
        },
    )
    .await?;
    let extras = SideRows {
        credential: hash.as_ref().map(|h| (id.clone(), h.clone())),
        ..Default::default()
    };
    let update = UpdateUser {
        email,
        first_name: b.first_name,
        last_name: b.last_name,
        name: b.name,
        email_verified: b.email_verified,
        external_id: b.external_id,
        metadata,
        locale: b.locale,
        password_changed: hash.is_some(),
        drop_unproved_password: false,
        at: now(),
    };
    // An email leaving a domain deactivates what the domain alone gave, in the same append; a
    // user now verified at an `auto` domain joins it (`crate::jit`).
    crate::jit::update_user(&state, &ctx, &id, update, extras, |e| command_error(e, user_error)).await?;
    let user = queries::user(&state.pool, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(object(StatusCode::OK, user))
}

#[utoipa::path(delete, path = "/user_management/users/{id}", tag = "users", operation_id = "delete_user",
    summary = "Delete a user (and their memberships)", params(("id" = String, Path, description = ID)),
    responses((status = 200, description = "Deleted; empty body"),
        (status = 404, description = "No such user", body = schemas::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    if queries::user(&state.pool, &id).await?.is_none() {
        return Err(ApiError::not_found("user"));
    }
    // A deleted user keeps no memberships (as in WorkOS): they are deleted in the same append,
    // each with its own event, before `UserDeleted` (docs/EVENTS.md, "Cascades").
    let erase = SideRows {
        erase_credential: Some(id.clone()),
        ..Default::default()
    };
    state
        .delete_with_memberships::<User>(&ctx, Parent::User, &id, UserCommand::Delete { at: now() }, erase)
        .await
        .map_err(|e| command_error(e, user_error))?;
    Ok(axum::response::IntoResponse::into_response(StatusCode::OK))
}

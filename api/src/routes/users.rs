//! `/user_management/users`: WorkOS users.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use keyledger_domain::ids::new_id;
use keyledger_domain::user::{CreateUser, UpdateUser, User, UserCommand, UserError};
use keyledger_domain::values::{validate_external_id, validate_metadata, validate_text, Email, Metadata};
use keyledger_projections::cascade::Parent;
use keyledger_projections::history::History;
use keyledger_projections::queries::{self, UserFilter};
use keyledger_projections::store::AppendExtras;
use serde::Deserialize;

use super::{as_of, created, list_response, now, nullable, object, page};
use crate::error::{command_error, ApiError};
use crate::extract::{AppJson, PathParam, QueryPairs};
use crate::password;
use crate::state::{AppState, RequestContext};
use keyledger_projections::commands::Mode;
use keyledger_projections::decode::AnyEvent;
use keyledger_projections::objects::Kind;

fn user_error(e: UserError) -> ApiError {
    match e {
        UserError::NotFound => ApiError::not_found("user"),
        UserError::AlreadyExists => ApiError::conflict("the user already exists"),
    }
}

pub async fn list(State(state): State<AppState>, q: QueryPairs) -> Result<Response, ApiError> {
    let page = page(&q)?;
    let filter = UserFilter {
        email: q.one("email")?,
        organization_id: q.one("organization_id")?.or(q.one("organization")?),
    };
    Ok(list_response(queries::users(&state.pool, &filter, &page).await?))
}

pub async fn get(State(state): State<AppState>, PathParam(id): PathParam, q: QueryPairs) -> Result<Response, ApiError> {
    let user = match as_of(&q)? {
        Some(at) => History::default().user(&state.pool, &id, at).await?,
        None => queries::user(&state.pool, &id).await?,
    }
    .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(object(StatusCode::OK, user))
}

pub async fn get_by_external_id(
    State(state): State<AppState>,
    PathParam(ext): PathParam,
) -> Result<Response, ApiError> {
    let user = queries::user_by_external_id(&state.pool, &ext)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(object(StatusCode::OK, user))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    email: String,
    #[serde(default)]
    first_name: Option<String>,
    #[serde(default)]
    last_name: Option<String>,
    #[serde(default)]
    email_verified: Option<bool>,
    #[serde(default)]
    external_id: Option<String>,
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    password_hash: Option<String>,
    #[serde(default)]
    password_hash_type: Option<String>,
    /// Sent by some SDKs; accepted and not stored (WorkOS derives nothing from them here).
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    password_salt_position: Option<String>,
    #[serde(default)]
    ip_address: Option<String>,
    #[serde(default)]
    user_agent: Option<String>,
    #[serde(default)]
    signals_id: Option<String>,
}

fn names(first: &Option<String>, last: &Option<String>) -> Result<(), ApiError> {
    for (field, v) in [("first_name", first), ("last_name", last)] {
        if let Some(v) = v {
            validate_text(field, v, 256)?;
        }
    }
    Ok(())
}

/// Resolves `password` / `password_hash(+_type)` into the hash to store, if any.
async fn credential(
    state: &AppState,
    password: Option<String>,
    password_hash: Option<String>,
    password_hash_type: Option<String>,
) -> Result<Option<String>, ApiError> {
    match (password, password_hash, password_hash_type) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(ApiError::invalid(
            "password",
            "password_and_password_hash_provided",
            "give either password or password_hash with password_hash_type, not both",
        )),
        (Some(p), None, None) => {
            password::validate("password", &p)?;
            Ok(Some(password::hash(state, p).await?))
        }
        (None, Some(h), Some(t)) if t == "argon2" => Ok(Some(password::imported(&h)?)),
        (None, Some(_), Some(t)) => Err(ApiError::invalid(
            "password_hash_type",
            "unsupported_password_hash_type",
            format!("password_hash_type {t} is not supported; use argon2"),
        )),
        (None, Some(_), None) | (None, None, Some(_)) => Err(ApiError::invalid(
            "password_hash_type",
            "invalid_password_hash",
            "password_hash and password_hash_type go together",
        )),
        (None, None, None) => Ok(None),
    }
}

pub async fn create(
    State(state): State<AppState>,
    ctx: RequestContext,
    AppJson(b): AppJson<CreateBody>,
) -> Result<Response, ApiError> {
    let email = Email::parse("email", &b.email)?;
    let _ = (
        b.name,
        b.password_salt_position,
        b.ip_address,
        b.user_agent,
        b.signals_id,
    );
    names(&b.first_name, &b.last_name)?;
    if let Some(x) = &b.external_id {
        validate_external_id("external_id", x)?;
    }
    let metadata = b.metadata.unwrap_or_default();
    validate_metadata("metadata", &metadata)?;
    let id = new_id("user");
    let hash = credential(&state, b.password, b.password_hash, b.password_hash_type).await?;
    let extras = AppendExtras {
        credential: hash.as_ref().map(|h| (id.clone(), h.clone())),
        ..Default::default()
    };
    let cmd = UserCommand::Create(CreateUser {
        email,
        first_name: b.first_name,
        last_name: b.last_name,
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
    let events = done.events.into_iter().map(AnyEvent::User).collect();
    let user = created(queries::user(&state.pool, &id).await?, &id, events, Kind::User, &id)?;
    Ok(object(StatusCode::CREATED, user))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    #[serde(default)]
    email: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    first_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    last_name: Option<Option<String>>,
    #[serde(default)]
    email_verified: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    external_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    metadata: Option<Option<Metadata>>,
    #[serde(default, deserialize_with = "nullable")]
    locale: Option<Option<String>>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    password_hash: Option<String>,
    #[serde(default)]
    password_hash_type: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    password_salt_position: Option<String>,
}

pub async fn update(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParam(id): PathParam,
    AppJson(b): AppJson<UpdateBody>,
) -> Result<Response, ApiError> {
    let email = b.email.as_deref().map(|e| Email::parse("email", e)).transpose()?;
    let _ = (b.name, b.password_salt_position);
    names(&b.first_name.clone().flatten(), &b.last_name.clone().flatten())?;
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
    let hash = credential(&state, b.password, b.password_hash, b.password_hash_type).await?;
    let extras = AppendExtras {
        credential: hash.as_ref().map(|h| (id.clone(), h.clone())),
        ..Default::default()
    };
    let cmd = UserCommand::Update(UpdateUser {
        email,
        first_name: b.first_name,
        last_name: b.last_name,
        email_verified: b.email_verified,
        external_id: b.external_id,
        metadata,
        locale: b.locale,
        password_changed: hash.is_some(),
        at: now(),
    });
    state
        .execute::<User>(&ctx, &id, cmd, extras, Mode::Retry)
        .await
        .map_err(|e| command_error(e, user_error))?;
    let user = queries::user(&state.pool, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(object(StatusCode::OK, user))
}

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
    let erase = AppendExtras {
        erase_credential: Some(id.clone()),
        ..Default::default()
    };
    state
        .delete_with_memberships::<User>(&ctx, Parent::User, &id, UserCommand::Delete { at: now() }, erase)
        .await
        .map_err(|e| command_error(e, user_error))?;
    Ok(axum::response::IntoResponse::into_response(StatusCode::OK))
}

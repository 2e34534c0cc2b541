//! `/user_management/invitations`: inviting an email to the application or to an organization,
//! and accepting, revoking and resending invitations (WorkOS's `UserlandUserInvites`).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use cqrs_es::Aggregate;
use keyledger_domain::ids::new_id;
use keyledger_domain::invitation::{
    CreateInvitation, Invitation, InvitationCommand, InvitationError, InvitationEvent, InvitationState,
};
use keyledger_domain::membership::MembershipEvent;
use keyledger_domain::values::{validate_text, Email, RoleSlug};
use keyledger_domain::ClaimKind;
use keyledger_projections::objects::Kind;
use keyledger_projections::queries::{self, InvitationFilter};
use keyledger_store::append::{AppendError, SideRows};
use keyledger_store::commands::{append_error, Mode, MAX_ATTEMPTS};
use keyledger_store::decode::AnyEvent;
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::{created_new, id_page, list_response, object, ListParams};
use crate::error::{command_error, ApiError};
use crate::extract::{AppJson, PathParam, QueryPairs};
use crate::invitations::{self, not_pending};
use crate::schemas;
use crate::state::{AppState, RequestContext};

const ID: &str = "The invitation's id (`invitation_...`).";

/// Default and bounds of `expires_in_days`.
const DEFAULT_EXPIRES_IN_DAYS: i64 = 7;
const MAX_EXPIRES_IN_DAYS: i64 = 30;

/// The invitation list's filters (besides [`ListParams`]).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListFilters {
    /// Invitations to this organization.
    pub organization_id: Option<String>,
    /// Invitations of this email (case-insensitive).
    pub email: Option<String>,
}

#[utoipa::path(get, path = "/user_management/invitations", tag = "invitations",
    operation_id = "list_invitations", summary = "List invitations",
    params(ListParams, ListFilters),
    responses((status = 200, description = "A page of invitations", body = schemas::InvitationList),
        (status = 422, description = "Invalid parameters", body = schemas::ErrorBody)))]
pub async fn list(State(state): State<AppState>, q: QueryPairs) -> Result<Response, ApiError> {
    let page = id_page(&q, "invitation")?;
    let filter = InvitationFilter {
        organization_id: q.one("organization_id")?,
        email: q.one("email")?.map(|e| Email::lookup_key(&e)),
    };
    let mut list = queries::invitations(&state.pool, &filter, &page).await?;
    let mut data = Vec::with_capacity(list.data.len());
    for doc in std::mem::take(&mut list.data) {
        data.push(invitations::with_token(&state, doc).await?);
    }
    list.data = data;
    Ok(list_response(list))
}

async fn find(state: &AppState, id: &str) -> Result<Value, ApiError> {
    let doc = queries::invitation(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found("invitation"))?;
    invitations::with_token(state, doc).await
}

#[utoipa::path(get, path = "/user_management/invitations/{id}", tag = "invitations",
    operation_id = "get_invitation", summary = "Get an invitation",
    params(("id" = String, Path, description = ID)),
    responses((status = 200, description = "The invitation", body = schemas::Invitation),
        (status = 404, description = "No such invitation", body = schemas::ErrorBody)))]
pub async fn get(State(state): State<AppState>, PathParam(id): PathParam) -> Result<Response, ApiError> {
    Ok(object(StatusCode::OK, find(&state, &id).await?))
}

#[utoipa::path(get, path = "/user_management/invitations/by_token/{token}", tag = "invitations",
    operation_id = "find_invitation_by_token", summary = "Find an invitation by its token",
    params(("token" = String, Path, description = "The token that accepts the invitation")),
    responses((status = 200, description = "The invitation", body = schemas::Invitation),
        (status = 404, description = "No invitation has this token", body = schemas::ErrorBody)))]
pub async fn get_by_token(State(state): State<AppState>, PathParam(token): PathParam) -> Result<Response, ApiError> {
    let id = invitations::find_by_token(&state, &token)
        .await?
        .ok_or_else(|| ApiError::not_found("invitation"))?;
    Ok(object(StatusCode::OK, find(&state, &id).await?))
}

/// An invitation (WorkOS's `CreateUserlandUserInviteOptionsDto`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateInvitation)]
pub struct CreateBody {
    email: String,
    /// The organization the recipient joins on acceptance.
    #[serde(default)]
    organization_id: Option<String>,
    /// The role of that membership (needs `organization_id`; default `member`).
    #[serde(default)]
    #[schema(value_type = Option<schemas::RoleSlug>)]
    role_slug: Option<String>,
    /// Days until it expires, 1 to 30 (default 7).
    #[serde(default)]
    expires_in_days: Option<i64>,
    /// The user who invites (must exist).
    #[serde(default)]
    inviter_user_id: Option<String>,
    /// Accepted for compatibility; emails are sent in one language.
    #[serde(default)]
    locale: Option<String>,
}

/// The checked contents of a create.
struct Invite {
    email: Email,
    organization_id: Option<String>,
    role: Option<RoleSlug>,
    inviter_user_id: Option<String>,
    expires_in_days: i64,
}

fn parse_create(b: CreateBody) -> Result<Invite, ApiError> {
    let email = Email::parse("email", &b.email)?;
    let expires_in_days = b.expires_in_days.unwrap_or(DEFAULT_EXPIRES_IN_DAYS);
    if expires_in_days < 1 {
        return Err(ApiError::bad_request(
            "expires_in_days_too_short",
            "expires_in_days must be at least 1.",
        ));
    }
    if expires_in_days > MAX_EXPIRES_IN_DAYS {
        return Err(ApiError::bad_request(
            "expires_in_days_too_long",
            "expires_in_days must be at most 30.",
        ));
    }
    if let Some(l) = &b.locale {
        validate_text("locale", l, 16)?;
    }
    let role = match (&b.organization_id, b.role_slug) {
        (_, None) => None,
        (None, Some(_)) => {
            return Err(ApiError::invalid(
                "role_slug",
                "organization_required",
                "role_slug needs organization_id",
            ))
        }
        (Some(_), Some(r)) => Some(
            RoleSlug::parse("role_slug", &r)
                .map_err(|e| ApiError::invalid_as(StatusCode::BAD_REQUEST, e.field, e.code, e.message))?,
        ),
    };
    Ok(Invite {
        role: b
            .organization_id
            .as_ref()
            .map(|_| role.unwrap_or_else(RoleSlug::member)),
        email,
        organization_id: b.organization_id,
        inviter_user_id: b.inviter_user_id,
        expires_in_days,
    })
}

/// Refuses an invite of an email that already has what the invitation would give: a member of
/// the organization, or (without an organization) a user.
async fn refuse_existing(state: &AppState, i: &Invite) -> Result<(), ApiError> {
    let Some(user_id) = queries::claim_holder(&state.pool, ClaimKind::UserEmail.as_str(), &i.email.key()).await? else {
        return Ok(());
    };
    let Some(org) = &i.organization_id else {
        return Err(ApiError::bad_request(
            "user_already_exists",
            "A user with this email already exists.",
        ));
    };
    let claim = MembershipEvent::claim_value(org, &user_id);
    if let Some(m) = queries::claim_holder(&state.pool, ClaimKind::Membership.as_str(), &claim).await? {
        // An inactive member may be invited back; any other membership is a member's.
        let inactive = queries::membership(&state.pool, &m)
            .await?
            .is_some_and(|v| v.get("status").and_then(Value::as_str) == Some("inactive"));
        if !inactive {
            return Err(ApiError::bad_request(
                "user_already_organization_member",
                "The user is already a member of the organization.",
            ));
        }
    }
    Ok(())
}

fn already_invited(organization: bool) -> ApiError {
    if organization {
        ApiError::bad_request(
            "email_already_invited_to_organization",
            "An invitation for this email to this organization is already pending.",
        )
    } else {
        ApiError::bad_request(
            "email_already_invited",
            "An invitation for this email is already pending.",
        )
    }
}

#[utoipa::path(post, path = "/user_management/invitations", tag = "invitations",
    operation_id = "send_invitation", summary = "Send an invitation",
    request_body = CreateBody,
    responses((status = 201, description = "The new invitation", body = schemas::Invitation),
        (status = 400, description = "Already invited, already a member, expiry out of bounds, unknown role", body = schemas::ErrorBody),
        (status = 404, description = "No such organization or inviter", body = schemas::ErrorBody),
        (status = 422, description = "Invalid request", body = schemas::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    ctx: RequestContext,
    AppJson(b): AppJson<CreateBody>,
) -> Result<Response, ApiError> {
    let i = parse_create(b)?;
    if let Some(o) = &i.organization_id {
        if queries::organization(&state.pool, o).await?.is_none() {
            return Err(ApiError::not_found("organization"));
        }
    }
    if let Some(u) = &i.inviter_user_id {
        if queries::user(&state.pool, u).await?.is_none() {
            return Err(ApiError::not_found("user"));
        }
    }
    refuse_existing(&state, &i).await?;
    let id = new_id("invitation");
    let token = invitations::issue_token(&state, &id).await?;
    let result = append_create(&state, &ctx, &id, &i).await;
    let events = match result {
        Ok(events) => events,
        Err(e) => {
            invitations::discard_token(&state, &id).await;
            return Err(e);
        }
    };
    let doc = match queries::invitation(&state.pool, &id).await {
        Ok(Some(doc)) => doc,
        // Behind or unavailable: the write landed; answer from its own events.
        _ => created_new(&id, &events, Kind::Invitation, &id)?,
    };
    invitations::send_mail(&state, i.email.as_str(), &token, i.organization_id.as_deref()).await?;
    Ok(object(StatusCode::CREATED, invitations::with_token(&state, doc).await?))
}

/// `InvitationCreated`, and, when the pending invitation of the same email and organization has
/// expired, its `InvitationExpired` (giving the claim back) in the same append. A lost race
/// (another invitation of the pair landed, or the old one changed) decides again.
async fn append_create(
    state: &AppState,
    ctx: &RequestContext,
    id: &str,
    i: &Invite,
) -> Result<Vec<AnyEvent>, ApiError> {
    let meta = ctx.metadata();
    let claim = InvitationEvent::claim_value(i.organization_id.as_deref(), &i.email);
    for _ in 0..MAX_ATTEMPTS {
        let at = Utc::now();
        let mut events = Vec::new();
        if let Some(old) = queries::claim_holder(&state.pool, ClaimKind::PendingInvitation.as_str(), &claim).await? {
            let expire = state
                .bus
                .decide::<Invitation>(&old, InvitationCommand::Expire { at }, &meta, Mode::Once)
                .await;
            match expire {
                Ok(d) => events.extend(d.new_events),
                Err(keyledger_store::commands::CommandError::Domain(InvitationError::StillPending)) => {
                    return Err(already_invited(i.organization_id.is_some()))
                }
                // Ended meanwhile (accepted, revoked): its claim is gone; decide again.
                Err(keyledger_store::commands::CommandError::Domain(_)) => continue,
                Err(e) => return Err(command_error(e, not_pending)),
            }
        }
        let create = InvitationCommand::Create(CreateInvitation {
            email: i.email.clone(),
            organization_id: i.organization_id.clone(),
            role: i.role.clone(),
            inviter_user_id: i.inviter_user_id.clone(),
            expires_at: at + chrono::Duration::days(i.expires_in_days),
            at,
        });
        let decided = state
            .bus
            .decide::<Invitation>(id, create, &meta, Mode::New)
            .await
            .map_err(|e| command_error(e, not_pending))?;
        events.extend(decided.new_events);
        let side = SideRows {
            idempotency: ctx.idempotency.clone(),
            ..Default::default()
        };
        match state.bus.store().append(events, side).await {
            Ok(position) => {
                state.settle(&[Invitation::TYPE], position).await;
                return Ok(decided.events.into_iter().map(AnyEvent::Invitation).collect());
            }
            Err(AppendError::Conflict) => continue,
            Err(AppendError::ClaimTaken(c)) if c.kind == ClaimKind::PendingInvitation.as_str() => continue,
            Err(e) => return Err(command_error(append_error(e), not_pending)),
        }
    }
    Err(ApiError::conflict(
        "the invitations of this email were changed concurrently; retry the request",
    ))
}

#[utoipa::path(post, path = "/user_management/invitations/{id}/accept", tag = "invitations",
    operation_id = "accept_invitation", summary = "Accept an invitation",
    params(("id" = String, Path, description = ID)),
    responses((status = 200, description = "The accepted invitation; its organization's membership is active", body = schemas::Invitation),
        (status = 400, description = "Not pending (accepted, revoked or expired)", body = schemas::ErrorBody),
        (status = 404, description = "No such invitation", body = schemas::ErrorBody)))]
pub async fn accept(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    invitations::accept(&state, &ctx, &id).await?;
    Ok(object(StatusCode::OK, find(&state, &id).await?))
}

#[utoipa::path(post, path = "/user_management/invitations/{id}/revoke", tag = "invitations",
    operation_id = "revoke_invitation", summary = "Revoke an invitation",
    params(("id" = String, Path, description = ID)),
    responses((status = 200, description = "The revoked invitation", body = schemas::Invitation),
        (status = 400, description = "Not pending (accepted, revoked or expired)", body = schemas::ErrorBody),
        (status = 404, description = "No such invitation", body = schemas::ErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    state
        .execute::<Invitation>(
            &ctx,
            &id,
            InvitationCommand::Revoke { at: Utc::now() },
            SideRows::default(),
            Mode::Retry,
        )
        .await
        .map_err(|e| command_error(e, not_pending))?;
    Ok(object(StatusCode::OK, find(&state, &id).await?))
}

/// `locale` is accepted for compatibility (emails are sent in one language).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ResendInvitation)]
pub struct ResendBody {
    #[serde(default)]
    locale: Option<String>,
}

fn resend_error(e: InvitationError) -> ApiError {
    match e {
        InvitationError::NotFound => ApiError::not_found("invitation"),
        InvitationError::Expired => ApiError::bad_request("invite_expired", "Invite has expired."),
        InvitationError::Revoked => ApiError::bad_request("invite_revoked", "Invite has been revoked."),
        InvitationError::Accepted => ApiError::bad_request("invite_accepted", "Invite has already been accepted."),
        InvitationError::AlreadyExists | InvitationError::StillPending => not_pending(e),
    }
}

#[utoipa::path(post, path = "/user_management/invitations/{id}/resend", tag = "invitations",
    operation_id = "resend_invitation", summary = "Resend an invitation",
    params(("id" = String, Path, description = ID)),
    request_body(content = Option<ResendBody>, description = "Optional"),
    responses((status = 200, description = "The invitation, its email sent again", body = schemas::Invitation),
        (status = 400, description = "Expired, revoked or accepted", body = schemas::ErrorBody),
        (status = 404, description = "No such invitation", body = schemas::ErrorBody),
        (status = 422, description = "Invalid request", body = schemas::ErrorBody)))]
pub async fn resend(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParam(id): PathParam,
    body: Bytes,
) -> Result<Response, ApiError> {
    // The SDKs send `{}` (or nothing); a body, when there is one, is checked.
    if !body.iter().all(u8::is_ascii_whitespace) {
        let b: ResendBody = serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid("body", "invalid_body", format!("invalid JSON body: {e}")))?;
        if let Some(l) = &b.locale {
            validate_text("locale", l, 16)?;
        }
    }
    let done = state
        .execute::<Invitation>(
            &ctx,
            &id,
            InvitationCommand::Resend { at: Utc::now() },
            SideRows::default(),
            Mode::Retry,
        )
        .await
        .map_err(|e| command_error(e, resend_error))?;
    let doc = find(&state, &id).await?;
    let token = doc.get("token").and_then(Value::as_str).unwrap_or_default();
    let email = done.state.email.as_ref().map(Email::as_str).unwrap_or_default();
    if done.state.state(Utc::now()) == InvitationState::Pending {
        invitations::send_mail(&state, email, token, done.state.organization_id.as_deref()).await?;
    }
    Ok(object(StatusCode::OK, doc))
}

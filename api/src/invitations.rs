//! Invitations beside the log: the token that accepts one (sealed with the master key, found by
//! its SHA-256), the accept link, and accepting — by id (the API), or by token during a sign-in
//! (`invitation_token`). It never puts a token in an event, and accepting never leaves an
//! accepted invitation without its membership: both land in one append.

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use keyledger_domain::ids::new_id;
use keyledger_domain::invitation::{Invitation, InvitationCommand, InvitationError, InvitationState};
use keyledger_domain::membership::{MembershipCommand, MembershipError, MembershipEvent, OrganizationMembership};
use keyledger_domain::user::{SignUpMethod, SignUpUser, UpdateUser, User, UserCommand, UserError};
use keyledger_domain::values::{Email, RoleSlug};
use keyledger_domain::ClaimKind;
use keyledger_projections::queries;
use keyledger_store::append::{AppendError, SideRows};
use keyledger_store::commands::{append_error, CommandError, Mode, MAX_ATTEMPTS};
use serde_json::{json, Value};

use crate::error::{command_error, ApiError};
use crate::secrets::token_hash;
use crate::secrets::{constant_time_eq, MasterKey};
use crate::state::{AppState, RequestContext};

/// Random bytes of a token (32 base64url characters).
const TOKEN_BYTES: usize = 24;

/// The sealed token is bound to its invitation: a row copied to another invitation never opens.
fn aad(invitation_id: &str) -> Vec<u8> {
    [b"invitation_token:".as_slice(), invitation_id.as_bytes()].concat()
}

fn secret_failure(e: &crate::secrets::SecretError) -> ApiError {
    tracing::error!(error = %e, "an invitation token could not be made or opened");
    ApiError::internal()
}

/// Draws the token of a new invitation and stores it (before the invitation's append: a token
/// row whose append then fails is removed, and is of no use meanwhile, naming no invitation).
pub async fn issue_token(state: &AppState, invitation_id: &str) -> Result<String, ApiError> {
    let token = crate::secrets::random_token(TOKEN_BYTES).map_err(|e| secret_failure(&e))?;
    let sealed = state
        .secrets
        .seal(&aad(invitation_id), token.as_bytes())
        .map_err(|e| secret_failure(&e))?;
    sqlx::query("insert into invitation_token (invitation_id, token_hash, sealed) values ($1, $2, $3)")
        .bind(invitation_id)
        .bind(token_hash(&token))
        .bind(sealed)
        .execute(&state.pool)
        .await?;
    Ok(token)
}

/// Removes the token of an invitation whose append did not land.
pub async fn discard_token(state: &AppState, invitation_id: &str) {
    if let Err(e) = sqlx::query("delete from invitation_token where invitation_id = $1")
        .bind(invitation_id)
        .execute(&state.pool)
        .await
    {
        tracing::warn!(error = %e, invitation_id, "removing an unused invitation token failed");
    }
}

/// The token of invitation `id` (WorkOS's GET returns it).
pub async fn token_of(state: &AppState, id: &str) -> Result<Option<String>, ApiError> {
    let row: Option<(Vec<u8>,)> = sqlx::query_as("select sealed from invitation_token where invitation_id = $1")
        .bind(id)
        .fetch_optional(&state.pool)
        .await?;
    row.map(|(sealed,)| open(&state.secrets, id, &sealed)).transpose()
}

fn open(key: &MasterKey, id: &str, sealed: &[u8]) -> Result<String, ApiError> {
    let plain = key.open(&aad(id), sealed).map_err(|e| secret_failure(&e))?;
    String::from_utf8(plain).map_err(|_| ApiError::internal())
}

/// The invitation a token accepts, if any: found by the token's SHA-256, then the stored
/// token compared with the presented one in constant time.
pub async fn find_by_token(state: &AppState, token: &str) -> Result<Option<String>, ApiError> {
    let token = token.trim();
    if token.is_empty() || token.len() > 256 {
        return Ok(None);
    }
    let row: Option<(String, Vec<u8>)> =
        sqlx::query_as("select invitation_id, sealed from invitation_token where token_hash = $1")
            .bind(token_hash(token))
            .fetch_optional(&state.pool)
            .await?;
    let Some((id, sealed)) = row else {
        return Ok(None);
    };
    let stored = open(&state.secrets, &id, &sealed)?;
    Ok(constant_time_eq(stored.as_bytes(), token.as_bytes()).then_some(id))
}

/// `accept_invitation_url`: `KEYLEDGER_INVITATION_URL` (else `<public URL>/invite`) with
/// `invitation_token=<token>` added to its query.
pub fn accept_url(state: &AppState, token: &str) -> String {
    let base = match (&state.auth.invitation_url, &state.public_url) {
        (Some(u), _) => u.clone(),
        (None, Some(p)) => format!("{}/invite", p.trim_end_matches('/')),
        (None, None) => "http://localhost/invite".to_string(),
    };
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}invitation_token={token}")
}

/// The invitation object of the API: the read model's document with its token and link.
pub async fn with_token(state: &AppState, mut doc: Value) -> Result<Value, ApiError> {
    let id = doc.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
    let token = token_of(state, &id).await?.unwrap_or_default();
    if let Some(o) = doc.as_object_mut() {
        o.insert("accept_invitation_url".into(), json!(accept_url(state, &token)));
        o.insert("token".into(), json!(token));
    }
    Ok(doc)
}

/// Sends the invitation email (when SMTP is configured).
pub async fn send_mail(
    state: &AppState,
    email: &str,
    token: &str,
    organization_id: Option<&str>,
) -> Result<(), ApiError> {
    if !state.mailer.is_enabled() {
        return Ok(());
    }
    let organization_name = match organization_id {
        Some(o) => queries::organization(&state.pool, o)
            .await?
            .and_then(|org| org.get("name").and_then(Value::as_str).map(str::to_string)),
        None => None,
    };
    let mail = crate::mail::Mail::Invitation {
        accept_invitation_url: accept_url(state, token),
        organization_name,
    };
    state.mailer.send(email, mail).await;
    Ok(())
}

/// A refusal of an invitation command, as the spec's answers of accept and revoke.
pub fn not_pending(e: InvitationError) -> ApiError {
    let message = match e {
        InvitationError::NotFound => return ApiError::not_found("invitation"),
        InvitationError::Accepted => "Invite has already been accepted.",
        InvitationError::Revoked => "Invite has been revoked.",
        InvitationError::Expired => "Invite has expired.",
        InvitationError::AlreadyExists | InvitationError::StillPending => "Invite is not pending.",
    };
    ApiError::bad_request("invite_not_pending", message)
}

/// An accepted invitation.
#[derive(Debug, Clone)]
pub struct Acceptance {
    pub invitation_id: String,
    /// The user who accepted it (created when no user held the invitation's email).
    pub user_id: String,
    /// The organization it made the user a member of, if it names one.
    pub organization_id: Option<String>,
}

/// Accepts invitation `id` for the user holding its email (see [`accept_as`]); refusals as the
/// spec's accept operation answers them.
pub async fn accept(state: &AppState, ctx: &RequestContext, id: &str) -> Result<Acceptance, ApiError> {
    let (invitation, _) = state
        .bus
        .load::<Invitation>(id)
        .await
        .map_err(|e| command_error(e, not_pending))?;
    let Some(email) = invitation.email.clone() else {
        return Err(ApiError::not_found("invitation"));
    };
    accept_as(state, ctx, id, &invitation, &email).await
}

/// For the sign-in grants (`invitation_token` of the password and Magic Auth grants): accepts
/// the invitation of `token` for the user who proved `email` (created, signed up by invitation,
/// when no user holds it yet) and answers the organization the sign-in lands in.
///
/// Refusals: `invitation_invalid` (400) for an unknown, accepted, revoked or expired token;
/// `invitation_cannot_be_used_for_email` (400) when the invitation is for another email.
pub async fn accept_for_sign_in(
    state: &AppState,
    ctx: &RequestContext,
    token: &str,
    email: &Email,
) -> Result<Acceptance, ApiError> {
    let invalid = || ApiError::bad_request("invitation_invalid", "The invitation is invalid, expired or revoked.");
    let id = find_by_token(state, token).await?.ok_or_else(invalid)?;
    let (invitation, _) = state
        .bus
        .load::<Invitation>(&id)
        .await
        .map_err(|e| command_error(e, |_| invalid()))?;
    let Some(invited) = invitation.email.clone() else {
        return Err(invalid());
    };
    if invited.key() != email.key() {
        return Err(ApiError::bad_request(
            "invitation_cannot_be_used_for_email",
            "The invitation was sent to another email address.",
        ));
    }
    accept_as(state, ctx, &id, &invitation, &invited).await.map_err(|e| {
        if e.code() == "invite_not_pending" {
            invalid()
        } else {
            e
        }
    })
}

/// The user holding `email`, signed up (by invitation, email verified) when there is none.
async fn user_for(state: &AppState, ctx: &RequestContext, email: &Email) -> Result<String, ApiError> {
    let key = email.key();
    let holder = || queries::claim_holder(&state.pool, ClaimKind::UserEmail.as_str(), &key);
    if let Some(u) = holder().await? {
        return Ok(u);
    }
    let id = new_id("user");
    let signup = UserCommand::SignUp(SignUpUser {
        email: email.clone(),
        first_name: None,
        last_name: None,
        email_verified: true,
        method: SignUpMethod::Invitation,
        at: Utc::now(),
    });
    match state
        .execute::<User>(ctx, &id, signup, SideRows::default(), Mode::New)
        .await
    {
        Ok(_) => Ok(id),
        // Signed up meanwhile (say, a concurrent accept): that user accepts.
        Err(CommandError::Claim(c)) if c.kind == ClaimKind::UserEmail.as_str() => holder()
            .await?
            .ok_or_else(|| ApiError::conflict("the user was changed concurrently; retry the request")),
        Err(e) => Err(command_error(e, user_error)),
    }
}

fn user_error(e: UserError) -> ApiError {
    match e {
        UserError::NotFound => ApiError::not_found("user"),
        UserError::AlreadyExists => ApiError::conflict("the user already exists"),
    }
}

/// Accepts for the user holding `email`: the user first (signed up if new: a user's creation
/// and a membership that requires it cannot share one append), then `InvitationAccepted` with
/// the membership (`MembershipCreated`, or the reactivation of an inactive one) in one append,
/// re-decided on a lost race. Should that append fail, the new user stays (verified, by
/// invitation) without the membership, and the invitation stays pending: accepting again
/// finishes it. The email is marked verified last: the invitation proved the address.
async fn accept_as(
    state: &AppState,
    ctx: &RequestContext,
    id: &str,
    invitation: &Invitation,
    email: &Email,
) -> Result<Acceptance, ApiError> {
    let now = Utc::now();
    // Refuse before creating anybody.
    if invitation.state(now) != InvitationState::Pending {
        return Err(not_pending(match invitation.state(now) {
            InvitationState::Accepted => InvitationError::Accepted,
            InvitationState::Revoked => InvitationError::Revoked,
            _ => InvitationError::Expired,
        }));
    }
    // The user's sign-up and email verification are their own appends: the request's
    // Idempotency-Key is fulfilled by the acceptance's.
    let plain = RequestContext {
        idempotency: None,
        ..ctx.clone()
    };
    let user_id = user_for(state, &plain, email).await?;
    let organization_id = invitation.organization_id.clone();
    let role = invitation.role.clone().unwrap_or_else(RoleSlug::member);
    let meta = ctx.metadata();
    let mut appended = None;
    for _ in 0..MAX_ATTEMPTS {
        let at = Utc::now();
        let decided = state
            .bus
            .decide::<Invitation>(
                id,
                InvitationCommand::Accept {
                    user_id: user_id.clone(),
                    at,
                },
                &meta,
                Mode::Once,
            )
            .await
            .map_err(|e| command_error(e, not_pending))?;
        let mut events = decided.new_events;
        if let Some(org) = &organization_id {
            events.extend(membership_events(state, &meta, org, &user_id, &role, at).await?);
        }
        let side = SideRows {
            idempotency: ctx.idempotency.clone(),
            ..Default::default()
        };
        match state.bus.store().append(events, side).await {
            Ok(position) => {
                appended = Some(position);
                break;
            }
            // The invitation or the membership moved on: decide again.
            Err(AppendError::Conflict) => continue,
            Err(AppendError::ClaimTaken(c)) if c.kind == ClaimKind::Membership.as_str() => continue,
            Err(e) => return Err(command_error(append_error(e), not_pending)),
        }
    }
    let Some(position) = appended else {
        return Err(ApiError::conflict(
            "the invitation was changed concurrently; retry the request",
        ));
    };
    state
        .settle(&[Invitation::TYPE, OrganizationMembership::TYPE], position)
        .await;
    verify_email(state, &plain, &user_id, now).await;
    Ok(Acceptance {
        invitation_id: id.to_string(),
        user_id,
        organization_id,
    })
}

/// The membership part of an acceptance: a new membership, the reactivation of an inactive
/// one (with the invited role), or nothing for an active one.
async fn membership_events(
    state: &AppState,
    meta: &std::collections::HashMap<String, String>,
    organization_id: &str,
    user_id: &str,
    role: &RoleSlug,
    at: DateTime<Utc>,
) -> Result<Vec<keyledger_store::append::NewEvent>, ApiError> {
    let membership_failure = |e: CommandError<MembershipError>| {
        command_error(e, |d| match d {
            MembershipError::NotFound => ApiError::not_found("organization membership"),
            _ => ApiError::conflict(d.to_string()),
        })
    };
    let claim = MembershipEvent::claim_value(organization_id, user_id);
    if let Some(existing) = queries::claim_holder(&state.pool, ClaimKind::Membership.as_str(), &claim).await? {
        let rejoin = MembershipCommand::Rejoin { role: role.clone(), at };
        return match state
            .bus
            .decide::<OrganizationMembership>(&existing, rejoin, meta, Mode::Once)
            .await
        {
            Ok(d) => Ok(d.new_events),
            // Already an active member: the invitation is accepted, the membership stays.
            Err(CommandError::Domain(MembershipError::AlreadyExists | MembershipError::Pending)) => Ok(Vec::new()),
            Err(e) => Err(membership_failure(e)),
        };
    }
    let org = queries::organization(&state.pool, organization_id)
        .await?
        .ok_or_else(|| ApiError::not_found("organization"))?;
    let create = MembershipCommand::Create {
        user_id: user_id.to_string(),
        organization_id: organization_id.to_string(),
        organization_name: org.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
        role: role.clone(),
        at,
    };
    state
        .bus
        .decide::<OrganizationMembership>(&new_id("om"), create, meta, Mode::New)
        .await
        .map(|d| d.new_events)
        .map_err(membership_failure)
}

/// Marks the user's email verified (a `UserUpdated`) unless it is; a failure is logged: the
/// acceptance has landed.
async fn verify_email(state: &AppState, ctx: &RequestContext, user_id: &str, at: DateTime<Utc>) {
    let update = UserCommand::Update(UpdateUser {
        email_verified: Some(true),
        at,
        ..Default::default()
    });
    if let Err(e) = state
        .execute::<User>(ctx, user_id, update, SideRows::default(), Mode::Retry)
        .await
    {
        tracing::warn!(error = %e, user_id, "marking an invited user's email verified failed");
    }
}

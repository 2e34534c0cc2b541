//! Just-in-time memberships (docs/API.md, "Organization policy"): a user with a verified email at
//! a verified domain of an organization whose policy is `membership: auto` becomes an active
//! member with the policy's default role, recorded as joined by that domain; when the user's
//! email leaves that domain, memberships the domain alone gave are deactivated in the same
//! append as the email change. It never touches a membership the API or an invitation made or
//! changed, never reactivates one, and a lost race (a concurrent sign-in that made the
//! membership first) is harmless.

use std::collections::HashMap;

use chrono::Utc;
use cqrs_es::Aggregate;
use keyledger_domain::ids::new_id;
use keyledger_domain::membership::{MembershipCommand, MembershipEvent, OrganizationMembership};
use keyledger_domain::organization::MembershipPolicy;
use keyledger_domain::user::{UpdateUser, User, UserCommand, UserError, UserEvent};
use keyledger_domain::values::Email;
use keyledger_domain::ClaimKind;
use keyledger_projections::queries;
use keyledger_store::append::{AppendError, NewEvent, SideRows};
use keyledger_store::commands::{append_error, CommandError, Mode, MAX_ATTEMPTS};
use serde_json::Value;

use crate::error::{command_error, ApiError};
use crate::policy;
use crate::state::{AppState, RequestContext};

fn membership_failure(e: CommandError<keyledger_domain::membership::MembershipError>) -> ApiError {
    command_error(e, |d| ApiError::conflict(d.to_string()))
}

/// The events (not yet appended) that make `user_id` a member by its email's domain, or none:
/// the email must be verified, its domain a verified domain of an organization whose policy is
/// `auto`, and the user not yet a member there (in any status). For callers that append them
/// with their own change (say, the SSO sign-in creating the user's profile link); the append's
/// membership claim refuses a duplicate made meanwhile.
pub async fn memberships_for(
    state: &AppState,
    meta: &HashMap<String, String>,
    user_id: &str,
    email: &Email,
    email_verified: bool,
) -> Result<Vec<NewEvent>, ApiError> {
    if !email_verified {
        return Ok(Vec::new());
    }
    let Some(domain) = policy::email_domain(email) else {
        return Ok(Vec::new());
    };
    let Some(organization_id) = policy::domain_owner(state, &domain).await? else {
        return Ok(Vec::new());
    };
    let p = policy::current(state, &organization_id).await?;
    if p.membership != MembershipPolicy::Auto {
        return Ok(Vec::new());
    }
    let claim = MembershipEvent::claim_value(&organization_id, user_id);
    if queries::claim_holder(&state.pool, ClaimKind::Membership.as_str(), &claim)
        .await?
        .is_some()
    {
        return Ok(Vec::new());
    }
    let Some(org) = queries::organization(&state.pool, &organization_id).await? else {
        return Ok(Vec::new());
    };
    let join = MembershipCommand::JoinByDomain {
        user_id: user_id.to_string(),
        organization_id: organization_id.clone(),
        organization_name: org.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
        role: p.default_role,
        domain,
        at: Utc::now(),
    };
    state
        .bus
        .decide::<OrganizationMembership>(&new_id("om"), join, meta, Mode::New)
        .await
        .map(|d| d.new_events)
        .map_err(membership_failure)
}

/// Makes the user a member by domain now, in an append of its own, when due (see
/// [`memberships_for`]); for changes that cannot carry it in their own append (a user's
/// creation: a membership requires the user to exist already). A concurrent append that made the
/// membership first, or a user deleted meanwhile, makes this a no-op.
pub async fn join(state: &AppState, ctx: &RequestContext, user_id: &str) -> Result<(), ApiError> {
    let (user, _) = state
        .bus
        .load::<User>(user_id)
        .await
        .map_err(|e| command_error(e, |_| ApiError::not_found("user")))?;
    let Some(email) = user.email.clone().filter(|_| user.exists()) else {
        return Ok(());
    };
    let plain = RequestContext {
        idempotency: None,
        ..ctx.clone()
    };
    let events = memberships_for(state, &plain.metadata(), user_id, &email, user.email_verified).await?;
    if events.is_empty() {
        return Ok(());
    }
    match state.bus.store().append(events, SideRows::default()).await {
        Ok(at) => {
            state.settle(&[OrganizationMembership::TYPE], at).await;
            Ok(())
        }
        // Lost the race to a concurrent sign-in (or an invitation, or the API): the user is a
        // member either way.
        Err(AppendError::ClaimTaken(c)) if c.kind == ClaimKind::Membership.as_str() => Ok(()),
        // The user or the organization went away meanwhile: nothing to join.
        Err(AppendError::ClaimMissing(_)) => Ok(()),
        Err(e) => Err(membership_failure(append_error(e))),
    }
}

/// [`join`] where the triggering change has already landed (a sign-in, a verification): a
/// failure is logged, never turned into the answer of that change.
pub async fn join_after(state: &AppState, ctx: &RequestContext, user_id: &str) {
    if let Err(e) = join(state, ctx, user_id).await {
        tracing::warn!(code = e.code(), user_id, "a just-in-time membership failed");
    }
}

/// The deactivations of the user's memberships that came only from a domain other than the one
/// of `new_email` (joined by domain, never changed since): the rule of leaving a domain.
pub async fn leave_domain_events(
    state: &AppState,
    meta: &HashMap<String, String>,
    user_id: &str,
    new_email: &Email,
) -> Result<Vec<NewEvent>, ApiError> {
    let new_domain = policy::email_domain(new_email);
    // A new address at another verified domain of the same organization still gives it.
    let new_owner = match &new_domain {
        Some(d) => policy::domain_owner(state, d).await?,
        None => None,
    };
    let memberships: Vec<(String,)> =
        sqlx::query_as("select aggregate_id from claim where kind = $1 and split_part(value, ':', 2) = $2")
            .bind(ClaimKind::Membership.as_str())
            .bind(user_id)
            .fetch_all(&state.pool)
            .await?;
    let mut events = Vec::new();
    for (id,) in memberships {
        let (m, _) = state
            .bus
            .load::<OrganizationMembership>(&id)
            .await
            .map_err(membership_failure)?;
        let left = m.from_domain.as_ref().is_some_and(|d| Some(d) != new_domain.as_ref())
            && new_owner.as_deref() != Some(m.organization_id.as_str());
        if !left {
            continue;
        }
        let leave = MembershipCommand::LeaveDomain { at: Utc::now() };
        let decided = state
            .bus
            .decide::<OrganizationMembership>(&id, leave, meta, Mode::Once)
            .await
            .map_err(membership_failure)?;
        events.extend(decided.new_events);
    }
    Ok(events)
}

/// Updates a user, and in the same append (re-decided on a lost race): when the update moves
/// the email out of a domain, deactivates the memberships that came only from it; when it leaves
/// the user verified with a changed or newly verified email, the membership the (new) domain
/// gives ([`memberships_for`]). `user_failure` maps the user command's refusals.
pub async fn update_user(
    state: &AppState,
    ctx: &RequestContext,
    user_id: &str,
    update: UpdateUser,
    mut extras: SideRows,
    user_failure: impl Fn(CommandError<UserError>) -> ApiError,
) -> Result<(), ApiError> {
    if extras.idempotency.is_none() {
        extras.idempotency = ctx.idempotency.clone();
    }
    let meta = ctx.metadata();
    for _ in 0..MAX_ATTEMPTS {
        let decided = state
            .bus
            .decide::<User>(user_id, UserCommand::Update(update.clone()), &meta, Mode::Once)
            .await
            .map_err(&user_failure)?;
        if decided.events.is_empty() {
            return Ok(());
        }
        let changes = decided.events.iter().find_map(|e| match e {
            UserEvent::UserUpdated { changes, .. } => Some(changes.clone()),
            _ => None,
        });
        // A removed password's credential row goes in the same transaction as its event.
        if decided
            .events
            .iter()
            .any(|e| matches!(e, UserEvent::UserPasswordRemoved { .. }))
        {
            extras.erase_credential = Some(user_id.to_string());
        }
        let new_email = changes.as_ref().and_then(|c| c.email.clone());
        let newly_verified = changes.as_ref().and_then(|c| c.email_verified) == Some(true);
        let mut events = decided.new_events;
        if let Some(e) = &new_email {
            events.extend(leave_domain_events(state, &meta, user_id, e).await?);
        }
        // Verified at a (new) domain: the membership it gives joins the same append.
        let joins = match &decided.state.email {
            Some(email) if decided.state.email_verified && (new_email.is_some() || newly_verified) => {
                memberships_for(state, &meta, user_id, email, true).await?
            }
            _ => Vec::new(),
        };
        let joining = !joins.is_empty();
        events.extend(joins);
        match state.bus.store().append(events, extras.clone()).await {
            Ok(at) => {
                state.settle(&[User::TYPE, OrganizationMembership::TYPE], at).await;
                return Ok(());
            }
            // The user or one of the memberships moved on, or a concurrent sign-in made the
            // membership first: decide again (the next decision joins nothing).
            Err(AppendError::Conflict) => continue,
            Err(AppendError::ClaimTaken(c)) if joining && c.kind == ClaimKind::Membership.as_str() => continue,
            Err(e) => return Err(user_failure(append_error(e))),
        }
    }
    Err(ApiError::conflict(
        "the user was changed concurrently; retry the request",
    ))
}

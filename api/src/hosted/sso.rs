//! The hosted sign-in's doors to SSO: an explicit target of the authorize request
//! (`connection_id`, `organization_id`) and an email whose verified domain belongs to an
//! organization that requires SSO. The hosted flow travels sealed with the SSO state; when the
//! identity provider's answer comes back (`crate::routes::sso`), [`finish_sso`] turns its profile
//! into the user (signed up by SSO; email verified when the organization vouches for it), their
//! membership of the connection's organization, and the hosted sign-in's authorization code.
//! OAuth providers are not offered.

use axum::http::StatusCode;
use chrono::Utc;
use keyledger_domain::claims::ClaimKind;
use keyledger_domain::ids::new_id;
use keyledger_domain::membership::{MembershipCommand, MembershipEvent, OrganizationMembership};
use keyledger_domain::session::{AuthMethod, Grant};
use keyledger_domain::user::{SignUpMethod, SignUpUser, User, UserCommand};
use keyledger_domain::values::Email;
use keyledger_store::append::{AppendError, SideRows};
use keyledger_store::commands::{append_error, Mode};
use serde_json::{json, Value};

use super::flow::Flow;
use crate::error::{command_error, ApiError};
use crate::routes::authenticate::{Proof, Step};
use crate::sso::{self, FlowError, Selector};
use crate::state::{AppState, RequestContext};

/// What an authorize request asked to sign in with, other than AuthKit's own pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SsoTarget {
    Connection(String),
    Organization(String),
    Provider(String),
}

fn refused(e: FlowError) -> ApiError {
    ApiError::bad_request(e.code, e.message)
}

/// The identity provider URL to send the browser to for `target`, with `flow` sealed in the
/// SSO state; `None` when no connection can serve it (OAuth providers are not offered).
pub async fn sso_redirect(state: &AppState, flow: &Flow, target: &SsoTarget) -> Result<Option<String>, ApiError> {
    let selector = match target {
        SsoTarget::Connection(id) => Selector::Connection(id.clone()),
        SsoTarget::Organization(id) => Selector::Organization(id.clone()),
        SsoTarget::Provider(_) => return Ok(None),
    };
    let conn = match sso::select(state, &selector).await {
        Ok(c) => c,
        Err(e) if matches!(e.code, "connection_not_found" | "connection_inactive") => return Ok(None),
        Err(e) => return Err(refused(e)),
    };
    let sealed = flow.seal(&state.secrets).ok_or_else(ApiError::internal)?;
    let extra = Some(json!({ "authkit": sealed }));
    let url = if conn.saml.is_some() && conn.oidc.is_none() {
        crate::sso_saml::start(state, &conn, &flow.redirect_uri, flow.state.as_deref(), extra).await
    } else {
        sso::start(
            state,
            &conn,
            &flow.redirect_uri,
            flow.state.as_deref(),
            flow.login_hint.as_deref(),
            extra,
        )
        .await
    };
    url.map(Some).map_err(refused)
}

/// The identity provider URL for an email whose verified domain's organization requires SSO and
/// has an active connection.
pub async fn policy_sso_redirect_for_email(
    state: &AppState,
    flow: &Flow,
    email: &str,
) -> Result<Option<String>, ApiError> {
    let Ok(email) = Email::parse("email", email) else {
        return Ok(None);
    };
    match crate::policy::sso_required_for(state, &email).await? {
        Some((_, connections)) => match connections.first() {
            Some(id) => sso_redirect(state, flow, &SsoTarget::Connection(id.clone())).await,
            None => Ok(None),
        },
        None => Ok(None),
    }
}

/// The hosted flow an SSO state carries, if the hosted sign-in started it.
pub fn authkit_flow(state: &AppState, sealed: &Value) -> Option<Option<Flow>> {
    let value = sealed.get("extra")?.get("authkit")?.as_str()?;
    Some(Flow::open(&state.secrets, value))
}

/// The end of an SSO sign-in the hosted pages started: the user of the profile's email (signed up
/// by SSO when new; verified), a member of the connection's organization, signed in there.
pub async fn finish_sso(
    state: &AppState,
    ctx: &RequestContext,
    flow: Flow,
    profile: &Value,
) -> axum::response::Response {
    match sso_user(state, ctx, profile).await {
        Ok(proof) => super::finish(state, flow, Step::Proved(proof)).await,
        Err(e) => super::respond::error_page(state, e.status(), "Sign-in failed", e.message()),
    }
}

/// Whether the connection's organization vouches for the profile's email: its domain is one the
/// organization has verified, and the identity provider did not say the email is unverified.
/// Any organization can point a connection at an identity provider it controls, so an email at
/// a domain it has not verified proves nothing about who holds that address.
async fn vouched(state: &AppState, organization_id: &str, email: &Email, profile: &Value) -> Result<bool, ApiError> {
    let idp_unverified = profile
        .get("raw_attributes")
        .and_then(|r| r.get("email_verified"))
        .is_some_and(|v| v == &Value::Bool(false) || v.as_str() == Some("false"));
    let Some(domain) = crate::policy::email_domain(email) else {
        return Ok(false);
    };
    let owner = crate::policy::domain_owner(state, &domain).await?;
    Ok(!idp_unverified && owner.as_deref() == Some(organization_id))
}

async fn sso_user(state: &AppState, ctx: &RequestContext, profile: &Value) -> Result<Proof, ApiError> {
    let text = |k: &str| profile.get(k).and_then(Value::as_str).map(str::to_string);
    let email = Email::parse("email", &text("email").unwrap_or_default())?;
    let organization_id = text("organization_id").ok_or_else(ApiError::internal)?;
    let vouched = vouched(state, &organization_id, &email, profile).await?;
    let user_id = match (crate::routes::codes::holder_of(state, &email).await?, vouched) {
        // The organization's identity provider, for a domain the organization verified, proves
        // the email: the account is that person's.
        (Some(id), true) => {
            crate::routes::codes::mark_verified(state, ctx, &id, crate::routes::codes::Proved::WithoutThePassword)
                .await
                .map(|_| id)?
        }
        // Anything else would let whoever runs an identity provider sign in as any address.
        (Some(_), false) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "sso_email_not_vouched",
                "An account with this email already exists, and this organization's identity provider \
                 cannot sign in to it: the email's domain is not one the organization has verified. \
                 Sign in with the account's own method instead.",
            ))
        }
        (None, vouched) => sign_up(state, ctx, &email, text("first_name"), text("last_name"), vouched).await?,
    };
    join(state, ctx, &user_id, &organization_id, &email, vouched).await?;
    // Other organizations whose `auto` policy covers the email's domain (`crate::jit`).
    crate::jit::join_after(state, ctx, &user_id).await;
    let user = keyledger_projections::queries::user(&state.pool, &user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(Proof {
        user,
        method: AuthMethod::Sso,
        grant: Grant::AuthorizationCode,
        pending_grant: None,
        organization: Some(organization_id),
    })
}

/// A new user, signed up by SSO (the email verified when the organization vouches for it); the
/// holder instead when the email was taken meanwhile by a sign-up the organization vouches for.
async fn sign_up(
    state: &AppState,
    ctx: &RequestContext,
    email: &Email,
    first_name: Option<String>,
    last_name: Option<String>,
    vouched: bool,
) -> Result<String, ApiError> {
    let id = new_id("user");
    let command = UserCommand::SignUp(SignUpUser {
        email: email.clone(),
        first_name,
        last_name,
        email_verified: vouched,
        method: SignUpMethod::Sso,
        at: Utc::now(),
    });
    match state
        .execute::<User>(ctx, &id, command, SideRows::default(), Mode::New)
        .await
    {
        Ok(_) => Ok(id),
        Err(e) => match crate::routes::codes::holder_of(state, email).await? {
            Some(holder) if vouched => Ok(holder),
            _ => Err(command_error(e, |d| ApiError::conflict(d.to_string()))),
        },
    }
}

/// Membership of the connection's organization, by SSO: the policy's default role, recorded as
/// joined by the email's domain when the organization vouches for it (so leaving the domain ends
/// it, `crate::jit`), else a plain membership. Already a member (in any status): nothing changes.
async fn join(
    state: &AppState,
    ctx: &RequestContext,
    user_id: &str,
    organization_id: &str,
    email: &Email,
    vouched: bool,
) -> Result<(), ApiError> {
    let claim = MembershipEvent::claim_value(organization_id, user_id);
    if keyledger_projections::queries::claim_holder(&state.pool, ClaimKind::Membership.as_str(), &claim)
        .await?
        .is_some()
    {
        return Ok(());
    }
    let Some(org) = keyledger_projections::queries::organization(&state.pool, organization_id).await? else {
        return Err(ApiError::not_found("organization"));
    };
    let policy = crate::policy::current(state, organization_id).await?;
    let organization_name = org.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
    let command = match crate::policy::email_domain(email).filter(|_| vouched) {
        Some(domain) => MembershipCommand::JoinByDomain {
            user_id: user_id.to_string(),
            organization_id: organization_id.to_string(),
            organization_name,
            role: policy.default_role,
            domain,
            at: Utc::now(),
        },
        None => MembershipCommand::Create {
            user_id: user_id.to_string(),
            organization_id: organization_id.to_string(),
            organization_name,
            role: policy.default_role,
            at: Utc::now(),
        },
    };
    let decided = state
        .bus
        .decide::<OrganizationMembership>(&new_id("om"), command, &ctx.metadata(), Mode::New)
        .await
        .map_err(|e| command_error(e, |d| ApiError::conflict(d.to_string())))?;
    match state.bus.store().append(decided.new_events, SideRows::default()).await {
        Ok(at) => {
            state
                .settle(&[<OrganizationMembership as cqrs_es::Aggregate>::TYPE], at)
                .await;
            Ok(())
        }
        // A concurrent sign-in (or the API) made the membership first.
        Err(AppendError::ClaimTaken(c)) if c.kind == ClaimKind::Membership.as_str() => Ok(()),
        Err(e) => Err(command_error(
            append_error::<keyledger_domain::membership::MembershipError>(e),
            |d| ApiError::conflict(d.to_string()),
        )),
    }
}

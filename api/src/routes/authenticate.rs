//! `POST /user_management/authenticate`: sign-in by password, refresh token, pending
//! authentication (organization selection, email verification) — WorkOS's grants — ending in a
//! session (an event in the log), a refresh token and an RS256 access token.
//!
//! The request is authenticated by its body (`client_id` must be this environment's, and
//! `client_secret` an API key), not by the management API's `Authorization` header, as WorkOS.

use std::net::IpAddr;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use cqrs_es::Aggregate;
use keyledger_domain::authentication::{Authentication, AuthenticationCommand, FailedAttempt, SucceededAttempt};
use keyledger_domain::ids::new_id;
use keyledger_domain::one_time_code::Purpose;
use keyledger_domain::session::{AuthMethod, Grant, RevokeReason, Session, SessionCommand, SessionError, StartSession};
use keyledger_domain::values::{validate_text, Email};
use keyledger_domain::ClaimKind;
use keyledger_projections::queries::{self, MembershipFilter, Page};
use keyledger_store::append::SideRows;
use keyledger_store::commands::Mode;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::auth::Actor;
use crate::codes::{self, Refusal};
use crate::error::{command_error, ApiError};
use crate::extract::AppJson;
use crate::rate_limit::{self, Limit};
use crate::schemas;
use crate::sessions::{self, Pending, RefreshToken};
use crate::state::{AppState, RequestContext};

/// The grant types of WorkOS's authenticate endpoint that keyledger serves.
pub const PASSWORD: &str = "password";
pub const REFRESH_TOKEN: &str = "refresh_token";
pub const MAGIC_AUTH: &str = "urn:workos:oauth:grant-type:magic-auth:code";
pub const EMAIL_VERIFICATION: &str = "urn:workos:oauth:grant-type:email-verification:code";
pub const ORGANIZATION_SELECTION: &str = "urn:workos:oauth:grant-type:organization-selection";
pub const AUTHORIZATION_CODE: &str = "authorization_code";

/// Every field any served grant takes; which are required depends on `grant_type`. Unknown
/// fields are ignored: the SDKs add optional ones (`signals_id`, `radar_auth_attempt_id`, ...)
/// from release to release.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = AuthenticateRequest)]
pub struct AuthenticateBody {
    /// `password`, `refresh_token`, `authorization_code`, `urn:workos:oauth:grant-type:magic-auth:code`,
    /// `urn:workos:oauth:grant-type:email-verification:code` or
    /// `urn:workos:oauth:grant-type:organization-selection`.
    grant_type: String,
    /// This environment's client id (`keyledger client-id`).
    #[serde(default)]
    client_id: Option<String>,
    /// An API key (`sk_...`).
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    password: Option<String>,
    /// An invitation to accept with this sign-in (it lands in the invitation's organization).
    #[serde(default)]
    invitation_token: Option<String>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    organization_id: Option<String>,
    /// A one-time code (Magic Auth, email verification).
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    pending_authentication_token: Option<String>,
    /// The end user's IP address and user agent, recorded on the session and its events.
    #[serde(default)]
    ip_address: Option<String>,
    #[serde(default)]
    user_agent: Option<String>,
    #[serde(default)]
    device_id: Option<String>,
    /// PKCE: the verifier of the `code_challenge` the authorization began with
    /// (`authorization_code` of a public client, instead of `client_secret`).
    #[serde(default)]
    code_verifier: Option<String>,
}

fn required(field: &str, v: &Option<String>) -> Result<String, ApiError> {
    match v.as_deref().map(str::trim) {
        Some(s) if !s.is_empty() => Ok(v.clone().unwrap_or_default()),
        _ => Err(ApiError::invalid(field, "required", format!("{field} is required"))),
    }
}

fn invalid_grant(message: &str) -> ApiError {
    ApiError::bad_request("invalid_grant", message)
}

fn invalid_credentials() -> ApiError {
    ApiError::bad_request("invalid_credentials", "Invalid credentials.")
}

/// The end user's request details, checked: from the body when the application sends them (it
/// calls on the user's behalf), else from this request.
pub(crate) struct EndUser {
    pub(crate) ip_address: Option<String>,
    pub(crate) user_agent: Option<String>,
    pub(crate) device_id: Option<String>,
}

impl EndUser {
    /// The browser of this request itself (the hosted pages).
    pub(crate) fn of_request(ctx: &RequestContext) -> Self {
        Self {
            ip_address: ctx.ip.clone(),
            user_agent: ctx.user_agent.clone(),
            device_id: None,
        }
    }
}

/// The per-address limit of sign-in attempts (`Limit::AuthenticatePerIp`).
pub(crate) async fn limit_end_user(state: &AppState, who: &EndUser) -> Result<(), ApiError> {
    if let Some(ip) = who.ip_address.as_deref().and_then(|ip| ip.parse().ok()) {
        state
            .limits
            .check(Limit::AuthenticatePerIp, &rate_limit::ip_key(ip))
            .await?;
    }
    Ok(())
}

/// Where a sign-in step left the user: proved who they are, or one more step to take.
pub(crate) enum Step {
    /// Signed in: what the session (or an authorization code) is made of.
    Proved(Proof),
    /// The email must be verified first: a code was sent (`email_verification_id`).
    EmailVerification {
        pending_token: String,
        email_verification_id: String,
        user: Value,
    },
    /// The user belongs to several organizations and must pick one: (id, name) each.
    OrganizationSelection {
        pending_token: String,
        organizations: Vec<(String, String)>,
        user: Value,
    },
    /// The email's organization requires SSO (its policy): password and Magic Auth stop here.
    SsoRequired {
        email: String,
        organization_id: String,
        connection_ids: Vec<String>,
        /// Names the user, when there is one.
        pending_token: Option<String>,
    },
}

/// A finished sign-in, before its session starts.
pub(crate) struct Proof {
    pub(crate) user: Value,
    pub(crate) method: AuthMethod,
    pub(crate) grant: Grant,
    /// The grant of the step a pending authentication continues (organization selection).
    pub(crate) pending_grant: Option<Grant>,
    pub(crate) organization: Option<String>,
}

impl Proof {
    /// The grant that proved the credential (the step before an organization selection).
    pub(crate) fn proved_by(&self) -> Grant {
        match (self.grant, self.pending_grant) {
            (Grant::OrganizationSelection, Some(g)) => g,
            _ => self.grant,
        }
    }

    pub(crate) fn user_id(&self) -> String {
        self.user
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    }
}

/// The JSON answer of a step: the session's tokens, or WorkOS's 403 of the next step.
async fn respond(state: &AppState, ctx: &RequestContext, step: Step, who: &EndUser) -> Result<Response, ApiError> {
    match step {
        Step::Proved(p) => {
            start_session(
                state,
                ctx,
                p.user,
                p.method,
                p.grant,
                p.pending_grant,
                p.organization,
                who,
            )
            .await
        }
        Step::EmailVerification {
            pending_token,
            email_verification_id,
            user,
        } => Ok(flow_error(
            "email_verification_required",
            "Email ownership must be verified before authentication.",
            json!({
                "pending_authentication_token": pending_token,
                "email": user.get("email"),
                "email_verification_id": email_verification_id,
                "user": user,
            }),
        )),
        Step::OrganizationSelection {
            pending_token,
            organizations,
            user,
        } => {
            let organizations: Vec<Value> = organizations
                .iter()
                .map(|(id, name)| json!({ "id": id, "name": name }))
                .collect();
            Ok(flow_error(
                "organization_selection_required",
                "The user must choose an organization to sign in to.",
                json!({
                    "pending_authentication_token": pending_token,
                    "organizations": organizations,
                    "user": user,
                }),
            ))
        }
        Step::SsoRequired {
            email,
            organization_id,
            connection_ids,
            pending_token,
        } => {
            let description = "The organization of this email requires signing in with SSO.";
            Ok(flow_error(
                "sso_required",
                description,
                json!({
                    "error": "sso_required",
                    "error_description": description,
                    "email": email,
                    "connection_ids": connection_ids,
                    "organization_id": organization_id,
                    "pending_authentication_token": pending_token,
                }),
            ))
        }
    }
}

fn end_user(b: &AuthenticateBody, ctx: &RequestContext) -> Result<EndUser, ApiError> {
    let ip_address = match &b.ip_address {
        Some(ip) => Some(
            ip.trim()
                .parse::<IpAddr>()
                .map_err(|_| {
                    ApiError::invalid(
                        "ip_address",
                        "invalid_ip_address",
                        "ip_address must be an IPv4 or IPv6 address",
                    )
                })?
                .to_string(),
        ),
        None => ctx.ip.clone(),
    };
    if let Some(ua) = &b.user_agent {
        validate_text("user_agent", ua, 1024)?;
    }
    if let Some(d) = &b.device_id {
        validate_text("device_id", d, 256)?;
    }
    Ok(EndUser {
        ip_address,
        user_agent: b.user_agent.clone().or_else(|| ctx.user_agent.clone()),
        device_id: b.device_id.clone(),
    })
}

/// Checks `client_id` and `client_secret`; the API key becomes the actor of the events.
async fn client(state: &AppState, b: &AuthenticateBody, headers: &HeaderMap) -> Result<Actor, ApiError> {
    let invalid_client = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Invalid client ID or client secret.",
        )
    };
    match b.client_id.as_deref() {
        Some(id) if id == state.tokens.client_id() => {}
        _ => return Err(invalid_client()),
    }
    let secret = b.client_secret.clone().or_else(|| {
        headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::auth::bearer_token)
            .map(str::to_string)
    });
    let Some(secret) = secret.filter(|s| s.starts_with("sk_")) else {
        return Err(invalid_client());
    };
    crate::auth::actor_for_key(state, &secret)
        .await?
        .ok_or_else(invalid_client)
}

#[utoipa::path(post, path = "/user_management/authenticate", tag = "user_management",
    operation_id = "authenticate",
    summary = "Authenticate (password, refresh token, authorization code, Magic Auth, email verification, organization selection)",
    request_body = AuthenticateBody,
    responses((status = 200, description = "The user, the session's tokens", body = schemas::AuthenticateResponse),
        (status = 400, description = "Invalid credentials, code or token", body = schemas::ErrorBody),
        (status = 401, description = "Invalid client id or secret", body = schemas::ErrorBody),
        (status = 403, description = "One more step: email verification or organization selection", body = schemas::ErrorBody),
        (status = 422, description = "Invalid request", body = schemas::ErrorBody),
        (status = 429, description = "Rate limited", body = schemas::ErrorBody)))]
pub async fn authenticate(
    State(state): State<AppState>,
    headers: HeaderMap,
    ctx: crate::state::PublicContext,
    AppJson(b): AppJson<AuthenticateBody>,
) -> Result<Response, ApiError> {
    let actor = if b.grant_type == AUTHORIZATION_CODE {
        crate::authorization_codes::client(&state, b.client_id.as_deref(), b.client_secret.as_deref()).await?
    } else {
        client(&state, &b, &headers).await?
    };
    let ctx = ctx.with_actor(actor);
    let who = end_user(&b, &ctx)?;
    // Per end user's address: the application calls on its users' behalf and says whose
    // (`ip_address`); without it, the caller's own address counts.
    limit_end_user(&state, &who).await?;
    let step = match b.grant_type.as_str() {
        PASSWORD => {
            let email = required("email", &b.email)?;
            let candidate = required("password", &b.password)?;
            password(&state, &ctx, &email, candidate, b.invitation_token.as_deref(), &who).await?
        }
        REFRESH_TOKEN => return refresh(&state, &ctx, &b, &who).await,
        ORGANIZATION_SELECTION => {
            let token = required("pending_authentication_token", &b.pending_authentication_token)?;
            let organization_id = required("organization_id", &b.organization_id)?;
            organization_selection(&state, &token, &organization_id).await?
        }
        MAGIC_AUTH => {
            let email = required("email", &b.email)?;
            let code = required("code", &b.code)?;
            magic_auth(&state, &ctx, &email, &code, b.invitation_token.as_deref(), &who).await?
        }
        EMAIL_VERIFICATION => {
            let token = required("pending_authentication_token", &b.pending_authentication_token)?;
            let code = required("code", &b.code)?;
            email_verification(&state, &ctx, &token, &code, &who).await?
        }
        AUTHORIZATION_CODE => {
            let code = required("code", &b.code)?;
            let proof = crate::authorization_codes::redeem(
                &state,
                &code,
                b.client_secret.is_some(),
                b.code_verifier.as_deref(),
            )
            .await?;
            Step::Proved(proof)
        }
        other => Err(ApiError::invalid(
            "grant_type",
            "unsupported_grant_type",
            format!("grant_type {other:?} is not supported"),
        ))?,
    };
    respond(&state, &ctx, step, &who).await
}

/// Records a failed attempt in the log (`authentication.*_failed`); a failure to record it is
/// logged, not turned into another answer.
async fn record_failure(
    state: &AppState,
    ctx: &RequestContext,
    grant: Grant,
    email: Option<String>,
    user_id: Option<String>,
    error: &ApiError,
    who: &EndUser,
) {
    let attempt = FailedAttempt {
        grant,
        email,
        user_id,
        error_code: error.code().to_string(),
        error_message: error.message().to_string(),
        ip_address: who.ip_address.clone(),
        user_agent: who.user_agent.clone(),
        at: Utc::now(),
    };
    let id = new_id("authn");
    if let Err(e) = state
        .execute::<Authentication>(
            ctx,
            &id,
            AuthenticationCommand::Fail(attempt),
            SideRows::default(),
            Mode::New,
        )
        .await
    {
        tracing::warn!(error = %e, "recording a failed sign-in attempt failed");
    }
}

/// The stored password hash of the user holding `email`, if any.
async fn credential_of(state: &AppState, email: &Email) -> Result<(Option<String>, Option<String>), ApiError> {
    let row: Option<(String, Option<String>)> = sqlx::query_as(
        "select c.aggregate_id, k.password_hash from claim c left join credential k on k.user_id = c.aggregate_id \
         where c.kind = $1 and c.value = $2",
    )
    .bind(ClaimKind::UserEmail.as_str())
    .bind(email.key())
    .fetch_optional(&state.pool)
    .await?;
    Ok(match row {
        Some((user, hash)) => (Some(user), hash),
        None => (None, None),
    })
}

/// Password sign-in: the email's password checked (rate limited, the same work for an unknown
/// email), an invitation accepted with it, then [`complete`].
pub(crate) async fn password(
    state: &AppState,
    ctx: &RequestContext,
    email: &str,
    candidate: String,
    invitation_token: Option<&str>,
    who: &EndUser,
) -> Result<Step, ApiError> {
    let email = Email::parse("email", email)?;
    if candidate.chars().count() > 1024 {
        return Err(ApiError::invalid(
            "password",
            "invalid_password",
            "password is too long",
        ));
    }
    let (user_id, stored) = credential_of(state, &email).await?;
    state.limits.check(Limit::PasswordPerEmail, &email.key()).await?;
    let verified = match &stored {
        Some(hash) => crate::password::verify(state, hash, candidate.clone()).await?,
        // Unknown email or no password: the same work and the same answer as a wrong password.
        None => crate::password::verify_unknown(state, candidate.clone()).await?,
    };
    let (Some(user_id), Some(stored), true) = (user_id.clone(), stored, verified.ok) else {
        let e = invalid_credentials();
        record_failure(state, ctx, Grant::Password, Some(email.key()), user_id, &e, who).await;
        return Err(e);
    };
    if verified.needs_rehash {
        // An imported or outdated hash becomes today's argon2id; a failure (say, the hashing
        // queue is full) leaves the old one, which still verifies.
        if let Err(e) = crate::password::rehash(state, &user_id, &stored, candidate).await {
            tracing::warn!(code = e.code(), "rehashing a password failed; the old hash stays");
        }
    }
    if let Some(refused) = sso_gate(state, &email, Some(&user_id), AuthMethod::Password, Grant::Password).await? {
        return Ok(refused);
    }
    // An invitation accepted with the sign-in: its membership, and the sign-in lands in it.
    let organization = invited_organization(state, ctx, invitation_token, &email).await?;
    let user = queries::user(&state.pool, &user_id)
        .await?
        .ok_or_else(invalid_credentials)?;
    complete(state, ctx, user, AuthMethod::Password, Grant::Password, organization).await
}

/// The user's active memberships: (organization id, organization name, role slug).
async fn active_memberships(state: &AppState, user_id: &str) -> Result<Vec<(String, String, String)>, ApiError> {
    let filter = MembershipFilter {
        user_id: Some(user_id.to_string()),
        statuses: vec!["active".into()],
        ..Default::default()
    };
    let page = Page {
        limit: 100,
        before: None,
        after: None,
        order: Default::default(),
    };
    let list = queries::memberships(&state.pool, &filter, &page).await?;
    Ok(list
        .data
        .iter()
        .filter_map(|m| {
            let s = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
            let role = m.get("role").and_then(|r| r.get("slug")).and_then(Value::as_str)?;
            Some((
                s("organization_id")?,
                s("organization_name").unwrap_or_default(),
                role.to_string(),
            ))
        })
        .collect())
}

/// The role of the user in the organization, if an active member.
async fn role_in(state: &AppState, user_id: &str, organization_id: &str) -> Result<Option<String>, ApiError> {
    let row: Option<(Option<String>,)> = sqlx::query_as(
        "select body -> 'role' ->> 'slug' from organization_membership_view \
         where organization_id = $1 and user_id = $2 and status = 'active'",
    )
    .bind(organization_id)
    .bind(user_id)
    .fetch_optional(&state.pool)
    .await?;
    Ok(row.and_then(|r| r.0))
}

fn flow_error(code: &str, message: &str, fields: Value) -> Response {
    let mut body = json!({ "code": code, "message": message });
    if let (Some(b), Some(f)) = (body.as_object_mut(), fields.as_object()) {
        for (k, v) in f {
            b.insert(k.clone(), v.clone());
        }
    }
    (StatusCode::FORBIDDEN, Json(body)).into_response()
}

/// `sso_required` (WorkOS's flow error; the SDKs raise `SsoRequiredError`): the email is at a
/// verified domain of an organization whose policy requires SSO, so password and Magic Auth
/// sign-in stop here. The pending authentication names the user (if any) and the organization;
/// it continues only by SSO: every grant that continues a pending authentication of a password
/// or Magic Auth sign-in checks again.
async fn sso_gate(
    state: &AppState,
    email: &Email,
    user_id: Option<&str>,
    method: AuthMethod,
    grant: Grant,
) -> Result<Option<Step>, ApiError> {
    if !matches!(method, AuthMethod::Password | AuthMethod::MagicCode) {
        return Ok(None);
    }
    let Some((organization_id, connection_ids)) = crate::policy::sso_required_for(state, email).await? else {
        return Ok(None);
    };
    let token = match user_id {
        Some(u) => Some(
            sessions::pend(
                &state.pool,
                &Pending {
                    user_id: u.to_string(),
                    auth_method: method.as_str().to_string(),
                    grant_type: grant.as_str().to_string(),
                    email_verification_id: None,
                    organization_id: Some(organization_id.clone()),
                },
            )
            .await?,
        ),
        None => None,
    };
    Ok(Some(Step::SsoRequired {
        email: email.as_str().to_string(),
        organization_id,
        connection_ids,
        pending_token: token,
    }))
}

/// The user proved who they are: verify the email if required, pick the organization; what
/// is left is the session ([`Step::Proved`]).
pub(crate) async fn complete(
    state: &AppState,
    ctx: &RequestContext,
    user: Value,
    method: AuthMethod,
    grant: Grant,
    organization: Option<String>,
) -> Result<Step, ApiError> {
    let user_id = user.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
    let verified = user.get("email_verified").and_then(Value::as_bool).unwrap_or(false);
    let email = Email::parse("email", user.get("email").and_then(Value::as_str).unwrap_or_default())?;
    if let Some(refused) = sso_gate(state, &email, Some(&user_id), method, grant).await? {
        return Ok(refused);
    }
    if verified {
        // A verified email at an `auto` domain joins before the organization is picked.
        crate::jit::join_after(state, ctx, &user_id).await;
    }
    if state.auth.require_email_verification && !verified && method == AuthMethod::Password {
        // The code the user must enter, sent to them (WorkOS's default flow).
        let verification = crate::routes::codes::send_verification(state, ctx, &user_id, email).await?;
        let pending = Pending {
            user_id: user_id.clone(),
            auth_method: method.as_str().to_string(),
            grant_type: grant.as_str().to_string(),
            email_verification_id: Some(verification.id.clone()),
            organization_id: organization,
        };
        let token = sessions::pend(&state.pool, &pending).await?;
        return Ok(Step::EmailVerification {
            pending_token: token,
            email_verification_id: verification.id,
            user,
        });
    }
    let organization = match organization {
        Some(o) => Some(o),
        None => {
            let orgs = active_memberships(state, &user_id).await?;
            match orgs.as_slice() {
                [] => None,
                [(id, _, _)] => Some(id.clone()),
                many => {
                    let pending = Pending {
                        user_id: user_id.clone(),
                        auth_method: method.as_str().to_string(),
                        grant_type: grant.as_str().to_string(),
                        email_verification_id: None,
                        organization_id: None,
                    };
                    let token = sessions::pend(&state.pool, &pending).await?;
                    return Ok(Step::OrganizationSelection {
                        pending_token: token,
                        organizations: many.iter().map(|(id, name, _)| (id.clone(), name.clone())).collect(),
                        user,
                    });
                }
            }
        }
    };
    Ok(Step::Proved(Proof {
        user,
        method,
        grant,
        pending_grant: None,
        organization,
    }))
}

/// Starts the session (`SessionCreated`), its refresh token and its first access token.
/// `pending_grant`: the grant of the step a pending authentication continues.
#[allow(clippy::too_many_arguments, reason = "one sign-in's facts, passed once")]
async fn start_session(
    state: &AppState,
    ctx: &RequestContext,
    user: Value,
    method: AuthMethod,
    grant: Grant,
    pending_grant: Option<Grant>,
    organization: Option<String>,
    who: &EndUser,
) -> Result<Response, ApiError> {
    let user_id = user.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
    let role = match &organization {
        Some(o) => Some(role_in(state, &user_id, o).await?.ok_or_else(|| {
            ApiError::bad_request(
                "organization_membership_not_found",
                "The user is not a member of that organization.",
            )
        })?),
        None => None,
    };
    let now = Utc::now();
    let expires_at =
        now + chrono::Duration::from_std(state.auth.session_ttl).unwrap_or_else(|_| chrono::Duration::days(30));
    let session_id = new_id("session");
    let start = StartSession {
        user_id: user_id.clone(),
        email: user
            .get("email")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        organization_id: organization.clone(),
        auth_method: method,
        grant,
        ip_address: who.ip_address.clone(),
        user_agent: who.user_agent.clone(),
        device_id: who.device_id.clone(),
        expires_at,
        at: now,
    };
    // The attempt (`authentication.*_succeeded`) and the session it starts, in one append.
    let meta = ctx.metadata();
    let mut events = Vec::new();
    // After an organization selection or an authorization code, the credential was proved by
    // the step before it.
    let proved_by = match (grant, pending_grant) {
        (Grant::OrganizationSelection | Grant::AuthorizationCode, Some(g)) => g,
        _ => grant,
    };
    if proved_by.event_type().is_some() {
        let attempt = SucceededAttempt {
            grant: proved_by,
            email: start.email.clone(),
            user_id: user_id.clone(),
            session_id: session_id.clone(),
            ip_address: who.ip_address.clone(),
            user_agent: who.user_agent.clone(),
            at: now,
        };
        let decided = state
            .bus
            .decide::<Authentication>(
                &new_id("authn"),
                AuthenticationCommand::Succeed(attempt),
                &meta,
                Mode::New,
            )
            .await
            .map_err(|e| command_error(e, |e| ApiError::conflict(e.to_string())))?;
        events.extend(decided.new_events);
    }
    let decided = state
        .bus
        .decide::<Session>(&session_id, SessionCommand::Start(start), &meta, Mode::New)
        .await
        .map_err(|e| command_error(e, session_error))?;
    events.extend(decided.new_events);
    let at = state
        .bus
        .store()
        .append(events, SideRows::default())
        .await
        .map_err(|e| command_error(keyledger_store::commands::append_error(e), session_error))?;
    state.settle(&[Session::TYPE, Authentication::TYPE], at).await;
    let refresh_token = sessions::start(
        &state.pool,
        &state.secrets,
        &session_id,
        &user_id,
        organization.as_deref(),
        expires_at,
    )
    .await?;
    let access_token = state
        .tokens
        .sign(&user_id, &session_id, organization.as_deref().zip(role.as_deref()), &[])
        .await?;
    Ok(tokens_response(user, organization, access_token, refresh_token, method))
}

fn tokens_response(
    user: Value,
    organization: Option<String>,
    access_token: String,
    refresh_token: String,
    method: AuthMethod,
) -> Response {
    let mut body = json!({
        "user": user,
        "access_token": access_token,
        "refresh_token": refresh_token,
        "authentication_method": method.response_name(),
    });
    if let (Some(o), Some(b)) = (organization, body.as_object_mut()) {
        b.insert("organization_id".into(), json!(o));
    }
    (StatusCode::OK, Json(body)).into_response()
}

pub fn session_error(e: SessionError) -> ApiError {
    match e {
        SessionError::NotFound => ApiError::not_found("session"),
        SessionError::AlreadyExists => ApiError::conflict("the session already exists"),
        SessionError::Ended => invalid_grant("The session has ended."),
    }
}

/// Organization selection: the pending authentication taken (single use) for an organization
/// the user is an active member of.
pub(crate) async fn organization_selection(
    state: &AppState,
    token: &str,
    organization_id: &str,
) -> Result<Step, ApiError> {
    let pending = sessions::take_pending(&state.pool, token).await?.ok_or_else(|| {
        ApiError::bad_request(
            "invalid_pending_authentication_token",
            "The pending authentication token is invalid or expired.",
        )
    })?;
    if role_in(state, &pending.user_id, organization_id).await?.is_none() {
        return Err(ApiError::bad_request(
            "organization_membership_not_found",
            "The user is not a member of that organization.",
        ));
    }
    let user = queries::user(&state.pool, &pending.user_id)
        .await?
        .ok_or_else(|| ApiError::bad_request("invalid_pending_authentication_token", "The user no longer exists."))?;
    let method = AuthMethod::from_stored(&pending.auth_method);
    let pending_grant = Grant::from_stored(&pending.grant_type);
    let email = Email::parse("email", user.get("email").and_then(Value::as_str).unwrap_or_default())?;
    if let Some(refused) = sso_gate(state, &email, Some(&pending.user_id), method, pending_grant).await? {
        return Ok(refused);
    }
    Ok(Step::Proved(Proof {
        user,
        method,
        grant: Grant::OrganizationSelection,
        pending_grant: Some(pending_grant),
        organization: Some(organization_id.to_string()),
    }))
}

/// The answer to a refused one-time code on `authenticate` (WorkOS's codes).
fn code_refused(r: Refusal) -> ApiError {
    match r {
        Refusal::Incorrect => ApiError::bad_request("invalid_one_time_code", "The code is incorrect."),
        Refusal::Expired => ApiError::bad_request("one_time_code_expired", "The code has expired."),
        Refusal::Used => ApiError::bad_request("one_time_code_previously_used", "The code was already used."),
        Refusal::TooManyAttempts => ApiError::bad_request(
            "one_time_code_too_many_attempts",
            "Too many attempts: the code no longer works; request a new one.",
        ),
    }
}

/// The invitation a sign-in brings (`invitation_token`), accepted for `email`: the organization
/// the sign-in then lands in.
async fn invited_organization(
    state: &AppState,
    ctx: &RequestContext,
    invitation_token: Option<&str>,
    email: &Email,
) -> Result<Option<String>, ApiError> {
    match invitation_token.map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => Ok(crate::invitations::accept_for_sign_in(state, ctx, t, email)
            .await?
            .organization_id),
        None => Ok(None),
    }
}

/// Magic Auth: the newest code sent to the email. A code for an email nobody holds signs up
/// the user (`UserSignedUp`, email verified) under the id reserved when the code was issued.
pub(crate) async fn magic_auth(
    state: &AppState,
    ctx: &RequestContext,
    email: &str,
    code: &str,
    invitation_token: Option<&str>,
    who: &EndUser,
) -> Result<Step, ApiError> {
    let email = Email::parse("email", email)?;
    let (user_id, _) = credential_of(state, &email).await?;
    let outcome = match codes::latest_for_email(&state.pool, Purpose::MagicAuth, &email.key()).await? {
        Some(id) => codes::redeem(state, &id, code).await?,
        None => Err(Refusal::Incorrect),
    };
    let issued = match outcome {
        Ok(i) => i,
        Err(r) => {
            let e = code_refused(r);
            record_failure(state, ctx, Grant::MagicAuth, Some(email.key()), user_id, &e, who).await;
            return Err(e);
        }
    };
    // Before a new email is signed up: SSO is the only way in.
    if let Some(refused) = sso_gate(
        state,
        &email,
        user_id.as_deref(),
        AuthMethod::MagicCode,
        Grant::MagicAuth,
    )
    .await?
    {
        return Ok(refused);
    }
    let user = crate::routes::codes::signed_in_by_code(state, ctx, user_id, &issued, email.clone()).await?;
    // An invitation accepted with the sign-in, as with a password: the sign-in lands in it.
    let organization = invited_organization(state, ctx, invitation_token, &email).await?;
    complete(state, ctx, user, AuthMethod::MagicCode, Grant::MagicAuth, organization).await
}

/// Email verification: the code of the verification the pending sign-in sent; a wrong code
/// leaves the pending authentication usable for another try.
pub(crate) async fn email_verification(
    state: &AppState,
    ctx: &RequestContext,
    token: &str,
    code: &str,
    who: &EndUser,
) -> Result<Step, ApiError> {
    let invalid_pending = || {
        ApiError::bad_request(
            "invalid_pending_authentication_token",
            "The pending authentication token is invalid or expired.",
        )
    };
    let pending = sessions::peek_pending(&state.pool, token)
        .await?
        .ok_or_else(invalid_pending)?;
    let verification = match &pending.email_verification_id {
        Some(id) => Some(id.clone()),
        None => codes::latest_for_user(&state.pool, Purpose::EmailVerification, &pending.user_id).await?,
    };
    let outcome = match verification {
        Some(id) => codes::redeem(state, &id, code).await?,
        None => Err(Refusal::Incorrect),
    };
    if let Err(r) = outcome {
        let e = code_refused(r);
        let user = queries::user(&state.pool, &pending.user_id).await?;
        let email = user
            .as_ref()
            .and_then(|u| u.get("email"))
            .and_then(Value::as_str)
            .map(str::to_string);
        record_failure(
            state,
            ctx,
            Grant::EmailVerification,
            email,
            Some(pending.user_id.clone()),
            &e,
            who,
        )
        .await;
        return Err(e);
    }
    let pending = sessions::take_pending(&state.pool, token)
        .await?
        .ok_or_else(invalid_pending)?;
    let user =
        crate::routes::codes::mark_verified(state, ctx, &pending.user_id, crate::routes::codes::Proved::ByTheAccount)
            .await?;
    let method = AuthMethod::from_stored(&pending.auth_method);
    complete(
        state,
        ctx,
        user,
        method,
        Grant::EmailVerification,
        pending.organization_id,
    )
    .await
}

async fn refresh(
    state: &AppState,
    ctx: &RequestContext,
    b: &AuthenticateBody,
    _who: &EndUser,
) -> Result<Response, ApiError> {
    let presented = required("refresh_token", &b.refresh_token)?;
    let invalid = || invalid_grant("The refresh token is invalid, expired or revoked.");
    let token = RefreshToken::parse(presented.trim()).ok_or_else(invalid)?;
    let row = sessions::load(&state.pool, &token.session_id)
        .await?
        .ok_or_else(invalid)?;
    if !token.authentic(&state.secrets, &row.salt) {
        return Err(invalid());
    }
    let now = Utc::now();
    if !row.live(now) {
        return Err(invalid());
    }
    if let Some(org) = &b.organization_id {
        if row.organization_id.as_deref() != Some(org.as_str()) && role_in(state, &row.user_id, org).await?.is_none() {
            return Err(ApiError::bad_request(
                "organization_membership_not_found",
                "The user is not a member of that organization.",
            ));
        }
    }
    let switch_to = b
        .organization_id
        .clone()
        .filter(|o| row.organization_id.as_deref() != Some(o.as_str()));
    let (generation, organization) = if token.generation == row.generation {
        if sessions::rotate(&state.pool, &row.session_id, row.generation, switch_to.as_deref()).await? {
            (row.generation + 1, switch_to.clone().or(row.organization_id.clone()))
        } else {
            // Another refresh of this token won the race: it is now the previous generation.
            let again = sessions::load(&state.pool, &token.session_id)
                .await?
                .ok_or_else(invalid)?;
            if again.live(now) && sessions::in_grace(&again, token.generation, state.auth.refresh_grace, now) {
                (again.generation, again.organization_id.clone())
            } else {
                return Err(invalid());
            }
        }
    } else if sessions::in_grace(&row, token.generation, state.auth.refresh_grace, now) {
        (row.generation, row.organization_id.clone())
    } else if token.generation < row.generation {
        // A spent token after its grace window: the family may be stolen; end the session.
        sessions::revoke(&state.pool, &row.session_id).await?;
        let revoke = SessionCommand::Revoke {
            reason: RevokeReason::RefreshTokenReused,
            at: now,
        };
        if let Err(e) = state
            .execute::<Session>(ctx, &row.session_id, revoke, SideRows::default(), Mode::Retry)
            .await
        {
            tracing::warn!(error = %e, session = %row.session_id, "recording a refresh-token reuse revocation failed");
        }
        return Err(invalid());
    } else {
        // A generation from the future: not a token this server made.
        return Err(invalid());
    };
    if let Some(org) = &switch_to {
        if organization.as_deref() == Some(org.as_str()) {
            let switch = SessionCommand::SwitchOrganization {
                organization_id: org.clone(),
                at: now,
            };
            state
                .execute::<Session>(ctx, &row.session_id, switch, SideRows::default(), Mode::Retry)
                .await
                .map_err(|e| command_error(e, session_error))?;
        }
    }
    let user = queries::user(&state.pool, &row.user_id).await?.ok_or_else(invalid)?;
    let role = match &organization {
        Some(o) => role_in(state, &row.user_id, o).await?,
        None => None,
    };
    // A member who left the organization keeps the session but no organization claims.
    let org_claims = organization.as_deref().zip(role.as_deref());
    let access_token = state
        .tokens
        .sign(&row.user_id, &row.session_id, org_claims, &[])
        .await?;
    let refresh_token = RefreshToken::make(&state.secrets, &row.salt, &row.session_id, generation);
    let method = AuthMethod::from_stored(row.auth_method.as_deref().unwrap_or_default());
    Ok(tokens_response(
        user,
        org_claims.map(|(o, _)| o.to_string()),
        access_token,
        refresh_token,
        method,
    ))
}

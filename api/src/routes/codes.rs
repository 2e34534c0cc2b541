//! Magic Auth, email verification, password reset and email change (WorkOS's user management
//! codes): issuing a code (an event, a sealed row, an email when SMTP is configured), showing it
//! (`GET`, as WorkOS does), and redeeming it. The codes themselves live in `crate::codes`; this
//! module never stores or logs one.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use cqrs_es::Aggregate;
use keyledger_domain::one_time_code::{OneTimeCode, OneTimeCodeCommand, Purpose};
use keyledger_domain::session::RevokeReason;
use keyledger_domain::user::{SignUpMethod, SignUpUser, UpdateUser, User, UserCommand, UserError};
use keyledger_domain::values::Email;
use keyledger_domain::ClaimKind;
use keyledger_projections::queries;
use keyledger_store::append::SideRows;
use keyledger_store::commands::Mode;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::object;
use crate::codes::{self, Issued, Refusal, Request};
use crate::error::{command_error, ApiError};
use crate::extract::{AppJson, PathParam};
use crate::mail::Mail;
use crate::rate_limit::Limit;
use crate::schemas;
use crate::state::{AppState, RequestContext};

fn user_error(e: UserError) -> ApiError {
    match e {
        UserError::NotFound => ApiError::not_found("user"),
        UserError::AlreadyExists => ApiError::conflict("the user already exists"),
    }
}

/// The user holding a normalized email (the claim is the authority, not a projection).
pub(crate) async fn holder_of(state: &AppState, email: &Email) -> Result<Option<String>, ApiError> {
    let row: Option<(String,)> = sqlx::query_as("select aggregate_id from claim where kind = $1 and value = $2")
        .bind(ClaimKind::UserEmail.as_str())
        .bind(email.key())
        .fetch_optional(&state.pool)
        .await?;
    Ok(row.map(|r| r.0))
}

async fn user_doc(state: &AppState, id: &str) -> Result<Value, ApiError> {
    queries::user(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))
}

fn email_of(user: &Value) -> Result<Email, ApiError> {
    Ok(Email::parse(
        "email",
        user.get("email").and_then(Value::as_str).unwrap_or_default(),
    )?)
}

/// How an email was proved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proved {
    /// By a code the account asked for (email verification): the account's own password stays.
    ByTheAccount,
    /// By a sign-in that never used the password (Magic Auth, SSO): a password set while the
    /// email was unverified is removed (account pre-hijacking).
    WithoutThePassword,
}

/// Marks the user's email verified (a `UserUpdated`, none when it already is) and returns the user.
pub(crate) async fn mark_verified(
    state: &AppState,
    ctx: &RequestContext,
    user_id: &str,
    how: Proved,
) -> Result<Value, ApiError> {
    let update = UpdateUser {
        email_verified: Some(true),
        drop_unproved_password: how == Proved::WithoutThePassword,
        at: Utc::now(),
        ..Default::default()
    };
    // A user now verified at an `auto` domain joins it in the same append (`crate::jit`).
    crate::jit::update_user(state, ctx, user_id, update, SideRows::default(), |e| {
        command_error(e, user_error)
    })
    .await?;
    user_doc(state, user_id).await
}

/// The user a redeemed Magic Auth code signs in: the holder of the email (now verified), or a
/// new user signed up under the id the code reserved.
pub(crate) async fn signed_in_by_code(
    state: &AppState,
    ctx: &RequestContext,
    holder: Option<String>,
    issued: &Issued,
    email: Email,
) -> Result<Value, ApiError> {
    if let Some(id) = holder {
        return mark_verified(state, ctx, &id, Proved::WithoutThePassword).await;
    }
    // The email as it was given when the code was issued (the sign-in may spell it otherwise).
    let sign_up = UserCommand::SignUp(SignUpUser {
        email: Email::parse("email", &issued.email).unwrap_or_else(|_| email.clone()),
        first_name: None,
        last_name: None,
        email_verified: true,
        method: SignUpMethod::MagicAuth,
        at: Utc::now(),
    });
    match state
        .execute::<User>(ctx, &issued.user_id, sign_up, SideRows::default(), Mode::New)
        .await
    {
        Ok(_) => user_doc(state, &issued.user_id).await,
        // Signed up meanwhile (another code for the same email, or the API): sign that user in.
        Err(e) => match holder_of(state, &email).await? {
            Some(id) => mark_verified(state, ctx, &id, Proved::WithoutThePassword).await,
            None => Err(command_error(e, user_error)),
        },
    }
}

/// Issues an email verification for the user and sends it.
pub(crate) async fn send_verification(
    state: &AppState,
    ctx: &RequestContext,
    user_id: &str,
    email: Email,
) -> Result<Issued, ApiError> {
    let issued = codes::issue(
        state,
        ctx,
        Request {
            purpose: Purpose::EmailVerification,
            user_id: user_id.to_string(),
            email: email.clone(),
            new_user: false,
            new_email: None,
        },
    )
    .await?;
    state
        .mailer
        .send(
            email.as_str(),
            Mail::EmailVerification {
                code: issued.secret.clone(),
            },
        )
        .await;
    Ok(issued)
}

#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = CreateMagicAuth)]
pub struct MagicAuthBody {
    #[schema(format = Email, max_length = 254)]
    email: String,
    /// Accepted for the SDKs; the invitation is accepted when the code signs in with
    /// `invitation_token` on `POST /user_management/authenticate`.
    #[serde(default)]
    #[allow(dead_code, reason = "the sign-in, not the code, accepts the invitation")]
    invitation_token: Option<String>,
}

#[utoipa::path(post, path = "/user_management/magic_auth", tag = "user_management",
    operation_id = "create_magic_auth", summary = "Create a Magic Auth code (sent by email when SMTP is configured)",
    request_body = MagicAuthBody,
    responses((status = 201, description = "The Magic Auth code", body = schemas::MagicAuth),
        (status = 422, description = "Invalid email", body = schemas::ErrorBody),
        (status = 429, description = "Too many codes for this email", body = schemas::ErrorBody)))]
pub async fn create_magic_auth(
    State(state): State<AppState>,
    ctx: RequestContext,
    AppJson(b): AppJson<MagicAuthBody>,
) -> Result<Response, ApiError> {
    let email = Email::parse("email", &b.email)?;
    // A code would not sign this email in (`sso_required` on authenticate): none is sent.
    if let Some((organization_id, connection_ids)) = crate::policy::sso_required_for(&state, &email).await? {
        let description = "The organization of this email requires signing in with SSO.";
        return Ok(object(
            StatusCode::FORBIDDEN,
            json!({
                "code": "sso_required",
                "message": description,
                "error": "sso_required",
                "error_description": description,
                "email": email.as_str(),
                "connection_ids": connection_ids,
                "organization_id": organization_id,
                "pending_authentication_token": null,
            }),
        ));
    }
    let issued = send_magic_auth(&state, &ctx, email).await?;
    Ok(object(
        StatusCode::CREATED,
        issued.object(&state.auth.password_reset_url),
    ))
}

/// Issues a Magic Auth code for an email (rate limited per email) and mails it: the API's
/// create and the hosted pages' "email me a code". An email nobody holds reserves a user id
/// (the code signs that user up).
pub(crate) async fn send_magic_auth(
    state: &AppState,
    ctx: &RequestContext,
    email: Email,
) -> Result<codes::Issued, ApiError> {
    state.limits.check(Limit::CodesPerEmail, &email.key()).await?;
    let holder = holder_of(state, &email).await?;
    let new_user = holder.is_none();
    let user_id = holder.unwrap_or_else(|| keyledger_domain::ids::new_id("user"));
    let issued = codes::issue(
        state,
        ctx,
        Request {
            purpose: Purpose::MagicAuth,
            user_id,
            email: email.clone(),
            new_user,
            new_email: None,
        },
    )
    .await?;
    state
        .mailer
        .send(
            email.as_str(),
            Mail::MagicAuth {
                code: issued.secret.clone(),
            },
        )
        .await;
    Ok(issued)
}

async fn get_code(state: &AppState, purpose: Purpose, id: &str, what: &str) -> Result<Response, ApiError> {
    let issued = codes::get(state, purpose, id)
        .await?
        .ok_or_else(|| ApiError::not_found(what))?;
    Ok(object(StatusCode::OK, issued.object(&state.auth.password_reset_url)))
}

#[utoipa::path(get, path = "/user_management/magic_auth/{id}", tag = "user_management",
    operation_id = "get_magic_auth", summary = "Get a Magic Auth code",
    params(("id" = String, Path, description = "The code's id (`magic_auth_...`)")),
    responses((status = 200, description = "The Magic Auth code", body = schemas::MagicAuth),
        (status = 404, description = "No such code", body = schemas::ErrorBody)))]
pub async fn get_magic_auth(State(state): State<AppState>, PathParam(id): PathParam) -> Result<Response, ApiError> {
    get_code(&state, Purpose::MagicAuth, &id, "magic auth").await
}

#[utoipa::path(get, path = "/user_management/email_verification/{id}", tag = "user_management",
    operation_id = "get_email_verification", summary = "Get an email verification code",
    params(("id" = String, Path, description = "The code's id (`email_verification_...`)")),
    responses((status = 200, description = "The email verification", body = schemas::EmailVerification),
        (status = 404, description = "No such code", body = schemas::ErrorBody)))]
pub async fn get_email_verification(
    State(state): State<AppState>,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    get_code(&state, Purpose::EmailVerification, &id, "email verification").await
}

#[utoipa::path(post, path = "/user_management/users/{id}/email_verification/send", tag = "user_management",
    operation_id = "send_verification_email", summary = "Send an email verification code",
    params(("id" = String, Path, description = "The user's id")),
    responses((status = 200, description = "The user", body = schemas::UserResponse),
        (status = 400, description = "The email is already verified", body = schemas::ErrorBody),
        (status = 404, description = "No such user", body = schemas::ErrorBody),
        (status = 429, description = "Too many codes for this email", body = schemas::ErrorBody)))]
pub async fn send_email_verification(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let user = user_doc(&state, &id).await?;
    if user.get("email_verified").and_then(Value::as_bool) == Some(true) {
        return Err(ApiError::bad_request(
            "email_already_verified",
            "The user's email is already verified.",
        ));
    }
    let email = email_of(&user)?;
    state.limits.check(Limit::CodesPerEmail, &email.key()).await?;
    send_verification(&state, &ctx, &id, email).await?;
    Ok(object(StatusCode::OK, json!({ "user": user })))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ConfirmCode)]
pub struct CodeBody {
    /// The one-time code the user received.
    #[schema(max_length = 64)]
    code: String,
}

fn code_field(code: &str) -> Result<String, ApiError> {
    let c = code.trim();
    if c.is_empty() || c.len() > 64 {
        return Err(ApiError::invalid(
            "code",
            "invalid_code",
            "code must be the code the user received",
        ));
    }
    Ok(c.to_string())
}

#[utoipa::path(post, path = "/user_management/users/{id}/email_verification/confirm", tag = "user_management",
    operation_id = "verify_email", summary = "Verify an email with its code",
    params(("id" = String, Path, description = "The user's id")), request_body = CodeBody,
    responses((status = 200, description = "The user, email verified", body = schemas::UserResponse),
        (status = 400, description = "Wrong, expired or used code", body = schemas::ErrorBody),
        (status = 404, description = "No such user", body = schemas::ErrorBody),
        (status = 422, description = "Invalid request", body = schemas::ErrorBody),
        (status = 429, description = "Too many attempts", body = schemas::ErrorBody)))]
pub async fn confirm_email_verification(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParam(id): PathParam,
    AppJson(b): AppJson<CodeBody>,
) -> Result<Response, ApiError> {
    let code = code_field(&b.code)?;
    let user = user_doc(&state, &id).await?;
    if user.get("email_verified").and_then(Value::as_bool) == Some(true) {
        return Err(ApiError::bad_request(
            "email_previously_verified",
            "The user's email is already verified.",
        ));
    }
    let outcome = match codes::latest_for_user(&state.pool, Purpose::EmailVerification, &id).await? {
        Some(code_id) => codes::redeem(&state, &code_id, &code).await?,
        None => Err(Refusal::Incorrect),
    };
    if let Err(r) = outcome {
        return Err(match r {
            Refusal::Incorrect => ApiError::bad_request("email_verification_code_incorrect", "The code is incorrect."),
            Refusal::Expired => ApiError::bad_request("email_verification_code_expired", "The code has expired."),
            Refusal::Used => {
                ApiError::bad_request("email_verification_code_previously_used", "The code was already used.")
            }
            Refusal::TooManyAttempts => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "email_verification_too_many_attempts",
                "Too many attempts: the code no longer works; send a new one.",
            ),
        });
    }
    let user = mark_verified(&state, &ctx, &id, Proved::ByTheAccount).await?;
    Ok(object(StatusCode::OK, json!({ "user": user })))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreatePasswordReset)]
pub struct PasswordResetBody {
    #[schema(format = Email, max_length = 254)]
    email: String,
}

#[utoipa::path(post, path = "/user_management/password_reset", tag = "user_management",
    operation_id = "create_password_reset", summary = "Create a password reset token (sent by email when SMTP is configured)",
    request_body = PasswordResetBody,
    responses((status = 201, description = "The password reset", body = schemas::PasswordReset),
        (status = 404, description = "No user has this email", body = schemas::ErrorBody),
        (status = 422, description = "Invalid email", body = schemas::ErrorBody),
        (status = 429, description = "Too many codes for this email", body = schemas::ErrorBody)))]
pub async fn create_password_reset(
    State(state): State<AppState>,
    ctx: RequestContext,
    AppJson(b): AppJson<PasswordResetBody>,
) -> Result<Response, ApiError> {
    let email = Email::parse("email", &b.email)?;
    // Before the lookup: asking about many emails costs the same whether they exist or not.
    state.limits.check(Limit::CodesPerEmail, &email.key()).await?;
    let user_id = holder_of(&state, &email)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    let user = user_doc(&state, &user_id).await?;
    let issued = codes::issue(
        &state,
        &ctx,
        Request {
            purpose: Purpose::PasswordReset,
            user_id,
            email: email_of(&user)?,
            new_user: false,
            new_email: None,
        },
    )
    .await?;
    let body = issued.object(&state.auth.password_reset_url);
    let url = codes::reset_link(&state.auth.password_reset_url, &issued.secret);
    state
        .mailer
        .send(
            &issued.email,
            Mail::PasswordReset {
                password_reset_url: url,
            },
        )
        .await;
    Ok(object(StatusCode::CREATED, body))
}

#[utoipa::path(get, path = "/user_management/password_reset/{id}", tag = "user_management",
    operation_id = "get_password_reset", summary = "Get a password reset token",
    params(("id" = String, Path, description = "The reset's id (`password_reset_...`)")),
    responses((status = 200, description = "The password reset", body = schemas::PasswordReset),
        (status = 404, description = "No such reset", body = schemas::ErrorBody)))]
pub async fn get_password_reset(State(state): State<AppState>, PathParam(id): PathParam) -> Result<Response, ApiError> {
    get_code(&state, Purpose::PasswordReset, &id, "password reset").await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ConfirmPasswordReset)]
pub struct ConfirmResetBody {
    /// The token from the reset link.
    token: String,
    #[schema(min_length = 8, max_length = 1024)]
    new_password: String,
}

fn reset_refused(r: Refusal) -> ApiError {
    let (code, message) = match r {
        Refusal::Incorrect | Refusal::TooManyAttempts => ("password_reset_token_invalid", "The token is invalid."),
        Refusal::Expired => ("password_reset_token_expired", "The token has expired."),
        Refusal::Used => ("password_reset_token_previously_used", "The token was already used."),
    };
    ApiError::field_error(StatusCode::BAD_REQUEST, "password_reset_error", "token", code, message)
}

#[utoipa::path(post, path = "/user_management/password_reset/confirm", tag = "user_management",
    operation_id = "confirm_password_reset", summary = "Reset a password with its token",
    request_body = ConfirmResetBody,
    responses((status = 200, description = "The user", body = schemas::UserResponse),
        (status = 400, description = "Invalid, expired or used token", body = schemas::ErrorBody),
        (status = 422, description = "Invalid password", body = schemas::ErrorBody)))]
pub async fn confirm_password_reset(
    State(state): State<AppState>,
    ctx: RequestContext,
    AppJson(b): AppJson<ConfirmResetBody>,
) -> Result<Response, ApiError> {
    crate::password::validate("new_password", &b.new_password)?;
    // Hash before the token is spent: a full hashing queue (503) leaves the token usable.
    let hash = crate::password::hash(&state, b.new_password).await?;
    let issued = codes::redeem_reset_token(&state, b.token.trim())
        .await?
        .map_err(reset_refused)?;
    let now = Utc::now();
    let meta = ctx.metadata();
    // The new password, the email it proves and the reset's success, in one append.
    let update = UpdateUser {
        email_verified: Some(true),
        password_changed: true,
        at: now,
        ..Default::default()
    };
    let mut events = state
        .bus
        .decide::<User>(&issued.user_id, UserCommand::Update(update), &meta, Mode::Once)
        .await
        .map_err(|e| command_error(e, user_error))?
        .new_events;
    events.extend(
        state
            .bus
            .decide::<OneTimeCode>(
                &issued.id,
                OneTimeCodeCommand::SucceedPasswordReset { at: now },
                &meta,
                Mode::Once,
            )
            .await
            .map_err(|e| command_error(e, codes::code_error))?
            .new_events,
    );
    let side = SideRows {
        credential: Some((issued.user_id.clone(), hash)),
        ..SideRows::default()
    };
    let at = state
        .bus
        .store()
        .append(events, side)
        .await
        .map_err(|e| command_error(keyledger_store::commands::append_error(e), user_error))?;
    state.settle(&[User::TYPE, OneTimeCode::TYPE], at).await;
    // A reset is what a user does when the old password may be known to someone else: the
    // sessions signed in with it end (each its own `SessionRevoked`, reason `password_reset`).
    let live: Vec<(String,)> =
        sqlx::query_as("select session_id from session_token where user_id = $1 and revoked_at is null")
            .bind(&issued.user_id)
            .fetch_all(&state.pool)
            .await?;
    for (session_id,) in live {
        if let Err(e) = super::sessions::end(&state, &ctx, &session_id, RevokeReason::PasswordReset).await {
            tracing::warn!(code = e.code(), session = %session_id, "ending a session after a password reset failed");
        }
    }
    let user = user_doc(&state, &issued.user_id).await?;
    Ok(object(StatusCode::OK, json!({ "user": user })))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SendEmailChange)]
pub struct EmailChangeBody {
    #[schema(format = Email, max_length = 254)]
    new_email: String,
}

fn email_not_available() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "email_not_available",
        "Another user has this email.",
    )
}

#[utoipa::path(post, path = "/user_management/users/{id}/email_change/send", tag = "user_management",
    operation_id = "send_email_change", summary = "Send a code that changes the user's email",
    params(("id" = String, Path, description = "The user's id")), request_body = EmailChangeBody,
    responses((status = 200, description = "The email change", body = schemas::EmailChange),
        (status = 404, description = "No such user", body = schemas::ErrorBody),
        (status = 409, description = "The email is the user's already, or another user's", body = schemas::ErrorBody),
        (status = 422, description = "Invalid email", body = schemas::ErrorBody),
        (status = 429, description = "Too many codes for this email", body = schemas::ErrorBody)))]
pub async fn send_email_change(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParam(id): PathParam,
    AppJson(b): AppJson<EmailChangeBody>,
) -> Result<Response, ApiError> {
    let new_email = Email::parse("new_email", &b.new_email)?;
    let user = user_doc(&state, &id).await?;
    let email = email_of(&user)?;
    if email.key() == new_email.key() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "email_change_not_needed",
            "The user already has this email.",
        ));
    }
    if holder_of(&state, &new_email).await?.is_some() {
        return Err(email_not_available());
    }
    state.limits.check(Limit::CodesPerEmail, &new_email.key()).await?;
    let issued = codes::issue(
        &state,
        &ctx,
        Request {
            purpose: Purpose::EmailChange,
            user_id: id,
            email,
            new_user: false,
            new_email: Some(new_email.clone()),
        },
    )
    .await?;
    state
        .mailer
        .send(
            new_email.as_str(),
            Mail::EmailChange {
                code: issued.secret.clone(),
                new_email: new_email.as_str().to_string(),
            },
        )
        .await;
    Ok(object(
        StatusCode::OK,
        json!({
            "object": "email_change",
            "user": user,
            "new_email": new_email.as_str(),
            "expires_at": issued.object("")["expires_at"],
            "created_at": issued.object("")["created_at"],
        }),
    ))
}

#[utoipa::path(post, path = "/user_management/users/{id}/email_change/confirm", tag = "user_management",
    operation_id = "confirm_email_change", summary = "Confirm an email change with its code",
    params(("id" = String, Path, description = "The user's id")), request_body = CodeBody,
    responses((status = 200, description = "The user with the new email", body = schemas::EmailChangeConfirmation),
        (status = 400, description = "Wrong or expired code", body = schemas::ErrorBody),
        (status = 404, description = "No such user", body = schemas::ErrorBody),
        (status = 409, description = "No pending change, code used, or email taken meanwhile", body = schemas::ErrorBody),
        (status = 422, description = "Invalid request", body = schemas::ErrorBody),
        (status = 429, description = "Too many attempts", body = schemas::ErrorBody)))]
pub async fn confirm_email_change(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParam(id): PathParam,
    AppJson(b): AppJson<CodeBody>,
) -> Result<Response, ApiError> {
    let code = code_field(&b.code)?;
    user_doc(&state, &id).await?;
    let code_id = codes::latest_for_user(&state.pool, Purpose::EmailChange, &id)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "no_pending_email_change",
                "The user has no pending email change.",
            )
        })?;
    let issued = codes::redeem(&state, &code_id, &code).await?.map_err(|r| match r {
        Refusal::Incorrect => ApiError::bad_request("email_change_code_incorrect", "The code is incorrect."),
        Refusal::Expired => ApiError::bad_request("email_change_code_expired", "The code has expired."),
        Refusal::Used => ApiError::new(
            StatusCode::CONFLICT,
            "email_change_code_previously_used",
            "The code was already used.",
        ),
        Refusal::TooManyAttempts => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "email_change_too_many_attempts",
            "Too many attempts: the code no longer works; send a new one.",
        ),
    })?;
    let new_email = Email::parse("new_email", issued.new_email.as_deref().unwrap_or_default())?;
    // The code proved the new address: it moves there verified.
    let update = UpdateUser {
        email: Some(new_email),
        email_verified: Some(true),
        at: Utc::now(),
        ..Default::default()
    };
    // Leaving a domain deactivates what it alone gave, in the same append (`crate::jit`).
    crate::jit::update_user(&state, &ctx, &id, update, SideRows::default(), |e| match e {
        keyledger_store::commands::CommandError::Claim(_) => email_not_available(),
        e => command_error(e, user_error),
    })
    .await?;
    let user = user_doc(&state, &id).await?;
    Ok(object(
        StatusCode::OK,
        json!({ "object": "email_change_confirmation", "user": user }),
    ))
}

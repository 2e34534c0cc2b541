//! One-time codes and tokens beside the log: issuing one (its event, then its sealed row in
//! `one_time_code`), reading one back for `GET`, and checking a presented one.
//!
//! The secret is never in an event, and never stored in the clear: sealed with the master key
//! (bound to the row's id), compared in constant time. Every check first reserves one of the
//! code's attempts in one conditional UPDATE, so concurrent guesses never get more than
//! [`MAX_ATTEMPTS`] between them; a code is consumed by another conditional UPDATE, so it
//! works once even when two requests race with it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use keyledger_domain::ids::new_id;
use keyledger_domain::one_time_code::{IssueCode, OneTimeCode, OneTimeCodeCommand, OneTimeCodeError, Purpose};
use keyledger_domain::values::Email;
use keyledger_store::append::SideRows;
use keyledger_store::commands::Mode;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::error::{command_error, ApiError};
use crate::secrets::{constant_time_eq, MasterKey};
use crate::state::{AppState, RequestContext};

/// Checks a code survives (right or wrong); the last wrong one kills it.
pub const MAX_ATTEMPTS: i32 = 5;

const TOKEN_LABEL: &[u8] = b"keyledger password reset token v1";

/// How long a code or token lives. Magic Auth: 10 minutes (WorkOS). Email verification and
/// email change codes: as long, since the pending sign-in they unlock lives 10 minutes too.
/// Password reset tokens: 15 minutes.
pub fn ttl(purpose: Purpose) -> Duration {
    match purpose {
        Purpose::PasswordReset => Duration::from_secs(15 * 60),
        Purpose::MagicAuth | Purpose::EmailVerification | Purpose::EmailChange => Duration::from_secs(10 * 60),
    }
}

/// An issued code or token with its secret, as `GET` shows it.
#[derive(Clone)]
pub struct Issued {
    pub id: String,
    pub purpose: Purpose,
    pub user_id: String,
    pub email: String,
    pub new_email: Option<String>,
    pub secret: String,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("id", &self.id)
            .field("purpose", &self.purpose)
            .finish()
    }
}

fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Issued {
    /// The WorkOS object: `magic_auth` and `email_verification` (with `code`), `password_reset`
    /// (with `password_reset_token` and `password_reset_url`).
    pub fn object(&self, password_reset_url: &str) -> Value {
        let mut v = json!({
            "object": self.purpose.as_str(),
            "id": self.id,
            "user_id": self.user_id,
            "email": self.email,
            "expires_at": ts(&self.expires_at),
            "created_at": ts(&self.created_at),
        });
        if let Some(o) = v.as_object_mut() {
            match self.purpose {
                Purpose::PasswordReset => {
                    o.insert("password_reset_token".into(), json!(self.secret));
                    o.insert(
                        "password_reset_url".into(),
                        json!(reset_link(password_reset_url, &self.secret)),
                    );
                }
                _ => {
                    o.insert("code".into(), json!(self.secret));
                    o.insert("updated_at".into(), json!(ts(&self.created_at)));
                }
            }
        }
        v
    }
}

/// The link of a reset token: `<base>?token=<token>` (or `&token=` when the base has a query).
pub fn reset_link(base: &str, token: &str) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}token={token}")
}

fn secret_failure(e: &crate::secrets::SecretError) -> ApiError {
    tracing::error!(error = %e, "drawing or sealing a one-time code failed");
    ApiError::internal()
}

fn token_mac(key: &MasterKey, token: &str) -> Vec<u8> {
    key.hmac(TOKEN_LABEL, token.as_bytes()).to_vec()
}

pub fn code_error(e: OneTimeCodeError) -> ApiError {
    match e {
        OneTimeCodeError::NotFound | OneTimeCodeError::NotAPasswordReset => ApiError::not_found("password reset"),
        OneTimeCodeError::AlreadyExists | OneTimeCodeError::AlreadySucceeded => ApiError::conflict(e.to_string()),
        OneTimeCodeError::MissingNewEmail => ApiError::invalid("new_email", "required", "new_email is required"),
    }
}

/// What a code is issued for.
pub struct Request {
    pub purpose: Purpose,
    pub user_id: String,
    pub email: Email,
    pub new_user: bool,
    pub new_email: Option<Email>,
}

/// Issues a code: its event (`…Created`), then its sealed row. A row that fails to be written
/// after its event leaves a code nobody can use (the request fails): never a usable code the
/// log does not know.
pub async fn issue(state: &AppState, ctx: &RequestContext, r: Request) -> Result<Issued, ApiError> {
    let secret = match r.purpose {
        Purpose::PasswordReset => crate::secrets::random_token(32),
        _ => crate::secrets::random_digits(6),
    }
    .map_err(|e| secret_failure(&e))?;
    let id = new_id(r.purpose.as_str());
    let now = Utc::now();
    let expires_at = now + chrono::Duration::from_std(ttl(r.purpose)).unwrap_or_else(|_| chrono::Duration::minutes(10));
    let cmd = OneTimeCodeCommand::Issue(IssueCode {
        purpose: r.purpose,
        user_id: r.user_id.clone(),
        email: r.email.clone(),
        new_user: r.new_user,
        new_email: r.new_email.clone(),
        expires_at,
        at: now,
    });
    state
        .execute::<OneTimeCode>(ctx, &id, cmd, SideRows::default(), Mode::New)
        .await
        .map_err(|e| command_error(e, code_error))?;
    let sealed = state
        .secrets
        .seal(id.as_bytes(), secret.as_bytes())
        .map_err(|e| secret_failure(&e))?;
    let mac = (r.purpose == Purpose::PasswordReset).then(|| token_mac(&state.secrets, &secret));
    sqlx::query(
        "insert into one_time_code (id, purpose, user_id, email, email_key, new_email, sealed, token_mac, expires_at, \
         created_at) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&id)
    .bind(r.purpose.as_str())
    .bind(&r.user_id)
    .bind(r.email.as_str())
    .bind(r.email.key())
    .bind(r.new_email.as_ref().map(|e| e.as_str().to_string()))
    .bind(sealed)
    .bind(mac)
    .bind(expires_at)
    .bind(now)
    .execute(&state.pool)
    .await?;
    Ok(Issued {
        id,
        purpose: r.purpose,
        user_id: r.user_id,
        email: r.email.as_str().to_string(),
        new_email: r.new_email.map(|e| e.as_str().to_string()),
        secret,
        expires_at,
        created_at: now,
    })
}

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    purpose: String,
    user_id: String,
    email: String,
    new_email: Option<String>,
    sealed: Vec<u8>,
    attempts: i32,
    expires_at: DateTime<Utc>,
    used_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, purpose, user_id, email, new_email, sealed, attempts, expires_at, used_at, created_at";

impl Row {
    fn open(self, key: &MasterKey) -> Result<Issued, ApiError> {
        let plain = key
            .open(self.id.as_bytes(), &self.sealed)
            .map_err(|e| secret_failure(&e))?;
        let secret = String::from_utf8(plain).map_err(|_| ApiError::internal())?;
        Ok(Issued {
            purpose: Purpose::parse(&self.purpose).ok_or_else(ApiError::internal)?,
            id: self.id,
            user_id: self.user_id,
            email: self.email,
            new_email: self.new_email,
            secret,
            expires_at: self.expires_at,
            created_at: self.created_at,
        })
    }
}

/// The code `id` of `purpose`, with its secret; `None` when there is none.
pub async fn get(state: &AppState, purpose: Purpose, id: &str) -> Result<Option<Issued>, ApiError> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "select {COLUMNS} from one_time_code where id = $1 and purpose = $2"
    ))
    .bind(id)
    .bind(purpose.as_str())
    .fetch_optional(&state.pool)
    .await?;
    row.map(|r| r.open(&state.secrets)).transpose()
}

/// The newest code of `purpose` for a normalized email (Magic Auth): a newer code replaces
/// the older ones.
pub async fn latest_for_email(pool: &PgPool, purpose: Purpose, email_key: &str) -> Result<Option<String>, ApiError> {
    let row: Option<(String,)> = sqlx::query_as(
        "select id from one_time_code where purpose = $1 and email_key = $2 order by created_at desc, id desc limit 1",
    )
    .bind(purpose.as_str())
    .bind(email_key)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| r.0))
}

/// The newest code of `purpose` for a user (email verification, email change).
pub async fn latest_for_user(pool: &PgPool, purpose: Purpose, user_id: &str) -> Result<Option<String>, ApiError> {
    let row: Option<(String,)> = sqlx::query_as(
        "select id from one_time_code where purpose = $1 and user_id = $2 order by created_at desc, id desc limit 1",
    )
    .bind(purpose.as_str())
    .bind(user_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| r.0))
}

/// Why a presented code was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not the code (or no code at all).
    Incorrect,
    /// The attempts are spent: the code is dead.
    TooManyAttempts,
    Expired,
    /// The code already worked once.
    Used,
}

/// Checks `presented` against code `id` and, when it is right, live and unused, consumes it.
pub async fn redeem(state: &AppState, id: &str, presented: &str) -> Result<Result<Issued, Refusal>, ApiError> {
    // Reserve an attempt first: a check that found no attempt left compares nothing.
    let row: Option<Row> = sqlx::query_as(&format!(
        "update one_time_code set attempts = attempts + 1 where id = $1 and attempts < $2 returning {COLUMNS}"
    ))
    .bind(id)
    .bind(MAX_ATTEMPTS)
    .fetch_optional(&state.pool)
    .await?;
    let Some(row) = row else {
        let exists: Option<(i32,)> = sqlx::query_as("select attempts from one_time_code where id = $1")
            .bind(id)
            .fetch_optional(&state.pool)
            .await?;
        return Ok(Err(if exists.is_some() {
            Refusal::TooManyAttempts
        } else {
            Refusal::Incorrect
        }));
    };
    let (attempts, used_at) = (row.attempts, row.used_at);
    let issued = row.open(&state.secrets)?;
    if !constant_time_eq(issued.secret.as_bytes(), presented.trim().as_bytes()) {
        return Ok(Err(if attempts >= MAX_ATTEMPTS {
            Refusal::TooManyAttempts
        } else {
            Refusal::Incorrect
        }));
    }
    if used_at.is_some() {
        return Ok(Err(Refusal::Used));
    }
    if issued.expires_at <= Utc::now() {
        return Ok(Err(Refusal::Expired));
    }
    if !still_addressed(state, &issued).await? {
        return Ok(Err(Refusal::Incorrect));
    }
    Ok(if consume(&state.pool, id).await? {
        Ok(issued)
    } else {
        Err(Refusal::Used)
    })
}

/// A code proves the address it was sent to, nothing else: one sent to an address its user has
/// since left (an email change) proves nothing about the user's address now, and verifying that
/// with it would hand out what a verified address gives (`crate::jit`). An email change's code
/// proves the new address, which it names itself.
async fn still_addressed(state: &AppState, issued: &Issued) -> Result<bool, ApiError> {
    // Magic Auth codes stand for an address, not a user (the user may not exist yet): they
    // prove whoever holds that address.
    if !matches!(issued.purpose, Purpose::EmailVerification | Purpose::PasswordReset) {
        return Ok(true);
    }
    let (user, _) = state
        .bus
        .load::<keyledger_domain::user::User>(&issued.user_id)
        .await
        .map_err(|e| command_error(e, |_| ApiError::not_found("user")))?;
    Ok(user.exists()
        && user
            .email
            .as_ref()
            .is_some_and(|e| e.key() == issued.email.to_lowercase()))
}

/// Marks code `id` used; false when another request used it first.
async fn consume(pool: &PgPool, id: &str) -> Result<bool, ApiError> {
    let done = sqlx::query("update one_time_code set used_at = now() where id = $1 and used_at is null")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Redeems a password reset token (found by its MAC; a token carries no id). No attempt
/// counting: a token is 256 random bits.
pub async fn redeem_reset_token(state: &AppState, token: &str) -> Result<Result<Issued, Refusal>, ApiError> {
    if token.is_empty() || token.len() > 128 {
        return Ok(Err(Refusal::Incorrect));
    }
    let row: Option<Row> = sqlx::query_as(&format!(
        "select {COLUMNS} from one_time_code where token_mac = $1 and purpose = 'password_reset'"
    ))
    .bind(token_mac(&state.secrets, token))
    .fetch_optional(&state.pool)
    .await?;
    let Some(row) = row else {
        return Ok(Err(Refusal::Incorrect));
    };
    let used_at = row.used_at;
    let issued = row.open(&state.secrets)?;
    if !constant_time_eq(issued.secret.as_bytes(), token.as_bytes()) {
        return Ok(Err(Refusal::Incorrect));
    }
    if used_at.is_some() {
        return Ok(Err(Refusal::Used));
    }
    if issued.expires_at <= Utc::now() {
        return Ok(Err(Refusal::Expired));
    }
    if !still_addressed(state, &issued).await? {
        return Ok(Err(Refusal::Incorrect));
    }
    Ok(if consume(&state.pool, &issued.id).await? {
        Ok(issued)
    } else {
        Err(Refusal::Used)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_links_carry_the_token_as_a_query_parameter() {
        assert_eq!(
            reset_link("https://app.example/reset", "t0k"),
            "https://app.example/reset?token=t0k"
        );
        assert_eq!(
            reset_link("https://app.example/reset?lang=en", "t0k"),
            "https://app.example/reset?lang=en&token=t0k"
        );
    }

    #[test]
    fn the_debug_form_of_an_issued_code_hides_the_secret() {
        let i = Issued {
            id: "magic_auth_1".into(),
            purpose: Purpose::MagicAuth,
            user_id: "user_1".into(),
            email: "ann@example.com".into(),
            new_email: None,
            secret: "123456".into(),
            expires_at: Utc::now(),
            created_at: Utc::now(),
        };
        assert!(!format!("{i:?}").contains("123456"));
    }
}

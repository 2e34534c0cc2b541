//! Sessions beside the log: refresh tokens and pending authentications.
//!
//! A session's life (created, organization switched, revoked) is in the log (aggregate
//! `Session`); its refresh token is not. Each refresh rotates the token, and an event per
//! refresh would put a write of the log, its projections and its subscribers on the hottest path
//! of every signed-in client for nothing an audit needs (docs/ARCHITECTURE.md, "Sessions and
//! tokens"). `session_token` holds, per session, the generation of the current token; a token is
//! `<session id>.<generation>.<MAC>` where the MAC (HMAC-SHA256 under a key derived from the
//! master key) covers the session id, the generation and a per-session salt. So:
//! - nothing that could be replayed is stored (neither the token nor its hash);
//! - a token of an older generation is recognised as *spent* (its MAC is valid), which is what
//!   reuse detection needs, without a row per spent token;
//! - a forged or mangled token (MAC invalid) is refused without touching the session.
//!
//! Rotation is one conditional UPDATE: concurrent refreshes of one token race on
//! `generation = presented`, one wins, and the others — within the grace window — get the same
//! successor (recomputed, never stored), so browsers with several tabs do not log themselves
//! out. A spent token presented after the grace window revokes the whole session.

use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::error::ApiError;
use crate::secrets::token_hash;
use crate::secrets::MasterKey;

const MAC_LABEL: &[u8] = b"keyledger refresh token v1";

/// The parts of a refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    pub session_id: String,
    pub generation: i64,
    mac: Vec<u8>,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

fn mac_input(salt: &[u8], session_id: &str, generation: i64) -> Vec<u8> {
    let mut m = Vec::with_capacity(salt.len() + session_id.len() + 24);
    m.extend_from_slice(salt);
    m.push(0);
    m.extend_from_slice(session_id.as_bytes());
    m.push(0);
    m.extend_from_slice(generation.to_string().as_bytes());
    m
}

impl RefreshToken {
    /// The token of `generation` of a session.
    pub fn make(key: &MasterKey, salt: &[u8], session_id: &str, generation: i64) -> String {
        let mac = key.hmac(MAC_LABEL, &mac_input(salt, session_id, generation));
        format!("{session_id}.{generation}.{}", b64().encode(mac))
    }

    /// Splits a presented token; `None` when it is not of the form at all.
    pub fn parse(token: &str) -> Option<Self> {
        if token.len() > 256 {
            return None;
        }
        let mut parts = token.split('.');
        let (session_id, generation, mac) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || !keyledger_domain::ids::has_prefix(session_id, "session") {
            return None;
        }
        let generation: i64 = generation.parse().ok().filter(|g| *g >= 0)?;
        let mac = b64().decode(mac).ok()?;
        Some(Self {
            session_id: session_id.to_string(),
            generation,
            mac,
        })
    }

    /// True when the MAC is this session's for this generation (constant time).
    pub fn authentic(&self, key: &MasterKey, salt: &[u8]) -> bool {
        let want = key.hmac(MAC_LABEL, &mac_input(salt, &self.session_id, self.generation));
        crate::secrets::constant_time_eq(&want, &self.mac)
    }
}

/// A session's token row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenRow {
    pub session_id: String,
    pub user_id: String,
    pub organization_id: Option<String>,
    pub salt: Vec<u8>,
    pub generation: i64,
    pub rotated_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// The session's status in the `sessions` projection (`None` while it lags).
    pub status: Option<String>,
    /// The session's `auth_method` there.
    pub auth_method: Option<String>,
}

impl TokenRow {
    /// Usable: neither revoked (here or in the log) nor expired.
    pub fn live(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at > now && self.status.as_deref().is_none_or(|s| s == "active")
    }
}

fn secret_failure(e: &crate::secrets::SecretError) -> ApiError {
    tracing::error!(error = %e, "drawing a random secret failed");
    ApiError::internal()
}

/// Stores a new session's token row and returns its first refresh token.
pub async fn start(
    pool: &PgPool,
    key: &MasterKey,
    session_id: &str,
    user_id: &str,
    organization_id: Option<&str>,
    expires_at: DateTime<Utc>,
) -> Result<String, ApiError> {
    let salt = crate::secrets::random_bytes::<16>().map_err(|e| secret_failure(&e))?;
    sqlx::query(
        "insert into session_token (session_id, user_id, organization_id, salt, generation, expires_at) \
         values ($1, $2, $3, $4, 0, $5)",
    )
    .bind(session_id)
    .bind(user_id)
    .bind(organization_id)
    .bind(salt)
    .bind(expires_at)
    .execute(pool)
    .await?;
    Ok(RefreshToken::make(key, &salt, session_id, 0))
}

pub async fn load(pool: &PgPool, session_id: &str) -> Result<Option<TokenRow>, ApiError> {
    Ok(sqlx::query_as(
        "select t.session_id, t.user_id, t.organization_id, t.salt, t.generation, t.rotated_at, t.expires_at, \
         t.revoked_at, v.body ->> 'status' as status, v.body ->> 'auth_method' as auth_method \
         from session_token t left join session_view v on v.id = t.session_id where t.session_id = $1",
    )
    .bind(session_id)
    .fetch_optional(pool)
    .await?)
}

/// Moves the session from generation `from` to `from + 1` (and to `organization_id`); false
/// when another refresh moved it first (or it was revoked meanwhile).
pub async fn rotate(
    pool: &PgPool,
    session_id: &str,
    from: i64,
    organization_id: Option<&str>,
) -> Result<bool, ApiError> {
    let done = sqlx::query(
        "update session_token set generation = generation + 1, rotated_at = now(), \
         organization_id = coalesce($3, organization_id) \
         where session_id = $1 and generation = $2 and revoked_at is null",
    )
    .bind(session_id)
    .bind(from)
    .bind(organization_id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Revokes the token family at once (before the log's `SessionRevoked` is appended: fail closed).
pub async fn revoke(pool: &PgPool, session_id: &str) -> Result<(), ApiError> {
    sqlx::query("update session_token set revoked_at = now() where session_id = $1 and revoked_at is null")
        .bind(session_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Within the grace window after the rotation that spent it.
pub fn in_grace(row: &TokenRow, presented: i64, grace: Duration, now: DateTime<Utc>) -> bool {
    presented + 1 == row.generation
        && row.rotated_at.is_some_and(|at| {
            now.signed_duration_since(at)
                .to_std()
                .map_or(true, |elapsed| elapsed <= grace)
        })
}

/// What a pending authentication remembers.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Pending {
    pub user_id: String,
    pub auth_method: String,
    pub grant_type: String,
    pub email_verification_id: Option<String>,
    pub organization_id: Option<String>,
}

/// How long a pending authentication token lives (WorkOS: 10 minutes).
pub const PENDING_TTL: Duration = Duration::from_secs(600);

/// Stores a pending authentication and returns its token (shown once).
pub async fn pend(pool: &PgPool, p: &Pending) -> Result<String, ApiError> {
    let token = crate::secrets::random_token(24).map_err(|e| secret_failure(&e))?;
    let expires = Utc::now() + chrono::Duration::from_std(PENDING_TTL).unwrap_or_default();
    sqlx::query(
        "insert into pending_authentication (token_hash, user_id, auth_method, grant_type, email_verification_id, \
         organization_id, expires_at) values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(token_hash(&token))
    .bind(&p.user_id)
    .bind(&p.auth_method)
    .bind(&p.grant_type)
    .bind(&p.email_verification_id)
    .bind(&p.organization_id)
    .bind(expires)
    .execute(pool)
    .await?;
    Ok(token)
}

/// Takes a pending authentication (single use): `None` when unknown, expired or used.
pub async fn take_pending(pool: &PgPool, token: &str) -> Result<Option<Pending>, ApiError> {
    Ok(sqlx::query_as(
        "update pending_authentication set used_at = now() \
         where token_hash = $1 and used_at is null and expires_at > now() \
         returning user_id, auth_method, grant_type, email_verification_id, organization_id",
    )
    .bind(token_hash(token))
    .fetch_optional(pool)
    .await?)
}

/// Reads a pending authentication without taking it: `None` when unknown, expired or used. A
/// step that can fail and be retried (a mistyped email verification code) reads it first and
/// takes it only once the step succeeded.
pub async fn peek_pending(pool: &PgPool, token: &str) -> Result<Option<Pending>, ApiError> {
    Ok(sqlx::query_as(
        "select user_id, auth_method, grant_type, email_verification_id, organization_id \
         from pending_authentication where token_hash = $1 and used_at is null and expires_at > now()",
    )
    .bind(token_hash(token))
    .fetch_optional(pool)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_back_and_reject_other_shapes() {
        let key = MasterKey::generate().unwrap();
        let t = RefreshToken::make(&key, b"salt", "session_01HXYZ123456789ABCDEFGHJKM", 3);
        let p = RefreshToken::parse(&t).unwrap();
        assert_eq!(p.generation, 3);
        assert!(p.authentic(&key, b"salt"));
        assert!(!p.authentic(&key, b"other salt"));
        assert!(!p.authentic(&MasterKey::generate().unwrap(), b"salt"));
        let forged = t.replacen(".3.", ".4.", 1);
        assert!(!RefreshToken::parse(&forged).unwrap().authentic(&key, b"salt"));
        for bad in [
            "",
            "a.b.c",
            "session_x.1.AAAA",
            "session_01HXYZ123456789ABCDEFGHJK.-1.AAAA",
            &"x".repeat(300),
        ] {
            assert!(RefreshToken::parse(bad).is_none(), "{bad}");
        }
    }
}

//! Listing and revoking management API keys (`keyledger api-keys list | revoke`). Keys are never
//! deleted: a revoked key keeps its row (`revoked_at`), so the audit trail can still name it.
//! Revocation reaches every server's key cache through the `keyledger_api_keys` NOTIFY
//! (migration 0009); this module never touches a cache itself.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// One key as `api-keys list` shows it; never its secret or hash.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct KeyInfo {
    pub id: String,
    pub name: String,
    pub hint: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl KeyInfo {
    /// `active`, or `revoked <time>`.
    pub fn state(&self) -> String {
        match self.revoked_at {
            None => "active".to_string(),
            Some(t) => format!("revoked {}", t.format("%Y-%m-%d %H:%M:%S UTC")),
        }
    }
}

/// Why a key could not be revoked.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("no API key has the id or hint {0}")]
    NotFound(String),
    #[error("the hint {hint} matches {} keys ({}); revoke by id instead", ids.len(), ids.join(", "))]
    Ambiguous { hint: String, ids: Vec<String> },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// What `revoke` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// Revoked now.
    Now(KeyInfo),
    /// It already was (nothing changed).
    Already(KeyInfo),
}

/// Every key, oldest first.
pub async fn list(pool: &PgPool) -> Result<Vec<KeyInfo>, sqlx::Error> {
    sqlx::query_as("select id, name, key_hint as hint, created_at, revoked_at from api_key order by created_at, id")
        .fetch_all(pool)
        .await
}

/// Revokes the key whose id is `id_or_hint`, else the one key whose hint it is; a hint shared by
/// several keys is refused. Every server stops accepting it within the bound in
/// docs/OPERATIONS.md ("API keys").
pub async fn revoke(pool: &PgPool, id_or_hint: &str) -> Result<Revoked, RevokeError> {
    let matches: Vec<KeyInfo> = sqlx::query_as(
        "select id, name, key_hint as hint, created_at, revoked_at from api_key \
         where id = $1 or key_hint = $1 order by (id = $1) desc, created_at",
    )
    .bind(id_or_hint)
    .fetch_all(pool)
    .await?;
    let key = match matches.as_slice() {
        [] => return Err(RevokeError::NotFound(id_or_hint.to_string())),
        [first, ..] if first.id == id_or_hint => first.clone(),
        [only] => only.clone(),
        many => {
            return Err(RevokeError::Ambiguous {
                hint: id_or_hint.to_string(),
                ids: many.iter().map(|k| k.id.clone()).collect(),
            })
        }
    };
    if key.revoked_at.is_some() {
        return Ok(Revoked::Already(key));
    }
    // `revoked_at is null`: of two concurrent revocations, one wins and the other reports it.
    let updated: Option<KeyInfo> = sqlx::query_as(
        "update api_key set revoked_at = now() where id = $1 and revoked_at is null \
         returning id, name, key_hint as hint, created_at, revoked_at",
    )
    .bind(&key.id)
    .fetch_optional(pool)
    .await?;
    match updated {
        Some(k) => Ok(Revoked::Now(k)),
        None => Ok(Revoked::Already(key)),
    }
}

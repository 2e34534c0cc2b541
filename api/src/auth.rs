//! API keys: `sk_` secrets shown once, stored as SHA-256 (they are high-entropy, so a slow hash
//! adds nothing), compared by hash lookup. The middleware puts the caller's [`Actor`] on requests.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::error::ApiError;
use crate::state::AppState;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Actor {
    pub id: String,
    pub name: String,
}

pub fn hash_key(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Creates a key and returns its secret (shown once).
pub async fn create_key(pool: &PgPool, name: &str) -> Result<String, sqlx::Error> {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!("sk_{}", hex::encode(bytes));
    register_key(pool, name, &secret).await?;
    Ok(secret)
}

/// Registers a given secret if absent (the bootstrap key). Returns true when it was added.
pub async fn register_key(pool: &PgPool, name: &str, secret: &str) -> Result<bool, sqlx::Error> {
    let chars: Vec<char> = secret.chars().collect();
    let head: String = chars.iter().take(6).collect();
    let tail: String = chars[chars.len().saturating_sub(4)..].iter().collect();
    let hint = format!("{head}...{tail}");
    let done = sqlx::query(
        "insert into api_key (id, name, key_hash, key_hint) values ($1, $2, $3, $4) on conflict (key_hash) do nothing",
    )
    .bind(keyledger_domain::ids::new_id("key"))
    .bind(name)
    .bind(hash_key(secret))
    .bind(hint)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn require_key(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| t.starts_with("sk_"));
    let Some(token) = token else {
        return ApiError::unauthorized().into_response();
    };
    let found: Result<Option<(String, String)>, sqlx::Error> =
        sqlx::query_as("select id, name from api_key where key_hash = $1")
            .bind(hash_key(token))
            .fetch_optional(&state.pool)
            .await;
    match found {
        Ok(Some((id, name))) => {
            req.extensions_mut().insert(Actor { id, name });
            next.run(req).await
        }
        Ok(None) => ApiError::unauthorized().into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

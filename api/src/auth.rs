//! API keys: `sk_` secrets shown once, stored as SHA-256 (they are high-entropy, so a slow hash
//! adds nothing), compared by hash lookup. The middleware puts the caller's [`Actor`] on requests.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::RngCore;
use sqlx::PgPool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::ApiError;
use crate::state::AppState;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Actor {
    pub id: String,
    pub name: String,
}

pub fn hash_key(secret: &str) -> Vec<u8> {
    crate::secrets::token_hash(secret)
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

/// Keys verified in the last [`KEY_CACHE_TTL`], by hash: saves a database round trip on most
/// requests. Revoking or deleting a key NOTIFYs every server, which then calls [`KeyCache::clear`]
/// (`crate::listen`); a server that misses the notification keeps a revoked key usable for at
/// most the TTL. Expiry, the size bound and concurrent access are moka's (already in the build
/// through hickory-resolver); the generation rule is ours.
#[derive(Clone)]
pub struct KeyCache {
    /// Each entry carries the generation its lookup started in; only the current one is served.
    entries: moka::sync::Cache<KeyHash, (Actor, u64)>,
    /// Bumped by every clear: a lookup that started before a clear must not cache its answer.
    generation: Arc<AtomicU64>,
}

type KeyHash = Vec<u8>;

pub const KEY_CACHE_TTL: Duration = Duration::from_secs(10);
const KEY_CACHE_MAX: u64 = 10_000;

impl Default for KeyCache {
    fn default() -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(KEY_CACHE_MAX)
                .time_to_live(KEY_CACHE_TTL)
                .build(),
            generation: Arc::default(),
        }
    }
}

impl KeyCache {
    fn get(&self, hash: &[u8]) -> Option<Actor> {
        let (actor, generation) = self.entries.get(hash)?;
        // Read after the entry: a clear between the two makes this a miss.
        (generation == self.generation()).then_some(actor)
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Caches `actor` for a lookup that started in `generation`; once the cache has been cleared
    /// since, the entry is never served (and usually not even stored).
    fn put(&self, hash: KeyHash, actor: Actor, generation: u64) {
        if self.generation() == generation {
            self.entries.insert(hash, (actor, generation));
        }
    }

    /// Forgets every key: the next request with each key is checked against the database.
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.invalidate_all();
    }
}

/// The credentials of `Bearer <token>`; the scheme is case-insensitive (RFC 9110, 11.1).
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The actor of an API key secret (`sk_...`), if it is a live key: from the cache, else the
/// database (then cached).
pub async fn actor_for_key(state: &AppState, secret: &str) -> Result<Option<Actor>, ApiError> {
    let hash = hash_key(secret);
    if let Some(actor) = state.keys.get(&hash) {
        return Ok(Some(actor));
    }
    let generation = state.keys.generation();
    let found: Option<(String, String)> =
        sqlx::query_as("select id, name from api_key where key_hash = $1 and revoked_at is null")
            .bind(&hash)
            .fetch_optional(&state.pool)
            .await?;
    Ok(found.map(|(id, name)| {
        let actor = Actor { id, name };
        state.keys.put(hash, actor.clone(), generation);
        actor
    }))
}

/// The management API's gate: an API key (`sk_...`) puts its [`Actor`] on the request; an
/// organization admin's access token is let through to its organization's reads only.
///
/// A refusal is answered before the request body is read. Such a response says
/// `Connection: close` when a body was coming: the server cannot reuse a connection whose unread
/// body is still in flight, and without the header a client would send its next request on a
/// connection the server is closing (seen with the Python SDK: "Server disconnected").
pub async fn require_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let has_body = request_has_body(&req);
    match admit(&state, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => {
            let mut response = e.into_response();
            if has_body {
                response.headers_mut().insert(
                    axum::http::header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
            }
            response
        }
    }
}

/// True when a body follows the request head (a non-zero `Content-Length`, or chunked).
fn request_has_body(req: &Request) -> bool {
    let headers = req.headers();
    let length = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .map(|v| v.to_str().map_or("", str::trim));
    headers.contains_key(axum::http::header::TRANSFER_ENCODING) || length.is_some_and(|l| l != "0")
}

async fn admit(state: &AppState, mut req: Request) -> Result<Request, ApiError> {
    let token = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .map(str::to_string)
        .ok_or_else(ApiError::unauthorized)?;
    if !token.starts_with("sk_") {
        // An organization admin's access token: the allowed reads of its organization only
        // (`crate::tenant`).
        if !crate::tenant::looks_like_jwt(&token) {
            return Err(ApiError::unauthorized());
        }
        let path = crate::tenant::route_template(&req);
        let method = req.method().clone();
        let reader = crate::tenant::authorize(state, &token, &method, path.as_deref()).await?;
        req.extensions_mut().insert(reader);
        return Ok(req);
    }
    let actor = actor_for_key(state, &token).await?.ok_or_else(ApiError::unauthorized)?;
    req.extensions_mut().insert(actor);
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for (header, want) in [
            ("Bearer sk_a", Some("sk_a")),
            ("bearer sk_a", Some("sk_a")),
            ("BEARER  sk_a ", Some("sk_a")),
            ("Basic sk_a", None),
            ("Bearersk_a", None),
            ("sk_a", None),
        ] {
            assert_eq!(bearer_token(header), want, "{header:?}");
        }
    }

    fn actor(id: &str) -> Actor {
        Actor {
            id: id.to_owned(),
            name: "test".to_owned(),
        }
    }

    #[test]
    fn a_cleared_cache_forgets_every_key() {
        let cache = KeyCache::default();
        cache.put(hash_key("sk_a"), actor("key_a"), cache.generation());
        assert_eq!(cache.get(&hash_key("sk_a")).map(|a| a.id), Some("key_a".to_owned()));
        cache.clear();
        assert!(cache.get(&hash_key("sk_a")).is_none());
    }

    #[test]
    fn a_lookup_that_started_before_a_clear_is_not_cached() {
        let cache = KeyCache::default();
        let started = cache.generation();
        cache.clear();
        cache.put(hash_key("sk_a"), actor("key_a"), started);
        assert!(cache.get(&hash_key("sk_a")).is_none());
        // Even when it lands in the map (a clear between the check and the insert), it is not served.
        cache.entries.insert(hash_key("sk_b"), (actor("key_b"), started));
        assert!(cache.get(&hash_key("sk_b")).is_none());
        let now = cache.generation();
        cache.put(hash_key("sk_a"), actor("key_a"), now);
        assert!(cache.get(&hash_key("sk_a")).is_some());
    }
}

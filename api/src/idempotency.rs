//! `Idempotency-Key` on every `POST`, `PUT` and `PATCH` of the management API: the first request
//! with a key runs, and its response is stored; a repeat with the same request (method, path,
//! body) replays that response, one with another request is refused (422), and requests racing
//! with one key run the command once (the others wait, bounded, then replay). Keys belong to the
//! API key that sent them and expire after 24 hours.
//!
//! It never lets one key run a command twice: the command's append marks the reservation
//! `committed` in its own transaction, and only while this request still owns it
//! (`store::IdempotencyFence`), so a crash between commit and storing the response leaves a key
//! that is answered `409 idempotency_response_lost`, never run again (ARCHITECTURE.md).

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keyledger_store::append::IdempotencyFence;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio::sync::watch;
use tracing::Instrument;

use crate::auth::Actor;
use crate::error::ApiError;
use crate::state::AppState;

/// How long a reservation stays with the request that made it; a reservation whose command did
/// not commit within it may be taken over by a repeat (the fence stops the first one's append).
const LEASE_SECONDS: i64 = 60;
/// How long a repeat waits for the first request with its key before answering 409.
const WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);
/// How often expired keys are deleted.
const SWEEP_EVERY: Duration = Duration::from_secs(600);
/// Largest response stored for a replay (management responses are small JSON objects).
const RESPONSE_LIMIT: usize = 16 * 1024 * 1024;

/// The header a replayed response carries.
pub const REPLAYED: &str = "idempotent-replayed";

/// The `Idempotency-Key` header: absent, or 1 to 255 visible ASCII characters.
pub fn key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = || {
        ApiError::invalid(
            "Idempotency-Key",
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 printable characters",
        )
    };
    let s = v.to_str().map_err(|_| bad())?;
    if s.is_empty() || s.len() > 255 || s.chars().any(char::is_control) {
        return Err(bad());
    }
    Ok(Some(s.to_string()))
}

/// `POST /organizations` also takes the key as `idempotency_key` in its body (a WorkOS
/// organization-create field); the header wins when both are given.
const BODY_KEY_PATH: &str = "/organizations";

/// The body's `idempotency_key`, if it is a JSON object with one (checked like the header).
fn body_key(body: &[u8]) -> Result<Option<String>, ApiError> {
    #[derive(serde::Deserialize)]
    struct WithKey {
        idempotency_key: Option<serde_json::Value>,
    }
    let Ok(WithKey {
        idempotency_key: Some(v),
    }) = serde_json::from_slice::<WithKey>(body)
    else {
        return Ok(None);
    };
    let mut headers = HeaderMap::new();
    let value = v.as_str().and_then(|s| HeaderValue::from_str(s).ok()).ok_or_else(|| {
        ApiError::invalid(
            "idempotency_key",
            "invalid_idempotency_key",
            "idempotency_key must be 1 to 255 printable characters",
        )
    })?;
    headers.insert("idempotency-key", value);
    key(&headers)
}

/// Runs after authentication (it scopes keys by the caller's API key) and before the handler.
pub async fn middleware(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH) {
        return next.run(req).await;
    }
    let header_key = match key(req.headers()) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let body_key_allowed = req.method() == Method::POST && req.uri().path() == BODY_KEY_PATH;
    if header_key.is_none() && !body_key_allowed {
        return next.run(req).await;
    }
    let Some(actor) = req.extensions().get::<Actor>().cloned() else {
        return ApiError::unauthorized().into_response();
    };
    let (mut parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, crate::BODY_LIMIT).await {
        Ok(b) => b,
        Err(e) => return crate::extract::body_read_error(&e).into_response(),
    };
    let key = match header_key.map(Ok).or_else(|| body_key(&bytes).transpose()) {
        Some(Ok(k)) => k,
        Some(Err(e)) => return e.into_response(),
        None => return next.run(Request::from_parts(parts, Body::from(bytes))).await,
    };
    let fingerprint = fingerprint(&parts.method, parts.uri.path_and_query().map(|p| p.as_str()), &bytes);
    let fence = IdempotencyFence {
        scope: actor.id,
        key,
        owner: token(),
    };
    match reserve(&state.pool, &fence, &fingerprint).await {
        Ok(Reservation::Ours) => {}
        Ok(Reservation::Replay(response)) => return response,
        Err(e) => return e.into_response(),
    }
    parts.extensions.insert(fence.clone());
    let req = Request::from_parts(parts, Body::from(bytes));
    // The command runs to its end and its response is stored even if the client goes away: the
    // retry that follows a client's timeout then finds the response instead of a lost one.
    let pool = state.pool.clone();
    let task = tokio::spawn(
        async move {
            let response = next.run(req).await;
            finish(&pool, &fence, response).await
        }
        .instrument(tracing::Span::current()),
    );
    match task.await {
        Ok(response) => response,
        Err(e) => {
            tracing::error!(error = %e, "a request with an Idempotency-Key failed");
            ApiError::internal().into_response()
        }
    }
}

/// SHA-256 of what makes two requests "the same": method, path with query, body bytes.
fn fingerprint(method: &Method, path: Option<&str>, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(method.as_str().as_bytes());
    h.update(b"\n");
    h.update(path.unwrap_or_default().as_bytes());
    h.update(b"\n");
    h.update(body);
    hex::encode(h.finalize())
}

fn token() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

enum Reservation {
    /// This request runs the command.
    Ours,
    /// An earlier request's stored response.
    Replay(Response),
}

#[derive(sqlx::FromRow)]
struct Row {
    fingerprint: String,
    state: String,
    status: Option<i16>,
    content_type: Option<String>,
    body: Option<Vec<u8>>,
    lapsed: bool,
}

/// Takes the key (new, expired, or a lapsed reservation of the same request that never
/// committed), or answers as a repeat: replay, 422 for another request, 409 after waiting.
async fn reserve(pool: &PgPool, fence: &IdempotencyFence, fingerprint: &str) -> Result<Reservation, ApiError> {
    let deadline = Instant::now() + WAIT;
    loop {
        let taken = sqlx::query(
            "insert into idempotency_key (scope, key, fingerprint, owner, state, leased_until) \
             values ($1, $2, $3, $4, 'running', now() + make_interval(secs => $5)) \
             on conflict (scope, key) do update set fingerprint = excluded.fingerprint, owner = excluded.owner, \
             state = 'running', status = null, content_type = null, body = null, created_at = now(), \
             leased_until = excluded.leased_until \
             where idempotency_key.created_at < now() - interval '24 hours' \
             or (idempotency_key.state = 'running' and idempotency_key.leased_until < now() \
                 and idempotency_key.fingerprint = excluded.fingerprint)",
        )
        .bind(&fence.scope)
        .bind(&fence.key)
        .bind(fingerprint)
        .bind(&fence.owner)
        .bind(LEASE_SECONDS as f64)
        .execute(pool)
        .await?;
        if taken.rows_affected() == 1 {
            return Ok(Reservation::Ours);
        }
        let row: Option<Row> = sqlx::query_as(
            "select fingerprint, state, status, content_type, body, leased_until < now() as lapsed \
             from idempotency_key where scope = $1 and key = $2",
        )
        .bind(&fence.scope)
        .bind(&fence.key)
        .fetch_optional(pool)
        .await?;
        match row {
            // Given back meanwhile (the first request failed retryably): try to take it.
            None => continue,
            Some(r) if r.fingerprint != fingerprint => return Err(reused()),
            Some(r) if r.state == "done" => return Ok(Reservation::Replay(replay(r))),
            Some(r) if r.state == "committed" && r.lapsed => return Err(response_lost()),
            Some(_) if Instant::now() >= deadline => return Err(in_progress()),
            Some(_) => tokio::time::sleep(POLL).await,
        }
    }
}

fn reused() -> ApiError {
    ApiError::invalid(
        "Idempotency-Key",
        "idempotency_key_reused",
        "this Idempotency-Key was used with a different request in the last 24 hours",
    )
}

fn in_progress() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_key_in_progress",
        "a request with this Idempotency-Key is still in progress; retry later",
    )
}

fn response_lost() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_response_lost",
        "the request with this Idempotency-Key was carried out, but its response was lost; read the resource to see the result",
    )
}

fn replay(r: Row) -> Response {
    let status = r
        .status
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut response = (status, r.body.unwrap_or_default()).into_response();
    let headers = response.headers_mut();
    if let Some(ct) = r.content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(header::CONTENT_TYPE, ct);
    }
    headers.insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

/// Responses replayed to a repeat: successes and the 4xx a repeat would get again. Not stored:
/// 409 (a race), 429, 5xx and the like, so a retry runs again.
fn storable(status: StatusCode) -> bool {
    status.is_success() || matches!(status.as_u16(), 400 | 404 | 422)
}

/// Stores the response for repeats, or gives the key back (only if the command did not
/// commit: a committed key is never run again).
async fn finish(pool: &PgPool, fence: &IdempotencyFence, response: Response) -> Response {
    let (parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, RESPONSE_LIMIT).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "reading a response to store for its Idempotency-Key");
            give_back(pool, fence).await;
            return ApiError::internal().into_response();
        }
    };
    if storable(parts.status) {
        let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let stored = sqlx::query(
            "update idempotency_key set state = 'done', status = $4, content_type = $5, body = $6 \
             where scope = $1 and key = $2 and owner = $3",
        )
        .bind(&fence.scope)
        .bind(&fence.key)
        .bind(&fence.owner)
        .bind(i16::try_from(parts.status.as_u16()).unwrap_or(500))
        .bind(content_type)
        .bind(bytes.as_ref())
        .execute(pool)
        .await;
        if let Err(e) = stored {
            tracing::error!(error = %e, "storing the response of an Idempotency-Key");
        }
    } else {
        give_back(pool, fence).await;
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// An unstored outcome: a key whose command did not commit is deleted (a retry runs it); one
/// whose command committed keeps that state and lapses at once (repeats: `response_lost`).
async fn give_back(pool: &PgPool, fence: &IdempotencyFence) {
    let r = sqlx::query(
        "with gone as (delete from idempotency_key where scope = $1 and key = $2 and owner = $3 and state = 'running') \
         update idempotency_key set leased_until = now() where scope = $1 and key = $2 and owner = $3 and state = 'committed'",
    )
    .bind(&fence.scope)
    .bind(&fence.key)
    .bind(&fence.owner)
    .execute(pool)
    .await;
    if let Err(e) = r {
        tracing::error!(error = %e, "giving back an Idempotency-Key");
    }
}

/// Deletes keys older than 24 hours; returns how many.
pub async fn sweep(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("delete from idempotency_key where created_at < now() - interval '24 hours'")
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// Sweeps expired keys now and every [`SWEEP_EVERY`] until shutdown (any number of processes
/// may sweep at once).
pub async fn sweeper(pool: PgPool, shutdown: watch::Receiver<bool>) {
    crate::sweep::every("idempotency keys", SWEEP_EVERY, shutdown, || sweep(&pool)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_its_method_path_and_body_bytes() {
        let base = fingerprint(&Method::POST, Some("/organizations"), b"{\"name\":\"A\"}");
        assert_eq!(
            base,
            fingerprint(&Method::POST, Some("/organizations"), b"{\"name\":\"A\"}")
        );
        for other in [
            fingerprint(&Method::PUT, Some("/organizations"), b"{\"name\":\"A\"}"),
            fingerprint(&Method::POST, Some("/organizations?x=1"), b"{\"name\":\"A\"}"),
            fingerprint(&Method::POST, Some("/organizations"), b"{\"name\": \"A\"}"),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn only_successes_and_repeatable_refusals_are_kept() {
        for (status, kept) in [
            (200, true),
            (201, true),
            (204, true),
            (400, true),
            (404, true),
            (422, true),
            (401, false),
            (409, false),
            (429, false),
            (500, false),
            (503, false),
        ] {
            let s = StatusCode::from_u16(status).unwrap_or(StatusCode::IM_A_TEAPOT);
            assert_eq!(storable(s), kept, "{status}");
        }
    }

    #[test]
    fn keys_are_one_to_255_printable_characters_in_the_header_or_the_body() {
        let mut h = HeaderMap::new();
        assert_eq!(key(&h).ok(), Some(None));
        h.insert("idempotency-key", HeaderValue::from_static("abc-123"));
        assert_eq!(key(&h).ok(), Some(Some("abc-123".to_string())));
        h.insert("idempotency-key", HeaderValue::from_static(""));
        assert!(key(&h).is_err());
        assert_eq!(
            body_key(br#"{"name":"A","idempotency_key":"k"}"#).ok(),
            Some(Some("k".to_string()))
        );
        assert_eq!(body_key(br#"{"name":"A","idempotency_key":null}"#).ok(), Some(None));
        assert_eq!(body_key(b"not json").ok(), Some(None));
        assert!(body_key(br#"{"idempotency_key":5}"#).is_err());
    }
}

//! The admission control of password hashing: at most `permits` hashes run at once on the
//! blocking pool, at most `queue` more wait for a turn, and beyond that a request is answered
//! 503 `server_busy` at once. It owns no hashing itself and never blocks an async thread.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// `Retry-After` of a `server_busy` answer, in seconds: a full queue drains in about
/// `queue / permits` hash times (64 × ~30 ms ≈ 2 s), so a client retrying after a second finds
/// room again unless the storm goes on.
pub const BUSY_RETRY_AFTER_SECS: u32 = 1;

/// How many hashes may wait per permit before new ones are refused (the default queue bound).
pub const QUEUE_PER_PERMIT: usize = 64;

/// Bounded concurrency for password hashing, shared by every request (cheap to clone).
///
/// Why a bounded queue and not only a semaphore: a semaphore alone keeps the CPU from being
/// oversubscribed, but during a sign-in storm its waiting list grows without bound; every waiter
/// holds a connection, a request body and memory, and its client has long timed out and
/// retried (adding another waiter) by the time its turn comes. Past `queue` waiters the wait
/// would exceed what any client waits for (64 per permit at ~30 ms a hash is ~2 s), so the
/// request is refused at once with a 503 and `Retry-After`: the cheap answer keeps the async
/// threads, connections and the database free for every other request, and the hashes that do
/// run finish in bounded time.
#[derive(Clone, Debug)]
pub struct Hashing {
    permits: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    queue: usize,
    concurrency: usize,
}

/// A turn to hash: held (moved into the blocking task) until the hash is done, so that a
/// request whose client went away does not free its slot while its hash still runs.
#[derive(Debug)]
pub struct Turn(#[allow(dead_code, reason = "held for its Drop: releases the permit")] OwnedSemaphorePermit);

/// Decrements the waiting count when the wait ends, however it ends (also when the request
/// future is dropped mid-wait).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Hashing {
    /// `concurrency` hashes at once (at least 1), `queue` more waiting.
    pub fn new(concurrency: usize, queue: usize) -> Self {
        let concurrency = concurrency.max(1);
        Self {
            permits: Arc::new(Semaphore::new(concurrency)),
            waiting: Arc::new(AtomicUsize::new(0)),
            queue,
            concurrency,
        }
    }

    /// One permit per available core, `QUEUE_PER_PERMIT` waiters per permit.
    pub fn with_defaults() -> Self {
        let n = default_concurrency();
        Self::new(n, n.saturating_mul(QUEUE_PER_PERMIT))
    }

    /// How many hashes run at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// How many requests wait for a turn now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Waits for a turn, or answers 503 `server_busy` at once when `queue` requests already wait.
    pub async fn acquire(&self) -> Result<Turn, ApiError> {
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return Ok(Turn(p));
        }
        let before = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.waiting);
        if before >= self.queue {
            metrics::counter!("keyledger_password_hashing_refused_total").increment(1);
            return Err(ApiError::server_busy(BUSY_RETRY_AFTER_SECS));
        }
        let p = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::internal())?;
        Ok(Turn(p))
    }
}

/// The available cores (`std::thread::available_parallelism`, which honours cgroup quotas), or 2.
pub fn default_concurrency() -> usize {
    std::thread::available_parallelism().map(usize::from).unwrap_or(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn beyond_the_queue_bound_a_request_is_refused_at_once_and_the_count_recovers() {
        let h = Hashing::new(1, 2);
        let running = h.acquire().await.expect("the one permit");
        // Two may wait...
        let w1 = tokio::spawn({
            let h = h.clone();
            async move { h.acquire().await.map(drop) }
        });
        let w2 = tokio::spawn({
            let h = h.clone();
            async move { h.acquire().await.map(drop) }
        });
        while h.waiting() < 2 {
            tokio::task::yield_now().await;
        }
        // ...a third is refused without waiting.
        let refused = tokio::time::timeout(std::time::Duration::from_millis(100), h.acquire())
            .await
            .expect("a refusal does not wait");
        let e = refused.expect_err("the queue is full");
        let r = axum::response::IntoResponse::into_response(e);
        assert_eq!(r.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers().get("retry-after").map(|v| v.as_bytes()), Some(&b"1"[..]));
        assert_eq!(h.waiting(), 2, "the refused one does not count as waiting");
        drop(running);
        w1.await.expect("join").expect("the first waiter gets its turn");
        w2.await.expect("join").expect("the second waiter gets its turn");
        assert_eq!(h.waiting(), 0);
        assert!(h.acquire().await.is_ok(), "free again");
    }

    #[tokio::test]
    async fn a_waiter_that_is_dropped_leaves_the_queue() {
        let h = Hashing::new(1, 1);
        let _running = h.acquire().await.expect("the one permit");
        let waiter = tokio::spawn({
            let h = h.clone();
            async move { h.acquire().await.map(drop) }
        });
        while h.waiting() < 1 {
            tokio::task::yield_now().await;
        }
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(h.waiting(), 0, "a cancelled wait gives its place back");
    }

    #[test]
    fn zero_concurrency_still_runs_one_hash_at_a_time() {
        assert_eq!(Hashing::new(0, 0).concurrency(), 1);
        assert!(default_concurrency() >= 1);
    }
}

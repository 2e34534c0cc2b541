//! The webhook dispatcher: every enabled endpoint is its own checkpointed consumer of the public
//! feed (`webhook:<id>` in `subscriber_checkpoint`), with its own task, so a slow or dead
//! receiver only delays itself. Deliveries are in feed order per endpoint and at-least-once: the
//! checkpoint moves only after a 2xx. One process delivers (a session advisory lock); it never
//! holds a database transaction open across an HTTP request. It never connects to a non-public
//! address outside `Config::webhook_allow` (`crate::ssrf`): names resolve through the guarded
//! resolver, IP literals outside it are refused before sending, and no proxy or redirect
//! intervenes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use keyledger_domain::webhook::{WebhookEndpoint, WebhookEndpointCommand};
use keyledger_projections::feed::{self, FeedCursor, FeedEvent, FeedFilter};
use keyledger_projections::webhooks::{self as store, Attempt, DeliveredBatch, Target};
use keyledger_store::append::SideRows;
use keyledger_store::commands::Mode;
use keyledger_store::lease::{Held, Ownership};
use sha2::Sha256;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Context;
use crate::ssrf;

/// Retry delays as multiples of `Config::webhook_retry_base` (30 s by default: 30 s, 1 m, 5 m,
/// 30 m, 2 h, 6 h, 12 h, 24 h, then 24 h for every further retry), each with ±20 % jitter.
pub const RETRY_MULTIPLIERS: &[u32] = &[1, 2, 10, 60, 240, 720, 1440, 2880];

/// How often the dispatcher re-reads the endpoint table and checks its lock.
const REFRESH: Duration = Duration::from_millis(250);
/// Idle endpoints re-check the feed this often when no local progress wakes them (another
/// process's projection worker, a replay).
const IDLE_POLL: Duration = Duration::from_millis(250);
/// Events read per batch.
const BATCH: i64 = 100;
/// Wait after a database error.
const DB_RETRY: Duration = Duration::from_secs(1);
const LOCK_KEY: &str = "keyledger.webhook_dispatcher";

/// The delay before retry number `failures` (1 = after the first failed attempt), without jitter.
pub fn retry_delay(base: Duration, failures: u32) -> Duration {
    let i = usize::try_from(failures.saturating_sub(1)).unwrap_or(usize::MAX);
    let m = RETRY_MULTIPLIERS
        .get(i)
        .or(RETRY_MULTIPLIERS.last())
        .copied()
        .unwrap_or(1);
    base.saturating_mul(m)
}

fn jittered(d: Duration) -> Duration {
    let f = 0.8 + rand::random::<f64>() * 0.4;
    d.mul_f64(f)
}

/// `WorkOS-Signature` header value: `t=<unix ms>, v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
/// The key is the secret string's UTF-8 bytes, `whsec_` prefix included, as the SDKs verify it.
pub fn signature(secret: &str, timestamp_ms: i64, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        // HMAC takes keys of any length; this arm cannot be reached.
        Err(_) => return String::new(),
    };
    mac.update(timestamp_ms.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={timestamp_ms}, v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The delivery client: names resolve through the guard, and the resolver's answer is the real
/// connection target (no proxy in between; a 3xx is a failed attempt, since following one to an
/// IP literal would skip the guard).
fn guarded_client(timeout: Duration, resolver: ssrf::GuardedResolver) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(resolver))
        .no_proxy()
        .user_agent(concat!("keyledger-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Runs the dispatcher until shutdown.
pub async fn run(ctx: Context) {
    let resolver = ssrf::GuardedResolver::new(ctx.config.dns_nameserver, ctx.config.webhook_allow.clone());
    let client = match guarded_client(ctx.config.webhook_timeout, resolver) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook HTTP client; webhooks are not delivered");
            return;
        }
    };
    // The dispatcher's own small pool, whose commits (delivery log, checkpoints) do not wait for
    // the WAL flush: a PostgreSQL crash can lose the last moments of them, which only means
    // redelivering those events (the checkpoint never gets ahead of a delivery). Event appends
    // (automatic disabling) go through the durable pool.
    let fast = ctx
        .pool
        .connect_options()
        .as_ref()
        .clone()
        .options([("synchronous_commit", "off")]);
    let durable = ctx.pool.clone();
    let ctx = Context {
        pool: PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .test_before_acquire(false)
            .connect_lazy_with(fast),
        ..ctx
    };
    let mut shutdown = ctx.shutdown.clone();
    let mut lock: Option<Ownership> = None;
    let mut workers: HashMap<String, Worker> = HashMap::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        match Ownership::keep_or_take(&mut lock, &ctx.pool, LOCK_KEY).await {
            Held::Kept => {}
            Held::Taken => tracing::info!("delivering webhooks"),
            Held::Not => stop_all(&mut workers).await,
        }
        if lock.is_some() {
            match store::enabled_targets(&ctx.pool).await {
                Ok(targets) => reconcile(&ctx, &durable, &client, &mut workers, targets).await,
                Err(e) => tracing::warn!(error = %e, "reading webhook endpoints failed"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(REFRESH) => {}
            _ = shutdown.changed() => {}
        }
    }
    stop_all(&mut workers).await;
    if let Some(owner) = lock.take() {
        owner.release().await;
    }
}

struct Worker {
    target: Target,
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

/// Starts workers for new or changed endpoints, stops those of endpoints no longer enabled.
async fn reconcile(
    ctx: &Context,
    durable: &PgPool,
    client: &reqwest::Client,
    workers: &mut HashMap<String, Worker>,
    targets: Vec<Target>,
) {
    let wanted: HashMap<String, Target> = targets.into_iter().map(|t| (t.id.clone(), t)).collect();
    let stale: Vec<String> = workers
        .iter()
        .filter(|(id, w)| wanted.get(*id) != Some(&w.target) || w.handle.is_finished())
        .map(|(id, _)| id.clone())
        .collect();
    for id in stale {
        if let Some(w) = workers.remove(&id) {
            stop(w).await;
        }
    }
    for (id, target) in wanted {
        if workers.contains_key(&id) {
            continue;
        }
        let (stop, stop_rx) = watch::channel(false);
        let handle = tokio::spawn(deliver_endpoint(
            ctx.clone(),
            durable.clone(),
            client.clone(),
            target.clone(),
            stop_rx,
        ));
        workers.insert(id, Worker { target, stop, handle });
    }
}

async fn stop(w: Worker) {
    let _ = w.stop.send(true);
    let _ = w.handle.await;
}

async fn stop_all(workers: &mut HashMap<String, Worker>) {
    for (_, w) in workers.drain() {
        stop(w).await;
    }
}

/// Why a worker stopped delivering.
enum Halt {
    /// Told to stop (shutdown, endpoint changed or disabled).
    Stopped,
    /// The failure rule disabled the endpoint.
    Disabled,
    /// The checkpoint was moved by someone else (a replay): re-read it.
    Rewound,
}

/// Sleeps `d` unless told to stop first.
async fn pause(
    d: Duration,
    stop: &mut watch::Receiver<bool>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), Halt> {
    if *stop.borrow() || *shutdown.borrow() {
        return Err(Halt::Stopped);
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => Ok(()),
        _ = stop.changed() => Err(Halt::Stopped),
        _ = shutdown.changed() => Err(Halt::Stopped),
    }
}

/// One endpoint's delivery loop.
#[tracing::instrument(skip_all, fields(webhook_endpoint_id = %target.id))]
async fn deliver_endpoint(
    ctx: Context,
    durable: PgPool,
    client: reqwest::Client,
    target: Target,
    mut stop: watch::Receiver<bool>,
) {
    let mut shutdown = ctx.shutdown.clone();
    let mut progress = ctx.progress.watch("events");
    let filter = FeedFilter {
        events: (!target.events.is_empty()).then(|| target.events.clone()),
        organization_id: None,
    };
    // True once this worker has delivered something: later events then start with no failure
    // run, and the delivery log need not be asked.
    let mut clean = false;
    // The checkpoint as this worker last wrote it; re-read after idling (a replay may have
    // rewound it) and whenever a compare-and-set finds it moved.
    let mut known: Option<FeedCursor> = None;
    loop {
        if *stop.borrow() || *shutdown.borrow() {
            return;
        }
        let cp = match known {
            Some(cp) => Ok(Some(cp)),
            None => store::checkpoint(&ctx.pool, &target.id).await,
        };
        // Unfiltered read, filtered here: the checkpoint moves past events this endpoint does
        // not want, so a rarely matching filter never rescans the same tail of the feed.
        let batch = match cp {
            Ok(Some(cp)) => feed::read_after(&ctx.pool, cp, &FeedFilter::default(), BATCH)
                .await
                .map(|b| (cp, b)),
            // Deleted: its checkpoint went with it. Never fall back to the start of the feed.
            Ok(None) => return,
            Err(e) => Err(e),
        };
        let (from, events) = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "reading the feed failed");
                known = None;
                if pause(DB_RETRY, &mut stop, &mut shutdown).await.is_err() {
                    return;
                }
                continue;
            }
        };
        if events.is_empty() {
            known = None;
            if let Some(p) = progress.as_mut() {
                p.borrow_and_update();
            }
            let woke = async {
                match progress.as_mut() {
                    Some(p) => {
                        let _ = p.changed().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = woke => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
                _ = stop.changed() => return,
                _ = shutdown.changed() => return,
            }
            continue;
        }
        let mut pending = Pending::new(&target.id, from);
        let mut halted = false;
        for ev in events {
            if !filter.matches(&ev) {
                pending.skip(&ev);
                continue;
            }
            match deliver_until_done(
                &ctx,
                &durable,
                &client,
                &target,
                &ev,
                clean,
                &mut pending,
                &mut stop,
                &mut shutdown,
            )
            .await
            {
                Ok(done) => {
                    clean = true;
                    pending.push(&ev, &done);
                }
                Err(_) => {
                    halted = true;
                    break;
                }
            }
        }
        // Deliveries made before a stop are recorded too, so a restart does not repeat them.
        known = match pending.flush(&ctx.pool).await {
            Ok(true) => Some(pending.from),
            Ok(false) => None,
            Err(e) => {
                tracing::warn!(error = %e, "saving the webhook checkpoint failed");
                None
            }
        };
        if halted && (*stop.borrow() || *shutdown.borrow() || pending.disabled) {
            return;
        }
    }
}

/// Deliveries not yet recorded: the delivery log rows and the checkpoint move they allow.
struct Pending {
    endpoint_id: String,
    /// The checkpoint as last read or written.
    from: FeedCursor,
    /// The cursor of the last delivered (or skipped, not wanted) event.
    to: FeedCursor,
    batch: DeliveredBatch,
    /// The failure rule disabled the endpoint.
    disabled: bool,
    /// A compare-and-set found the checkpoint moved: nothing more is recorded from this batch.
    lost: bool,
}

impl Pending {
    fn new(endpoint_id: &str, from: FeedCursor) -> Self {
        Self {
            endpoint_id: endpoint_id.to_string(),
            from,
            to: from,
            batch: DeliveredBatch::default(),
            disabled: false,
            lost: false,
        }
    }

    /// An event the endpoint does not want: the checkpoint may move past it, with no log row.
    fn skip(&mut self, ev: &FeedEvent) {
        self.to = ev.cursor;
    }

    fn push(&mut self, ev: &FeedEvent, done: &Delivered) {
        self.to = ev.cursor;
        self.batch.event_ids.push(ev.id.clone());
        self.batch.events.push(ev.event.clone());
        self.batch
            .attempts
            .push(i32::try_from(done.attempt).unwrap_or(i32::MAX));
        self.batch.status_codes.push(i32::from(done.status));
        self.batch.durations_ms.push(done.duration_ms);
    }

    /// Records the pending deliveries; false when the checkpoint had been moved by someone else
    /// (a replay, a deletion): the caller must re-read it.
    async fn flush(&mut self, pool: &PgPool) -> Result<bool, keyledger_store::StorageError> {
        if self.lost {
            return Ok(false);
        }
        if self.batch.is_empty() && self.to == self.from {
            return Ok(true);
        }
        let ok = store::record_delivered(pool, &self.endpoint_id, &self.batch, self.from, self.to).await?;
        self.batch.clear();
        if ok {
            self.from = self.to;
        } else {
            self.lost = true;
        }
        Ok(ok)
    }
}

/// Delivers one event, retrying on the schedule, until a 2xx, a stop, or the failure rule.
/// A successful attempt, logged by the caller together with the checkpoint move.
struct Delivered {
    attempt: u32,
    status: u16,
    duration_ms: i32,
}

#[expect(
    clippy::too_many_arguments,
    reason = "the delivery loop's state, borrowed from the dispatcher; a struct would only rename it"
)]
async fn deliver_until_done(
    ctx: &Context,
    durable: &PgPool,
    client: &reqwest::Client,
    target: &Target,
    ev: &FeedEvent,
    clean: bool,
    pending: &mut Pending,
    stop: &mut watch::Receiver<bool>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Delivered, Halt> {
    let base = ctx.config.webhook_retry_base;
    let max_attempts = ctx.config.webhook_max_attempts.max(1);
    // A failure run survives restarts: continue its count and its back-off.
    let (mut failures, last) = if clean {
        (0, None)
    } else {
        loop {
            match store::failure_run(&ctx.pool, &target.id, &ev.id, target.updated_at).await {
                Ok((n, last)) => break (u32::try_from(n).unwrap_or(0), last),
                Err(e) => {
                    tracing::warn!(error = %e, "reading the delivery log failed");
                    pause(DB_RETRY, stop, shutdown).await?;
                }
            }
        }
    };
    if let (true, Some(last)) = (failures > 0, last) {
        let due = last + chrono::Duration::from_std(retry_delay(base, failures)).unwrap_or_default();
        if let Ok(wait) = (due - chrono::Utc::now()).to_std() {
            pause(wait, stop, shutdown).await?;
        }
    }
    // reqwest does not ask the resolver about IP literals: the guard checks them itself.
    let blocked_literal =
        reqwest::Url::parse(&target.endpoint_url).is_ok_and(|u| ctx.config.webhook_allow.refuses_literal(&u));
    let body = match serde_json::to_vec(&ev.body) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, event_id = %ev.id, "cannot serialize the event");
            return Err(Halt::Stopped);
        }
    };
    loop {
        let attempt = failures.saturating_add(1);
        let started = Instant::now();
        let outcome = if blocked_literal {
            Err(BLOCKED.to_string())
        } else {
            let sig = signature(&target.secret, chrono::Utc::now().timestamp_millis(), &body);
            let send = client
                .post(&target.endpoint_url)
                .header("content-type", "application/json")
                .header("workos-signature", sig)
                .header("workos-event-id", &ev.id)
                .body(body.clone())
                .send();
            tokio::select! {
                r = send => r.map_err(|e| describe(&e)),
                _ = stop.changed() => return Err(Halt::Stopped),
                _ = shutdown.changed() => return Err(Halt::Stopped),
            }
        };
        let duration_ms = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
        let (status_code, error, delivered) = match outcome {
            Ok(resp) => {
                let s = resp.status();
                let ok = s.is_success();
                (Some(i32::from(s.as_u16())), (!ok).then(|| format!("HTTP {s}")), ok)
            }
            Err(e) => (None, Some(e), false),
        };
        crate::metrics::webhook_attempt(delivered);
        if delivered {
            return Ok(Delivered {
                attempt,
                status: status_code.and_then(|c| u16::try_from(c).ok()).unwrap_or(200),
                duration_ms,
            });
        }
        let record = Attempt {
            endpoint_id: &target.id,
            event_id: &ev.id,
            event: &ev.event,
            attempt: i32::try_from(attempt).unwrap_or(i32::MAX),
            status_code,
            error: error.clone(),
            duration_ms,
            delivered,
        };
        if let Err(e) = store::record_attempt(&ctx.pool, &record).await {
            tracing::warn!(error = %e, "writing the delivery log failed");
        }
        tracing::info!(event_id = %ev.id, attempt, error = ?error, "webhook delivery failed");
        failures = attempt;
        // Record what went through before this event, so the checkpoint does not wait out the
        // back-off; a moved checkpoint (replay) means starting over from it.
        match pending.flush(&ctx.pool).await {
            Ok(true) => {}
            Ok(false) => return Err(Halt::Rewound),
            Err(e) => tracing::warn!(error = %e, "saving the webhook checkpoint failed"),
        }
        if attempt >= max_attempts {
            disable(ctx, durable, target, attempt, error.as_deref().unwrap_or("failed")).await;
            pending.disabled = true;
            return Err(Halt::Disabled);
        }
        pause(jittered(retry_delay(base, failures)), stop, shutdown).await?;
    }
}

/// The delivery log's `error` for an attempt the SSRF guard refused.
const BLOCKED: &str = "blocked address";

/// The delivery log's `error` for a failed request (docs/API.md lists them).
fn describe(e: &reqwest::Error) -> String {
    // Before `is_connect`: the guarded resolver's refusal surfaces as a connect error.
    if ssrf::is_blocked_error(e) {
        BLOCKED.into()
    } else if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else if e.is_request() || e.is_body() {
        "request failed".into()
    } else {
        "delivery failed".into()
    }
}

/// The failure rule tripped: record `WebhookEndpointDisabled` (automatic) in the log, and wait
/// (bounded) until the `webhooks` projection shows it, so the next reconcile does not restart
/// the endpoint from a read model that still says enabled.
async fn disable(ctx: &Context, durable: &PgPool, target: &Target, attempts: u32, last_error: &str) {
    let reason = format!("{attempts} consecutive failed delivery attempts (last: {last_error})");
    let mut meta = HashMap::new();
    meta.insert("actor_id".to_string(), "system".to_string());
    meta.insert("actor_name".to_string(), "webhook dispatcher".to_string());
    meta.insert(
        "occurred_at".to_string(),
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    );
    let cmd = WebhookEndpointCommand::DisableAutomatically {
        reason: reason.clone(),
        at: chrono::Utc::now(),
    };
    match ctx
        .bus
        .execute::<WebhookEndpoint>(&target.id, cmd, &meta, SideRows::default(), Mode::Retry)
        .await
    {
        Ok(done) => {
            tracing::warn!(reason, "webhook endpoint disabled automatically");
            if let Some(at) = done.position {
                let names = [keyledger_projections::engine::WEBHOOKS.name];
                ctx.progress.wait_for(durable, &names, at, Duration::from_secs(5)).await;
            }
        }
        Err(e) => tracing::error!(error = %e, "disabling the webhook endpoint failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_grows_then_stays_at_a_day() {
        let base = Duration::from_secs(30);
        let got: Vec<u64> = (1..=10).map(|n| retry_delay(base, n).as_secs()).collect();
        assert_eq!(got, vec![30, 60, 300, 1800, 7200, 21600, 43200, 86400, 86400, 86400]);
    }

    #[tokio::test]
    async fn a_name_the_guard_refuses_is_logged_as_a_blocked_address() {
        // A nameserver on a closed loopback port: `localhost` is answered by hickory itself.
        let resolver = ssrf::GuardedResolver::new(
            Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9))),
            ssrf::WebhookAllow::default(),
        );
        let client = guarded_client(Duration::from_secs(5), resolver).unwrap_or_else(|e| panic!("client: {e}"));
        let err = match client.post("http://localhost:1/hook").send().await {
            Ok(r) => panic!("localhost was reached: {}", r.status()),
            Err(e) => e,
        };
        assert_eq!(describe(&err), "blocked address", "{err:?}");
        // Without the guard the same request is an ordinary connection failure.
        let err = match reqwest::Client::new().post("http://127.0.0.1:1/hook").send().await {
            Ok(r) => panic!("port 1 answered: {}", r.status()),
            Err(e) => e,
        };
        assert_eq!(describe(&err), "connection failed", "{err:?}");
    }

    #[test]
    fn signatures_match_a_known_hmac() {
        // Computed independently with Python's hmac module.
        let s = signature("whsec_test", 1_700_000_000_000, b"{\"a\":1}");
        assert_eq!(
            s,
            "t=1700000000000, v1=33284ebef248a1f463f81384bfb39351b857cb4897c654b820611536fa084f1e"
        );
    }
}

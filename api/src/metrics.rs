//! Prometheus metrics: `GET /metrics` in the text format, with no API key. It owns the
//! process-wide recorder (installed once, however many servers a process runs: the tests run
//! many), the request counters and histograms, and the gauges sampled at scrape time (projection
//! and subscriber lag, the connection pool). It never labels by raw path or id: routes are
//! their templates, so the series stay few.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{LazyLock, OnceLock, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use keyledger_projections::{engine, feed};
use keyledger_store::commands::CommandError;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;

/// Latency buckets (seconds) of the request histogram.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Lag gauges count up to this many events (as `/health` does): a scrape stays cheap.
const LAG_CAP: i64 = crate::routes::health::HEALTH_LAG_CAP;
/// How often histograms are drained between scrapes ([`upkeep`]).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);
/// A scrape's database sampling gives up after this; the rest is still rendered.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's recorder, installed on first use. `None` when another recorder was installed
/// first (an embedding program's): then `/metrics` says so instead of lying with empty output.
pub fn handle() -> Option<&'static PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let builder = match PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full("keyledger_http_request_duration_seconds".into()), BUCKETS)
            {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "configuring the metrics recorder failed");
                    return None;
                }
            };
            match builder.install_recorder() {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::error!(error = %e, "another metrics recorder is installed; /metrics is unavailable");
                    None
                }
            }
        })
        .as_ref()
}

/// One request series: its counter and latency histogram, with the labels they were made for.
struct Series {
    method: Method,
    route: Box<str>,
    status: u16,
    count: metrics::Counter,
    latency: metrics::Histogram,
}

/// The request series made so far, by a hash of (method, route, status). Looking a series up
/// here costs a hash and a read lock; making it through the macros on every request allocated
/// its labels and searched the recorder's registry, about a sixth of a cheap request's time.
/// Routes are templates, so the set stays small.
static SERIES: LazyLock<RwLock<HashMap<u64, Vec<Series>>>> = LazyLock::new(Default::default);

fn series_hash(method: &Method, route: &str, status: u16) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (method.as_str(), route, status).hash(&mut h);
    h.finish()
}

/// Records one request in its series, making the series on first use.
fn record(method: &Method, route: &str, status: u16, seconds: f64) {
    let hash = series_hash(method, route, status);
    let matches = |s: &&Series| s.method == *method && &*s.route == route && s.status == status;
    if let Ok(all) = SERIES.read() {
        if let Some(s) = all.get(&hash).and_then(|v| v.iter().find(matches)) {
            s.count.increment(1);
            s.latency.record(seconds);
            return;
        }
    }
    let labels = [
        ("method", method.as_str().to_string()),
        ("route", route.to_string()),
        ("status", status.to_string()),
    ];
    let series = Series {
        method: method.clone(),
        route: route.into(),
        status,
        count: metrics::counter!("keyledger_http_requests_total", &labels),
        latency: metrics::histogram!("keyledger_http_request_duration_seconds", &labels),
    };
    series.count.increment(1);
    series.latency.record(seconds);
    if let Ok(mut all) = SERIES.write() {
        let same = all.entry(hash).or_default();
        if !same.iter().any(|s| matches(&s)) {
            same.push(series);
        }
    }
}

/// Counts each request and its latency by method, route template and status.
pub async fn track(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    let started = Instant::now();
    let response = next.run(req).await;
    let route = route.as_ref().map_or("unmatched", |m| m.as_str());
    record(
        &method,
        route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Drains the histograms every few seconds (the recorder keeps every sample until then), so
/// memory stays flat when nobody scrapes.
pub async fn upkeep(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let Some(handle) = handle() else { return };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(UPKEEP_EVERY) => handle.run_upkeep(),
            _ = shutdown.changed() => return,
        }
    }
}

/// One command's outcome, and the events it appended.
pub fn command<T, E: std::error::Error>(aggregate: &'static str, result: &Result<T, CommandError<E>>, events: usize) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(CommandError::Domain(_) | CommandError::Claim(_) | CommandError::Missing(_)) => "rejected",
        Err(CommandError::Conflict) => "conflict",
        Err(CommandError::Unavailable(_)) => "unavailable",
        Err(CommandError::Storage(_)) => "error",
    };
    metrics::counter!("keyledger_commands_total", "aggregate" => aggregate, "outcome" => outcome).increment(1);
    if events > 0 {
        metrics::counter!("keyledger_events_appended_total", "aggregate" => aggregate).increment(events as u64);
    }
}

/// One webhook delivery attempt.
pub fn webhook_attempt(delivered: bool) {
    let outcome = if delivered { "delivered" } else { "failed" };
    metrics::counter!("keyledger_webhook_deliveries_total", "outcome" => outcome).increment(1);
}

/// One rate limit check (`crate::rate_limit`): `allowed`, `refused` or `error`.
pub fn rate_limit_check(limit: &'static str, outcome: &'static str) {
    metrics::counter!("keyledger_rate_limit_checks_total", "limit" => limit, "outcome" => outcome).increment(1);
}

/// One mail handed to the mailer (`crate::mail`): `sent`, `failed`, `timed_out`, `dropped`,
/// `invalid_recipient` or `disabled`.
pub fn mail_delivery(template: &'static str, outcome: &'static str) {
    metrics::counter!("keyledger_mail_deliveries_total", "template" => template, "outcome" => outcome).increment(1);
}

/// `GET /metrics` alone, for the main router or a listener of its own.
pub fn router(requests: PgPool, workers: PgPool) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(Pools { requests, workers })
}

/// The process's two connection pools (`crate::build`).
#[derive(Clone)]
struct Pools {
    requests: PgPool,
    workers: PgPool,
}

async fn scrape(State(pools): State<Pools>) -> Response {
    let Some(handle) = handle() else {
        return crate::error::ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics_unavailable",
            "another metrics recorder is installed in this process",
        )
        .into_response();
    };
    for (name, pool) in [("requests", &pools.requests), ("workers", &pools.workers)] {
        metrics::gauge!("keyledger_db_pool_connections", "pool" => name).set(f64::from(pool.size()));
        metrics::gauge!("keyledger_db_pool_idle_connections", "pool" => name).set(pool.num_idle() as f64);
        metrics::gauge!("keyledger_db_pool_max_connections", "pool" => name)
            .set(f64::from(pool.options().get_max_connections()));
    }
    sample(&pools.requests).await;
    handle.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        handle.render(),
    )
        .into_response()
}

/// Gauges read from the database at scrape time: how far projections and subscribers are behind.
async fn sample(pool: &PgPool) {
    let lag = async {
        let projections = engine::status_at_most(pool, LAG_CAP).await?;
        let subscribers = feed::subscriber_status_at_most(pool, LAG_CAP).await?;
        Ok::<_, keyledger_store::StorageError>((projections, subscribers))
    };
    let up = match tokio::time::timeout(SAMPLE_TIMEOUT, lag).await {
        Ok(Ok((projections, subscribers))) => {
            for p in projections {
                metrics::gauge!("keyledger_projection_lag_events", "projection" => p.name).set(p.behind as f64);
            }
            for s in subscribers {
                metrics::gauge!("keyledger_subscriber_lag_events", "subscriber" => s.name).set(s.behind as f64);
            }
            1.0
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "sampling lag for /metrics failed");
            0.0
        }
        Err(_) => 0.0,
    };
    metrics::gauge!("keyledger_database_up").set(up);
}

//! Prometheus metrics: `GET /metrics` in the text format, with no API key. It owns the
//! process-wide recorder (installed once, however many servers a process runs: the tests run
//! many), the request counters and histograms, and the gauges sampled at scrape time (projection
//! and subscriber lag, the connection pool). It never labels by raw path or id: routes are
//! their templates, so the series stay few.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use keyledger_projections::commands::CommandError;
use keyledger_projections::{engine, feed};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;

/// Latency buckets (seconds) of the request histogram.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Lag gauges count up to this many events (as `/health` does): a scrape stays cheap.
const LAG_CAP: i64 = crate::routes::health::HEALTH_LAG_CAP;
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

/// Counts each request and its latency by method, route template and status.
pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let labels = [
        ("method", method),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("keyledger_http_requests_total", &labels).increment(1);
    metrics::histogram!("keyledger_http_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    response
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
        Ok::<_, keyledger_projections::StorageError>((projections, subscribers))
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

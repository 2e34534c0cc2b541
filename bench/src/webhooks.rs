//! Webhook delivery: commit-to-delivery latency at a steady rate of public events (open loop:
//! `POST /user_management/users` every 1/rate s, each one `user.created`), to one endpoint and
//! fanned out to ten, with loopback receivers in this process. Commit time is the event row's
//! `recorded_at` (`now()` of its one-statement append transaction); delivery time is when the
//! receiver has read the request. Both are this machine's wall clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use axum::extract::State;
use axum::http::StatusCode as AxStatus;
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Utc};
use keyledger_api::{build, Config};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::load::ms;
use crate::report::Row;
use crate::support::Bench;

/// Public events per second the load generator produces.
const RATE: u64 = 200;
/// Latency goal for the 99th percentile.
const GOAL_P99: Duration = Duration::from_millis(100);

type Arrivals = Arc<Mutex<Vec<(String, SystemTime)>>>;

async fn receive(State(got): State<Arrivals>, body: axum::body::Bytes) -> AxStatus {
    let at = SystemTime::now();
    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
        if let Some(id) = v["id"].as_str() {
            if let Ok(mut g) = got.lock() {
                g.push((id.to_string(), at));
            }
        }
    }
    AxStatus::NO_CONTENT
}

async fn receiver() -> anyhow::Result<(String, Arrivals)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding a receiver")?;
    let addr = listener.local_addr().context("receiver address")?;
    let got: Arrivals = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new().route("/hook", post(receive)).with_state(got.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{addr}/hook"), got))
}

/// Both runs: one endpoint, then ten.
pub async fn run(b: &mut Bench) -> anyhow::Result<()> {
    for endpoints in [1usize, 10] {
        one_run(b, endpoints).await?;
    }
    Ok(())
}

async fn one_run(b: &mut Bench, endpoints: usize) -> anyhow::Result<()> {
    eprintln!("  {RATE} events/s to {endpoints} webhook endpoint(s)...");
    let url = b.create_database(&format!("webhooks{endpoints}")).await?;
    let pool = keyledger_api::connect(&url).await?;
    keyledger_api::migrate(&pool).await?;
    let key = keyledger_api::auth::create_key(&pool, "bench")
        .await
        .context("creating an API key")?;
    let config = Config {
        listen: "127.0.0.1:0".parse().context("parsing the listen address")?,
        ..Config::default()
    };
    let running = build(pool.clone(), config).await.context("starting the server")?;
    let base = format!("http://{}", running.addr);
    let http = reqwest::Client::new();
    let mut receivers = Vec::new();
    for _ in 0..endpoints {
        let (hook, got) = receiver().await?;
        let r = http
            .post(format!("{base}/webhook_endpoints"))
            .bearer_auth(&key)
            .json(&json!({ "endpoint_url": hook, "events": ["user.created"] }))
            .send()
            .await
            .context("creating an endpoint")?;
        if r.status() != StatusCode::CREATED {
            bail!("creating an endpoint answered {}", r.status());
        }
        receivers.push(got);
    }
    // Let the dispatcher pick the endpoints up.
    tokio::time::sleep(Duration::from_millis(600)).await;

    // Open loop: one POST every 1/RATE s, each in its own task, through the warm-up and window.
    let total = b.warmup + b.window;
    let count = RATE * total.as_secs();
    let started = SystemTime::now();
    crate::load::steady_user_creates(&http, &base, &key, RATE, count).await?;
    let produced = started.elapsed().unwrap_or_default();
    // Wait for the deliveries to drain (bounded).
    let want = usize::try_from(count).unwrap_or(0) * endpoints;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let have: usize = receivers.iter().map(|r| r.lock().map_or(0, |g| g.len())).sum();
        if have >= want || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recorded: Vec<(String, DateTime<Utc>)> = sqlx::query_as("select id, recorded_at from event")
        .fetch_all(&pool)
        .await
        .context("reading commit times")?;
    let committed: HashMap<String, SystemTime> = recorded.into_iter().map(|(id, at)| (id, at.into())).collect();
    let warm_until = started + b.warmup;
    let mut latencies = Vec::new();
    let mut delivered = 0usize;
    let mut first_arrival: Option<SystemTime> = None;
    let mut last_arrival: Option<SystemTime> = None;
    for r in &receivers {
        let got = r.lock().map(|g| g.clone()).unwrap_or_default();
        delivered += got.len();
        for (id, at) in got {
            let Some(c) = committed.get(&id) else { continue };
            if *c < warm_until {
                continue;
            }
            first_arrival = Some(first_arrival.map_or(at, |f| f.min(at)));
            last_arrival = Some(last_arrival.map_or(at, |l| l.max(at)));
            latencies.push(at.duration_since(*c).unwrap_or_default());
        }
    }
    latencies.sort_unstable();
    let pct = |q: f64| -> Duration {
        if latencies.is_empty() {
            return Duration::ZERO;
        }
        let n = latencies.len();
        let rank = (q * n as f64).ceil() as usize;
        latencies[rank.clamp(1, n) - 1]
    };
    let span = match (first_arrival, last_arrival) {
        (Some(f), Some(l)) => l.duration_since(f).unwrap_or_default(),
        _ => Duration::ZERO,
    };
    let rate = latencies.len() as f64 / span.as_secs_f64().max(1e-9);
    let p99 = pct(0.99);
    let stage = if endpoints == 1 {
        format!("webhooks: {RATE} events/s to 1 endpoint, commit → delivery")
    } else {
        format!("webhooks: {RATE} events/s fanned out to {endpoints} endpoints, commit → delivery")
    };
    b.rows.push(Row::absolute(
        stage,
        format!(
            "{rate:.0} deliveries/s (p50 {}, p99 {}, max {})",
            ms(pct(0.50)),
            ms(p99),
            ms(pct(1.0))
        ),
        format!("p99 < {} ms", GOAL_P99.as_millis()),
        p99 < GOAL_P99 && delivered >= want,
    ));
    b.notes.push(format!(
        "webhooks ×{endpoints}: {delivered} of {want} deliveries arrived; {count} events produced in {:.1} s",
        produced.as_secs_f64()
    ));
    running.stop().await?;
    pool.close().await;
    Ok(())
}

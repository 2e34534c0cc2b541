//! Delivery latency of the subscribers at a steady write rate: `POST /user_management/users` at
//! a fixed rate (open loop), one `GET /events/stream` client and one NATS core subscriber on the
//! publisher's subjects. Latency is from the event's `created_at` (the time the append recorded,
//! just before its commit; millisecond precision) to its arrival at the consumer, on one clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use keyledger_api::{build, Config, NatsConfig};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::{watch, Mutex};

use crate::load::{ms, Stats};
use crate::report::Row;
use crate::support::Bench;

/// Arrival time per event id.
type Arrivals = Arc<Mutex<HashMap<String, Duration>>>;

/// The latency of one delivered event body (`None`: not an event).
fn latency(body: &Value, arrived: DateTime<Utc>) -> Option<(String, Duration)> {
    let id = body["id"].as_str()?.to_string();
    let created = DateTime::parse_from_rfc3339(body["created_at"].as_str()?).ok()?;
    let d = (arrived - created.with_timezone(&Utc))
        .to_std()
        .unwrap_or(Duration::ZERO);
    Some((id, d))
}

async fn read_sse(mut resp: reqwest::Response, arrivals: Arrivals, mut stop: watch::Receiver<bool>) {
    let mut buf = String::new();
    loop {
        let chunk = tokio::select! {
            c = resp.chunk() => c,
            _ = stop.changed() => return,
        };
        let Ok(Some(bytes)) = chunk else { return };
        let arrived = Utc::now();
        buf.push_str(&String::from_utf8_lossy(&bytes));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            for line in frame.lines() {
                if let Some(data) = line.strip_prefix("data:") {
                    if let Ok(v) = serde_json::from_str::<Value>(data.trim_start()) {
                        if let Some((id, d)) = latency(&v, arrived) {
                            arrivals.lock().await.insert(id, d);
                        }
                    }
                }
            }
        }
    }
}

async fn read_nats(mut sub: async_nats::Subscriber, arrivals: Arrivals, mut stop: watch::Receiver<bool>) {
    loop {
        let msg = tokio::select! {
            m = sub.next() => m,
            _ = stop.changed() => return,
        };
        let Some(msg) = msg else { return };
        let arrived = Utc::now();
        if let Ok(v) = serde_json::from_slice::<Value>(&msg.payload) {
            if let Some((id, d)) = latency(&v, arrived) {
                // The first arrival counts (a redelivery would not be news to a consumer).
                arrivals.lock().await.entry(id).or_insert(d);
            }
        }
    }
}

/// Runs the stage: `rate` writes per second for warm-up + window; SSE and NATS measured.
pub async fn run(b: &mut Bench, nats_url: &str, rate: u32) -> anyhow::Result<()> {
    let url = b.create_database("subscribe").await?;
    let pool = keyledger_api::connect(&url).await?;
    keyledger_api::migrate(&pool).await?;
    let key = keyledger_api::auth::create_key(&pool, "bench")
        .await
        .context("creating an API key")?;
    let tag = ulid::Ulid::new().to_string();
    let nats = NatsConfig {
        url: nats_url.to_string(),
        stream: format!("KL_BENCH_{tag}"),
        subject_prefix: format!("klbench_{}", tag.to_lowercase()),
    };
    let client = async_nats::connect(nats_url)
        .await
        .with_context(|| format!("connecting to NATS at {nats_url}"))?;
    let sub = client
        .subscribe(format!("{}.>", nats.subject_prefix))
        .await
        .context("subscribing to NATS")?;
    client.flush().await.context("flushing the NATS subscription")?;
    let config = Config {
        listen: "127.0.0.1:0".parse().context("parsing the listen address")?,
        nats: Some(nats.clone()),
        ..Config::default()
    };
    let running = build(pool.clone(), config).await.context("starting the server")?;
    let base = format!("http://{}", running.addr);
    let http = reqwest::Client::new();
    let stream = http
        .get(format!("{base}/events/stream"))
        .bearer_auth(&key)
        .send()
        .await
        .context("opening the event stream")?;
    if stream.status() != StatusCode::OK {
        bail!("GET /events/stream answered {}", stream.status());
    }
    let (stop, stop_rx) = watch::channel(false);
    let sse_arrivals: Arrivals = Arc::default();
    let nats_arrivals: Arrivals = Arc::default();
    let sse_task = tokio::spawn(read_sse(stream, sse_arrivals.clone(), stop_rx.clone()));
    let nats_task = tokio::spawn(read_nats(sub, nats_arrivals.clone(), stop_rx));

    eprintln!("  POST /user_management/users at {rate}/s; SSE and NATS consumers...");
    let window_start = Utc::now() + b.warmup;
    let window_end = window_start + b.window;
    let total = u64::from(rate) * (b.warmup + b.window).as_secs();
    crate::load::steady_user_creates(&http, &base, &key, u64::from(rate), total).await?;
    // Everything written in the window, from the feed itself.
    let rows: Vec<(String,)> = sqlx::query_as("select id from event_feed where created_at >= $1 and created_at < $2")
        .bind(window_start)
        .bind(window_end)
        .fetch_all(&pool)
        .await
        .context("reading the feed")?;
    let want: Vec<String> = rows.into_iter().map(|(id,)| id).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let sse = sse_arrivals.lock().await.len();
        let nats = nats_arrivals.lock().await.len();
        let enough = {
            let s = sse_arrivals.lock().await;
            let n = nats_arrivals.lock().await;
            want.iter().all(|id| s.contains_key(id) && n.contains_key(id))
        };
        if enough || tokio::time::Instant::now() >= deadline {
            eprintln!("  delivered: SSE {sse}, NATS {nats} (of {} in the window)", want.len());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop.send(true);
    let _ = sse_task.await;
    let _ = nats_task.await;
    let stage = format!("delivery at {rate} events/s (event created_at → arrival)");
    for (name, arrivals, goal) in [
        ("SSE GET /events/stream", &sse_arrivals, Some(Duration::from_millis(50))),
        ("NATS JetStream publisher (core subscriber)", &nats_arrivals, None),
    ] {
        let a = arrivals.lock().await;
        let latencies: Vec<Duration> = want.iter().filter_map(|id| a.get(id).copied()).collect();
        let lost = want.len() - latencies.len();
        let stats = Stats::from_latencies(latencies, b.window);
        let p99 = stats.percentile(0.99);
        let result = format!(
            "p50 {}, p99 {}, max {} ({} events, {:.0}/s, {lost} not delivered)",
            ms(stats.percentile(0.5)),
            ms(p99),
            ms(stats.percentile(1.0)),
            stats.ops,
            stats.rate()
        );
        b.rows.push(match goal {
            Some(g) => Row::absolute(
                format!("{name}: {stage}"),
                result,
                format!("p99 < {}", ms(g)),
                p99 < g && lost == 0,
            ),
            None => Row {
                stage: format!("{name}: {stage}"),
                result,
                baseline: "—".into(),
                ratio: None,
                goal: "none lost".into(),
                met: Some(lost == 0),
            },
        });
    }
    running.stop().await.context("stopping the server")?;
    pool.close().await;
    let js = async_nats::jetstream::new(client);
    if let Err(e) = js.delete_stream(&nats.stream).await {
        eprintln!("warning: could not delete the NATS stream {}: {e}", nats.stream);
    }
    Ok(())
}

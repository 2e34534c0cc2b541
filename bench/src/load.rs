//! A closed-loop load generator: `workers` tasks each run one operation after another for a
//! warm-up and then a measured window. Only operations that complete inside the window count,
//! so the rate is completions per second of the window; latencies are kept in a sorted `Vec`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;

/// What one measured run produced.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Operations completed inside the measured window.
    pub ops: u64,
    /// Length of the measured window.
    pub window: Duration,
    /// Latency of every counted operation, ascending.
    latencies: Vec<Duration>,
}

impl Stats {
    /// Operations per second.
    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.window.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (0 < q ≤ 1) of the latencies, zero when nothing was measured.
    pub fn percentile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let n = self.latencies.len();
        let rank = (q * n as f64).ceil() as usize;
        self.latencies[rank.clamp(1, n) - 1]
    }

    /// Stats of latencies measured elsewhere (an open-loop run), over `window`.
    pub fn from_latencies(mut latencies: Vec<Duration>, window: Duration) -> Stats {
        latencies.sort_unstable();
        Stats {
            ops: latencies.len() as u64,
            window,
            latencies,
        }
    }

    /// "1234 /s (p50 1.20 ms, p99 3.40 ms)".
    pub fn summary(&self, unit: &str) -> String {
        format!(
            "{:.0} {unit}/s (p50 {}, p99 {})",
            self.rate(),
            ms(self.percentile(0.50)),
            ms(self.percentile(0.99))
        )
    }
}

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Runs `op(worker, iteration)` in `workers` concurrent loops for `warmup + window` and measures
/// the window. The first error of any worker aborts the run.
pub async fn closed_loop<F, Fut>(workers: usize, warmup: Duration, window: Duration, op: F) -> anyhow::Result<Stats>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let op = Arc::new(op);
    let start = Instant::now() + warmup;
    let end = start + window;
    let mut tasks = Vec::with_capacity(workers);
    for worker in 0..workers {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i: u64 = 0;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                op(worker, i)
                    .await
                    .with_context(|| format!("worker {worker}, operation {i}"))?;
                i += 1;
                let t1 = Instant::now();
                if t1 >= start && t1 <= end {
                    latencies.push(t1 - t0);
                }
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.context("joining a load worker")??);
    }
    latencies.sort_unstable();
    Ok(Stats {
        ops: latencies.len() as u64,
        window,
        latencies,
    })
}

/// An open-loop writer: `count` `POST /user_management/users` (one `user.created` event each)
/// at `rate` per second, whatever the answers' latency (a late tick fires at once), and waits
/// for all of them. Any answer but 201 fails the run.
pub async fn steady_user_creates(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    rate: u64,
    count: u64,
) -> anyhow::Result<()> {
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / u32::try_from(rate.max(1)).unwrap_or(u32::MAX));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let url = format!("{base}/user_management/users");
    let mut writes = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for _ in 0..count {
        ticker.tick().await;
        let (http, url, key) = (http.clone(), url.clone(), key.to_string());
        writes.push(tokio::spawn(async move {
            let email = format!("{}@bench.example.com", ulid::Ulid::new().to_string().to_lowercase());
            let r = http
                .post(&url)
                .bearer_auth(&key)
                .json(&serde_json::json!({ "email": email }))
                .send()
                .await
                .context("POST")?;
            if r.status() != reqwest::StatusCode::CREATED {
                anyhow::bail!("POST answered {}", r.status());
            }
            anyhow::Ok(())
        }));
    }
    for w in writes {
        w.await.context("joining a POST")??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let s = Stats {
            ops: 100,
            window: Duration::from_secs(1),
            latencies: (1..=100).map(Duration::from_millis).collect(),
        };
        assert_eq!(s.percentile(0.5), Duration::from_millis(50));
        assert_eq!(s.percentile(0.99), Duration::from_millis(99));
        assert_eq!(s.percentile(1.0), Duration::from_millis(100));
        assert!((s.rate() - 100.0).abs() < 1e-9);
    }

    #[tokio::test]
    async fn closed_loop_counts_only_the_window() {
        let s = closed_loop(2, Duration::from_millis(50), Duration::from_millis(200), |_, _| async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(())
        })
        .await
        .expect("run");
        // ~20 per worker in 200 ms; allow scheduling slack.
        assert!(s.ops >= 20 && s.ops <= 42, "ops = {}", s.ops);
        assert!(s.percentile(0.5) >= Duration::from_millis(10));
    }
}

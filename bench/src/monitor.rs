//! Watches for work that is not the benchmark's while it runs: other PostgreSQL sessions that
//! are not idle (other databases on the same server) and other runnable processes on the
//! machine. Sampled every 500 ms and summarised per stage, so the figures say whether they were
//! taken on a quiet machine.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    /// Non-idle client sessions in databases other than this run's.
    foreign_sessions: i64,
    /// Runnable processes other than this one, PostgreSQL and pgbench.
    foreign_runnable: u32,
}

/// A background sampler.
pub struct Monitor {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Monitor {
    pub fn start(admin: PgPool, run: &str) -> Monitor {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = watch::channel(false);
        let pattern = format!("kl_bench_{run}_%");
        let sink = samples.clone();
        let task = tokio::spawn(async move {
            loop {
                let foreign_sessions = sqlx::query_as::<_, (i64,)>(
                    "select count(*) from pg_stat_activity where backend_type = 'client backend' \
                     and state <> 'idle' and pid <> pg_backend_pid() and coalesce(datname, '') not like $1",
                )
                .bind(&pattern)
                .fetch_one(&admin)
                .await
                .map_or(0, |(n,)| n);
                let sample = Sample {
                    foreign_sessions,
                    foreign_runnable: foreign_runnable(),
                };
                if let Ok(mut v) = sink.lock() {
                    v.push(sample);
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stopped.changed() => return,
                }
            }
        });
        Monitor { samples, stop, task }
    }

    /// Marks the start of a stage: the samples so far are summarised by [`Monitor::since`].
    pub fn mark(&self) -> usize {
        self.samples.lock().map_or(0, |v| v.len())
    }

    /// "other sessions: avg 0.1, max 2; other runnable processes: avg 0.0, max 1 (24 samples)".
    pub fn since(&self, mark: usize) -> String {
        let v: Vec<Sample> = self
            .samples
            .lock()
            .map(|v| v.get(mark..).unwrap_or_default().to_vec())
            .unwrap_or_default();
        if v.is_empty() {
            return "no samples".into();
        }
        let n = v.len() as f64;
        let avg_s = v.iter().map(|s| s.foreign_sessions as f64).sum::<f64>() / n;
        let max_s = v.iter().map(|s| s.foreign_sessions).max().unwrap_or(0);
        let avg_r = v.iter().map(|s| f64::from(s.foreign_runnable)).sum::<f64>() / n;
        let max_r = v.iter().map(|s| s.foreign_runnable).max().unwrap_or(0);
        format!(
            "other busy PostgreSQL sessions avg {avg_s:.1}, max {max_s}; other runnable processes avg {avg_r:.1}, \
             max {max_r} ({} samples)",
            v.len()
        )
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Processes in state R that are neither this one nor PostgreSQL/pgbench (kernel threads and
/// this process's own threads are not listed as separate processes in /proc).
fn foreign_runnable() -> u32 {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut n = 0;
    for entry in dir.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|p| p.bytes().all(|b| b.is_ascii_digit())) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may contain spaces, so split at the last ')'.
        let Some((head, tail)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map_or("", |(_, c)| c);
        let mut fields = tail.split_whitespace();
        let state = fields.next().unwrap_or("");
        let ppid = fields.next().unwrap_or("");
        if state == "R" && ppid != "2" && !matches!(comm, "postgres" | "pgbench") {
            n += 1;
        }
    }
    n
}

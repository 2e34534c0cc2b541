//! The PostgreSQL baselines: `pgbench` with a custom single-row insert script (a ~500 B `jsonb`
//! row, about the size of an event's payload plus metadata) and `pgbench -S` (select-only on
//! the `pgbench -i` tables).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::json;

/// One pgbench run's figures.
#[derive(Debug, Clone)]
pub struct PgbenchResult {
    /// Transactions per second, without connection time.
    pub tps: f64,
    /// Average latency in milliseconds.
    pub latency_ms: f64,
}

/// The pgbench binary and the baseline database.
pub struct Pgbench {
    bin: PathBuf,
    script: PathBuf,
    /// URL of the baseline database once initialised.
    pub database: Option<String>,
}

/// Finds pgbench: the explicit path, PATH, /usr/bin, then the newest /usr/lib/postgresql/*/bin.
pub fn find(explicit: Option<PathBuf>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return p.is_file().then_some(p);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("pgbench");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let usr = PathBuf::from("/usr/bin/pgbench");
    if usr.is_file() {
        return Some(usr);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin/pgbench"))
        .filter(|p| p.is_file())
        .collect();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(Path::parent)
            .and_then(Path::file_name)
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions.pop()
}

/// The inserted row: shaped like an event's payload and metadata, about 500 bytes of JSON.
pub fn insert_row() -> String {
    let row = json!({
        "payload": {"UserCreated": {
            "at": "2026-01-01T00:00:00.000000000Z",
            "email": "pgbench-baseline-user@example.com",
            "metadata": {},
            "last_name": "Lovelace",
            "first_name": "Ada",
            "external_id": null,
            "has_password": false,
            "email_verified": false
        }},
        "metadata": {
            "ip": "127.0.0.1",
            "actor_id": "key_01M8DKYRS3ERZQ97DX7Y9214Y6",
            "actor_name": "bench",
            "request_id": "f8bc7ac2-0bd1-4ef7-ad73-222aa8e3197c",
            "user_agent": "keyledger-bench",
            "occurred_at": "2026-01-01T00:00:00.000000Z"
        },
        "aggregate": {"type": "User", "id": "user_01M8DKYRS3ERZQ97DX7Y9214Y6", "sequence": 1}
    });
    pgbench_safe(&row.to_string())
}

/// pgbench reads `:name` in a script as a variable: separate JSON's key colons with a space and
/// write colons inside strings as `\u003a` (the stored `jsonb` is the same).
fn pgbench_safe(json: &str) -> String {
    let mut out = String::with_capacity(json.len() + 64);
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        match c {
            ':' if in_string => out.push_str("\\u003a"),
            ':' => out.push_str(": "),
            _ => out.push(c),
        }
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        }
    }
    out
}

impl Pgbench {
    pub fn new(bin: PathBuf, run: &str) -> Self {
        let script = std::env::temp_dir().join(format!("kl_bench_{run}_insert.sql"));
        Self {
            bin,
            script,
            database: None,
        }
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// `pgbench -i -s 1` plus the insert table, and writes the insert script.
    pub async fn init(&self, url: &str) -> anyhow::Result<()> {
        let out = tokio::process::Command::new(&self.bin)
            .args(["-i", "-q", "-s", "1", url])
            .output()
            .await
            .with_context(|| format!("running {} -i", self.bin.display()))?;
        if !out.status.success() {
            bail!("pgbench -i failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let pool = sqlx::PgPool::connect(url)
            .await
            .context("connecting to the pgbench database")?;
        sqlx::query("create table bench_row (id bigint generated always as identity primary key, body jsonb not null)")
            .execute(&pool)
            .await
            .context("creating bench_row")?;
        pool.close().await;
        let row = insert_row();
        if row.contains('\'') {
            bail!("the baseline row must not contain a quote");
        }
        std::fs::write(
            &self.script,
            format!("insert into bench_row (body) values ('{row}');\n"),
        )
        .with_context(|| format!("writing {}", self.script.display()))?;
        Ok(())
    }

    /// Single-row inserts at `clients` concurrent connections for `window`.
    pub async fn insert(&self, url: &str, clients: usize, window: Duration) -> anyhow::Result<PgbenchResult> {
        let script = self.script.to_string_lossy().to_string();
        self.run(url, clients, window, &["-f", &script]).await
    }

    /// `pgbench -S` (one primary-key select of pgbench_accounts per transaction).
    pub async fn select_only(&self, url: &str, clients: usize, window: Duration) -> anyhow::Result<PgbenchResult> {
        self.run(url, clients, window, &["-S"]).await
    }

    async fn run(&self, url: &str, clients: usize, window: Duration, extra: &[&str]) -> anyhow::Result<PgbenchResult> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(clients);
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.args(["-n", "-M", "prepared"])
            .args(["-c", &clients.to_string(), "-j", &threads.to_string()])
            .args(["-T", &window.as_secs().max(1).to_string()])
            .args(extra)
            .arg(url);
        let out = cmd
            .output()
            .await
            .with_context(|| format!("running {}", self.bin.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "pgbench failed ({}): {}{}",
                out.status,
                stdout,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        parse(&stdout).with_context(|| format!("reading pgbench output:\n{stdout}"))
    }

    pub fn cleanup(&self) {
        let _ = std::fs::remove_file(&self.script);
    }
}

/// Reads `tps = N (without initial connection time)` and `latency average = N ms`.
fn parse(out: &str) -> anyhow::Result<PgbenchResult> {
    let number = |prefix: &str| -> Option<f64> {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    };
    let tps = number("tps = ").context("no tps line")?;
    let latency_ms = number("latency average = ").context("no latency line")?;
    Ok(PgbenchResult { tps, latency_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pgbench_output_and_the_row_is_about_500_bytes() {
        let out = "number of failed transactions: 0 (0.000%)\nlatency average = 0.627 ms\n\
                   initial connection time = 4.475 ms\ntps = 3188.850774 (without initial connection time)\n";
        let r = parse(out).expect("parse");
        assert!((r.tps - 3188.850774).abs() < 1e-6);
        assert!((r.latency_ms - 0.627).abs() < 1e-9);
        let row = insert_row();
        assert!((450..=600).contains(&row.len()), "row is {} bytes", row.len());
        let colons: Vec<usize> = row.match_indices(':').map(|(i, _)| i).collect();
        assert!(colons.iter().all(|i| row[i + 1..].starts_with(' ')), "{row}");
        let back: serde_json::Value = serde_json::from_str(&row).expect("still JSON");
        assert_eq!(back["metadata"]["occurred_at"], "2026-01-01T00:00:00.000000Z");
    }
}

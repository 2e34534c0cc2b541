//! The run's context: connection URLs, the throwaway databases it creates (and drops), the
//! pgbench baselines measured so far, and the rows of the result table.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::pgbench::{self, Pgbench, PgbenchResult};
use crate::report::Row;

/// Everything the stages share.
pub struct Bench {
    /// The server's URL as given (with `sslmode` settled), pointing at the maintenance database.
    pub admin_url: String,
    admin: PgPool,
    /// Distinguishes this run's databases: `kl_bench_{run}_{suffix}`.
    pub run: String,
    created: Vec<String>,
    pub warmup: Duration,
    pub window: Duration,
    pub pgbench: Option<Pgbench>,
    /// Why pgbench baselines are missing, when they are.
    pub pgbench_note: Option<String>,
    /// pgbench insert results by client count (measured once per run, reused across stages).
    pub insert_baselines: HashMap<usize, PgbenchResult>,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

impl Bench {
    pub async fn new(
        url: &str,
        warmup: Duration,
        window: Duration,
        pgbench_bin: Option<PathBuf>,
    ) -> anyhow::Result<Bench> {
        let admin_url = with_sslmode(url);
        let admin = PgPoolOptions::new()
            .max_connections(2)
            .connect(&admin_url)
            .await
            .with_context(|| format!("connecting to {}", redact(&admin_url)))?;
        let run = ulid::Ulid::new().to_string().to_lowercase();
        let (pgbench, pgbench_note) = match pgbench::find(pgbench_bin) {
            Some(bin) => (Some(Pgbench::new(bin, &run)), None),
            None => (
                None,
                Some(
                    "pgbench not found (looked in PATH, /usr/bin, /usr/lib/postgresql/*/bin): baselines skipped".into(),
                ),
            ),
        };
        Ok(Bench {
            admin_url,
            admin,
            run,
            created: Vec::new(),
            warmup,
            window,
            pgbench,
            pgbench_note,
            insert_baselines: HashMap::new(),
            rows: Vec::new(),
            notes: Vec::new(),
        })
    }

    pub fn admin(&self) -> &PgPool {
        &self.admin
    }

    /// Creates an empty database `kl_bench_{run}_{suffix}` and returns its URL.
    pub async fn create_database(&mut self, suffix: &str) -> anyhow::Result<String> {
        let name = format!("kl_bench_{}_{suffix}", self.run);
        sqlx::query(&format!("create database {name}"))
            .execute(&self.admin)
            .await
            .with_context(|| format!("creating database {name}"))?;
        self.created.push(name.clone());
        Ok(with_database(&self.admin_url, &name))
    }

    /// Drops every database this run created (forcing out leftover connections).
    pub async fn drop_databases(&mut self) {
        for name in std::mem::take(&mut self.created) {
            let r = sqlx::query(&format!("drop database if exists {name} with (force)"))
                .execute(&self.admin)
                .await;
            if let Err(e) = r {
                eprintln!("warning: could not drop database {name}: {e}");
            }
        }
    }

    /// The names of the databases created so far (for `--keep-databases`).
    pub fn databases(&self) -> &[String] {
        &self.created
    }

    /// The pgbench single-row insert rate at `clients`, measured once per run.
    pub async fn insert_baseline(&mut self, clients: usize) -> anyhow::Result<Option<PgbenchResult>> {
        if let Some(r) = self.insert_baselines.get(&clients) {
            return Ok(Some(r.clone()));
        }
        if self.pgbench.is_none() {
            return Ok(None);
        }
        let url = self.pgbench_database().await?;
        let Some(pg) = &self.pgbench else {
            return Ok(None);
        };
        eprintln!("  pgbench insert, {clients} client(s)...");
        let r = pg.insert(&url, clients, self.window).await?;
        self.insert_baselines.insert(clients, r.clone());
        Ok(Some(r))
    }

    /// The pgbench `-S` (select-only) rate at `clients`.
    pub async fn select_baseline(&mut self, clients: usize) -> anyhow::Result<Option<PgbenchResult>> {
        if self.pgbench.is_none() {
            return Ok(None);
        }
        let url = self.pgbench_database().await?;
        let Some(pg) = &self.pgbench else {
            return Ok(None);
        };
        eprintln!("  pgbench -S, {clients} client(s)...");
        Ok(Some(pg.select_only(&url, clients, self.window).await?))
    }

    /// The baseline database (`pgbench -i` tables plus the insert table), created on first use.
    async fn pgbench_database(&mut self) -> anyhow::Result<String> {
        if let Some(url) = self.pgbench.as_ref().and_then(|p| p.database.clone()) {
            return Ok(url);
        }
        let url = self.create_database("pgbench").await?;
        if let Some(pg) = self.pgbench.as_mut() {
            pg.init(&url).await?;
            pg.database = Some(url.clone());
        }
        Ok(url)
    }

    /// Removes temporary files (the pgbench script).
    pub fn cleanup_files(&self) {
        if let Some(pg) = &self.pgbench {
            pg.cleanup();
        }
    }
}

/// The 1-minute load average (from /proc/loadavg), if readable.
pub fn load_average() -> Option<String> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

/// Benchmarks compare plain TCP connections: `sslmode=disable` unless the URL says otherwise
/// (libpq and sqlx both default to `prefer`, which would encrypt loopback traffic whenever the
/// server has `ssl = on` and the client was built with TLS).
pub fn with_sslmode(url: &str) -> String {
    if url.contains("sslmode=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&sslmode=disable")
    } else {
        format!("{url}?sslmode=disable")
    }
}

/// Replaces the database name in a PostgreSQL URL, keeping its parameters.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..i + scheme_end],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{name}?{q}"),
        None => format!("{host_part}/{name}"),
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[scheme_end..];
    match (rest.find('@'), rest.find(':')) {
        (Some(at), Some(colon)) if colon < at => {
            format!("{}{}:***{}", &url[..scheme_end], &rest[..colon], &rest[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_a_database_and_sslmode() {
        let u = with_sslmode("postgres://postgres@127.0.0.1:5432/postgres");
        assert_eq!(u, "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable");
        assert_eq!(
            with_database(&u, "kl_bench_x"),
            "postgres://postgres@127.0.0.1:5432/kl_bench_x?sslmode=disable"
        );
        assert_eq!(
            with_sslmode("postgres://h/db?sslmode=require"),
            "postgres://h/db?sslmode=require"
        );
        assert_eq!(with_database("postgres://h:1", "d"), "postgres://h:1/d");
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}

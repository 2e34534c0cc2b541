//! The HTTP API end to end, against the server running in this process (`build` on
//! 127.0.0.1:0, projection workers included): `POST /user_management/users` (which answers only
//! once the projections have applied the new user) and `GET /user_management/users/{id}`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use keyledger_api::{build, Config, Running};
use keyledger_domain::ids::new_id;
use keyledger_domain::user::User;
use keyledger_projections::engine;
use keyledger_store::append::SideRows;
use keyledger_store::commands::{CommandBus, Mode};
use keyledger_store::EventStore;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;

use crate::append::create_command;
use crate::load::{closed_loop, ms, Stats};
use crate::report::Row;
use crate::support::Bench;

/// Connections for the create stage.
const CREATE_CONNECTIONS: usize = 8;
/// Connections for the read stage.
const GET_CONNECTIONS: usize = 16;
/// Users the read stage picks from.
const GET_USERS: usize = 2_000;

/// A server on a fresh database with an API key.
pub struct Server {
    running: Running,
    pool: PgPool,
    base: String,
    key: String,
}

impl Server {
    pub async fn start(b: &mut Bench) -> anyhow::Result<Server> {
        let url = b.create_database("http").await?;
        let pool = keyledger_api::connect(&url).await?;
        keyledger_api::migrate(&pool).await?;
        let key = keyledger_api::auth::create_key(&pool, "bench")
            .await
            .context("creating an API key")?;
        let config = Config {
            listen: "127.0.0.1:0".parse().context("parsing the listen address")?,
            dns_nameserver: None,
            read_your_writes: Duration::from_secs(5),
            ..Config::default()
        };
        let running = build(pool.clone(), config).await.context("starting the server")?;
        let base = format!("http://{}", running.addr);
        Ok(Server {
            running,
            pool,
            base,
            key,
        })
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.running.stop().await?;
        self.pool.close().await;
        Ok(())
    }
}

/// One HTTP client per connection, so `n` workers hold exactly `n` keep-alive connections.
pub(crate) fn http_clients(n: usize) -> anyhow::Result<Arc<Vec<reqwest::Client>>> {
    let clients = (0..n)
        .map(|_| {
            reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .context("building an HTTP client")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Arc::new(clients))
}

/// `POST /user_management/users` (no password) at [`CREATE_CONNECTIONS`], without and then with
/// an `Idempotency-Key` (the official SDKs send one on every POST), against one pgbench baseline.
pub async fn create(b: &mut Bench, server: &Server) -> anyhow::Result<()> {
    let plain = create_run(b, server, false).await?;
    let keyed = create_run(b, server, true).await?;
    let pg = b.insert_baseline(CREATE_CONNECTIONS).await?;
    let baseline = pg.map(|r| {
        (
            format!(
                "pgbench insert `-c {CREATE_CONNECTIONS}`: {:.0} tps ({:.2} ms avg)",
                r.tps, r.latency_ms
            ),
            r.tps,
        )
    });
    for (stats, how) in [(&plain, ""), (&keyed, " with Idempotency-Key")] {
        push_versus(
            b,
            format!("HTTP POST /user_management/users{how}, {CREATE_CONNECTIONS} connections"),
            stats,
            "req",
            baseline.clone(),
            0.5,
        );
    }
    Ok(())
}

async fn create_run(b: &Bench, server: &Server, idempotency_key: bool) -> anyhow::Result<Stats> {
    let how = if idempotency_key { " with Idempotency-Key" } else { "" };
    eprintln!("  POST /user_management/users{how}, {CREATE_CONNECTIONS} connections...");
    let clients = http_clients(CREATE_CONNECTIONS)?;
    let url = format!("{}/user_management/users", server.base);
    let key = server.key.clone();
    closed_loop(CREATE_CONNECTIONS, b.warmup, b.window, move |w, _| {
        let client = clients[w].clone();
        let url = url.clone();
        let key = key.clone();
        async move {
            let email = format!("{}@bench.example.com", new_id("h").to_lowercase());
            let mut req = client.post(&url).bearer_auth(&key).json(&json!({ "email": email }));
            if idempotency_key {
                req = req.header("Idempotency-Key", new_id("idem"));
            }
            let r = req.send().await.context("POST")?;
            let status = r.status();
            let body = r.bytes().await.context("reading the response")?;
            if status != StatusCode::CREATED {
                bail!("POST answered {status}: {}", String::from_utf8_lossy(&body));
            }
            Ok(())
        }
    })
    .await
}

/// `GET /user_management/users/{id}` at [`GET_CONNECTIONS`] over [`GET_USERS`] users.
pub async fn get(b: &mut Bench, server: &Server) -> anyhow::Result<()> {
    eprintln!("  seeding {GET_USERS} users...");
    let ids = seed_users(&server.pool, GET_USERS).await?;
    wait_for_projections(&server.pool).await?;
    eprintln!("  GET /user_management/users/{{id}}, {GET_CONNECTIONS} connections...");
    let clients = http_clients(GET_CONNECTIONS)?;
    let urls: Arc<Vec<String>> = Arc::new(
        ids.iter()
            .map(|id| format!("{}/user_management/users/{id}", server.base))
            .collect(),
    );
    let key = server.key.clone();
    let stats = closed_loop(GET_CONNECTIONS, b.warmup, b.window, move |w, i| {
        let client = clients[w].clone();
        let url = urls[pick(w, i, urls.len())].clone();
        let key = key.clone();
        async move {
            let r = client.get(&url).bearer_auth(&key).send().await.context("GET")?;
            let status = r.status();
            let body = r.bytes().await.context("reading the response")?;
            if status != StatusCode::OK {
                bail!("GET answered {status}: {}", String::from_utf8_lossy(&body));
            }
            Ok(())
        }
    })
    .await?;
    let pg = b.select_baseline(GET_CONNECTIONS).await?;
    let stage = format!("HTTP GET /user_management/users/{{id}}, {GET_CONNECTIONS} connections");
    push_versus(
        b,
        stage.clone(),
        &stats,
        "req",
        pg.map(|r| {
            (
                format!(
                    "pgbench -S `-c {GET_CONNECTIONS}`: {:.0} tps ({:.2} ms avg)",
                    r.tps, r.latency_ms
                ),
                r.tps,
            )
        }),
        0.5,
    );
    let p99 = stats.percentile(0.99);
    b.rows.push(Row::absolute(
        format!("{stage}: p99 latency"),
        format!("{} (p99.9 {})", ms(p99), ms(stats.percentile(0.999))),
        "< 5 ms",
        p99 < Duration::from_millis(5),
    ));

    // For reference: the HTTP stack alone (router fallback, no auth, no database) with the same
    // client on the same cores: the ceiling of any endpoint on this machine.
    eprintln!("  GET (unrouted path, 404), {GET_CONNECTIONS} connections...");
    let plain = http_clients(GET_CONNECTIONS)?;
    let url = format!("{}/bench/no_such_path", server.base);
    let ceiling = closed_loop(GET_CONNECTIONS, b.warmup, b.window, move |w, _| {
        let client = plain[w].clone();
        let url = url.clone();
        async move {
            let r = client.get(&url).send().await.context("GET")?;
            let status = r.status();
            r.bytes().await.context("reading the response")?;
            if status != StatusCode::NOT_FOUND {
                bail!("unrouted GET answered {status}");
            }
            Ok(())
        }
    })
    .await?;
    b.rows.push(Row::reference(
        format!("reference: HTTP stack only (unrouted GET → 404, no database), {GET_CONNECTIONS} connections"),
        ceiling.summary("req"),
    ));
    Ok(())
}

fn push_versus(b: &mut Bench, stage: String, stats: &Stats, unit: &str, baseline: Option<(String, f64)>, goal: f64) {
    let (text, value) = match baseline {
        Some((t, v)) => (t, Some(v)),
        None => (b.pgbench_note.clone().unwrap_or_else(|| "skipped".into()), None),
    };
    b.rows.push(Row::versus(
        stage,
        stats.summary(unit),
        stats.rate(),
        text,
        value,
        Some(goal),
    ));
}

/// A spread-out index for worker `w`'s `i`-th request (a small multiplicative hash).
pub(crate) fn pick(w: usize, i: u64, n: usize) -> usize {
    let x = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (w as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)) >> 17;
    usize::try_from(x % n.max(1) as u64).unwrap_or(0)
}

/// Creates `n` users through the command bus (8 at a time) and returns their ids.
async fn seed_users(pool: &PgPool, n: usize) -> anyhow::Result<Vec<String>> {
    let bus = CommandBus::new(EventStore::new(pool.clone()));
    let mut tasks = Vec::new();
    for w in 0..8 {
        let bus = bus.clone();
        let count = n / 8 + usize::from(w < n % 8);
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(count);
            for _ in 0..count {
                let id = new_id("user");
                let cmd = create_command(&id)?;
                bus.execute::<User>(&id, cmd, &HashMap::new(), SideRows::default(), Mode::Once)
                    .await
                    .context("seeding a user")?;
                ids.push(id);
            }
            anyhow::Ok(ids)
        }));
    }
    let mut ids = Vec::with_capacity(n);
    for t in tasks {
        ids.extend(t.await.context("joining a seeding task")??);
    }
    Ok(ids)
}

/// Waits (up to a minute) until every projection has applied the whole log.
async fn wait_for_projections(pool: &PgPool) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = engine::status(pool).await.context("reading projection status")?;
        if status.iter().all(|s| s.behind == 0) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("projections did not catch up within 60 s: {status:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_cover_the_range() {
        let n = 100;
        let mut seen = vec![false; n];
        for w in 0..4 {
            for i in 0..2_000 {
                seen[pick(w, i, n)] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
    }
}

//! Sign-in, end to end against the server running in this process (`build` on 127.0.0.1:0):
//! password sign-ins per second against the reference `argon2` CLI at the same parameters on the
//! same cores; `GET /user_management/users/{id}` latency while a sign-in storm runs; refresh-token
//! grants per second; `GET /sso/jwks/{client_id}` against `pgbench -S`. Rate limits are off (the
//! point is the server's capacity, not its limits) and sign-in does not require a verified email.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use keyledger_api::{build, Config, Running};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::sync::Mutex;

use crate::http::{http_clients, pick};
use crate::load::{closed_loop, ms, Stats};
use crate::report::Row;
use crate::support::Bench;

/// Connections that sign in (more than the hashing concurrency: the queue is part of the test).
const SIGNIN_CONNECTIONS: usize = 8;
/// Connections reading during the storm.
const READ_CONNECTIONS: usize = 4;
/// Sessions refreshed in parallel, one connection each.
const REFRESH_CONNECTIONS: usize = 8;
/// Connections for the JWKS.
const JWKS_CONNECTIONS: usize = 16;
/// Users with a password.
const USERS: usize = 16;
const PASSWORD: &str = "bench password 0123";

struct Server {
    running: Running,
    pool: PgPool,
    base: String,
    key: String,
    client_id: String,
}

impl Server {
    async fn start(b: &mut Bench) -> anyhow::Result<Server> {
        let url = b.create_database("signin").await?;
        let pool = keyledger_api::connect(&url).await?;
        keyledger_api::migrate(&pool).await?;
        let key = keyledger_api::auth::create_key(&pool, "bench")
            .await
            .context("creating an API key")?;
        let mut config = Config {
            listen: "127.0.0.1:0".parse().context("parsing the listen address")?,
            dns_nameserver: None,
            read_your_writes: Duration::from_secs(5),
            ..Config::default()
        };
        config.rate_limits.password_per_email = 0;
        config.rate_limits.codes_per_email = 0;
        config.rate_limits.authenticate_per_ip = 0;
        config.auth.require_email_verification = false;
        let running = build(pool.clone(), config).await.context("starting the server")?;
        let base = format!("http://{}", running.addr);
        let client_id = running.tokens.client_id().to_string();
        Ok(Server {
            running,
            pool,
            base,
            key,
            client_id,
        })
    }

    fn password_grant(&self, email: &str) -> Value {
        json!({ "grant_type": "password", "client_id": self.client_id, "client_secret": self.key,
                "email": email, "password": PASSWORD })
    }
}

async fn post_json(client: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<Value> {
    let r = client.post(url).json(body).send().await.context("POST")?;
    let status = r.status();
    let text = r.bytes().await.context("reading the response")?;
    if !status.is_success() {
        bail!("{url} answered {status}: {}", String::from_utf8_lossy(&text));
    }
    serde_json::from_slice(&text).context("parsing the response")
}

pub async fn run(b: &mut Bench) -> anyhow::Result<()> {
    let server = Server::start(b).await?;
    let result = stages(b, &server).await;
    server.running.stop().await.context("stopping the server")?;
    server.pool.close().await;
    result
}

async fn stages(b: &mut Bench, server: &Server) -> anyhow::Result<()> {
    eprintln!("  seeding {USERS} users with passwords...");
    let seed = reqwest::Client::new();
    let mut emails = Vec::new();
    let mut ids = Vec::new();
    for i in 0..USERS {
        let email = format!(
            "signin{i}-{}@bench.example.com",
            keyledger_domain::ids::new_id("b").to_lowercase()
        );
        let user = seed
            .post(format!("{}/user_management/users", server.base))
            .bearer_auth(&server.key)
            .json(&json!({ "email": email, "password": PASSWORD, "email_verified": true }))
            .send()
            .await
            .context("creating a user")?;
        if user.status() != StatusCode::CREATED {
            bail!("creating a user answered {}", user.status());
        }
        let user: Value = user.json().await.context("parsing the user")?;
        ids.push(user["id"].as_str().unwrap_or_default().to_string());
        emails.push(email);
    }

    // The reference: the argon2 CLI at the same parameters, one loop per core.
    let reference = argon2_reference(b.window).await;

    // The storm, with readers beside it.
    eprintln!("  password sign-ins, {SIGNIN_CONNECTIONS} connections, with {READ_CONNECTIONS} readers...");
    let url = format!("{}/user_management/authenticate", server.base);
    let grants: Arc<Vec<Value>> = Arc::new(emails.iter().map(|e| server.password_grant(e)).collect());
    let clients = http_clients(SIGNIN_CONNECTIONS)?;
    let storm = {
        let (url, grants) = (url.clone(), grants.clone());
        closed_loop(SIGNIN_CONNECTIONS, b.warmup, b.window, move |w, i| {
            let client = clients[w].clone();
            let url = url.clone();
            let body = grants[pick(w, i, grants.len())].clone();
            async move { post_json(&client, &url, &body).await.map(|_| ()) }
        })
    };
    let readers = http_clients(READ_CONNECTIONS)?;
    let user_urls: Arc<Vec<String>> = Arc::new(
        ids.iter()
            .map(|id| format!("{}/user_management/users/{id}", server.base))
            .collect(),
    );
    let key = server.key.clone();
    let reads = closed_loop(READ_CONNECTIONS, b.warmup, b.window, move |w, i| {
        let client = readers[w].clone();
        let url = user_urls[pick(w, i, user_urls.len())].clone();
        let key = key.clone();
        async move {
            let r = client.get(&url).bearer_auth(&key).send().await.context("GET")?;
            let status = r.status();
            r.bytes().await.context("reading the response")?;
            if status != StatusCode::OK {
                bail!("GET answered {status}");
            }
            Ok(())
        }
    });
    let (storm, reads) = tokio::join!(storm, reads);
    let (storm, reads) = (storm?, reads?);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let stage =
        format!("password sign-ins (argon2id m=19 MiB t=2 p=1), {SIGNIN_CONNECTIONS} connections, {cores} cores");
    match reference {
        Ok(r) => b.rows.push(Row::versus(
            stage,
            storm.summary("sign-ins"),
            storm.rate(),
            format!("argon2 CLI, {cores} loops: {r:.1} hashes/s"),
            Some(r),
            Some(0.8),
        )),
        Err(e) => b.rows.push(Row::versus(
            stage,
            storm.summary("sign-ins"),
            storm.rate(),
            format!("argon2 CLI not run: {e}"),
            None,
            Some(0.8),
        )),
    }
    let p99 = reads.percentile(0.99);
    b.rows.push(Row::absolute(
        format!("GET /user_management/users/{{id}} during the sign-in storm, {READ_CONNECTIONS} connections: p99"),
        format!(
            "{} (p50 {}, {:.0} req/s)",
            ms(p99),
            ms(reads.percentile(0.5)),
            reads.rate()
        ),
        "< 25 ms",
        p99 < Duration::from_millis(25),
    ));

    refresh(b, server, &grants, &url).await?;
    jwks(b, server).await
}

/// `REFRESH_CONNECTIONS` sessions, each refreshed back to back with its latest token.
async fn refresh(b: &mut Bench, server: &Server, grants: &[Value], url: &str) -> anyhow::Result<()> {
    eprintln!("  refresh-token grants, {REFRESH_CONNECTIONS} sessions...");
    let seed = reqwest::Client::new();
    let mut tokens = Vec::new();
    for w in 0..REFRESH_CONNECTIONS {
        let signed = post_json(&seed, url, &grants[w % grants.len()]).await?;
        let t = signed["refresh_token"].as_str().unwrap_or_default().to_string();
        tokens.push(Arc::new(Mutex::new(t)));
    }
    let tokens = Arc::new(tokens);
    let clients = http_clients(REFRESH_CONNECTIONS)?;
    let (client_id, key, url) = (server.client_id.clone(), server.key.clone(), url.to_string());
    let stats: Stats = closed_loop(REFRESH_CONNECTIONS, b.warmup, b.window, move |w, _| {
        let client = clients[w].clone();
        let token = tokens[w].clone();
        let (client_id, key, url) = (client_id.clone(), key.clone(), url.clone());
        async move {
            let mut current = token.lock().await;
            let body = json!({ "grant_type": "refresh_token", "client_id": client_id,
                               "client_secret": key, "refresh_token": *current });
            let r = post_json(&client, &url, &body).await?;
            *current = r["refresh_token"].as_str().unwrap_or_default().to_string();
            Ok(())
        }
    })
    .await?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_core = stats.rate() / cores as f64;
    b.rows.push(Row::absolute(
        format!(
            "refresh-token grants, {REFRESH_CONNECTIONS} sessions (server, client and PostgreSQL on {cores} cores)"
        ),
        format!("{} = {per_core:.0} per core", stats.summary("grants")),
        "≥ 1,000 per core",
        per_core >= 1000.0,
    ));
    Ok(())
}

async fn jwks(b: &mut Bench, server: &Server) -> anyhow::Result<()> {
    eprintln!("  GET /sso/jwks/{{client_id}}, {JWKS_CONNECTIONS} connections...");
    let clients = http_clients(JWKS_CONNECTIONS)?;
    let url = format!("{}/sso/jwks/{}", server.base, server.client_id);
    let stats = closed_loop(JWKS_CONNECTIONS, b.warmup, b.window, move |w, _| {
        let client = clients[w].clone();
        let url = url.clone();
        async move {
            let r = client.get(&url).send().await.context("GET")?;
            let status = r.status();
            r.bytes().await.context("reading the response")?;
            if status != StatusCode::OK {
                bail!("GET jwks answered {status}");
            }
            Ok(())
        }
    })
    .await?;
    let pg = b.select_baseline(JWKS_CONNECTIONS).await?;
    let (text, value) = match pg {
        Some(r) => (
            format!(
                "pgbench -S `-c {JWKS_CONNECTIONS}`: {:.0} tps ({:.2} ms avg)",
                r.tps, r.latency_ms
            ),
            Some(r.tps),
        ),
        None => (b.pgbench_note.clone().unwrap_or_else(|| "skipped".into()), None),
    };
    b.rows.push(Row::versus(
        format!("GET /sso/jwks/{{client_id}}, {JWKS_CONNECTIONS} connections"),
        stats.summary("req"),
        stats.rate(),
        text,
        value,
        Some(0.5),
    ));
    Ok(())
}

/// Hashes per second of the reference `argon2` CLI (`bench/argon2-reference.sh`), one loop per
/// core, over `window`.
async fn argon2_reference(window: Duration) -> anyhow::Result<f64> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/argon2-reference.sh");
    eprintln!("  argon2 CLI reference ({} s)...", window.as_secs());
    let out = tokio::process::Command::new("bash")
        .arg(script)
        .arg(window.as_secs().max(1).to_string())
        .output()
        .await
        .context("running bench/argon2-reference.sh")?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // "... = 24.4 hashes/s (...)"
    text.split(" = ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .with_context(|| format!("unexpected output: {text}"))
}

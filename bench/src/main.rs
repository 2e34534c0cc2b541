//! `keyledger-bench`: measures keyledger's write, read and rebuild rates against baselines taken
//! in the same run on the same PostgreSQL (pgbench, stock postgres-es) and prints a markdown
//! table of results, ratios and goals. It works in fresh `kl_bench_*` databases that it drops at
//! the end. Run it in release mode:
//!
//! ```text
//! cargo run --release -p keyledger-bench -- --database-url postgres://postgres@127.0.0.1:5432/postgres
//! ```

mod append;
mod as_of;
mod growth;
mod http;
mod load;
mod monitor;
mod pgbench;
mod rebuild;
mod report;
mod signin;
mod sso;
mod subscribe;
mod support;
mod webhooks;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};

use crate::support::{load_average, redact, Bench};

/// The allocator of the `keyledger` binary, so in-process measurements (rebuild) match it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Stage {
    /// CommandBus appends at 1 and 8 writers vs pgbench insert and stock postgres-es.
    Append,
    /// POST /user_management/users at 8 connections vs pgbench insert.
    HttpCreate,
    /// GET /user_management/users/{id} at 16 connections vs pgbench -S.
    HttpGet,
    /// engine::rebuild of every projection over a generated log.
    Rebuild,
    /// Delivery latency of GET /events/stream and the NATS publisher at a steady write rate.
    Subscribe,
    /// GET ...?as_of= (point-in-time reads) on an organization with a long stream.
    AsOf,
    /// Webhook commit-to-delivery latency at 200 events/s, to 1 and to 10 endpoints.
    Webhooks,
    /// Reads, appends and list filters on a small log and on a large one (`--growth-events`),
    /// start-up until /health answers, and the full rebuild rate.
    Growth,
    /// Password sign-ins vs the argon2 CLI, reads during a sign-in storm, refresh-token grants,
    /// the JWKS vs pgbench -S.
    Signin,
    /// The hosted sign-in page under load; OIDC SSO round trips through the test IdP on loopback
    /// (tests/idp/oidc, node), the share of them spent in keyledger.
    Sso,
}

#[derive(Debug, Parser)]
#[command(
    name = "keyledger-bench",
    about = "Benchmarks keyledger against pgbench and stock postgres-es"
)]
struct Args {
    /// A PostgreSQL server URL (any database: the bench creates and drops its own `kl_bench_*`).
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Measured seconds per run (each run also has a warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Warm-up seconds before each measured run of keyledger or postgres-es.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Stages to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "append,http-create,http-get,rebuild,as-of,webhooks"
    )]
    stages: Vec<Stage>,
    /// Events in the log that the rebuild stage replays.
    #[arg(long, default_value_t = 200_000)]
    rebuild_events: u64,
    /// Events in the organization stream that the as-of stage reads at random instants.
    #[arg(long, default_value_t = 10_000)]
    as_of_events: u64,
    /// Events in the growth stage's large log.
    #[arg(long, default_value_t = 1_000_000)]
    growth_events: u64,
    /// Users in the growth stage's large log (one organization per 100 users, 1.5 memberships
    /// per user; the rest of the events are updates and audit-log events).
    #[arg(long, default_value_t = 100_000)]
    growth_users: u64,
    /// Events in the growth stage's small log, the reference.
    #[arg(long, default_value_t = 10_000)]
    growth_small_events: u64,
    /// Users in the growth stage's small log.
    #[arg(long, default_value_t = 1_000)]
    growth_small_users: u64,
    /// Path of pgbench (default: PATH, /usr/bin, /usr/lib/postgresql/*/bin).
    #[arg(long)]
    pgbench: Option<PathBuf>,
    /// NATS server (with JetStream) for the subscribe stage.
    #[arg(long, env = "KEYLEDGER_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Writes (= events) per second in the subscribe stage.
    #[arg(long, default_value_t = 200)]
    delivery_rate: u32,
    /// Leave the kl_bench_* databases in place for inspection.
    #[arg(long)]
    keep_databases: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sqlx::query=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut b = Bench::new(
        &args.database_url,
        Duration::from_secs(args.warmup),
        Duration::from_secs(args.seconds),
        args.pgbench.clone(),
    )
    .await?;
    let environment = describe_environment(&b).await?;
    eprintln!("{environment}");
    let monitor = monitor::Monitor::start(b.admin().clone(), &b.run);
    let outcome = run_stages(&mut b, &args, &monitor).await;
    monitor.stop().await;
    if args.keep_databases {
        eprintln!("keeping databases: {}", b.databases().join(", "));
    } else {
        b.drop_databases().await;
    }
    b.cleanup_files();
    outcome?;
    println!("{environment}");
    println!("{}", report::table(&b.rows));
    for n in &b.notes {
        println!("- {n}");
    }
    println!("- load average at the end: {}", load_average().unwrap_or_default());
    Ok(())
}

async fn run_stages(b: &mut Bench, args: &Args, monitor: &monitor::Monitor) -> anyhow::Result<()> {
    let has = |s: Stage| args.stages.contains(&s);
    if has(Stage::Append) {
        let mark = stage_banner("append", monitor);
        append::run(b).await.context("append stage")?;
        stage_end(b, "append", monitor, mark);
    }
    if has(Stage::HttpCreate) || has(Stage::HttpGet) {
        let server = http::Server::start(b).await?;
        let mut result = Ok(());
        if has(Stage::HttpCreate) {
            let mark = stage_banner("http-create", monitor);
            result = http::create(b, &server).await.context("http-create stage");
            stage_end(b, "http-create", monitor, mark);
        }
        if result.is_ok() && has(Stage::HttpGet) {
            let mark = stage_banner("http-get", monitor);
            result = http::get(b, &server).await.context("http-get stage");
            stage_end(b, "http-get", monitor, mark);
        }
        server.stop().await.context("stopping the server")?;
        result?;
    }
    if has(Stage::Rebuild) {
        let mark = stage_banner("rebuild", monitor);
        rebuild::run(b, args.rebuild_events).await.context("rebuild stage")?;
        stage_end(b, "rebuild", monitor, mark);
    }
    if has(Stage::Subscribe) {
        let mark = stage_banner("subscribe", monitor);
        subscribe::run(b, &args.nats_url, args.delivery_rate)
            .await
            .context("subscribe stage")?;
        stage_end(b, "subscribe", monitor, mark);
    }
    if has(Stage::AsOf) {
        let mark = stage_banner("as-of", monitor);
        as_of::run(b, args.as_of_events).await.context("as-of stage")?;
        stage_end(b, "as-of", monitor, mark);
    }
    if has(Stage::Webhooks) {
        let mark = stage_banner("webhooks", monitor);
        webhooks::run(b).await.context("webhooks stage")?;
        stage_end(b, "webhooks", monitor, mark);
    }
    if has(Stage::Signin) {
        let mark = stage_banner("signin", monitor);
        signin::run(b).await.context("signin stage")?;
        stage_end(b, "signin", monitor, mark);
    }
    if has(Stage::Sso) {
        let mark = stage_banner("sso", monitor);
        sso::run(b).await.context("sso stage")?;
        stage_end(b, "sso", monitor, mark);
    }
    if has(Stage::Growth) {
        let mark = stage_banner("growth", monitor);
        let small = growth::Sizes {
            events: args.growth_small_events,
            users: args.growth_small_users,
        };
        let large = growth::Sizes {
            events: args.growth_events,
            users: args.growth_users,
        };
        growth::run(b, small, large).await.context("growth stage")?;
        stage_end(b, "growth", monitor, mark);
    }
    Ok(())
}

fn stage_banner(name: &str, monitor: &monitor::Monitor) -> usize {
    eprintln!(
        "== stage {name} (load average {})",
        load_average().unwrap_or_else(|| "unknown".into())
    );
    monitor.mark()
}

fn stage_end(b: &mut Bench, name: &str, monitor: &monitor::Monitor, mark: usize) {
    let activity = monitor.since(mark);
    eprintln!("   {name}: {activity}");
    b.notes.push(format!(
        "during {name}: {activity}; load average at its end {}",
        load_average().unwrap_or_default()
    ));
}

/// The machine and server the figures belong to.
async fn describe_environment(b: &Bench) -> anyhow::Result<String> {
    let mut settings = Vec::new();
    for name in [
        "server_version",
        "synchronous_commit",
        "fsync",
        "wal_sync_method",
        "full_page_writes",
        "shared_buffers",
        "max_connections",
        "ssl",
    ] {
        let (v,): (String,) = sqlx::query_as(&format!("show {name}"))
            .fetch_one(b.admin())
            .await
            .with_context(|| format!("show {name}"))?;
        settings.push(format!("{name}={v}"));
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let pgbench = b.pgbench.as_ref().map_or_else(
        || "pgbench: not found".to_string(),
        |p| format!("pgbench: {}", p.bin().display()),
    );
    Ok(format!(
        "- server: {} ({})\n- client: {cores} CPUs ({cpu}); {pgbench}\n- load average at the start: {}\n\
         - {} s warm-up + {} s measured per run\n",
        redact(&b.admin_url),
        settings.join(", "),
        load_average().unwrap_or_default(),
        b.warmup.as_secs(),
        b.window.as_secs()
    ))
}

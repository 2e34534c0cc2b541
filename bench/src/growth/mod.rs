//! Growth: the same figures on a small log and on a large one (default 10^6 events, 10^5
//! users), each through a server started in this process on its own database, measured in pairs
//! (small, then large, for each request type), and the ratio of each figure between the two. Also the start-up of the server until `/health` answers, and the
//! rebuild rate of every projection over the large log, extrapolated to 10^7 events.
//!
//! The log is written in bulk (`log.rs`), the projections rebuilt from it (`engine::rebuild_all`,
//! what `keyledger projections rebuild` runs), and then the database vacuumed and analyzed as
//! autovacuum would have done on a log that grew over months.

mod log;

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{SecondsFormat, Utc};
use keyledger_api::{build, Config, Running};
use keyledger_domain::ids::new_id;
use keyledger_projections::engine;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, PgPool};

use crate::http::{http_clients, pick};
use crate::load::{closed_loop, ms, Stats};
use crate::report::Row;
use crate::support::Bench;
use log::Shape;

/// How much slower (rate or p99) a figure may be on the large log than on the small one.
const MAX_SLOWDOWN: f64 = 1.5;
/// `serve` must answer `/health` within this after starting, on the large log.
const STARTUP_GOAL: Duration = Duration::from_secs(2);
/// A full rebuild of a 10^7-event log must take less than this.
const REBUILD_GOAL: Duration = Duration::from_secs(240);
const TEN_MILLION: f64 = 10_000_000.0;

/// Events and users of one log.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub events: u64,
    pub users: u64,
}

/// One measured request type: its name in the table, and connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    GetUser,
    CreateUser,
    UsersByEmail,
    EventsByTypeAndRange,
    MembershipsByUser,
    MembershipsByOrganization,
    AuditTrailByAction,
}

impl Probe {
    const ALL: [Probe; 7] = [
        Probe::GetUser,
        Probe::CreateUser,
        Probe::UsersByEmail,
        Probe::EventsByTypeAndRange,
        Probe::MembershipsByUser,
        Probe::MembershipsByOrganization,
        Probe::AuditTrailByAction,
    ];

    fn connections(self) -> usize {
        match self {
            Probe::GetUser => 16,
            Probe::CreateUser => 8,
            _ => 4,
        }
    }

    fn describe(self) -> String {
        let what = match self {
            Probe::GetUser => "GET /user_management/users/{id}".to_string(),
            Probe::CreateUser => "POST /user_management/users (append rate)".to_string(),
            Probe::UsersByEmail => "GET /user_management/users?email=".to_string(),
            Probe::EventsByTypeAndRange => {
                "GET /events?events=user.updated&range_start=&range_end= (a random day)".to_string()
            }
            Probe::MembershipsByUser => "GET /user_management/organization_memberships?user_id=".to_string(),
            Probe::MembershipsByOrganization => {
                "GET /user_management/organization_memberships?organization_id= (a random organization)".to_string()
            }
            Probe::AuditTrailByAction => format!(
                "GET /audit_logs/events?organization_id=&actions={} (the largest organization, a 4% action)",
                log::RARE_ACTION
            ),
        };
        format!("{what}, {} connections", self.connections())
    }
}

/// One log, written, rebuilt and served.
struct Log {
    shape: Shape,
    /// When the log starts (its events spread from here to the moment it was written).
    start: chrono::DateTime<Utc>,
    seeded: Duration,
    rebuilt: Duration,
    startup: Duration,
    running: Running,
    pool: PgPool,
    base: String,
    key: String,
}

impl Log {
    async fn stop(self) -> anyhow::Result<()> {
        self.running.stop().await?;
        self.pool.close().await;
        Ok(())
    }
}

/// Both logs are prepared and served side by side; each probe then runs on the small log and at
/// once on the large one, so the pair shares the machine's conditions of that minute.
pub async fn run(b: &mut Bench, small: Sizes, large: Sizes) -> anyhow::Result<()> {
    let small = prepare(b, "growth_small", small).await.context("the small log")?;
    let large = match prepare(b, "growth_large", large).await.context("the large log") {
        Ok(l) => l,
        Err(e) => {
            small.stop().await?;
            return Err(e);
        }
    };
    let pairs = measure(b, &small, &large).await;
    let (small_summary, large_summary) = (small.summary(), large.summary());
    let stopped = (small.stop().await, large.stop().await);
    let pairs = pairs?;
    stopped.0?;
    stopped.1?;
    report(b, &small_summary, &large_summary, &pairs);
    Ok(())
}

/// What the table needs of a log once its server is gone.
struct Summary {
    shape: Shape,
    seeded: Duration,
    rebuilt: Duration,
    startup: Duration,
}

impl Log {
    fn summary(&self) -> Summary {
        Summary {
            shape: self.shape,
            seeded: self.seeded,
            rebuilt: self.rebuilt,
            startup: self.startup,
        }
    }
}

async fn measure(b: &Bench, small: &Log, large: &Log) -> anyhow::Result<Vec<(Probe, Stats, Stats)>> {
    for log in [small, large] {
        sanity_check(&log.base, &log.key, &log.shape, log.start).await?;
    }
    let mut pairs = Vec::new();
    for probe in Probe::ALL {
        eprintln!("    {}...", probe.describe());
        let s = run_probe(b, probe, small).await.context("the small log")?;
        let l = run_probe(b, probe, large).await.context("the large log")?;
        eprintln!("      small {}; large {}", s.summary("req"), l.summary("req"));
        pairs.push((probe, s, l));
    }
    Ok(pairs)
}

fn report(b: &mut Bench, small: &Summary, large: &Summary, pairs: &[(Probe, Stats, Stats)]) {
    for (probe, s, l) in pairs {
        let by_rate = s.rate() / l.rate().max(1e-9);
        let by_p99 = l.percentile(0.99).as_secs_f64() / s.percentile(0.99).as_secs_f64().max(1e-9);
        b.rows.push(Row::slowdown(
            format!("growth: {}", probe.describe()),
            format!(
                "large log: {} (rate ×{by_rate:.2}, p99 ×{by_p99:.2} of small)",
                l.summary("req")
            ),
            format!("small log: {}", s.summary("req")),
            by_rate.max(by_p99),
            MAX_SLOWDOWN,
        ));
    }
    b.rows.push(Row::absolute(
        "growth: start-up (connect, migrate, build) until /health answers 200, large log",
        format!("{} (small log: {})", ms(large.startup), ms(small.startup)),
        format!("< {} s", STARTUP_GOAL.as_secs()),
        large.startup < STARTUP_GOAL,
    ));
    let rate = large.shape.events as f64 / large.rebuilt.as_secs_f64().max(1e-9);
    let small_rate = small.shape.events as f64 / small.rebuilt.as_secs_f64().max(1e-9);
    let at_ten_million = TEN_MILLION / rate.max(1e-9);
    b.rows.push(Row::absolute(
        "growth: rebuild of every projection together (log events/s), extrapolated to 10^7 events",
        format!(
            "{rate:.0} log events/s ({} events in {:.1} s; small log {small_rate:.0}/s) → 10^7 events in {:.0} s",
            large.shape.events,
            large.rebuilt.as_secs_f64(),
            at_ten_million
        ),
        format!(
            "< {} s (≥ {:.0} log events/s)",
            REBUILD_GOAL.as_secs(),
            TEN_MILLION / REBUILD_GOAL.as_secs_f64()
        ),
        at_ten_million < REBUILD_GOAL.as_secs_f64(),
    ));
    for (name, f) in [("small", small), ("large", large)] {
        b.notes.push(format!(
            "growth, {name} log: {}; written in {:.1} s",
            f.shape.describe(),
            f.seeded.as_secs_f64()
        ));
    }
}

/// Writes one log, rebuilds its projections, vacuums, and starts a server on it (timed until
/// `/health` answers).
async fn prepare(b: &mut Bench, suffix: &str, sizes: Sizes) -> anyhow::Result<Log> {
    let shape = Shape::new(sizes.events, sizes.users)?;
    let url = b.create_database(suffix).await?;
    let pool = keyledger_api::connect(&url).await?;
    keyledger_api::migrate(&pool).await?;
    let key = keyledger_api::auth::create_key(&pool, "bench")
        .await
        .context("creating an API key")?;

    eprintln!("  {suffix}: writing {} events...", shape.events);
    let start = log::start(Utc::now());
    let t = Instant::now();
    seed(&url, &shape, start).await?;
    let seeded = t.elapsed();
    eprintln!(
        "  {suffix}: written in {:.1} s; rebuilding every projection...",
        seeded.as_secs_f64()
    );

    // Every projection from one read of the log, as `keyledger projections rebuild` runs.
    let t = Instant::now();
    engine::rebuild_all(&pool, &engine::ALL, |_, _| {})
        .await
        .context("rebuilding every projection")?;
    let rebuilt = t.elapsed();
    eprintln!(
        "  {suffix}: rebuilt in {:.1} s; vacuum (analyze)...",
        rebuilt.as_secs_f64()
    );
    sqlx::raw_sql("vacuum (analyze)")
        .execute(&pool)
        .await
        .context("vacuum (analyze)")?;
    check_counts(&pool, &shape).await?;
    pool.close().await;

    let t = Instant::now();
    let (running, pool) = start_server(&url).await?;
    let base = format!("http://{}", running.addr);
    if let Err(e) = wait_healthy(&base).await {
        running.stop().await?;
        return Err(e);
    }
    let startup = t.elapsed();
    eprintln!("  {suffix}: /health answered 200 after {}", ms(startup));
    Ok(Log {
        shape,
        start,
        seeded,
        rebuilt,
        startup,
        running,
        pool,
        base,
        key,
    })
}

/// Writes the log and its claims (generation only: `synchronous_commit = off`), then vacuums the
/// tables written.
async fn seed(url: &str, shape: &Shape, start: chrono::DateTime<Utc>) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(url)
        .await
        .context("connecting to write the log")?;
    sqlx::raw_sql("set synchronous_commit = off")
        .execute(&mut conn)
        .await
        .context("set synchronous_commit")?;
    for sql in log::statements(shape, start) {
        sqlx::raw_sql(&sql)
            .execute(&mut conn)
            .await
            .context("writing the log")?;
    }
    sqlx::raw_sql("vacuum (analyze) event, claim")
        .execute(&mut conn)
        .await
        .context("vacuum analyze event, claim")?;
    conn.close().await.context("closing the seeding connection")?;
    Ok(())
}

/// The rebuilt read models hold what the log says: every user, membership and audit event.
async fn check_counts(pool: &PgPool, shape: &Shape) -> anyhow::Result<()> {
    let (users, memberships, audits): (i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from user_view), (select count(*) from organization_membership_view), \
         (select count(*) from audit_log_event)",
    )
    .fetch_one(pool)
    .await
    .context("counting the read models")?;
    let want = (shape.users, shape.memberships, shape.audit_events());
    let got = (
        u64::try_from(users).unwrap_or(0),
        u64::try_from(memberships).unwrap_or(0),
        u64::try_from(audits).unwrap_or(0),
    );
    if got != want {
        bail!("read models after the rebuild hold (users, memberships, audit events) = {got:?}, expected {want:?}");
    }
    Ok(())
}

/// What `keyledger serve` does before it listens: open the pool, apply migrations, build.
async fn start_server(url: &str) -> anyhow::Result<(Running, PgPool)> {
    let pool = keyledger_api::connect(url).await?;
    keyledger_api::migrate(&pool).await?;
    let config = Config {
        listen: "127.0.0.1:0".parse().context("parsing the listen address")?,
        dns_nameserver: None,
        read_your_writes: Duration::from_secs(5),
        ..Config::default()
    };
    let running = build(pool.clone(), config).await.context("starting the server")?;
    Ok((running, pool))
}

/// Polls `/health` every 5 ms until it answers 200 (at most a minute).
async fn wait_healthy(base: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let url = format!("{base}/health");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(&url).send().await {
            if r.status() == StatusCode::OK {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            bail!("/health did not answer 200 within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The URL of worker `w`'s `i`-th request of `probe` (GETs only).
fn probe_url(probe: Probe, base: &str, shape: &Shape, start: chrono::DateTime<Utc>, w: usize, i: u64) -> String {
    let any = |n: u64| pick(w, i, usize::try_from(n).unwrap_or(usize::MAX)) as u64 + 1;
    match probe {
        Probe::GetUser => format!("{base}/user_management/users/{}", log::user_id(any(shape.users))),
        Probe::UsersByEmail => format!("{base}/user_management/users?email={}", log::email(any(shape.users))),
        Probe::EventsByTypeAndRange => {
            let hours = u64::try_from((log::SPAN_DAYS - 1) * 24).unwrap_or(1);
            let from = start + chrono::Duration::hours(i64::try_from(any(hours)).unwrap_or(0));
            let to = from + chrono::Duration::days(1);
            format!(
                "{base}/events?events=user.updated&range_start={}&range_end={}",
                from.to_rfc3339_opts(SecondsFormat::Secs, true),
                to.to_rfc3339_opts(SecondsFormat::Secs, true)
            )
        }
        Probe::MembershipsByUser => format!(
            "{base}/user_management/organization_memberships?user_id={}",
            log::user_id(any(shape.users))
        ),
        Probe::MembershipsByOrganization => format!(
            "{base}/user_management/organization_memberships?organization_id={}",
            log::organization_id(any(shape.organizations))
        ),
        Probe::AuditTrailByAction => format!(
            "{base}/audit_logs/events?organization_id={}&actions={}",
            log::organization_id(1),
            log::RARE_ACTION
        ),
        Probe::CreateUser => format!("{base}/user_management/users"),
    }
}

async fn run_probe(b: &Bench, probe: Probe, log: &Log) -> anyhow::Result<Stats> {
    let n = probe.connections();
    let clients = http_clients(n)?;
    let (base, key, shape, start) = (log.base.clone(), log.key.clone(), log.shape, log.start);
    closed_loop(n, b.warmup, b.window, move |w, i| {
        let client = clients[w].clone();
        let key = key.clone();
        let url = probe_url(probe, &base, &shape, start, w, i);
        async move {
            let (req, want) = if probe == Probe::CreateUser {
                let email = format!("{}@growth.example.com", new_id("h").to_lowercase());
                (client.post(&url).json(&json!({ "email": email })), StatusCode::CREATED)
            } else {
                (client.get(&url), StatusCode::OK)
            };
            let r = req.bearer_auth(&key).send().await.context("request")?;
            let status = r.status();
            let body = r.bytes().await.context("reading the response")?;
            if status != want {
                bail!("{url} answered {status}: {}", String::from_utf8_lossy(&body));
            }
            Ok(())
        }
    })
    .await
    .with_context(|| probe.describe())
}

/// The filters find what the log holds: one user per email, the user's memberships, events in
/// a day of the updates, the largest organization's rare audit actions.
async fn sanity_check(base: &str, key: &str, shape: &Shape, start: chrono::DateTime<Utc>) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let get = |url: String| {
        let client = client.clone();
        async move {
            let r = client.get(&url).bearer_auth(key).send().await.context("GET")?;
            let status = r.status();
            let body: Value = r.json().await.context("reading the response")?;
            if status != StatusCode::OK {
                bail!("{url} answered {status}: {body}");
            }
            let n = body["data"].as_array().map_or(0, Vec::len);
            anyhow::Ok(n)
        }
    };
    let k = shape.users / 2;
    let checks = [
        (format!("{base}/user_management/users?email={}", log::email(k)), 1),
        (
            format!(
                "{base}/user_management/organization_memberships?user_id={}",
                log::user_id(k)
            ),
            1 + usize::from(k.is_multiple_of(2)),
        ),
    ];
    for (url, want) in checks {
        let n = get(url.clone()).await?;
        if n != want {
            bail!("{url} returned {n} objects, expected {want}");
        }
    }
    // The last day holds updates (the tail ends at the log's end).
    let from = start + chrono::Duration::days(log::SPAN_DAYS - 1);
    let url = format!(
        "{base}/events?events=user.updated&range_start={}",
        from.to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    if get(url.clone()).await? == 0 {
        bail!("{url} returned no events");
    }
    Ok(())
}

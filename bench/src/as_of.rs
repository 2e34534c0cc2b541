//! Point-in-time reads over HTTP: an organization with a long stream (`--as-of-events`, default
//! 10,000: one `OrganizationCreated` and then `OrganizationUpdated`s) and a few hundred
//! memberships, then `GET /organizations/{id}?as_of=` and the membership list `?as_of=` at random
//! instants, through the server running in this process (lazy history snapshots included).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, SecondsFormat, Utc};
use keyledger_api::{build, Config};
use keyledger_domain::ids::new_id;
use keyledger_domain::membership::{MembershipCommand, OrganizationMembership};
use keyledger_domain::user::User;
use keyledger_domain::values::RoleSlug;
use keyledger_store::append::SideRows;
use keyledger_store::commands::{CommandBus, Mode};
use keyledger_store::EventStore;
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};

use crate::append::create_command;
use crate::load::{closed_loop, ms};
use crate::report::Row;
use crate::support::Bench;

/// Concurrent connections of both runs.
const CONNECTIONS: usize = 4;
/// Memberships of the organization (each with its own user).
const MEMBERS: usize = 200;
/// The goal: p99 of one point-in-time read.
const GOAL: Duration = Duration::from_millis(50);
const ORG: &str = "org_01BENCHASOF0000000000000000";

/// One transaction appends the stream; `recorded_at` is spread 1 ms apart over the last
/// `n` ms before `base`, as if each update had been its own command. Payloads have exactly the
/// shape the domain serializes.
fn generator(n: u64) -> String {
    format!(
        r#"do $$
declare
  base timestamptz := now() - interval '{n} milliseconds' - interval '1 minute';
  t timestamptz;
  ts text;
begin
  for i in 1..{n} loop
    t := base + i * interval '1 millisecond';
    ts := to_char(t at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
    insert into event (id, aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata,
                       organization_id, recorded_at)
    values ('event_asof_' || lpad(i::text, 20, '0'), 'Organization', '{ORG}', i,
      case when i = 1 then 'OrganizationCreated' else 'OrganizationUpdated' end, '1',
      case when i = 1 then jsonb_build_object('OrganizationCreated', jsonb_build_object('name', 'Org 1',
             'external_id', null, 'metadata', '{{}}'::jsonb, 'allow_profiles_outside_organization', false, 'at', ts))
           else jsonb_build_object('OrganizationUpdated', jsonb_build_object('at', ts, 'changes',
             jsonb_build_object('name', 'Org ' || i, 'metadata', jsonb_build_object('step', i::text)))) end,
      jsonb_build_object('ip', '127.0.0.1', 'actor_id', 'key_01M8DKYRS3ERZQ97DX7Y9214Y6', 'actor_name', 'bench',
        'request_id', gen_random_uuid()::text, 'occurred_at', ts, 'organization_id', '{ORG}'),
      '{ORG}', t);
  end loop;
end $$"#
    )
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A spread-out number in `0..n` for worker `w`'s `i`-th request.
fn pick(w: usize, i: u64, n: u64) -> u64 {
    let x = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (w as u64 + 1).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)) >> 11;
    x % n.max(1)
}

/// `[first, last]` `recorded_at` of the events matching `filter`.
async fn span(pool: &PgPool, filter: &str) -> anyhow::Result<(DateTime<Utc>, DateTime<Utc>)> {
    let (a, b): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = sqlx::query_as(&format!(
        "select min(recorded_at), max(recorded_at) from event where {filter}"
    ))
    .fetch_one(pool)
    .await
    .context("reading the time span")?;
    match (a, b) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => bail!("no events for {filter}"),
    }
}

async fn seed_members(pool: &PgPool) -> anyhow::Result<()> {
    let bus = CommandBus::new(EventStore::new(pool.clone()));
    let mut meta = HashMap::new();
    meta.insert("actor_id".to_string(), "key_bench".to_string());
    for _ in 0..MEMBERS {
        let user_id = new_id("user");
        bus.execute::<User>(
            &user_id,
            create_command(&user_id)?,
            &meta,
            SideRows::default(),
            Mode::New,
        )
        .await
        .context("seeding a user")?;
        let id = new_id("om");
        let cmd = MembershipCommand::Create {
            user_id,
            organization_id: ORG.to_string(),
            organization_name: "Org".to_string(),
            role: RoleSlug::member(),
            at: Utc::now(),
        };
        bus.execute::<OrganizationMembership>(&id, cmd, &meta, SideRows::default(), Mode::New)
            .await
            .context("seeding a membership")?;
    }
    Ok(())
}

async fn get_json(client: &reqwest::Client, url: &str, key: &str) -> anyhow::Result<Value> {
    let r = client.get(url).bearer_auth(key).send().await.context("GET")?;
    let status = r.status();
    let body = r.bytes().await.context("reading the response")?;
    if status != StatusCode::OK {
        bail!("GET {url} answered {status}: {}", String::from_utf8_lossy(&body));
    }
    serde_json::from_slice(&body).context("parsing the response")
}

pub async fn run(b: &mut Bench, events: u64) -> anyhow::Result<()> {
    let url = b.create_database("as_of").await?;
    let pool = keyledger_api::connect(&url).await?;
    keyledger_api::migrate(&pool).await?;
    let key = keyledger_api::auth::create_key(&pool, "bench")
        .await
        .context("creating an API key")?;

    let config = Config {
        listen: "127.0.0.1:0".parse().context("parsing the listen address")?,
        read_your_writes: Duration::from_secs(5),
        ..Config::default()
    };
    let running = build(pool.clone(), config).await.context("starting the server")?;
    let base = format!("http://{}", running.addr);

    eprintln!("  generating an organization with {events} events and {MEMBERS} memberships...");
    let started = Instant::now();
    let mut conn = PgConnection::connect(&url).await.context("connecting to generate")?;
    sqlx::raw_sql(&generator(events))
        .execute(&mut conn)
        .await
        .context("generating the organization's events")?;
    conn.close().await.context("closing the generator connection")?;
    // Let the projections pass the long stream before the members come: a projection that skips
    // more than a batch of events and then meets one of its own before it was ever idle does not
    // get past it (engine.rs lazy checkpoint; see PERFORMANCE.md, as-of).
    wait_for_projections(&pool).await?;
    seed_members(&pool).await?;
    sqlx::raw_sql("vacuum (analyze) event")
        .execute(&pool)
        .await
        .context("vacuum analyze event")?;
    let generated = started.elapsed().as_secs_f64();
    let result = measure(b, &pool, &base, &key, events).await;
    running.stop().await.context("stopping the server")?;
    pool.close().await;
    b.notes.push(format!(
        "as-of: organization stream of {events} events (recorded 1 ms apart), {MEMBERS} memberships, \
         generated in {generated:.1} s; {CONNECTIONS} connections; history snapshots every \
         {} events, written lazily by the reads (during the warm-up)",
        keyledger_projections::history::SNAPSHOT_EVERY
    ));
    result
}

async fn measure(b: &mut Bench, pool: &PgPool, base: &str, key: &str, events: u64) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let org_url = format!("{base}/organizations/{ORG}");
    let last = get_json(&client, &format!("{org_url}?as_of=2999-01-01T00:00:00Z"), key).await?;
    if last["name"] != format!("Org {events}") {
        bail!("the generated organization reads back as {last}");
    }

    // Cold: the first fold of the whole stream, with no snapshot yet (it writes them).
    let (org_first, org_last) = span(pool, &format!("aggregate_id = '{ORG}'")).await?;
    let mut cold = Vec::new();
    for _ in 0..3 {
        sqlx::query("delete from history_snapshot")
            .execute(pool)
            .await
            .context("deleting snapshots")?;
        let t = Instant::now();
        get_json(&client, &format!("{org_url}?as_of={}", rfc3339(org_last)), key).await?;
        cold.push(t.elapsed());
    }
    cold.sort_unstable();
    let cold_median = cold[cold.len() / 2];

    let span_us = u64::try_from((org_last - org_first).num_microseconds().unwrap_or(1))
        .unwrap_or(1)
        .max(1);
    let clients = Arc::new(
        (0..CONNECTIONS)
            .map(|_| reqwest::Client::builder().pool_max_idle_per_host(1).build())
            .collect::<Result<Vec<_>, _>>()
            .context("building HTTP clients")?,
    );
    eprintln!("  GET /organizations/{{id}}?as_of=, {CONNECTIONS} connections...");
    let (c, k, u) = (clients.clone(), key.to_string(), org_url.clone());
    let stats = closed_loop(CONNECTIONS, b.warmup, b.window, move |w, i| {
        let client = c[w].clone();
        let at = org_first + chrono::Duration::microseconds(i64::try_from(pick(w, i, span_us)).unwrap_or(0));
        let url = format!("{u}?as_of={}", rfc3339(at));
        let key = k.clone();
        async move {
            let body = get_json(&client, &url, &key).await?;
            if body["id"] != ORG {
                bail!("unexpected organization {body}");
            }
            Ok(())
        }
    })
    .await?;
    let stage = format!("HTTP GET /organizations/{{id}}?as_of= ({events}-event stream), {CONNECTIONS} connections");
    b.rows.push(Row::absolute(
        stage,
        format!(
            "{} (p99.9 {}; cold fold without snapshots {})",
            stats.summary("req"),
            ms(stats.percentile(0.999)),
            ms(cold_median)
        ),
        format!("p99 < {}", ms(GOAL)),
        stats.percentile(0.99) < GOAL,
    ));
    // For reference, under the same load: the live read model's answer for the same object.
    eprintln!("  GET /organizations/{{id}} (live), {CONNECTIONS} connections...");
    let (c, k, u) = (clients.clone(), key.to_string(), org_url.clone());
    let live = closed_loop(CONNECTIONS, b.warmup, b.window, move |w, _| {
        let client = c[w].clone();
        let (url, key) = (u.clone(), k.clone());
        async move {
            get_json(&client, &url, &key).await?;
            Ok(())
        }
    })
    .await?;
    b.rows.push(Row::reference(
        format!("reference: HTTP GET /organizations/{{id}} (live read model), {CONNECTIONS} connections"),
        live.summary("req"),
    ));
    let snapshots: (i64,) = sqlx::query_as("select count(*) from history_snapshot")
        .fetch_one(pool)
        .await
        .context("counting snapshots")?;
    b.notes
        .push(format!("as-of: {} history snapshots after the run", snapshots.0));

    // The membership list of the organization at random instants while its members joined.
    let (m_first, m_last) = span(pool, "aggregate_type = 'OrganizationMembership'").await?;
    let m_span = u64::try_from((m_last - m_first).num_microseconds().unwrap_or(1))
        .unwrap_or(1)
        .max(1);
    eprintln!("  GET /user_management/organization_memberships?organization_id=&as_of=, {CONNECTIONS} connections...");
    let list_url = format!("{base}/user_management/organization_memberships?organization_id={ORG}&limit=100");
    let (c, k, u) = (clients.clone(), key.to_string(), list_url.clone());
    let stats = closed_loop(CONNECTIONS, b.warmup, b.window, move |w, i| {
        let client = c[w].clone();
        let at = m_first + chrono::Duration::microseconds(i64::try_from(pick(w, i, m_span)).unwrap_or(0));
        let url = format!("{u}&as_of={}", rfc3339(at));
        let key = k.clone();
        async move {
            let body = get_json(&client, &url, &key).await?;
            if !body["data"].is_array() {
                bail!("not a list: {body}");
            }
            Ok(())
        }
    })
    .await?;
    b.rows.push(Row::absolute(
        format!(
            "HTTP GET membership list ?as_of= (limit 100 of {MEMBERS} members, org of {events} events), {CONNECTIONS} connections"
        ),
        format!("{} (p99.9 {})", stats.summary("req"), ms(stats.percentile(0.999))),
        format!("p99 < {}", ms(GOAL)),
        stats.percentile(0.99) < GOAL,
    ));
    // For reference: the live list (read model) of the same organization, now complete.
    wait_for_memberships(pool).await?;
    let (c, k) = (clients.clone(), key.to_string());
    let live = closed_loop(CONNECTIONS, b.warmup, b.window, move |w, _| {
        let client = c[w].clone();
        let (url, key) = (list_url.clone(), k.clone());
        async move {
            get_json(&client, &url, &key).await?;
            Ok(())
        }
    })
    .await?;
    b.rows.push(Row::reference(
        format!("reference: HTTP GET membership list (live read model, 100 of {MEMBERS}), {CONNECTIONS} connections"),
        live.summary("req"),
    ));
    Ok(())
}

/// Waits (up to a minute) until every projection has applied the whole log.
async fn wait_for_projections(pool: &PgPool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = keyledger_projections::engine::status(pool)
            .await
            .context("reading projection status")?;
        if status.iter().all(|s| s.behind == 0) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("projections did not catch up within 60 s: {status:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (up to a minute) until the memberships projection holds every seeded membership.
async fn wait_for_memberships(pool: &PgPool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (n,): (i64,) = sqlx::query_as("select count(*) from organization_membership_view")
            .fetch_one(pool)
            .await
            .context("counting memberships")?;
        if n >= MEMBERS as i64 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("the memberships projection holds {n} of {MEMBERS} memberships after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_stay_in_range_and_spread() {
        let mut seen = [false; 50];
        for w in 0..4 {
            for i in 0..2_000 {
                let p = pick(w, i, 50);
                seen[usize::try_from(p).unwrap_or(0)] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
    }
}

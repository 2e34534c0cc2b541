//! Projection rebuild rate: fill a fresh log with user events (one transaction per event, as the
//! API writes them), then time `engine::rebuild` of each projection.

use std::time::Instant;

use anyhow::Context;
use keyledger_projections::engine;
use sqlx::{Connection, PgConnection};

use crate::report::Row;
use crate::support::Bench;

/// The goal, in events per second.
const GOAL: f64 = 50_000.0;

/// A PL/pgSQL block appending `n` events, committing after each (so every event has its own
/// transaction id, like one command per request). Four in five are `UserCreated`; every fifth is
/// a `UserUpdated` (first name) of the user created four events earlier. Payloads and metadata
/// have exactly the shape the domain serializes and the API records.
fn generator(n: u64) -> String {
    format!(
        r#"do $$
declare
  base timestamptz := now();
  ts text;
begin
  for i in 1..{n} loop
    ts := to_char((base + i * interval '1 microsecond') at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
    if i % 5 = 0 then
      insert into event (id, aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
      values ('event_' || lpad(i::text, 26, '0'), 'User', 'user_' || lpad((i - 4)::text, 26, '0'), 2,
        'UserUpdated', '1',
        jsonb_build_object('UserUpdated', jsonb_build_object('at', ts, 'changes', jsonb_build_object('first_name', 'Ada'))),
        jsonb_build_object('ip', '127.0.0.1', 'actor_id', 'key_01M8DKYRS3ERZQ97DX7Y9214Y6', 'actor_name', 'bench',
          'request_id', gen_random_uuid()::text, 'occurred_at', ts));
    else
      insert into event (id, aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
      values ('event_' || lpad(i::text, 26, '0'), 'User', 'user_' || lpad(i::text, 26, '0'), 1,
        'UserCreated', '1',
        jsonb_build_object('UserCreated', jsonb_build_object('at', ts, 'email', 'bench' || i || '@example.com',
          'metadata', '{{}}'::jsonb, 'last_name', null, 'first_name', null, 'external_id', null,
          'has_password', false, 'email_verified', false)),
        jsonb_build_object('ip', '127.0.0.1', 'actor_id', 'key_01M8DKYRS3ERZQ97DX7Y9214Y6', 'actor_name', 'bench',
          'request_id', gen_random_uuid()::text, 'occurred_at', ts));
    end if;
    commit;
  end loop;
end $$"#
    )
}

pub async fn run(b: &mut Bench, events: u64) -> anyhow::Result<()> {
    let url = b.create_database("rebuild").await?;
    let pool = keyledger_api::connect(&url).await?;
    keyledger_api::migrate(&pool).await?;

    eprintln!("  generating {events} events...");
    let started = Instant::now();
    let mut conn = PgConnection::connect(&url)
        .await
        .context("connecting to generate events")?;
    // Generation only: the measured rebuild runs with the server's own settings.
    sqlx::raw_sql("set synchronous_commit = off")
        .execute(&mut conn)
        .await
        .context("set synchronous_commit")?;
    sqlx::raw_sql(&generator(events))
        .execute(&mut conn)
        .await
        .context("generating events")?;
    // What autovacuum would have done on a log this size: visibility map, hint bits, statistics.
    sqlx::raw_sql("vacuum (analyze) event")
        .execute(&mut conn)
        .await
        .context("vacuum analyze event")?;
    conn.close().await.context("closing the generator connection")?;
    eprintln!("  generated in {:.1} s", started.elapsed().as_secs_f64());
    b.notes.push(format!(
        "rebuild: log of {events} events (80% UserCreated, 20% UserUpdated), one transaction each, \
         generated in {:.1} s, then `vacuum (analyze) event`",
        started.elapsed().as_secs_f64()
    ));

    let mut total_events: u64 = 0;
    let mut total_secs = 0.0;
    for p in engine::ALL {
        eprintln!("  rebuilding {}...", p.name);
        let t = Instant::now();
        let n = engine::rebuild(&pool, &p, |_, _| {})
            .await
            .with_context(|| format!("rebuilding {}", p.name))?;
        let secs = t.elapsed().as_secs_f64();
        total_events += n;
        total_secs += secs;
        let rate = n as f64 / secs.max(1e-9);
        b.rows.push(Row::absolute(
            format!("rebuild `{}`", p.name),
            format!("{rate:.0} events/s ({n} events in {secs:.2} s)"),
            format!("≥ {GOAL:.0} events/s"),
            rate >= GOAL,
        ));
    }
    // All four one after another, as `keyledger projections rebuild` does: the rate is events
    // applied per second over the four runs (each projection reads the whole log once); the
    // wall-clock rate over the log is shown too.
    let rate = total_events as f64 / total_secs.max(1e-9);
    b.rows.push(Row::absolute(
        "rebuild all four, one after another",
        format!(
            "{rate:.0} events/s ({total_events} events in {total_secs:.2} s; the {events}-event log in {:.0} log events/s)",
            events as f64 / total_secs.max(1e-9)
        ),
        format!("≥ {GOAL:.0} events/s"),
        rate >= GOAL,
    ));
    let users: Option<(i64,)> = sqlx::query_as("select count(*) from user_view")
        .fetch_optional(&pool)
        .await
        .context("counting rebuilt users")?;
    if let Some((n,)) = users {
        b.notes.push(format!("rebuild: user_view holds {n} users afterwards"));
    }
    pool.close().await;
    Ok(())
}

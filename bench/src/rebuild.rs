//! Projection rebuild rate: fill a fresh log with the events of every projection (one
//! transaction per command, as the API writes them), then time `engine::rebuild` of each
//! projection and `engine::rebuild_all` of all of them.

use std::time::Instant;

use anyhow::Context;
use keyledger_projections::engine;
use sqlx::{Connection, PgConnection};

use crate::report::Row;
use crate::support::Bench;

/// The goal, in events per second.
const GOAL: f64 = 50_000.0;

/// A PL/pgSQL block appending `n` events in cycles of 20, committing after each command (so
/// every command has its own transaction id, as the API writes them). Each cycle `c` has the
/// events of every projection, with exactly the payload shapes the domain serializes and the
/// metadata the API records:
/// - 8 `UserCreated`, 3 `UserUpdated` (one of a user created in the previous cycle), 1 `UserDeleted`;
/// - an organization created with a domain (one command, two events), then renamed;
/// - 2 `MembershipCreated` in it, 1 `MembershipRoleChanged`;
/// - 1 `AuditLogEventCreated`;
/// - one more event by `c % 10`: a webhook endpoint created, updated, disabled, enabled, (every
///   other one) deleted; an audit log schema; an export; a domain verified; a retention change;
///   a membership deactivated; a password change.
fn generator(n: u64) -> String {
    format!(
        r#"do $$
declare
  base timestamptz := now();
  ts text;
  c bigint;
  s int;
  k int;
  org text;
  agg_type text;
  agg_id text;
  seq bigint;
  etype text;
  body jsonb;
  hook text;
begin
  for i in 1..{n} loop
    c := (i - 1) / 20;
    s := (i - 1) % 20 + 1;
    k := c % 10;
    ts := to_char((base + i * interval '1 microsecond') at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
    org := null;
    seq := 1;
    hook := 'webhook_endpoint_' || lpad((c / 10)::text, 26, '0');
    if s <= 8 then
      agg_type := 'User'; agg_id := 'user_' || lpad((c * 20 + s)::text, 26, '0'); etype := 'UserCreated';
      body := jsonb_build_object('at', ts, 'email', 'bench' || c || '_' || s || '@example.com', 'metadata', '{{}}'::jsonb,
        'name', null, 'last_name', null, 'first_name', null, 'external_id', null, 'has_password', false,
        'email_verified', false);
    elsif s <= 11 then
      agg_type := 'User'; seq := 2; etype := 'UserUpdated';
      if s = 9 then
        agg_id := 'user_' || lpad((c * 20 + 1)::text, 26, '0');
        body := jsonb_build_object('at', ts, 'changes', jsonb_build_object('first_name', 'Ada'));
      elsif s = 10 then
        agg_id := 'user_' || lpad((c * 20 + 2)::text, 26, '0');
        body := jsonb_build_object('at', ts, 'changes', jsonb_build_object('last_name', 'Lovelace',
          'metadata', jsonb_build_object('plan', 'pro')));
      else
        -- A user of the previous cycle (the first cycle has none: one of its own).
        agg_id := 'user_' || lpad((case when c = 0 then 5 else (c - 1) * 20 + 3 end)::text, 26, '0');
        body := jsonb_build_object('at', ts, 'changes', jsonb_build_object('name', 'Ada L', 'email_verified', true));
      end if;
    elsif s = 12 then
      agg_type := 'User'; agg_id := 'user_' || lpad((c * 20 + 8)::text, 26, '0'); seq := 2; etype := 'UserDeleted';
      body := jsonb_build_object('at', ts);
    elsif s <= 15 then
      agg_type := 'Organization'; agg_id := 'org_' || lpad(c::text, 26, '0'); org := agg_id; seq := s - 12;
      if s = 13 then
        etype := 'OrganizationCreated';
        body := jsonb_build_object('at', ts, 'name', 'Org ' || c, 'external_id', null, 'metadata', '{{}}'::jsonb,
          'allow_profiles_outside_organization', false);
      elsif s = 14 then
        etype := 'OrganizationDomainCreated';
        body := jsonb_build_object('at', ts, 'domain', 'd' || c || '.example.com',
          'domain_id', 'org_domain_' || lpad(c::text, 26, '0'), 'state', 'pending', 'verification_token', 'tok_' || c);
      else
        etype := 'OrganizationUpdated';
        body := jsonb_build_object('at', ts, 'changes', jsonb_build_object('name', 'Org ' || c || ' Inc'));
      end if;
    elsif s <= 18 then
      agg_type := 'OrganizationMembership'; org := 'org_' || lpad(c::text, 26, '0');
      agg_id := 'om_' || lpad((c * 20 + (case when s = 17 then 2 else 1 end))::text, 26, '0');
      if s = 18 then
        seq := 2; etype := 'MembershipRoleChanged';
        body := jsonb_build_object('at', ts, 'role', 'admin');
      else
        etype := 'MembershipCreated';
        body := jsonb_build_object('at', ts, 'organization_id', org, 'organization_name', 'Org ' || c || ' Inc',
          'role', 'member', 'user_id', 'user_' || lpad((c * 20 + s - 15)::text, 26, '0'));
      end if;
    elsif s = 19 then
      agg_type := 'AuditLogEvent'; agg_id := 'audit_log_event_' || lpad(c::text, 26, '0');
      org := 'org_' || lpad(c::text, 26, '0'); etype := 'AuditLogEventCreated';
      body := jsonb_build_object('at', ts, 'event', jsonb_build_object('organization_id', org, 'action', 'bench.done',
        'occurred_at', ts, 'actor', jsonb_build_object('id', 'user_' || lpad((c * 20 + 1)::text, 26, '0'), 'type', 'user'),
        'targets', jsonb_build_array(jsonb_build_object('id', 'team_' || c, 'type', 'team', 'name', 'Core')),
        'context', jsonb_build_object('location', '127.0.0.1')));
    elsif k <= 3 or (k = 9 and (c / 10) % 2 = 0) then
      agg_type := 'WebhookEndpoint'; agg_id := hook; seq := least(k, 4) + 1;
      if k = 0 then
        etype := 'WebhookEndpointCreated';
        body := jsonb_build_object('at', ts, 'endpoint_url', 'http://127.0.0.1:9/hook/' || (c / 10),
          'events', jsonb_build_array('user.created'));
      elsif k = 1 then
        etype := 'WebhookEndpointUpdated';
        body := jsonb_build_object('at', ts, 'changes', jsonb_build_object('events',
          jsonb_build_array('user.created', 'user.deleted')));
      elsif k = 2 then
        etype := 'WebhookEndpointDisabled';
        body := jsonb_build_object('at', ts, 'automatic', false, 'reason', 'bench');
      elsif k = 3 then
        etype := 'WebhookEndpointEnabled';
        body := jsonb_build_object('at', ts);
      else
        etype := 'WebhookEndpointDeleted';
        body := jsonb_build_object('at', ts);
      end if;
    elsif k = 4 then
      agg_type := 'AuditLogAction'; agg_id := 'bench.action_' || (c / 10); etype := 'AuditLogSchemaCreated';
      body := jsonb_build_object('at', ts, 'version', 1, 'schema',
        jsonb_build_object('targets', jsonb_build_array(jsonb_build_object('type', 'team'))));
    elsif k = 5 then
      agg_type := 'AuditLogExport'; agg_id := 'audit_log_export_' || lpad(c::text, 26, '0');
      org := 'org_' || lpad(c::text, 26, '0'); etype := 'AuditLogExportCreated';
      body := jsonb_build_object('at', ts, 'filter', jsonb_build_object('organization_id', org,
        'range_start', ts, 'range_end', ts));
    elsif k = 6 or k = 7 then
      agg_type := 'Organization'; agg_id := 'org_' || lpad(c::text, 26, '0'); org := agg_id; seq := 4;
      if k = 6 then
        etype := 'OrganizationDomainVerified';
        body := jsonb_build_object('at', ts, 'domain', 'd' || c || '.example.com',
          'domain_id', 'org_domain_' || lpad(c::text, 26, '0'));
      else
        etype := 'OrganizationAuditLogsRetentionChanged';
        body := jsonb_build_object('at', ts, 'previous', null, 'retention_period_in_days', 365);
      end if;
    elsif k = 8 then
      agg_type := 'OrganizationMembership'; agg_id := 'om_' || lpad((c * 20 + 1)::text, 26, '0');
      org := 'org_' || lpad(c::text, 26, '0'); seq := 3; etype := 'MembershipDeactivated';
      body := jsonb_build_object('at', ts);
    else
      agg_type := 'User'; agg_id := 'user_' || lpad((c * 20 + 4)::text, 26, '0'); seq := 2;
      etype := 'UserPasswordChanged';
      body := jsonb_build_object('at', ts);
    end if;
    insert into event (id, aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata,
      organization_id)
    values ('event_' || lpad(i::text, 26, '0'), agg_type, agg_id, seq, etype, '1', jsonb_build_object(etype, body),
      jsonb_strip_nulls(jsonb_build_object('ip', '127.0.0.1', 'actor_id', 'key_01M8DKYRS3ERZQ97DX7Y9214Y6',
        'actor_name', 'bench', 'request_id', gen_random_uuid()::text, 'occurred_at', ts, 'organization_id', org)),
      org);
    -- An organization and its first domain are one command.
    if s <> 13 then
      commit;
    end if;
  end loop;
  commit;
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
        "rebuild: log of {events} events in cycles of 20 (12 user, 3 organization, 3 membership, 1 audit \
         event, 1 of webhook endpoints, schemas, exports, domains, retention, memberships, passwords), \
         one transaction per command, generated in {:.1} s, then `vacuum (analyze) event`",
        started.elapsed().as_secs_f64()
    ));

    let mut total_secs = 0.0;
    for p in engine::ALL {
        eprintln!("  rebuilding {}...", p.name);
        let t = Instant::now();
        let n = engine::rebuild(&pool, &p, |_, _| {})
            .await
            .with_context(|| format!("rebuilding {}", p.name))?;
        let secs = t.elapsed().as_secs_f64();
        total_secs += secs;
        let rate = n as f64 / secs.max(1e-9);
        b.rows.push(Row::absolute(
            format!("rebuild `{}`", p.name),
            format!("{rate:.0} log events/s ({n} events in {secs:.2} s)"),
            format!("≥ {GOAL:.0} events/s"),
            rate >= GOAL,
        ));
    }
    // Every projection one after another, each reading the whole log: log events per second of
    // wall-clock time over all of them.
    let rate = events as f64 / total_secs.max(1e-9);
    b.rows.push(Row::absolute(
        format!("rebuild all {}, one after another", engine::ALL.len()),
        format!(
            "{rate:.0} log events/s (the {events}-event log {} times in {total_secs:.2} s)",
            engine::ALL.len()
        ),
        format!("≥ {GOAL:.0} events/s"),
        rate >= GOAL,
    ));
    // All of them together, as `keyledger projections rebuild` does: one read of the log feeds
    // every projection, and their tables swap in together.
    eprintln!("  rebuilding all together...");
    let t = Instant::now();
    let n = engine::rebuild_all(&pool, &engine::ALL, |_, _| {})
        .await
        .context("rebuilding all together")?;
    let secs = t.elapsed().as_secs_f64();
    let rate = n as f64 / secs.max(1e-9);
    b.rows.push(Row::absolute(
        format!("rebuild all {} together (one read of the log)", engine::ALL.len()),
        format!("{rate:.0} log events/s ({n} events in {secs:.2} s)"),
        format!("≥ {GOAL:.0} events/s"),
        rate >= GOAL,
    ));
    let mut counts = Vec::new();
    for p in engine::ALL {
        for t in p.tables() {
            let (n,): (i64,) = sqlx::query_as(&format!("select count(*) from {t}"))
                .fetch_one(&pool)
                .await
                .with_context(|| format!("counting {t}"))?;
            counts.push(format!("{t} {n}"));
        }
    }
    b.notes.push(format!("rebuild: rows afterwards: {}", counts.join(", ")));
    pool.close().await;
    Ok(())
}

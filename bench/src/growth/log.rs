//! A large, realistic log written straight into a bench database: organizations, users, their
//! memberships, then a long tail of `UserUpdated`, audit-log events, role changes and
//! organization updates, spread over the 30 days before now, with the claims the same commands
//! would have taken. Seeding through HTTP or the command bus would take an hour at 10^6 events;
//! this writes them server-side (PL/pgSQL, a few commands' events per commit) in about a minute.
//! Payloads have exactly the shape the domain serializes (the golden fixtures in
//! `projections/tests/fixtures/events/`), so the projections decode every one.
//!
//! Ids are the type prefix and a zero-padded number (a valid ULID that sorts by number), so the
//! bench can name any seeded object without reading it back: user `k` is `user_000…k` with the
//! email `growth{k}@example.com`, organization `k` is `org_000…k`.

use chrono::{DateTime, Duration as Span, SecondsFormat, Utc};

/// How far back the seeded log starts.
pub const SPAN_DAYS: i64 = 30;
/// The audit-log action that is rare (4%) in every organization: what the trail filter asks for.
pub const RARE_ACTION: &str = "team.created";
/// Events per transaction while seeding: each commit stands for a few commands, so the log has
/// many distinct transaction ids (as through the API) without paying one commit per event.
const EVENTS_PER_COMMIT: u64 = 4;

/// What the seeded log holds. Built by [`Shape::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub events: u64,
    pub users: u64,
    pub organizations: u64,
    pub memberships: u64,
    /// Events after the creations: 60% `UserUpdated`, 20% audit-log events, 10% membership role
    /// changes, 10% organization updates (in that repeating order).
    pub tail: u64,
}

impl Shape {
    /// `users` (rounded up to even) with one membership each plus a second for every other
    /// user, one organization per 100 users (at least 2), and the rest of `events` as the tail.
    pub fn new(events: u64, users: u64) -> anyhow::Result<Shape> {
        let users = users.max(2).div_ceil(2) * 2;
        let organizations = (users / 100).max(2);
        let memberships = users / 2 * 3;
        let creations = organizations + users + memberships;
        if events < creations {
            anyhow::bail!(
                "{events} events cannot hold {users} users, {organizations} organizations and {memberships} \
                 memberships ({creations} creations): raise the event count or lower the user count"
            );
        }
        Ok(Shape {
            events,
            users,
            organizations,
            memberships,
            tail: events - creations,
        })
    }

    /// `UserUpdated` events in the log.
    pub fn user_updates(&self) -> u64 {
        self.tail_slots(0..6)
    }

    /// Audit-log events in the log.
    pub fn audit_events(&self) -> u64 {
        self.tail_slots(6..8)
    }

    /// Tail events whose slot (index modulo 10) is in `slots`.
    fn tail_slots(&self, slots: std::ops::Range<u64>) -> u64 {
        let full = self.tail / 10 * (slots.end - slots.start);
        let rest = self.tail % 10;
        full + slots.filter(|s| *s < rest).count() as u64
    }

    pub fn describe(&self) -> String {
        format!(
            "{} events: {} organizations, {} users, {} memberships created, then {} `UserUpdated`, {} audit-log \
             events, {} membership role changes, {} organization updates",
            self.events,
            self.organizations,
            self.users,
            self.memberships,
            self.user_updates(),
            self.audit_events(),
            self.tail_slots(8..9),
            self.tail_slots(9..10)
        )
    }
}

pub fn user_id(k: u64) -> String {
    format!("user_{k:026}")
}

pub fn organization_id(k: u64) -> String {
    format!("org_{k:026}")
}

pub fn email(k: u64) -> String {
    format!("growth{k}@example.com")
}

/// The time the seeded log starts: [`SPAN_DAYS`] before `now`, to the second.
pub fn start(now: DateTime<Utc>) -> DateTime<Utc> {
    let t = now - Span::days(SPAN_DAYS);
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

/// Session-local (pg_temp) SQL functions that map an event's number in the log to its row, and a
/// membership's number to its user and organization. Organizations are skewed: membership and
/// audit-event organizations are drawn as `1 + floor(O·x²)` with `x` a hash of the number in
/// [0, 1), so organization 1 is the largest (~`1/√O` of each) and most are small.
fn functions(shape: &Shape, start: DateTime<Utc>) -> String {
    let Shape {
        events,
        users,
        organizations,
        memberships,
        ..
    } = *shape;
    let start = start.to_rfc3339_opts(SecondsFormat::Secs, true);
    let step_us = (SPAN_DAYS * 86_400 * 1_000_000) as f64 / events.max(1) as f64;
    format!(
        r#"
create function pg_temp.gid(prefix text, k bigint) returns text language sql immutable
  as $f$ select prefix || '_' || lpad(k::text, 26, '0') $f$;

create function pg_temp.skew(x bigint) returns bigint language sql immutable
  as $f$ select 1 + floor({organizations} * power(((x * 2654435761) % 4294967296)::float8 / 4294967296.0, 2))::bigint $f$;

-- Membership m (1-based): users 2p+1 and 2p+2 come in pairs; the first has one membership, the
-- second two (its primary organization and another one).
create function pg_temp.membership(m bigint, out user_k bigint, out org_k bigint) language plpgsql immutable as $f$
declare
  p bigint := (m - 1) / 3;
  w bigint := (m - 1) % 3;
begin
  user_k := 2 * p + 1 + least(w, 1);
  org_k := pg_temp.skew(user_k);
  if w = 2 then
    org_k := 1 + (org_k + user_k % ({organizations} - 1)) % {organizations};
  end if;
end $f$;

create function pg_temp.growth_event(i bigint,
  out aggregate_type text, out aggregate_id text, out seq bigint, out event_type text,
  out payload jsonb, out metadata jsonb, out org text, out at timestamptz)
language plpgsql immutable as $f$
declare
  t bigint; p bigint; r bigint; q bigint; s bigint; k bigint; u bigint; o bigint; m bigint;
  ts text;
  body jsonb;
  action text;
begin
  at := timestamptz '{start}' + make_interval(secs => i * {step_us} / 1e6);
  ts := to_char(at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
  org := null;
  if i <= {organizations} then
    aggregate_type := 'Organization'; aggregate_id := pg_temp.gid('org', i); seq := 1; org := aggregate_id;
    event_type := 'OrganizationCreated';
    body := jsonb_build_object('name', 'Org ' || i, 'external_id', null, 'metadata', '{{}}'::jsonb,
      'allow_profiles_outside_organization', false);
  elsif i <= {organizations} + {users} / 2 * 5 then
    t := i - {organizations} - 1; p := t / 5; r := t % 5;
    if r = 0 or r = 2 then
      u := 2 * p + 1 + r / 2;
      aggregate_type := 'User'; aggregate_id := pg_temp.gid('user', u); seq := 1; event_type := 'UserCreated';
      body := jsonb_build_object('email', 'growth' || u || '@example.com', 'first_name', 'First' || u,
        'last_name', 'Last' || u, 'email_verified', false, 'external_id', null, 'metadata', '{{}}'::jsonb,
        'has_password', false);
    else
      m := 3 * p + case r when 1 then 1 when 3 then 2 else 3 end;
      select x.user_k, x.org_k into u, o from pg_temp.membership(m) x;
      aggregate_type := 'OrganizationMembership'; aggregate_id := pg_temp.gid('om', m); seq := 1;
      org := pg_temp.gid('org', o); event_type := 'MembershipCreated';
      body := jsonb_build_object('user_id', pg_temp.gid('user', u), 'organization_id', org,
        'organization_name', 'Org ' || o, 'role', 'member');
    end if;
  else
    t := i - {organizations} - {users} / 2 * 5 - 1; q := t / 10; s := t % 10;
    if s < 6 then
      k := 6 * q + s; u := k % {users} + 1;
      aggregate_type := 'User'; aggregate_id := pg_temp.gid('user', u); seq := 2 + k / {users};
      event_type := 'UserUpdated';
      body := jsonb_build_object('changes', case k % 3
        when 0 then jsonb_build_object('first_name', 'First' || u || '.' || seq)
        when 1 then jsonb_build_object('last_name', 'Last' || u || '.' || seq)
        else jsonb_build_object('metadata', jsonb_build_object('plan', 'p' || (k % 5))) end);
    elsif s < 8 then
      k := 2 * q + s - 5; o := pg_temp.skew(k + 7919);
      action := case when k % 100 < 50 then 'user.signed_in' when k % 100 < 80 then 'document.viewed'
        when k % 100 < 95 then 'invoice.paid' when k % 100 < 99 then '{RARE_ACTION}' else 'api_key.rotated' end;
      u := k % {users} + 1;
      aggregate_type := 'AuditLogEvent'; aggregate_id := pg_temp.gid('audit_log_event', k); seq := 1;
      org := pg_temp.gid('org', o); event_type := 'AuditLogEventCreated';
      body := jsonb_build_object('event', jsonb_build_object('action', action, 'occurred_at', ts,
        'organization_id', org,
        'actor', jsonb_build_object('id', pg_temp.gid('user', u), 'type', 'user', 'name', 'First' || u),
        'targets', jsonb_build_array(jsonb_build_object('id', 'doc_' || k, 'type', 'document')),
        'context', jsonb_build_object('location', '203.0.113.7', 'user_agent', 'growth')));
    elsif s = 8 then
      m := q % {memberships} + 1;
      select x.org_k into o from pg_temp.membership(m) x;
      aggregate_type := 'OrganizationMembership'; aggregate_id := pg_temp.gid('om', m); seq := 2 + q / {memberships};
      org := pg_temp.gid('org', o); event_type := 'MembershipRoleChanged';
      body := jsonb_build_object('role', case when seq % 2 = 0 then 'admin' else 'member' end);
    else
      o := q % {organizations} + 1;
      aggregate_type := 'Organization'; aggregate_id := pg_temp.gid('org', o); seq := 2 + q / {organizations};
      org := aggregate_id; event_type := 'OrganizationUpdated';
      body := jsonb_build_object('changes', jsonb_build_object('metadata', jsonb_build_object('tier', 't' || (q % 3))));
    end if;
  end if;
  payload := jsonb_build_object(event_type, body || jsonb_build_object('at', ts));
  metadata := jsonb_build_object('ip', '127.0.0.1', 'actor_id', 'key_01M8DKYRS3ERZQ97DX7Y9214Y6',
    'actor_name', 'growth', 'request_id', 'req_' || i, 'occurred_at', ts)
    || case when org is null then '{{}}'::jsonb else jsonb_build_object('organization_id', org) end;
end $f$;
"#
    )
}

/// The statements that write the log: the functions, the events ([`EVENTS_PER_COMMIT`] per
/// transaction), then the claims their commands would have taken (liveness, emails,
/// memberships), so later commands see the same set-wide rules.
pub fn statements(shape: &Shape, start: DateTime<Utc>) -> Vec<String> {
    let Shape {
        events,
        users,
        organizations,
        memberships,
        ..
    } = *shape;
    let k = EVENTS_PER_COMMIT;
    vec![
        functions(shape, start),
        format!(
            r#"do $$
begin
  for c in 0 .. ({events} + {k} - 1) / {k} - 1 loop
    insert into event (id, aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata,
                       organization_id, recorded_at)
    select pg_temp.gid('event', g.i), e.aggregate_type, e.aggregate_id, e.seq, e.event_type, '1', e.payload,
           e.metadata, e.org, e.at
      from generate_series(c * {k} + 1, least(c * {k} + {k}, {events})) g(i), pg_temp.growth_event(g.i) e;
    commit;
  end loop;
end $$"#
        ),
        format!(
            r#"insert into claim (kind, value, aggregate_id)
select 'live_user', pg_temp.gid('user', u), pg_temp.gid('user', u) from generate_series(1, {users}) u
union all
select 'user_email', 'growth' || u || '@example.com', pg_temp.gid('user', u) from generate_series(1, {users}) u
union all
select 'live_organization', pg_temp.gid('org', o), pg_temp.gid('org', o) from generate_series(1, {organizations}) o
union all
select 'membership', pg_temp.gid('org', x.org_k) || ':' || pg_temp.gid('user', x.user_k), pg_temp.gid('om', m)
  from generate_series(1, {memberships}) m, pg_temp.membership(m) x"#
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_add_up() {
        let s = Shape::new(1_000_000, 100_000).expect("shape");
        assert_eq!(s.organizations, 1_000);
        assert_eq!(s.memberships, 150_000);
        assert_eq!(s.organizations + s.users + s.memberships + s.tail, s.events);
        assert_eq!(s.user_updates() + s.audit_events() + s.tail_slots(8..10), s.tail);
        assert!(Shape::new(100, 1_000).is_err());
        let odd = Shape::new(10_000, 999).expect("shape");
        assert_eq!(odd.users, 1_000);
        assert_eq!(odd.organizations, 10);
    }

    #[test]
    fn ids_are_ulid_shaped() {
        assert!(keyledger_domain::ids::has_prefix(&user_id(42), "user"));
        assert!(keyledger_domain::ids::has_prefix(&organization_id(7), "org"));
    }
}

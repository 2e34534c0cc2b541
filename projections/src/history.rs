//! Point-in-time reads: the WorkOS objects as they were at an instant, rebuilt from the event log
//! (never from the read models) with `objects::apply`, optionally starting from a snapshot.
//! Snapshots (`history_snapshot`, migration 0007) are only a cache: deleting them changes no
//! answer, and this module must never answer differently with or without them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use keyledger_domain::membership::OrganizationMembership;
use keyledger_domain::organization::Organization;
use keyledger_domain::user::User;
use serde_json::{json, Value};
use sqlx::PgPool;

use cqrs_es::Aggregate;

use crate::objects::{self, Docs, Kind};
use crate::queries::{self, ListResult, MembershipFilter, Page};
use keyledger_store::decode::decode;
use keyledger_store::StorageError;

/// The meaning of a snapshot's `documents`. Bump it whenever `objects.rs` changes what an event
/// does to a document (or the encoding below changes): snapshots of another format are ignored,
/// so old ones can never leak an outdated rendering (docs/OPERATIONS.md).
/// Format 2: users carry `name`, and `stripe_customer_id` is absent while unset (issue 7).
/// Format 3: organizations' streams hold their policy document (issue 10).
pub const SNAPSHOT_FORMAT: i32 = 3;

/// By default a fold writes a snapshot at every multiple of this many events of a stream.
pub const SNAPSHOT_EVERY: i64 = 100;

/// One event of a stream, with only what a fold needs.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct HistoryEvent {
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub recorded_at: DateTime<Utc>,
}

/// A stream's documents after its first `sequence` events; `recorded_at` is the latest
/// `recorded_at` among them (the snapshot answers every instant at or after it).
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub sequence: i64,
    pub recorded_at: DateTime<Utc>,
    pub docs: Docs,
}

/// The instant to read at, truncated to the log's precision (microseconds): an event recorded
/// at `r` belongs to the answer exactly when `r <= instant(at)`.
pub fn instant(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}

/// The events that continue a stream after `from` without a gap (`from + 1`, `from + 2`, ...).
/// Reads filter on `recorded_at <= at`; stopping at the first missing sequence makes the answer
/// the longest prefix of the stream recorded by then, the same whichever snapshot it starts from.
pub fn contiguous_after(events: Vec<HistoryEvent>, from: i64) -> Vec<HistoryEvent> {
    (from + 1..)
        .zip(events.into_iter().filter(|e| e.sequence > from))
        .take_while(|(next, e)| e.sequence == *next)
        .map(|(_, e)| e)
        .collect()
}

/// Folds events of one aggregate into `docs`. `every` > 0 collects a snapshot after each event
/// whose sequence is a multiple of it.
pub fn fold(
    aggregate_type: &str,
    docs: &mut Docs,
    events: &[HistoryEvent],
    every: i64,
) -> Result<Vec<Snapshot>, StorageError> {
    let mut snapshots = Vec::new();
    let mut latest: Option<DateTime<Utc>> = None;
    for e in events {
        let typed = decode(aggregate_type, &e.event_type, &e.event_version, &e.payload).map_err(|message| {
            StorageError::Decode {
                event_id: format!("{aggregate_type}/{}/{}", e.aggregate_id, e.sequence),
                message,
            }
        })?;
        objects::apply(&e.aggregate_id, &typed, docs);
        latest = Some(latest.map_or(e.recorded_at, |l| l.max(e.recorded_at)));
        if every > 0 && e.sequence % every == 0 {
            snapshots.push(Snapshot {
                sequence: e.sequence,
                recorded_at: latest.unwrap_or(e.recorded_at),
                docs: docs.clone(),
            });
        }
    }
    Ok(snapshots)
}

fn kind_from_str(s: &str) -> Option<Kind> {
    Kind::ALL.into_iter().find(|k| k.as_str() == s)
}

/// A snapshot's `documents`: `[[kind, id, document or null], ...]`, sorted for stable output.
pub fn encode_docs(docs: &Docs) -> Value {
    let sorted: BTreeMap<(Kind, &String), &Option<Value>> = docs.iter().map(|((k, id), v)| ((*k, id), v)).collect();
    Value::Array(
        sorted
            .into_iter()
            .map(|((k, id), v)| json!([k.as_str(), id, v]))
            .collect(),
    )
}

/// The inverse of [`encode_docs`]; `None` for anything else (such a snapshot is ignored).
pub fn decode_docs(v: &Value) -> Option<Docs> {
    let mut docs = Docs::new();
    for entry in v.as_array()? {
        let [kind, id, doc] = entry.as_array()?.as_slice() else {
            return None;
        };
        let kind = kind_from_str(kind.as_str()?)?;
        let doc = if doc.is_null() { None } else { Some(doc.clone()) };
        docs.insert((kind, id.as_str()?.to_string()), doc);
    }
    Some(docs)
}

/// A membership as the API shows it: with its organization's name and its user, when they exist
/// (the read side's `queries::membership` joins them the same way).
pub fn membership_view(mut membership: Value, organization: Option<&Value>, user: Option<&Value>) -> Value {
    if let Some(o) = membership.as_object_mut() {
        if let Some(name) = organization.and_then(|org| org.get("name")) {
            o.insert("organization_name".into(), name.clone());
        }
        if let Some(u) = user {
            o.insert("user".into(), u.clone());
        }
    }
    membership
}

/// Keeps the memberships the list filters ask for (`organization_id` is applied by the read).
pub fn filter_memberships(docs: Vec<Value>, f: &MembershipFilter) -> Vec<Value> {
    let field = |d: &Value, k: &str| d.get(k).and_then(Value::as_str).map(str::to_string);
    docs.into_iter()
        .filter(|d| {
            f.user_id
                .as_ref()
                .is_none_or(|u| field(d, "user_id").as_ref() == Some(u))
                && (f.statuses.is_empty() || field(d, "status").is_some_and(|s| f.statuses.contains(&s)))
        })
        .collect()
}

const EVENT_COLUMNS: &str = "aggregate_id, sequence, event_type, event_version, payload, recorded_at";

/// Point-in-time reader. `snapshot_every`: a fold writes a snapshot at every multiple of it that
/// it passes (0: never).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct History {
    pub snapshot_every: i64,
}

impl Default for History {
    fn default() -> Self {
        Self {
            snapshot_every: SNAPSHOT_EVERY,
        }
    }
}

impl History {
    /// The documents of one aggregate's stream as of `at`: from the latest snapshot recorded at
    /// or before `at` (if any), plus the events after it recorded by then.
    pub async fn docs_at(
        &self,
        pool: &PgPool,
        aggregate_type: &str,
        aggregate_id: &str,
        at: DateTime<Utc>,
    ) -> Result<Docs, StorageError> {
        let at = instant(at);
        let (start, events) = read_stream(pool, aggregate_type, aggregate_id, at).await?;
        let (from, mut docs) = match start {
            Some(s) => (s.sequence, s.docs),
            None => (0, Docs::new()),
        };
        let events = contiguous_after(events, from);
        let snapshots = fold(aggregate_type, &mut docs, &events, self.snapshot_every)?;
        if let Err(e) = store_snapshots(pool, aggregate_type, aggregate_id, &snapshots).await {
            // Only a cache: the answer stands without it.
            tracing::warn!(error = %e, aggregate_type, aggregate_id, "writing history snapshots failed");
        }
        Ok(docs)
    }

    async fn one(
        &self,
        pool: &PgPool,
        aggregate_type: &str,
        aggregate_id: &str,
        kind: Kind,
        id: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<Value>, StorageError> {
        let mut docs = self.docs_at(pool, aggregate_type, aggregate_id, at).await?;
        Ok(docs.remove(&(kind, id.to_string())).flatten())
    }

    pub async fn user(&self, pool: &PgPool, id: &str, at: DateTime<Utc>) -> Result<Option<Value>, StorageError> {
        self.one(pool, User::TYPE, id, Kind::User, id, at).await
    }

    pub async fn organization(
        &self,
        pool: &PgPool,
        id: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<Value>, StorageError> {
        self.one(pool, Organization::TYPE, id, Kind::Organization, id, at).await
    }

    /// The organization and its policy as of `at` (one fold of its stream): None when the
    /// organization did not exist then; the policy is None while it was never set.
    pub async fn organization_policy(
        &self,
        pool: &PgPool,
        id: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<(Value, Option<Value>)>, StorageError> {
        let mut docs = self.docs_at(pool, Organization::TYPE, id, at).await?;
        let policy = docs.remove(&(Kind::OrganizationPolicy, id.to_string())).flatten();
        Ok(docs
            .remove(&(Kind::Organization, id.to_string()))
            .flatten()
            .map(|org| (org, policy)))
    }

    /// A domain is found through the event that created it (index `event_domain_created_idx`),
    /// so it resolves to its organization even after the domain or the organization was deleted.
    pub async fn organization_domain(
        &self,
        pool: &PgPool,
        id: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<Value>, StorageError> {
        let org: Option<(String,)> = sqlx::query_as(
            "select aggregate_id from event where event_type = 'OrganizationDomainCreated' \
             and (payload -> 'OrganizationDomainCreated' ->> 'domain_id') = $1 and aggregate_type = $2 limit 1",
        )
        .bind(id)
        .bind(Organization::TYPE)
        .fetch_optional(pool)
        .await?;
        match org {
            Some((org_id,)) => {
                self.one(pool, Organization::TYPE, &org_id, Kind::OrganizationDomain, id, at)
                    .await
            }
            None => Ok(None),
        }
    }

    pub async fn membership(&self, pool: &PgPool, id: &str, at: DateTime<Utc>) -> Result<Option<Value>, StorageError> {
        let Some(m) = self
            .one(pool, OrganizationMembership::TYPE, id, Kind::Membership, id, at)
            .await?
        else {
            return Ok(None);
        };
        let field = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let (org_id, user_id) = (field("organization_id"), field("user_id"));
        let org = self.organization(pool, &org_id, at).await?;
        let user = self.user(pool, &user_id, at).await?;
        Ok(Some(membership_view(m, org.as_ref(), user.as_ref())))
    }

    /// The membership list of one organization as of `at`, with the live list's filters, order
    /// and cursors. All membership events of the organization recorded by then are read in one
    /// statement (index `event_membership_org_idx`), then the page's users in one more.
    pub async fn memberships(
        &self,
        pool: &PgPool,
        organization_id: &str,
        f: &MembershipFilter,
        page: &Page,
        at: DateTime<Utc>,
    ) -> Result<ListResult, StorageError> {
        let at = instant(at);
        let sql = format!(
            "select {EVENT_COLUMNS} from event where organization_id = $1 and aggregate_type = $2 \
             and recorded_at <= $3 order by aggregate_id, sequence"
        );
        let membership_events = sqlx::query_as::<_, HistoryEvent>(&sql)
            .bind(organization_id)
            .bind(OrganizationMembership::TYPE)
            .bind(at)
            .fetch_all(pool);
        // The organization (for `organization_name`) is read at the same time, on another
        // connection: it does not depend on the memberships.
        let (events, org) = tokio::try_join!(
            async { membership_events.await.map_err(StorageError::from) },
            self.organization(pool, organization_id, at)
        )?;
        let mut docs = Docs::new();
        for stream in split_streams(events) {
            fold(OrganizationMembership::TYPE, &mut docs, &contiguous_after(stream, 0), 0)?;
        }
        let found: Vec<Value> = docs
            .into_iter()
            .filter_map(|((kind, _), doc)| if kind == Kind::Membership { doc } else { None })
            .filter(|d| d.get("organization_id").and_then(Value::as_str) == Some(organization_id))
            .collect();
        let rows = filter_memberships(found, f)
            .into_iter()
            .map(|d| (d.get("id").and_then(Value::as_str).unwrap_or_default().to_string(), d))
            .collect();
        let mut result = queries::page_rows(rows, page);
        if result.data.is_empty() {
            return Ok(result);
        }
        let user_ids: Vec<String> = result
            .data
            .iter()
            .filter_map(|m| m.get("user_id").and_then(Value::as_str).map(str::to_string))
            .collect();
        let users = self.users_at(pool, &user_ids, at).await?;
        result.data = std::mem::take(&mut result.data)
            .into_iter()
            .map(|m| {
                let user_id = m.get("user_id").and_then(Value::as_str).unwrap_or_default().to_string();
                let user = users.get(&(Kind::User, user_id)).cloned().flatten();
                membership_view(m, org.as_ref(), user.as_ref())
            })
            .collect();
        Ok(result)
    }

    /// Several users as of `at`, folded from their events in one statement (no snapshots).
    async fn users_at(&self, pool: &PgPool, ids: &[String], at: DateTime<Utc>) -> Result<Docs, StorageError> {
        let events: Vec<HistoryEvent> = sqlx::query_as(&format!(
            "select {EVENT_COLUMNS} from event where aggregate_type = $1 and aggregate_id = any($2) \
             and recorded_at <= $3 order by aggregate_id, sequence"
        ))
        .bind(User::TYPE)
        .bind(ids)
        .bind(at)
        .fetch_all(pool)
        .await?;
        let mut docs = Docs::new();
        for stream in split_streams(events) {
            fold(User::TYPE, &mut docs, &contiguous_after(stream, 0), 0)?;
        }
        Ok(docs)
    }
}

/// Splits events ordered by (aggregate id, sequence) into one vector per aggregate.
pub fn split_streams(events: Vec<HistoryEvent>) -> Vec<Vec<HistoryEvent>> {
    let mut out: Vec<Vec<HistoryEvent>> = Vec::new();
    for e in events {
        match out.last_mut() {
            Some(s) if s.last().is_some_and(|l| l.aggregate_id == e.aggregate_id) => s.push(e),
            _ => out.push(vec![e]),
        }
    }
    out
}

/// Events of one stream as the `jsonb` array [`read_stream`] builds: `[[sequence, event_type,
/// event_version, payload, recorded_at], ...]`.
pub fn events_from_json(aggregate_id: &str, v: Value) -> Result<Vec<HistoryEvent>, StorageError> {
    let bad = || StorageError::Other(format!("unexpected history row of {aggregate_id}"));
    let Value::Array(rows) = v else { return Err(bad()) };
    rows.into_iter()
        .map(|row| {
            let Value::Array(fields) = row else { return Err(bad()) };
            let [sequence, event_type, event_version, payload, recorded_at]: [Value; 5] =
                fields.try_into().map_err(|_| bad())?;
            Ok(HistoryEvent {
                aggregate_id: aggregate_id.to_string(),
                sequence: sequence.as_i64().ok_or_else(bad)?,
                event_type: event_type.as_str().ok_or_else(bad)?.to_string(),
                event_version: event_version.as_str().ok_or_else(bad)?.to_string(),
                payload,
                recorded_at: recorded_at
                    .as_str()
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                    .ok_or_else(bad)?
                    .with_timezone(&Utc),
            })
        })
        .collect()
}

/// Everything a read of one stream at `at` needs, in one statement (one round trip): the
/// latest snapshot of the current format recorded at or before `at`, and the events after it up
/// to the first snapshot recorded after `at` (a prefix that long already has an event after
/// `at`, so the answer's events all come before it), recorded by `at`. Both bounds keep the
/// range small, so the planner takes the index even though it cannot see that `recorded_at`
/// grows with `sequence`. A snapshot whose documents do not decode is skipped: the events are
/// then read again from the start of the stream.
async fn read_stream(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
    at: DateTime<Utc>,
) -> Result<(Option<Snapshot>, Vec<HistoryEvent>), StorageError> {
    type Row = (Option<i64>, Option<DateTime<Utc>>, Option<Value>, Option<i64>, Value);
    let (sequence, recorded_at, documents, after, events): Row = sqlx::query_as(
        "select lo.sequence, lo.recorded_at, lo.documents, hi.sequence, \
           (select coalesce(jsonb_agg(jsonb_build_array(e.sequence, e.event_type, e.event_version, e.payload, \
              e.recorded_at) order by e.sequence), '[]'::jsonb) from event e \
            where e.aggregate_type = $1 and e.aggregate_id = $2 and e.sequence > coalesce(lo.sequence, 0) \
              and e.sequence < coalesce(hi.sequence, 9223372036854775807) and e.recorded_at <= $4) \
         from (select) one \
         left join lateral (select sequence, recorded_at, documents from history_snapshot \
           where aggregate_type = $1 and aggregate_id = $2 and format = $3 and recorded_at <= $4 \
           order by sequence desc limit 1) lo on true \
         left join lateral (select sequence from history_snapshot \
           where aggregate_type = $1 and aggregate_id = $2 and format = $3 and recorded_at > $4 \
           order by sequence limit 1) hi on true",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(SNAPSHOT_FORMAT)
    .bind(at)
    .fetch_one(pool)
    .await?;
    let (Some(sequence), Some(recorded_at), Some(documents)) = (sequence, recorded_at, documents) else {
        return Ok((None, events_from_json(aggregate_id, events)?));
    };
    if let Some(docs) = decode_docs(&documents) {
        let snapshot = Snapshot {
            sequence,
            recorded_at,
            docs,
        };
        return Ok((Some(snapshot), events_from_json(aggregate_id, events)?));
    }
    tracing::warn!(
        aggregate_type,
        aggregate_id,
        sequence,
        "ignoring an unreadable history snapshot"
    );
    let events: Vec<HistoryEvent> = sqlx::query_as(&format!(
        "select {EVENT_COLUMNS} from event where aggregate_type = $1 and aggregate_id = $2 \
         and sequence < $3 and recorded_at <= $4 order by sequence"
    ))
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(after.unwrap_or(i64::MAX))
    .bind(at)
    .fetch_all(pool)
    .await?;
    Ok((None, events))
}

async fn store_snapshots(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
    snapshots: &[Snapshot],
) -> Result<(), StorageError> {
    if snapshots.is_empty() {
        return Ok(());
    }
    let sequences: Vec<i64> = snapshots.iter().map(|s| s.sequence).collect();
    let times: Vec<DateTime<Utc>> = snapshots.iter().map(|s| s.recorded_at).collect();
    let documents: Vec<Value> = snapshots.iter().map(|s| encode_docs(&s.docs)).collect();
    sqlx::query(
        "insert into history_snapshot (aggregate_type, aggregate_id, format, sequence, recorded_at, documents) \
         select $1, $2, $3, * from unnest($4::bigint[], $5::timestamptz[], $6::jsonb[]) \
         on conflict do nothing",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(SNAPSHOT_FORMAT)
    .bind(&sequences)
    .bind(&times)
    .bind(&documents)
    .execute(pool)
    .await?;
    Ok(())
}

/// Folds a whole stream and stores a snapshot at every multiple of `every` events (for tests and
/// operators; reads write them lazily). Returns how many snapshots the fold produced.
pub async fn write_snapshots(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
    every: i64,
) -> Result<usize, StorageError> {
    let events: Vec<HistoryEvent> = sqlx::query_as(&format!(
        "select {EVENT_COLUMNS} from event where aggregate_type = $1 and aggregate_id = $2 order by sequence"
    ))
    .bind(aggregate_type)
    .bind(aggregate_id)
    .fetch_all(pool)
    .await?;
    let events = contiguous_after(events, 0);
    let snapshots = fold(aggregate_type, &mut Docs::new(), &events, every.max(1))?;
    store_snapshots(pool, aggregate_type, aggregate_id, &snapshots).await?;
    Ok(snapshots.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap_or_default()
    }

    fn org_event(seq: i64, payload: Value) -> HistoryEvent {
        let event_type = payload
            .as_object()
            .and_then(|o| o.keys().next().cloned())
            .unwrap_or_default();
        HistoryEvent {
            aggregate_id: "org_1".into(),
            sequence: seq,
            event_type,
            event_version: "1".into(),
            payload,
            recorded_at: at(seq),
        }
    }

    fn stream() -> Vec<HistoryEvent> {
        let t = |s: i64| objects::ts(&at(s));
        let mut v = vec![org_event(
            1,
            json!({"OrganizationCreated": {"name": "A", "external_id": null, "metadata": {},
                "allow_profiles_outside_organization": false, "at": t(1)}}),
        )];
        v.push(org_event(
            2,
            json!({"OrganizationDomainCreated": {"domain_id": "org_domain_1", "domain": "a.com",
                "state": "pending", "verification_token": "tok", "at": t(2)}}),
        ));
        for s in 3..=7 {
            v.push(org_event(
                s,
                json!({"OrganizationUpdated": {"changes": {"name": format!("A{s}")}, "at": t(s)}}),
            ));
        }
        v
    }

    #[test]
    fn only_the_gap_free_continuation_is_kept() {
        let mut events = stream();
        events.remove(3); // sequence 4 was recorded later than the instant
        let kept = contiguous_after(events.clone(), 0);
        assert_eq!(kept.iter().map(|e| e.sequence).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(
            contiguous_after(events, 3).is_empty(),
            "5 does not follow 3: 4 is missing"
        );
        assert_eq!(contiguous_after(stream(), 5).len(), 2);
    }

    #[test]
    fn folding_from_a_snapshot_equals_folding_from_the_start() {
        let events = stream();
        let mut whole = Docs::new();
        let snapshots = fold("Organization", &mut whole, &events, 2).unwrap();
        assert_eq!(snapshots.iter().map(|s| s.sequence).collect::<Vec<_>>(), vec![2, 4, 6]);
        assert_eq!(snapshots[1].recorded_at, at(4));
        for s in &snapshots {
            let mut docs = decode_docs(&encode_docs(&s.docs)).unwrap();
            assert_eq!(docs, s.docs, "encoding round-trips");
            fold(
                "Organization",
                &mut docs,
                &contiguous_after(events.clone(), s.sequence),
                0,
            )
            .unwrap();
            assert_eq!(docs, whole, "from the snapshot at {}", s.sequence);
        }
        let org = whole[&(Kind::Organization, "org_1".to_string())].clone().unwrap();
        assert_eq!(org["name"], "A7");
        assert_eq!(org["domains"][0]["id"], "org_domain_1");
    }

    #[test]
    fn unreadable_snapshots_decode_to_none() {
        for v in [
            json!("x"),
            json!([["nope", "id", null]]),
            json!([["user", 1, null]]),
            json!([[1]]),
        ] {
            assert!(decode_docs(&v).is_none(), "{v}");
        }
        assert_eq!(decode_docs(&json!([])), Some(Docs::new()));
    }

    #[test]
    fn instants_are_truncated_to_microseconds() {
        let t = DateTime::parse_from_rfc3339("2026-01-01T00:00:00.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(objects::ts(&instant(t)), "2026-01-01T00:00:00.123Z");
        assert_eq!(instant(t).timestamp_subsec_nanos(), 123_456_000);
    }

    #[test]
    fn membership_views_take_the_organization_name_and_user_when_they_exist() {
        let m = json!({"id": "om_1", "organization_name": "Old", "user_id": "user_1", "status": "active"});
        let v = membership_view(m.clone(), Some(&json!({"name": "New"})), Some(&json!({"id": "user_1"})));
        assert_eq!(v["organization_name"], "New");
        assert_eq!(v["user"]["id"], "user_1");
        assert_eq!(membership_view(m.clone(), None, None), m);
        let f = MembershipFilter {
            organization_id: None,
            user_id: Some("user_2".into()),
            statuses: vec![],
        };
        assert!(filter_memberships(vec![m.clone()], &f).is_empty());
        let f = MembershipFilter {
            organization_id: None,
            user_id: None,
            statuses: vec!["inactive".into()],
        };
        assert!(filter_memberships(vec![m], &f).is_empty());
    }

    #[test]
    fn events_arrive_as_json_rows() {
        let v =
            json!([[3, "OrganizationDeleted", "1", {"OrganizationDeleted": {}}, "2026-11-27T07:49:18.123456+00:00"]]);
        let e = events_from_json("org_1", v).unwrap();
        assert_eq!((e[0].sequence, e[0].event_type.as_str()), (3, "OrganizationDeleted"));
        assert_eq!(e[0].recorded_at.timestamp_subsec_micros(), 123_456);
        for bad in [
            json!({}),
            json!([[1]]),
            json!([[1, "a", "1", {}, "yesterday"]]),
            json!([["1", "a", "1", {}, "2026-11-27T07:49:18Z"]]),
        ] {
            assert!(events_from_json("org_1", bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn streams_split_by_aggregate() {
        let mut a = org_event(1, json!({}));
        a.aggregate_id = "a".into();
        let mut b = a.clone();
        b.aggregate_id = "b".into();
        let split = split_streams(vec![a.clone(), a.clone(), b]);
        assert_eq!(split.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 1]);
    }
}

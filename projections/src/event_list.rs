//! `GET /events` as a list: the public feed in feed order (transaction id, position, seq), with
//! WorkOS filters (event types, organization, a `created_at` range) and event-id cursors. It
//! reads `event_feed` only, and must cost the same on a log of a thousand events as on one of
//! ten million: every path below seeks with an index and reads about a page of rows.
//!
//! A time range cannot seek on `created_at` in feed order (a transaction that started earlier
//! may commit, and sort, later), so the feed carries `created_at_max`, the latest `created_at`
//! up to each row, which never decreases along the feed (migration 0013): ordering by
//! (created_at_max, transaction_id, position, seq) is feed order, and no row before the first
//! with `created_at_max >= range_start` has `created_at >= range_start`.
//!
//! [`seek`] walks each asked event type (every type present, when none is asked for) from that
//! point in feed order, merged, and stops at a page of
//! matches; a window with fewer matches than a page, followed by many rows of the type, would
//! make it walk on, so each walk stops after [`walk_limit`] rows and [`window`] reads the time
//! window whole instead (few matches: a short read, by time).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgPool, Postgres, QueryBuilder};

use keyledger_store::StorageError;

use crate::queries::{fetch_scoped, finish, scan, ListResult, Page, Scan};

#[derive(Debug, Default)]
pub struct EventFilter {
    pub events: Vec<String>,
    pub organization_id: Option<String>,
    /// `created_at >= range_start`.
    pub range_start: Option<DateTime<Utc>>,
    /// `created_at < range_end`.
    pub range_end: Option<DateTime<Utc>>,
}

pub enum EventsOutcome {
    Page(ListResult),
    UnknownCursor,
}

/// Past this many distinct event types, one walk filters them all instead of one walk per type
/// (slow on a large feed; the feed has about 15 types).
const MAX_WALKS: usize = 64;

/// A row's place in the feed, with its `created_at_max`.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
struct Place {
    created_at_max: DateTime<Utc>,
    transaction_id: i64,
    position: i64,
    seq: i32,
}

/// The public event feed in feed order, paged with event-id cursors like every other list.
pub async fn events(pool: &PgPool, f: &EventFilter, page: &Page) -> Result<EventsOutcome, StorageError> {
    let scan = scan(page);
    // Resolved outside the tenant scope, as `GET /events/stream` does: a cursor is a place in the
    // whole feed, so an event of another organization is a valid place to resume a scoped read
    // from (row-level security would hide it and silently empty the page).
    let place = match &scan.cursor {
        None => None,
        Some(c) => match place_of(pool, c).await? {
            Some(p) => Some(p),
            None => return Ok(EventsOutcome::UnknownCursor),
        },
    };
    let has_range = f.range_start.is_some() || f.range_end.is_some();
    let rows = if f.organization_id.is_none() && (has_range || !f.events.is_empty()) {
        match seek(pool, f, page, &scan, place).await? {
            Some(rows) => rows,
            None => window(pool, f, page, &scan, place).await?,
        }
    } else {
        in_feed_order(pool, f, page, &scan, place).await?
    };
    Ok(EventsOutcome::Page(finish(rows, page, &scan)))
}

async fn place_of(pool: &PgPool, event_id: &str) -> Result<Option<Place>, StorageError> {
    Ok(sqlx::query_as(
        "select created_at_max, transaction_id::text::bigint as transaction_id, position, seq \
         from event_feed where id = $1",
    )
    .bind(event_id)
    .fetch_optional(pool)
    .await?)
}

/// Rows a walk reads before giving up on a sparse window: comfortably more than a page.
fn walk_limit(page: &Page) -> i64 {
    2 * (page.limit + 1) + 200
}

/// `(created_at >= $s and created_at < $e)`: whether a row is in the time range.
fn push_in_range(qb: &mut QueryBuilder<'_, Postgres>, f: &EventFilter) {
    qb.push("(true");
    if let Some(s) = f.range_start {
        qb.push(" and created_at >= ").push_bind(s);
    }
    if let Some(e) = f.range_end {
        qb.push(" and created_at < ").push_bind(e);
    }
    qb.push(")");
}

/// `(transaction_id, position, seq) <op> (place)`, or with `created_at_max` first.
fn push_after(qb: &mut QueryBuilder<'_, Postgres>, p: &Place, descending: bool, with_max: bool) {
    qb.push(if with_max {
        " and (created_at_max, transaction_id, position, seq) "
    } else {
        " and (transaction_id, position, seq) "
    });
    qb.push(if descending { "< (" } else { "> (" });
    if with_max {
        qb.push_bind(p.created_at_max).push(", ");
    }
    qb.push_bind(p.transaction_id)
        .push("::bigint::text::xid8, ")
        .push_bind(p.position)
        .push(", ")
        .push_bind(p.seq)
        .push(")");
}

/// One walk per event type (asked for, or present in the feed) in feed order from the range's
/// start or the cursor, merged; each walk reads at most [`walk_limit`] rows. `None` when a walk stopped there
/// before the page was full (a sparse window: [`window`] answers instead).
async fn seek(
    pool: &PgPool,
    f: &EventFilter,
    page: &Page,
    scan: &Scan,
    place: Option<Place>,
) -> Result<Option<Vec<(String, Value)>>, StorageError> {
    let want = page.limit + 1;
    let walk = walk_limit(page);
    let names: BTreeSet<String> = if f.events.is_empty() {
        types_present(pool).await?
    } else {
        f.events.iter().cloned().collect()
    };
    if names.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let walks: Vec<Option<&str>> = if names.len() > MAX_WALKS {
        vec![None]
    } else {
        names.iter().map(|n| Some(n.as_str())).collect()
    };
    let order = if scan.descending {
        "created_at_max desc, transaction_id desc, position desc, seq desc"
    } else {
        "created_at_max, transaction_id, position, seq"
    };
    let mut qb = QueryBuilder::new("select id, body, hit, last from (");
    for (i, name) in walks.iter().enumerate() {
        if i > 0 {
            qb.push(" union all ");
        }
        qb.push("(select id, body, created_at_max, transaction_id, position, seq, ");
        push_in_range(&mut qb, f);
        qb.push(format!(" as hit, row_number() over (order by {order}) = "));
        qb.push_bind(walk);
        qb.push(" as last from event_feed where true");
        match name {
            Some(n) => {
                qb.push(" and event = ").push_bind(n.to_string());
            }
            None if !f.events.is_empty() => {
                qb.push(" and event = any(").push_bind(f.events.clone()).push(")");
            }
            None => {}
        }
        // Where the walk starts (and, walking backwards, where it may stop): one bound to seek
        // from, so the index is entered at the cursor or at the range's start, whichever is later.
        match (place, f.range_start) {
            (Some(p), Some(s)) if !scan.descending && s > p.created_at_max => {
                qb.push(" and created_at_max >= ").push_bind(s);
            }
            (Some(p), s) => {
                push_after(&mut qb, &p, scan.descending, true);
                if let (true, Some(s)) = (scan.descending, s) {
                    qb.push(" and created_at_max >= ").push_bind(s);
                }
            }
            (None, Some(s)) => {
                qb.push(" and created_at_max >= ").push_bind(s);
            }
            (None, None) => {}
        }
        qb.push(format!(" order by {order} limit "));
        qb.push_bind(walk);
        qb.push(")");
    }
    qb.push(format!(") x where hit or last order by {order} limit "));
    qb.push_bind(want + walks.len() as i64);

    let rows: Vec<(String, Value, bool, bool)> = qb.build_query_as().fetch_all(pool).await?;
    let mut out = Vec::new();
    for (id, body, hit, last) in rows {
        if hit {
            out.push((id, body));
            if out.len() as i64 == want {
                return Ok(Some(out));
            }
        }
        // A walk that reached its limit may have matches beyond it.
        if last {
            return Ok(None);
        }
    }
    Ok(Some(out))
}

/// The event types in the feed, by skipping along `event_feed_event_time_idx` (one index probe
/// per type).
async fn types_present(pool: &PgPool) -> Result<BTreeSet<String>, StorageError> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "with recursive t(event) as ((select event from event_feed order by event limit 1) \
         union all select (select e.event from event_feed e where e.event > t.event order by e.event limit 1) \
         from t where t.event is not null) select event from t where event is not null",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// The time window read whole (by type and `created_at`, index-only; every type: by
/// `created_at`), then the page of it in feed order: the answer when the window holds few
/// events of the asked types.
async fn window(
    pool: &PgPool,
    f: &EventFilter,
    page: &Page,
    scan: &Scan,
    place: Option<Place>,
) -> Result<Vec<(String, Value)>, StorageError> {
    let dir = if scan.descending { " desc" } else { "" };
    // Materialized: the planner would otherwise walk the feed in order and filter by time.
    let mut qb =
        QueryBuilder::new("with w as materialized (select transaction_id, position, seq from event_feed where true");
    if let Some(s) = f.range_start {
        qb.push(" and created_at >= ").push_bind(s);
    }
    if let Some(e) = f.range_end {
        qb.push(" and created_at < ").push_bind(e);
    }
    if !f.events.is_empty() {
        qb.push(" and event = any(").push_bind(f.events.clone()).push(")");
    }
    qb.push(") select f.id, f.body from event_feed f join (select transaction_id, position, seq from w where true");
    if let Some(p) = &place {
        push_after(&mut qb, p, scan.descending, false);
    }
    qb.push(format!(" order by transaction_id{dir}, position{dir}, seq{dir} limit "));
    qb.push_bind(page.limit + 1);
    qb.push(format!(
        ") k using (transaction_id, position, seq) order by f.transaction_id{dir}, f.position{dir}, f.seq{dir}"
    ));
    Ok(qb.build_query_as().fetch_all(pool).await?)
}

/// The feed in order with every filter applied to each row: without a time range or a type, or
/// within one organization (its own index, `event_feed_org_idx`, behind the tenant wall).
async fn in_feed_order(
    pool: &PgPool,
    f: &EventFilter,
    page: &Page,
    scan: &Scan,
    place: Option<Place>,
) -> Result<Vec<(String, Value)>, StorageError> {
    let mut qb = QueryBuilder::new("select id, body from event_feed where true");
    if let Some(p) = &place {
        push_after(&mut qb, p, scan.descending, false);
    }
    if !f.events.is_empty() {
        qb.push(" and event = any(").push_bind(f.events.clone()).push(")");
    }
    if let Some(o) = &f.organization_id {
        qb.push(" and organization_id = ").push_bind(o.clone());
    }
    if let Some(s) = f.range_start {
        qb.push(" and created_at >= ").push_bind(s);
    }
    if let Some(e) = f.range_end {
        qb.push(" and created_at < ").push_bind(e);
    }
    qb.push(if scan.descending {
        " order by transaction_id desc, position desc, seq desc"
    } else {
        " order by transaction_id, position, seq"
    });
    qb.push(" limit ").push_bind(page.limit + 1);
    fetch_scoped(pool, &mut qb, f.organization_id.as_deref()).await
}

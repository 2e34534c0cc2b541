//! The public event feed read as an ordered stream, for subscribers (webhooks, NATS, the live
//! stream).
//!
//! The `events` projection writes `event_feed` in log order: each batch commits with its
//! checkpoint, and every row it adds sorts after every row committed before it by
//! (transaction id, position, seq). So "rows after cursor C" read in one statement never skips
//! a row that commits later, and the feed needs no xmin rule of its own. A rebuild writes the
//! same rows with the same cursors, so subscriber checkpoints survive it.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgExecutor;

use keyledger_store::StorageError;

/// A place in the feed: the source event's log position and its index within its command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct FeedCursor {
    pub transaction_id: i64,
    pub position: i64,
    pub seq: i32,
}

impl From<(i64, i64, i32)> for FeedCursor {
    /// From a `(transaction_id, position, seq)` row.
    fn from((transaction_id, position, seq): (i64, i64, i32)) -> Self {
        FeedCursor {
            transaction_id,
            position,
            seq,
        }
    }
}

impl FeedCursor {
    pub const START: FeedCursor = FeedCursor {
        transaction_id: 0,
        position: 0,
        seq: 0,
    };
}

/// One public event (the WorkOS `event` object in `body`).
#[derive(Debug, Clone, PartialEq)]
pub struct FeedEvent {
    pub id: String,
    pub cursor: FeedCursor,
    pub event: String,
    pub organization_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub body: Value,
}

/// Which events a subscriber wants; `None` means all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeedFilter {
    pub events: Option<Vec<String>>,
    pub organization_id: Option<String>,
}

impl FeedFilter {
    /// True when `e` passes the filter (the same rule `read_after` applies in SQL).
    pub fn matches(&self, e: &FeedEvent) -> bool {
        self.events.as_ref().is_none_or(|names| names.contains(&e.event))
            && self
                .organization_id
                .as_ref()
                .is_none_or(|o| e.organization_id.as_ref() == Some(o))
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    transaction_id: i64,
    position: i64,
    seq: i32,
    event: String,
    organization_id: Option<String>,
    created_at: DateTime<Utc>,
    body: Value,
}

impl From<Row> for FeedEvent {
    fn from(r: Row) -> Self {
        FeedEvent {
            id: r.id,
            cursor: FeedCursor {
                transaction_id: r.transaction_id,
                position: r.position,
                seq: r.seq,
            },
            event: r.event,
            organization_id: r.organization_id,
            created_at: r.created_at,
            body: r.body,
        }
    }
}

/// Up to `limit` events after `after` that pass `filter`, in feed order.
pub async fn read_after<'e>(
    db: impl PgExecutor<'e>,
    after: FeedCursor,
    filter: &FeedFilter,
    limit: i64,
) -> Result<Vec<FeedEvent>, StorageError> {
    let rows: Vec<Row> = sqlx::query_as(
        "select id, event_feed.transaction_id::text::bigint as transaction_id, position, seq, event, \
         organization_id, created_at, body from event_feed \
         where (event_feed.transaction_id, position, seq) > ($1::bigint::text::xid8, $2, $3) \
         and ($4::text[] is null or event = any($4)) \
         and ($5::text is null or organization_id = $5) \
         order by event_feed.transaction_id, position, seq limit $6",
    )
    .bind(after.transaction_id)
    .bind(after.position)
    .bind(after.seq)
    .bind(filter.events.as_deref())
    .bind(filter.organization_id.as_deref())
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(FeedEvent::from).collect())
}

/// Where an event is in the feed (`None`: no such public event).
pub async fn cursor_of<'e>(db: impl PgExecutor<'e>, event_id: &str) -> Result<Option<FeedCursor>, StorageError> {
    let row: Option<(i64, i64, i32)> =
        sqlx::query_as("select transaction_id::text::bigint, position, seq from event_feed where id = $1")
            .bind(event_id)
            .fetch_optional(db)
            .await?;
    Ok(row.map(FeedCursor::from))
}

/// The last event in the feed (START when it is empty).
pub async fn head<'e>(db: impl PgExecutor<'e>) -> Result<FeedCursor, StorageError> {
    let row: Option<(i64, i64, i32)> = sqlx::query_as(
        "select transaction_id::text::bigint, position, seq from event_feed \
         order by event_feed.transaction_id desc, position desc, seq desc limit 1",
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(FeedCursor::from).unwrap_or_default())
}

/// How many events after `after` pass `filter` (a subscriber's lag).
pub async fn count_after<'e>(
    db: impl PgExecutor<'e>,
    after: FeedCursor,
    filter: &FeedFilter,
) -> Result<i64, StorageError> {
    count_after_at_most(db, after, filter, i64::MAX).await
}

/// [`count_after`], but stops counting at `cap`: cheap to ask often, however far behind.
pub async fn count_after_at_most<'e>(
    db: impl PgExecutor<'e>,
    after: FeedCursor,
    filter: &FeedFilter,
    cap: i64,
) -> Result<i64, StorageError> {
    let (n,): (i64,) = sqlx::query_as(
        "select count(*) from (select 1 from event_feed \
         where (event_feed.transaction_id, position, seq) > ($1::bigint::text::xid8, $2, $3) \
         and ($4::text[] is null or event = any($4)) \
         and ($5::text is null or organization_id = $5) limit $6) as behind",
    )
    .bind(after.transaction_id)
    .bind(after.position)
    .bind(after.seq)
    .bind(filter.events.as_deref())
    .bind(filter.organization_id.as_deref())
    .bind(cap)
    .fetch_one(db)
    .await?;
    Ok(n)
}

/// A subscriber's durable checkpoint, `None` when it has none (yet, or any more).
pub async fn checkpoint<'e>(db: impl PgExecutor<'e>, name: &str) -> Result<Option<FeedCursor>, StorageError> {
    let row: Option<(i64, i64, i32)> =
        sqlx::query_as("select transaction_id::text::bigint, position, seq from subscriber_checkpoint where name = $1")
            .bind(name)
            .fetch_optional(db)
            .await?;
    Ok(row.map(FeedCursor::from))
}

/// A subscriber's durable checkpoint (START when it has none yet).
pub async fn load_checkpoint<'e>(db: impl PgExecutor<'e>, name: &str) -> Result<FeedCursor, StorageError> {
    Ok(checkpoint(db, name).await?.unwrap_or_default())
}

/// Records that a subscriber has delivered everything up to `at`. Never moves backwards unless
/// `rewind` is set (an explicit replay).
pub async fn store_checkpoint<'e>(
    db: impl PgExecutor<'e>,
    name: &str,
    at: FeedCursor,
    rewind: bool,
) -> Result<(), StorageError> {
    sqlx::query(
        "insert into subscriber_checkpoint (name, transaction_id, position, seq, updated_at) \
         values ($1, $2::bigint::text::xid8, $3, $4, now()) \
         on conflict (name) do update set transaction_id = excluded.transaction_id, position = excluded.position, \
         seq = excluded.seq, updated_at = now() \
         where $5 or (subscriber_checkpoint.transaction_id, subscriber_checkpoint.position, subscriber_checkpoint.seq) \
         < (excluded.transaction_id, excluded.position, excluded.seq)",
    )
    .bind(name)
    .bind(at.transaction_id)
    .bind(at.position)
    .bind(at.seq)
    .bind(rewind)
    .execute(db)
    .await?;
    Ok(())
}

/// A subscriber's checkpoint and how far behind the feed it is.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriberStatus {
    pub name: String,
    pub checkpoint: FeedCursor,
    pub behind: i64,
    pub updated_at: DateTime<Utc>,
}

/// Every subscriber with a checkpoint, by name. `behind` counts all feed events after its
/// checkpoint (a filtered subscriber may have nothing to deliver in them).
pub async fn subscriber_status<'e>(db: impl PgExecutor<'e> + Copy) -> Result<Vec<SubscriberStatus>, StorageError> {
    subscriber_status_at_most(db, i64::MAX).await
}

/// [`subscriber_status`] with `behind` counted up to `cap` (for frequent callers such as
/// `/health`: a disabled webhook endpoint's lag grows without bound).
pub async fn subscriber_status_at_most<'e>(
    db: impl PgExecutor<'e> + Copy,
    cap: i64,
) -> Result<Vec<SubscriberStatus>, StorageError> {
    let rows: Vec<(String, i64, i64, i32, DateTime<Utc>)> = sqlx::query_as(
        "select name, transaction_id::text::bigint, position, seq, updated_at from subscriber_checkpoint order by name",
    )
    .fetch_all(db)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (name, t, p, s, updated_at) in rows {
        let checkpoint = FeedCursor::from((t, p, s));
        let behind = count_after_at_most(db, checkpoint, &FeedFilter::default(), cap).await?;
        out.push(SubscriberStatus {
            name,
            checkpoint,
            behind,
            updated_at,
        });
    }
    Ok(out)
}

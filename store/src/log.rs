//! Reading the log in order without gaps: only events of transactions older than every
//! transaction still in flight are visible, ordered by (transaction id, position).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgExecutor;

/// A place in the log: the committing transaction's id and the global position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct LogPosition {
    pub transaction_id: i64,
    pub position: i64,
}

impl LogPosition {
    pub const START: LogPosition = LogPosition {
        transaction_id: 0,
        position: 0,
    };
}

/// One row of the event log.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub log_position: LogPosition,
    pub id: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: Value,
    pub organization_id: Option<String>,
    pub recorded_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct Row {
    position: i64,
    transaction_id: i64,
    id: String,
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: Value,
    metadata: Value,
    organization_id: Option<String>,
    recorded_at: DateTime<Utc>,
}

impl From<Row> for StoredEvent {
    fn from(r: Row) -> Self {
        StoredEvent {
            log_position: LogPosition {
                transaction_id: r.transaction_id,
                position: r.position,
            },
            id: r.id,
            aggregate_type: r.aggregate_type,
            aggregate_id: r.aggregate_id,
            sequence: r.sequence,
            event_type: r.event_type,
            event_version: r.event_version,
            payload: r.payload,
            metadata: r.metadata,
            organization_id: r.organization_id,
            recorded_at: r.recorded_at,
        }
    }
}

/// Note: `transaction_id` is also the name of an output column (the bigint cast), so `order by`
/// must qualify `event.transaction_id`, or it sorts by the cast and cannot use the index.
pub(crate) const COLUMNS: &str = "position, transaction_id::text::bigint as transaction_id, id, aggregate_type, \
     aggregate_id, sequence, event_type, event_version, payload, metadata, organization_id, recorded_at";

/// Up to `limit` events after `after`, in log order, never skipping one whose transaction is
/// still in flight (it is returned by a later call instead).
pub async fn read_after<'e>(
    db: impl PgExecutor<'e>,
    after: LogPosition,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let sql = format!(
        "select {COLUMNS} from event \
         where (transaction_id, position) > ($1::bigint::text::xid8, $2) \
           and transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
         order by event.transaction_id, event.position limit $3"
    );
    let rows: Vec<Row> = sqlx::query_as(&sql)
        .bind(after.transaction_id)
        .bind(after.position)
        .bind(limit)
        .fetch_all(db)
        .await?;
    Ok(rows.into_iter().map(StoredEvent::from).collect())
}

/// Up to `limit` events of the given aggregate types after `after` and at or before `upto`, in
/// log order (a rebuild reads only what its projections consume). Every event at or before a
/// position [`head`] returned is final, so with `upto` from [`head`] none is ever missed. Each
/// event comes with its payload as JSON text, for [`crate::decode::decode_text`]; its `payload`
/// field is `Null`.
pub async fn read_range_of_types<'e>(
    db: impl PgExecutor<'e>,
    after: LogPosition,
    upto: LogPosition,
    aggregate_types: &[&str],
    limit: i64,
) -> Result<Vec<(StoredEvent, String)>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct TextRow {
        position: i64,
        transaction_id: i64,
        id: String,
        aggregate_type: String,
        aggregate_id: String,
        sequence: i64,
        event_type: String,
        event_version: String,
        payload: String,
        metadata: Value,
        organization_id: Option<String>,
        recorded_at: DateTime<Utc>,
    }
    let rows: Vec<TextRow> = sqlx::query_as(
        "select position, transaction_id::text::bigint as transaction_id, id, aggregate_type, aggregate_id, \
         sequence, event_type, event_version, payload::text as payload, metadata, organization_id, recorded_at \
         from event \
         where (transaction_id, position) > ($1::bigint::text::xid8, $2) \
           and (transaction_id, position) <= ($3::bigint::text::xid8, $4) \
           and aggregate_type = any($5) \
         order by event.transaction_id, event.position limit $6",
    )
    .bind(after.transaction_id)
    .bind(after.position)
    .bind(upto.transaction_id)
    .bind(upto.position)
    .bind(aggregate_types)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let e = StoredEvent {
                log_position: LogPosition {
                    transaction_id: r.transaction_id,
                    position: r.position,
                },
                id: r.id,
                aggregate_type: r.aggregate_type,
                aggregate_id: r.aggregate_id,
                sequence: r.sequence,
                event_type: r.event_type,
                event_version: r.event_version,
                payload: Value::Null,
                metadata: r.metadata,
                organization_id: r.organization_id,
                recorded_at: r.recorded_at,
            };
            (e, r.payload)
        })
        .collect())
}

/// How many events there are of each aggregate type at or before `upto`.
pub async fn count_by_type<'e>(db: impl PgExecutor<'e>, upto: LogPosition) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "select aggregate_type, count(*) from event \
         where (transaction_id, position) <= ($1::bigint::text::xid8, $2) group by aggregate_type",
    )
    .bind(upto.transaction_id)
    .bind(upto.position)
    .fetch_all(db)
    .await
}

/// The newest visible position of the log (the "head" readers can reach now).
pub async fn head<'e>(db: impl PgExecutor<'e>) -> Result<LogPosition, sqlx::Error> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "select transaction_id::text::bigint, position from event \
         where transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
         order by event.transaction_id desc, event.position desc limit 1",
    )
    .fetch_optional(db)
    .await?;
    Ok(row
        .map(|(t, p)| LogPosition {
            transaction_id: t,
            position: p,
        })
        .unwrap_or_default())
}

/// How many visible events come after `after` (for progress and lag).
pub async fn count_after<'e>(db: impl PgExecutor<'e>, after: LogPosition) -> Result<i64, sqlx::Error> {
    count_after_at_most(db, after, i64::MAX).await
}

/// [`count_after`], but stops counting at `cap`: cheap to ask often, however far behind.
pub async fn count_after_at_most<'e>(
    db: impl PgExecutor<'e>,
    after: LogPosition,
    cap: i64,
) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as(
        "select count(*) from (select 1 from event where (transaction_id, position) > ($1::bigint::text::xid8, $2) \
         and transaction_id < pg_snapshot_xmin(pg_current_snapshot()) limit $3) as behind",
    )
    .bind(after.transaction_id)
    .bind(after.position)
    .bind(cap)
    .fetch_one(db)
    .await?;
    Ok(n)
}

/// One aggregate's stream for loading it: (sequence, event type, version, payload), in order.
pub async fn stream<'e>(
    db: impl PgExecutor<'e>,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Vec<(i64, String, String, Value)>, sqlx::Error> {
    sqlx::query_as(
        "select sequence, event_type, event_version, payload from event \
         where aggregate_type = $1 and aggregate_id = $2 order by sequence",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .fetch_all(db)
    .await
}

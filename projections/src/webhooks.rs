//! Webhook endpoints in SQL: the `webhooks` projection (the `webhook_endpoint` read model), the
//! signing secrets (never in an event; written by the creating append), the delivery log and the
//! endpoints' feed checkpoints. It knows SQL and events, never HTTP.

use chrono::{DateTime, Utc};
use keyledger_domain::webhook::WebhookEndpointEvent;
use keyledger_store::decode::AnyEvent;
use keyledger_store::StoredEvent;
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor, PgPool, Postgres, QueryBuilder};

use crate::feed::{self, FeedCursor};
use crate::queries::{self, ListResult, Page};
use keyledger_store::StorageError;

/// The checkpoint name of an endpoint's delivery cursor in `subscriber_checkpoint`.
pub fn checkpoint_name(endpoint_id: &str) -> String {
    format!("webhook:{endpoint_id}")
}

/// The `webhooks` projection: applies WebhookEndpoint events (in log order) to
/// `{schema}.webhook_endpoint`. A deleted endpoint's signing secret (written by its creating
/// append, never in an event) and delivery checkpoint go with it; both deletes are idempotent,
/// so a rebuild replaying them changes nothing. Creation is an upsert, so an upgraded database
/// whose endpoints were written before this was a projection replays onto them harmlessly.
pub async fn apply_batch(
    conn: &mut PgConnection,
    schema: &str,
    events: &[(&StoredEvent, AnyEvent)],
) -> Result<(), StorageError> {
    for (stored, typed) in events {
        let AnyEvent::WebhookEndpoint(e) = typed else { continue };
        let id = &stored.aggregate_id;
        match e {
            WebhookEndpointEvent::WebhookEndpointCreated {
                endpoint_url,
                events,
                at,
            } => {
                sqlx::query(&format!(
                    "insert into {schema}.webhook_endpoint (id, endpoint_url, events, status, disabled_reason, \
                     created_at, updated_at, created_transaction_id, created_position) \
                     values ($1, $2, $3, 'enabled', null, $4, $4, $5::bigint::text::xid8, $6) \
                     on conflict (id) do update set endpoint_url = excluded.endpoint_url, events = excluded.events, \
                     status = excluded.status, disabled_reason = null, created_at = excluded.created_at, \
                     updated_at = excluded.updated_at, created_transaction_id = excluded.created_transaction_id, \
                     created_position = excluded.created_position"
                ))
                .bind(id)
                .bind(endpoint_url)
                .bind(events)
                .bind(at)
                .bind(stored.log_position.transaction_id)
                .bind(stored.log_position.position)
                .execute(&mut *conn)
                .await?;
            }
            WebhookEndpointEvent::WebhookEndpointUpdated { changes, at, .. } => {
                sqlx::query(&format!(
                    "update {schema}.webhook_endpoint set endpoint_url = coalesce($2, endpoint_url), \
                     events = coalesce($3, events), updated_at = $4 where id = $1"
                ))
                .bind(id)
                .bind(&changes.endpoint_url)
                .bind(&changes.events)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
            WebhookEndpointEvent::WebhookEndpointEnabled { at } => {
                sqlx::query(&format!(
                    "update {schema}.webhook_endpoint set status = 'enabled', disabled_reason = null, \
                     updated_at = $2 where id = $1"
                ))
                .bind(id)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
            WebhookEndpointEvent::WebhookEndpointDisabled { reason, at, .. } => {
                sqlx::query(&format!(
                    "update {schema}.webhook_endpoint set status = 'disabled', disabled_reason = $2, \
                     updated_at = $3 where id = $1"
                ))
                .bind(id)
                .bind(reason)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
            WebhookEndpointEvent::WebhookEndpointDeleted { .. } => {
                sqlx::query(&format!("delete from {schema}.webhook_endpoint where id = $1"))
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
                for sql in [
                    "delete from public.webhook_endpoint_secret where endpoint_id = $1",
                    "delete from public.subscriber_checkpoint where name = 'webhook:' || $1",
                ] {
                    sqlx::query(sql).bind(id).execute(&mut *conn).await?;
                }
            }
        }
    }
    Ok(())
}

/// The WorkOS `webhook_endpoint` object, secret included (WorkOS returns it on every read).
const ENDPOINT_SELECT: &str = "select e.id, jsonb_build_object('object', 'webhook_endpoint', 'id', e.id, \
     'endpoint_url', e.endpoint_url, 'secret', coalesce(s.secret, ''), 'status', e.status, \
     'events', to_jsonb(e.events), \
     'created_at', to_char(e.created_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
     'updated_at', to_char(e.updated_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')) as body \
     from webhook_endpoint e left join webhook_endpoint_secret s on s.endpoint_id = e.id";

pub async fn endpoint(pool: &PgPool, id: &str) -> Result<Option<Value>, StorageError> {
    let row: Option<(String, Value)> = sqlx::query_as(&format!("{ENDPOINT_SELECT} where e.id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|r| r.1))
}

pub async fn endpoints(pool: &PgPool, page: &Page) -> Result<ListResult, StorageError> {
    let qb = QueryBuilder::<Postgres>::new(format!("select id, body from ({ENDPOINT_SELECT}) v where true"));
    queries::list_rows(pool, qb, page).await
}

/// What the dispatcher needs to deliver to an endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    pub id: String,
    pub endpoint_url: String,
    /// Empty: every event.
    pub events: Vec<String>,
    pub secret: String,
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("id", &self.id)
            .field("endpoint_url", &self.endpoint_url)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

/// Every enabled endpoint.
pub async fn enabled_targets(pool: &PgPool) -> Result<Vec<Target>, StorageError> {
    type Row = (String, String, Vec<String>, String, DateTime<Utc>);
    let rows: Vec<Row> = sqlx::query_as(
        "select e.id, e.endpoint_url, e.events, coalesce(s.secret, ''), e.updated_at from webhook_endpoint e \
         left join webhook_endpoint_secret s on s.endpoint_id = e.id where e.status = 'enabled' order by e.id",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, endpoint_url, events, secret, updated_at)| Target {
            id,
            endpoint_url,
            events,
            secret,
            updated_at,
        })
        .collect())
}

/// An endpoint's delivery checkpoint; `None` once the endpoint is deleted (the row goes with it).
/// A new endpoint's checkpoint starts at its own creation in the log (it receives every public
/// event that sorts after it): made here on first use, from the position the projection recorded.
pub async fn checkpoint(pool: &PgPool, endpoint_id: &str) -> Result<Option<FeedCursor>, StorageError> {
    sqlx::query(
        "insert into subscriber_checkpoint (name, transaction_id, position, seq) \
         select 'webhook:' || id, created_transaction_id, created_position, 0 from webhook_endpoint where id = $1 \
         on conflict (name) do nothing",
    )
    .bind(endpoint_id)
    .execute(pool)
    .await?;
    feed::checkpoint(pool, &checkpoint_name(endpoint_id)).await
}

/// One delivery attempt, for the delivery log.
#[derive(Debug, Clone)]
pub struct Attempt<'a> {
    pub endpoint_id: &'a str,
    pub event_id: &'a str,
    pub event: &'a str,
    pub attempt: i32,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i32,
    pub delivered: bool,
}

pub async fn record_attempt<'e>(db: impl PgExecutor<'e>, a: &Attempt<'_>) -> Result<(), StorageError> {
    sqlx::query(
        "insert into webhook_delivery (id, endpoint_id, event_id, event, attempt, status_code, error, duration_ms, delivered) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(keyledger_domain::ids::new_id("webhook_delivery"))
    .bind(a.endpoint_id)
    .bind(a.event_id)
    .bind(a.event)
    .bind(a.attempt)
    .bind(a.status_code)
    .bind(&a.error)
    .bind(a.duration_ms)
    .bind(a.delivered)
    .execute(db)
    .await?;
    Ok(())
}

/// Successful deliveries of consecutive events, logged together with the checkpoint move.
#[derive(Debug, Clone, Default)]
pub struct DeliveredBatch {
    pub event_ids: Vec<String>,
    pub events: Vec<String>,
    pub attempts: Vec<i32>,
    pub status_codes: Vec<i32>,
    pub durations_ms: Vec<i32>,
}

impl DeliveredBatch {
    pub fn len(&self) -> usize {
        self.event_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.event_ids.is_empty()
    }

    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

/// Logs successful deliveries and moves the endpoint's checkpoint from `from` to `to` in one
/// statement. The move is a compare-and-set, so a replay's rewind wins over deliveries that were
/// in flight: returns false when the checkpoint had moved (the log rows are written anyway).
pub async fn record_delivered<'e>(
    db: impl PgExecutor<'e>,
    endpoint_id: &str,
    batch: &DeliveredBatch,
    from: FeedCursor,
    to: FeedCursor,
) -> Result<bool, StorageError> {
    let ids: Vec<String> = batch
        .event_ids
        .iter()
        .map(|_| keyledger_domain::ids::new_id("webhook_delivery"))
        .collect();
    let done = sqlx::query(
        "with logged as (insert into webhook_delivery (id, endpoint_id, event_id, event, attempt, status_code, \
         duration_ms, delivered) select i, $1, e, n, a, s, d, true \
         from unnest($8::text[], $9::text[], $10::text[], $11::int[], $12::int[], $13::int[]) as u(i, e, n, a, s, d)) \
         update subscriber_checkpoint set transaction_id = $2::bigint::text::xid8, position = $3, seq = $4, \
         updated_at = now() where name = 'webhook:' || $1 \
         and (transaction_id, position, seq) = ($5::bigint::text::xid8, $6, $7)",
    )
    .bind(endpoint_id)
    .bind(to.transaction_id)
    .bind(to.position)
    .bind(to.seq)
    .bind(from.transaction_id)
    .bind(from.position)
    .bind(from.seq)
    .bind(&ids)
    .bind(&batch.event_ids)
    .bind(&batch.events)
    .bind(&batch.attempts)
    .bind(&batch.status_codes)
    .bind(&batch.durations_ms)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The current failure run of an endpoint on one event: how many attempts have failed since its
/// last successful delivery (of any event) and since `since` (the endpoint's last change, so a
/// re-enabled endpoint starts a new run), and when the last one was. Survives restarts.
pub async fn failure_run(
    pool: &PgPool,
    endpoint_id: &str,
    event_id: &str,
    since: DateTime<Utc>,
) -> Result<(i32, Option<DateTime<Utc>>), StorageError> {
    let (n, last): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
        "select count(*), max(created_at) from webhook_delivery where endpoint_id = $1 and event_id = $2 \
         and not delivered and created_at > $3 and id > coalesce((select max(id) from webhook_delivery \
         where endpoint_id = $1 and delivered), '')",
    )
    .bind(endpoint_id)
    .bind(event_id)
    .bind(since)
    .fetch_one(pool)
    .await?;
    Ok((i32::try_from(n).unwrap_or(i32::MAX), last))
}

/// An endpoint's delivery log, newest first by default (WorkOS list semantics).
pub async fn deliveries(pool: &PgPool, endpoint_id: &str, page: &Page) -> Result<ListResult, StorageError> {
    let mut qb = QueryBuilder::<Postgres>::new(
        "select id, body from (select id, endpoint_id, jsonb_build_object('object', 'webhook_delivery', 'id', id, \
         'webhook_endpoint_id', endpoint_id, 'event_id', event_id, 'event', event, 'attempt', attempt, \
         'status_code', status_code, 'error', error, 'duration_ms', duration_ms, \
         'status', case when delivered then 'delivered' else 'failed' end, \
         'created_at', to_char(created_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')) as body \
         from webhook_delivery) d where endpoint_id = ",
    );
    qb.push_bind(endpoint_id.to_string());
    queries::list_rows(pool, qb, page).await
}

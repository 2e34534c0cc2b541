//! The event store: cqrs-es's `PersistedEventRepository` on sqlx 0.8. One command's events (or
//! one cascade's, across aggregates: `append_many`) are appended atomically together with their
//! set-wide claims (and, for password changes, the credential row) by one statement,
//! `keyledger_append` (migrations 0004, 0011); the unique (aggregate_type, aggregate_id,
//! sequence) is the optimistic lock. Side rows that must agree with the log (webhook endpoints,
//! an `Idempotency-Key` reservation) join that statement's transaction.
//! It never updates or deletes an event.

use std::collections::HashMap;
use std::sync::Mutex;

use cqrs_es::persist::{PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot};
use cqrs_es::Aggregate;
use keyledger_domain::{Claim, KeyPart};
use serde_json::Value;
use sqlx::PgPool;

use crate::decode::{decode, AnyEvent};
use crate::log::LogPosition;

/// A claim another aggregate already holds: the domain's own 4xx, never a retried conflict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} '{value}' is already taken")]
pub struct ClaimConflict {
    pub kind: String,
    pub value: String,
}

/// A claim the append requires (`Claim::Require`) is held by nobody: the user or organization
/// it names is gone (or never existed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} '{value}' does not exist")]
pub struct ClaimMissing {
    pub kind: String,
    pub value: String,
}

/// SQLSTATE raised by `keyledger_append` when a claim is held by another aggregate.
const CLAIM_TAKEN: &str = "KL409";
/// SQLSTATE raised by `keyledger_append` when a required claim is held by nobody.
const CLAIM_MISSING: &str = "KL404";
/// SQLSTATE raised by `keyledger_append` when a claim still depends on what is being deleted
/// (`Claim::NoDependents`): a concurrent change, so the command is decided again.
const DEPENDENTS_REMAIN: &str = "KL412";
/// PostgreSQL's `deadlock_detected` and `serialization_failure`: lost races, decided again.
const LOST_RACE: [&str; 2] = ["40P01", "40001"];

/// The request whose `Idempotency-Key` reservation this append fulfils (`api/src/idempotency.rs`).
/// The append marks the key `committed` in its own transaction, and only while `owner` still
/// holds it: a request whose reservation was taken over cannot append any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyFence {
    pub scope: String,
    pub key: String,
    pub owner: String,
}

/// Extra rows written in the append's transaction.
#[derive(Clone, Default)]
pub struct AppendExtras {
    /// (user id, argon2 PHC string) to store as the user's credential.
    pub credential: Option<(String, String)>,
    /// A user id whose credential is deleted (the user is being deleted).
    pub erase_credential: Option<String>,
    /// (webhook endpoint id, signing secret) to store in `webhook_endpoint_secret`. Webhook
    /// endpoint commands append in a transaction that also writes their read model (see
    /// `webhooks::apply_in_append`).
    pub webhook_secret: Option<(String, String)>,
    /// The `Idempotency-Key` reservation to mark committed in the append's transaction.
    pub idempotency: Option<IdempotencyFence>,
}

impl std::fmt::Debug for AppendExtras {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendExtras")
            .field("credential", &self.credential.as_ref().map(|c| &c.0))
            .field("erase_credential", &self.erase_credential)
            .field("webhook_secret", &self.webhook_secret.as_ref().map(|s| &s.0))
            .field("idempotency", &self.idempotency)
            .finish()
    }
}

/// Per-command context the executor hands to `persist` (which only receives serialized events).
#[derive(Debug, Default)]
pub(crate) struct AppendScope {
    pub extras: AppendExtras,
    pub appended: Mutex<Option<LogPosition>>,
}

tokio::task_local! {
    pub(crate) static APPEND_SCOPE: AppendScope;
}

/// Called after every committed append (wakes local workers, schedules a NOTIFY).
pub type OnCommit = std::sync::Arc<dyn Fn() + Send + Sync>;

/// The PostgreSQL event repository.
#[derive(Clone)]
pub struct EventStore {
    pool: PgPool,
    on_commit: Option<OnCommit>,
}

impl std::fmt::Debug for EventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStore").finish_non_exhaustive()
    }
}

impl EventStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool, on_commit: None }
    }

    /// Runs `f` after each committed append. NOTIFY is deliberately not sent inside the append
    /// transaction: it takes a cluster-wide lock at commit that would serialize all writers.
    pub fn on_commit(mut self, f: OnCommit) -> Self {
        self.on_commit = Some(f);
        self
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Appends events of any aggregates (one command's, or a cascade's) in one transaction,
    /// with their claims and `extras`, then runs the commit hook.
    pub async fn append_many(
        &self,
        events: &[SerializedEvent],
        extras: &AppendExtras,
    ) -> Result<LogPosition, PersistenceError> {
        let position = self.append(events, extras).await?;
        if let Some(f) = &self.on_commit {
            f();
        }
        Ok(position)
    }

    async fn append(&self, events: &[SerializedEvent], extras: &AppendExtras) -> Result<LogPosition, PersistenceError> {
        let n = events.len();
        let mut ids = Vec::with_capacity(n);
        let mut types = Vec::with_capacity(n);
        let mut agg_ids = Vec::with_capacity(n);
        let mut seqs = Vec::with_capacity(n);
        let mut etypes = Vec::with_capacity(n);
        let mut versions = Vec::with_capacity(n);
        let mut payloads = Vec::with_capacity(n);
        let mut metas = Vec::with_capacity(n);
        let mut orgs: Vec<Option<String>> = Vec::with_capacity(n);
        let mut claims = ClaimOps::default();
        let mut webhook_events = Vec::new();
        for e in events {
            let typed = decode(&e.aggregate_type, &e.event_type, &e.event_version, &e.payload)
                .map_err(|m| PersistenceError::UnknownError(m.into()))?;
            if let AnyEvent::WebhookEndpoint(w) = &typed {
                webhook_events.push((e.aggregate_id.clone(), w.clone()));
            }
            for claim in typed.claims() {
                claims.push(claim, &e.aggregate_id);
            }
            ids.push(keyledger_domain::ids::new_id("event"));
            types.push(e.aggregate_type.clone());
            agg_ids.push(e.aggregate_id.clone());
            seqs.push(i64::try_from(e.sequence).map_err(|err| PersistenceError::UnknownError(err.into()))?);
            etypes.push(e.event_type.clone());
            versions.push(e.event_version.clone());
            payloads.push(e.payload.clone());
            metas.push(e.metadata.clone());
            orgs.push(
                e.metadata
                    .get("organization_id")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            );
        }
        let (credential_user, credential_hash) = extras.credential.clone().unzip();
        let erase = extras.erase_credential.clone();
        let webhook_secret = extras.webhook_secret.as_ref();
        let fence = extras.idempotency.as_ref();
        // One autocommit statement: atomic without BEGIN/COMMIT round trips.
        let query = sqlx::query_as::<_, (i64, i64)>(
            "select * from keyledger_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .bind(&ids)
        .bind(&types)
        .bind(&agg_ids)
        .bind(&seqs)
        .bind(&etypes)
        .bind(&versions)
        .bind(&payloads)
        .bind(&metas)
        .bind(&orgs)
        .bind(&claims.ops)
        .bind(&claims.kinds)
        .bind(&claims.values)
        .bind(&claims.holders)
        .bind(credential_user)
        .bind(credential_hash)
        .bind(erase);
        let (transaction_id, position) = if webhook_events.is_empty() && webhook_secret.is_none() && fence.is_none() {
            query.fetch_one(&self.pool).await.map_err(classify)?
        } else {
            // Webhook endpoint commands (rare) and requests with an Idempotency-Key: the read
            // model, the secret and the key's state join the append's transaction, so they
            // never disagree with the log.
            let mut tx = self.pool.begin().await.map_err(connection)?;
            let at = query.fetch_one(&mut *tx).await.map_err(classify)?;
            if !webhook_events.is_empty() || webhook_secret.is_some() {
                crate::webhooks::apply_in_append(&mut tx, &webhook_events, webhook_secret, at.1)
                    .await
                    .map_err(classify)?;
            }
            if let Some(f) = fence {
                mark_committed(&mut tx, f).await?;
            }
            tx.commit().await.map_err(classify)?;
            at
        };
        Ok(LogPosition {
            transaction_id,
            position,
        })
    }

    async fn select_events(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        after: i64,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let rows: Vec<(String, i64, String, String, String, Value, Value)> = sqlx::query_as(
            "select aggregate_id, sequence, aggregate_type, event_type, event_version, payload, metadata \
             from event where aggregate_type = $1 and aggregate_id = $2 and sequence > $3 order by sequence",
        )
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(after)
        .fetch_all(&self.pool)
        .await
        .map_err(connection)?;
        rows.into_iter().map(to_serialized).collect()
    }

    async fn stream(&self, aggregate_type: String, aggregate_id: Option<String>) -> ReplayStream {
        let (mut feed, stream) = ReplayStream::new(256);
        let pool = self.pool.clone();
        tokio::spawn(async move {
            use futures::TryStreamExt;
            let sql = "select aggregate_id, sequence, aggregate_type, event_type, event_version, payload, metadata \
                       from event where aggregate_type = $1 and ($2::text is null or aggregate_id = $2) \
                       order by transaction_id, position";
            let mut rows = sqlx::query_as::<_, (String, i64, String, String, String, Value, Value)>(sql)
                .bind(aggregate_type)
                .bind(aggregate_id)
                .fetch(&pool);
            loop {
                let item = match rows.try_next().await {
                    Ok(Some(row)) => to_serialized(row),
                    Ok(None) => break,
                    Err(e) => Err(connection(e)),
                };
                let failed = item.is_err();
                if feed.push(item).await.is_err() || failed {
                    break;
                }
            }
        });
        stream
    }
}

/// An append's claim operations, as the parallel arrays `keyledger_append` takes (migration
/// 0011 names the operations).
#[derive(Default)]
struct ClaimOps {
    ops: Vec<&'static str>,
    kinds: Vec<&'static str>,
    values: Vec<Option<String>>,
    holders: Vec<String>,
}

impl ClaimOps {
    fn push(&mut self, claim: Claim, holder: &str) {
        let own = Some(holder.to_string());
        let (op, kind, value) = match claim {
            Claim::Acquire { kind, value } => ("acquire", kind, Some(value)),
            Claim::Release { kind, value: Some(v) } => ("release", kind, Some(v)),
            Claim::Release { kind, value: None } => ("release_all", kind, None),
            Claim::AcquireOwn { kind } => ("acquire", kind, own),
            Claim::Require { kind, value } => ("require", kind, Some(value)),
            Claim::RetireOwn { kind } => ("retire", kind, own),
            Claim::NoDependents {
                kind,
                part: KeyPart::First,
            } => ("no_dependents:1", kind, own),
            Claim::NoDependents {
                kind,
                part: KeyPart::Second,
            } => ("no_dependents:2", kind, own),
        };
        self.ops.push(op);
        self.kinds.push(kind.as_str());
        self.values.push(value);
        self.holders.push(holder.to_string());
    }
}

/// Marks an `Idempotency-Key` reservation committed, in the append's transaction; refuses the
/// append if the reservation is no longer this request's (its lease ran out and another request
/// with the key took it over, so that one runs the command instead).
async fn mark_committed(tx: &mut sqlx::PgConnection, f: &IdempotencyFence) -> Result<(), PersistenceError> {
    let marked = sqlx::query(
        "update idempotency_key set state = 'committed' \
         where scope = $1 and key = $2 and owner = $3 and state in ('running', 'committed')",
    )
    .bind(&f.scope)
    .bind(&f.key)
    .bind(&f.owner)
    .execute(&mut *tx)
    .await
    .map_err(classify)?;
    if marked.rows_affected() == 0 {
        return Err(PersistenceError::UnknownError(Box::new(ClaimConflict {
            kind: IDEMPOTENCY_KEY.to_string(),
            value: f.key.clone(),
        })));
    }
    Ok(())
}

/// The `ClaimConflict::kind` of an append refused because its `Idempotency-Key` reservation was
/// taken over.
pub const IDEMPOTENCY_KEY: &str = "idempotency_key";

fn to_serialized(r: (String, i64, String, String, String, Value, Value)) -> Result<SerializedEvent, PersistenceError> {
    let sequence = usize::try_from(r.1).map_err(|e| PersistenceError::DeserializationError(e.into()))?;
    Ok(SerializedEvent::new(r.0, sequence, r.2, r.3, r.4, r.5, r.6))
}

fn connection(e: sqlx::Error) -> PersistenceError {
    PersistenceError::ConnectionError(Box::new(e))
}

fn unknown(e: sqlx::Error) -> PersistenceError {
    PersistenceError::UnknownError(Box::new(e))
}

/// Only the aggregate/sequence key is an optimistic-lock failure; other errors stay what they are.
fn classify(e: sqlx::Error) -> PersistenceError {
    if let sqlx::Error::Database(db) = &e {
        if db.constraint() == Some("event_aggregate_sequence_key") {
            return PersistenceError::OptimisticLockError;
        }
        let code = db.code();
        let code = code.as_deref();
        if code.is_some_and(|c| c == DEPENDENTS_REMAIN || LOST_RACE.contains(&c)) {
            return PersistenceError::OptimisticLockError;
        }
        let value = db
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .and_then(|pg| pg.detail())
            .unwrap_or_default()
            .to_string();
        let kind = db.message().to_string();
        if code == Some(CLAIM_TAKEN) {
            return PersistenceError::UnknownError(Box::new(ClaimConflict { kind, value }));
        }
        if code == Some(CLAIM_MISSING) {
            return PersistenceError::UnknownError(Box::new(ClaimMissing { kind, value }));
        }
    }
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => connection(e),
        other => unknown(other),
    }
}

impl PersistedEventRepository for EventStore {
    async fn get_events<A: Aggregate>(&self, aggregate_id: &str) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.select_events(A::TYPE, aggregate_id, 0).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let after = i64::try_from(last_sequence).map_err(|e| PersistenceError::UnknownError(e.into()))?;
        self.select_events(A::TYPE, aggregate_id, after).await
    }

    /// Aggregates here are short streams loaded from events; no snapshots are kept.
    async fn get_snapshot<A: Aggregate>(
        &self,
        _aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        Ok(None)
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        _snapshot: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        if events.is_empty() {
            return Ok(());
        }
        let extras = APPEND_SCOPE.try_with(|s| s.extras.clone()).unwrap_or_default();
        let position = self.append_many(events, &extras).await?;
        let _ = APPEND_SCOPE.try_with(|s| {
            if let Ok(mut slot) = s.appended.lock() {
                *slot = Some(position);
            }
        });
        Ok(())
    }

    async fn stream_events<A: Aggregate>(&self, aggregate_id: &str) -> Result<ReplayStream, PersistenceError> {
        Ok(self.stream(A::TYPE.to_string(), Some(aggregate_id.to_string())).await)
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        Ok(self.stream(A::TYPE.to_string(), None).await)
    }
}

/// Metadata keys the API records on every event.
pub fn metadata_map(pairs: &[(&str, Option<&str>)]) -> HashMap<String, String> {
    pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| ((*k).to_string(), v.to_string())))
        .collect()
}

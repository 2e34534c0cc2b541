//! The append: one command's events, with the set-wide claims they take or give back and the
//! side rows that must agree with the log (a password hash, a webhook endpoint's signing secret,
//! the request's `Idempotency-Key` fence), land in one transaction or not at all, and the
//! position of the last event comes back. The unique (aggregate_type, aggregate_id, sequence) is
//! the optimistic lock. It writes no read model and never updates or deletes an event.
//!
//! **Group commit.** Appends are queued to a few committer tasks. A committer takes whatever is
//! queued (up to [`MAX_BATCH`] commands) and runs it as one statement, `keyledger_append_batch`
//! (migration 0014), which gives every command its own subtransaction and its own outcome: a
//! taken claim or a sequence conflict fails that command alone. One round trip and one commit
//! (one WAL flush) serve the whole batch. Under light load a batch is one command and nothing
//! waits; under load, commands that arrive while the committers are busy share the next commit.

use std::sync::Arc;

use keyledger_domain::{Claim, Claims, KeyPart};
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Mutex};

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

/// Why an append did not land.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The aggregate moved on (its next sequence is taken, or a dependent appeared): decide again.
    #[error("the aggregate was changed concurrently")]
    Conflict,
    #[error(transparent)]
    ClaimTaken(ClaimConflict),
    #[error(transparent)]
    ClaimMissing(ClaimMissing),
    /// The database failed; `sqlx::Error` tells whether it was unavailable
    /// (`availability::is_unavailable`). The append may or may not have committed when the
    /// connection broke during the commit.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Any other failure inside the append (SQLSTATE and message).
    #[error("append failed ({0}): {1}")]
    Failed(String, String),
    /// The committers are gone (the store is shutting down).
    #[error("the event store is closed")]
    Closed,
}

/// The `ClaimConflict::kind` of an append refused because its `Idempotency-Key` reservation was
/// taken over.
pub const IDEMPOTENCY_KEY: &str = "idempotency_key";

/// The request whose `Idempotency-Key` reservation this append fulfils (`api/src/idempotency.rs`).
/// The append marks the key `committed` in its own transaction, and only while `owner` still
/// holds it: a request whose reservation was taken over cannot append any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyFence {
    pub scope: String,
    pub key: String,
    pub owner: String,
}

/// Rows outside the log written in the append's transaction.
#[derive(Clone, Default)]
pub struct SideRows {
    /// (user id, argon2 PHC string) to store as the user's credential.
    pub credential: Option<(String, String)>,
    /// A user id whose credential is deleted (the user is being deleted).
    pub erase_credential: Option<String>,
    /// (webhook endpoint id, signing secret) to store in `webhook_endpoint_secret`.
    pub webhook_secret: Option<(String, String)>,
    /// The `Idempotency-Key` reservation to mark committed in the append's transaction.
    pub idempotency: Option<IdempotencyFence>,
}

impl std::fmt::Debug for SideRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SideRows")
            .field("credential", &self.credential.as_ref().map(|c| &c.0))
            .field("erase_credential", &self.erase_credential)
            .field("webhook_secret", &self.webhook_secret.as_ref().map(|s| &s.0))
            .field("idempotency", &self.idempotency)
            .finish()
    }
}

/// One event to append, already serialized, with the claims its typed form takes.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: Value,
    pub organization_id: Option<String>,
    pub claims: Vec<Claim>,
}

impl NewEvent {
    /// Serializes a typed domain event of aggregate `A`, taking its claims from the typed value.
    pub fn of<A>(aggregate_id: &str, sequence: i64, event: &A::Event, metadata: &Value) -> Result<Self, AppendError>
    where
        A: cqrs_es::Aggregate,
        A::Event: Claims,
    {
        use cqrs_es::DomainEvent;
        let payload =
            serde_json::to_value(event).map_err(|e| AppendError::Failed("serialize".into(), e.to_string()))?;
        Ok(Self {
            aggregate_type: A::TYPE.to_string(),
            aggregate_id: aggregate_id.to_string(),
            sequence,
            event_type: event.event_type(),
            event_version: event.event_version(),
            payload,
            metadata: metadata.clone(),
            organization_id: metadata
                .get("organization_id")
                .and_then(Value::as_str)
                .map(str::to_string),
            claims: event.claims(),
        })
    }
}

/// Called after every committed batch (wakes local workers, schedules a NOTIFY).
pub type OnCommit = Arc<dyn Fn() + Send + Sync>;

/// How many commands one statement appends at most: each runs in a subtransaction, and a
/// backend caches 64 subtransaction ids before every snapshot in the cluster has to look
/// further (PostgreSQL's `PGPROC_MAX_CACHED_SUBXIDS`).
pub const MAX_BATCH: usize = 48;
/// How many batches are in flight at once (each on its own connection).
pub const COMMITTERS: usize = 4;
/// How often a command that lost a lock race (deadlock, serialization failure) inside a batch
/// is submitted again before it counts as a conflict. Resubmitting is always safe: the same
/// events at the same sequences are checked again.
const LOST_RACE_RETRIES: usize = 3;

struct Pending {
    events: Vec<NewEvent>,
    side: SideRows,
    reply: oneshot::Sender<Result<LogPosition, AppendError>>,
}

/// The PostgreSQL event store's write side: queues appends to the committers.
#[derive(Clone)]
pub struct EventStore {
    pool: PgPool,
    queue: mpsc::UnboundedSender<Pending>,
}

impl std::fmt::Debug for EventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStore").finish_non_exhaustive()
    }
}

impl EventStore {
    /// Starts the committers (they stop when the last clone of the store is dropped).
    pub fn new(pool: PgPool) -> Self {
        Self::with_hook(pool, None)
    }

    /// Like [`EventStore::new`], running `on_commit` after each committed batch. NOTIFY is
    /// deliberately not sent inside the append transaction: it takes a cluster-wide lock at
    /// commit that would serialize all writers.
    pub fn with_commit_hook(pool: PgPool, on_commit: OnCommit) -> Self {
        Self::with_hook(pool, Some(on_commit))
    }

    fn with_hook(pool: PgPool, on_commit: Option<OnCommit>) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..COMMITTERS {
            tokio::spawn(committer(pool.clone(), rx.clone(), on_commit.clone()));
        }
        Self { pool, queue }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Appends `events` (of one or several aggregates) with their claims and `side` rows in one
    /// transaction, possibly shared with other commands' appends, and returns the position of
    /// the last event.
    pub async fn append(&self, events: Vec<NewEvent>, side: SideRows) -> Result<LogPosition, AppendError> {
        if events.is_empty() {
            return Err(AppendError::Failed(
                "empty".into(),
                "an append needs at least one event".into(),
            ));
        }
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { events, side, reply })
            .map_err(|_| AppendError::Closed)?;
        answer.await.map_err(|_| AppendError::Closed)?
    }
}

/// Takes what is queued, appends it as one batch, answers each command; until the queue closes.
async fn committer(pool: PgPool, rx: Arc<Mutex<mpsc::UnboundedReceiver<Pending>>>, on_commit: Option<OnCommit>) {
    loop {
        let mut batch = Vec::new();
        {
            let mut rx = rx.lock().await;
            match rx.recv().await {
                Some(p) => batch.push(p),
                None => return,
            }
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
        }
        let mut retries = 0;
        loop {
            let outcomes = run_batch(&pool, &batch).await;
            let committed = outcomes.iter().any(Result::is_ok);
            let mut again = Vec::new();
            for (p, outcome) in batch.into_iter().zip(outcomes) {
                match outcome {
                    Err(Outcome::LostRace) if retries < LOST_RACE_RETRIES => again.push(p),
                    Err(Outcome::LostRace) => drop(p.reply.send(Err(AppendError::Conflict))),
                    Err(Outcome::Failed(e)) => drop(p.reply.send(Err(e))),
                    Ok(at) => drop(p.reply.send(Ok(at))),
                }
            }
            if committed {
                if let Some(f) = &on_commit {
                    f();
                }
            }
            if again.is_empty() {
                break;
            }
            retries += 1;
            batch = again;
        }
    }
}

enum Outcome {
    LostRace,
    Failed(AppendError),
}

/// The batch as the parallel arrays `keyledger_append_batch` takes.
#[derive(Default)]
struct BatchArrays {
    event_end: Vec<i32>,
    claim_end: Vec<i32>,
    ids: Vec<String>,
    types: Vec<String>,
    agg_ids: Vec<String>,
    seqs: Vec<i64>,
    etypes: Vec<String>,
    versions: Vec<String>,
    payloads: Vec<Value>,
    metas: Vec<Value>,
    orgs: Vec<Option<String>>,
    claims: ClaimOps,
    credential_user: Vec<Option<String>>,
    credential_hash: Vec<Option<String>>,
    erase_credential: Vec<Option<String>>,
    webhook_endpoint: Vec<Option<String>>,
    webhook_secret: Vec<Option<String>>,
    fence_scope: Vec<Option<String>>,
    fence_key: Vec<Option<String>>,
    fence_owner: Vec<Option<String>>,
}

impl BatchArrays {
    fn push(&mut self, p: &Pending) {
        for e in &p.events {
            for claim in &e.claims {
                self.claims.push(claim.clone(), &e.aggregate_id);
            }
            self.ids.push(keyledger_domain::ids::new_id("event"));
            self.types.push(e.aggregate_type.clone());
            self.agg_ids.push(e.aggregate_id.clone());
            self.seqs.push(e.sequence);
            self.etypes.push(e.event_type.clone());
            self.versions.push(e.event_version.clone());
            self.payloads.push(e.payload.clone());
            self.metas.push(e.metadata.clone());
            self.orgs.push(e.organization_id.clone());
        }
        self.event_end.push(i32::try_from(self.ids.len()).unwrap_or(i32::MAX));
        self.claim_end
            .push(i32::try_from(self.claims.ops.len()).unwrap_or(i32::MAX));
        let (cu, ch) = p.side.credential.clone().unzip();
        self.credential_user.push(cu);
        self.credential_hash.push(ch);
        self.erase_credential.push(p.side.erase_credential.clone());
        let (wi, ws) = p.side.webhook_secret.clone().unzip();
        self.webhook_endpoint.push(wi);
        self.webhook_secret.push(ws);
        let f = p.side.idempotency.as_ref();
        self.fence_scope.push(f.map(|f| f.scope.clone()));
        self.fence_key.push(f.map(|f| f.key.clone()));
        self.fence_owner.push(f.map(|f| f.owner.clone()));
    }
}

type OutcomeRow = (String, Option<i64>, Option<i64>, Option<String>, Option<String>);

/// One statement for the whole batch; one outcome per command, in order.
async fn run_batch(pool: &PgPool, batch: &[Pending]) -> Vec<Result<LogPosition, Outcome>> {
    let mut a = BatchArrays::default();
    for p in batch {
        a.push(p);
    }
    let rows: Result<Vec<OutcomeRow>, sqlx::Error> = sqlx::query_as(
        "select * from keyledger_append_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
         $16, $17, $18, $19, $20, $21, $22, $23)",
    )
    .bind(&a.event_end)
    .bind(&a.claim_end)
    .bind(&a.ids)
    .bind(&a.types)
    .bind(&a.agg_ids)
    .bind(&a.seqs)
    .bind(&a.etypes)
    .bind(&a.versions)
    .bind(&a.payloads)
    .bind(&a.metas)
    .bind(&a.orgs)
    .bind(&a.claims.ops)
    .bind(&a.claims.kinds)
    .bind(&a.claims.values)
    .bind(&a.claims.holders)
    .bind(&a.credential_user)
    .bind(&a.credential_hash)
    .bind(&a.erase_credential)
    .bind(&a.webhook_endpoint)
    .bind(&a.webhook_secret)
    .bind(&a.fence_scope)
    .bind(&a.fence_key)
    .bind(&a.fence_owner)
    .fetch_all(pool)
    .await;
    let rows = match rows {
        Ok(rows) if rows.len() == batch.len() => rows,
        Ok(rows) => {
            let e = format!("{} outcomes for {} commands", rows.len(), batch.len());
            return batch
                .iter()
                .map(|_| Err(Outcome::Failed(AppendError::Failed("XX000".into(), e.clone()))))
                .collect();
        }
        Err(e) => {
            // The whole statement failed: every command shares the error (its kind, for the
            // availability check, is the same for all). A lost race of the whole statement is
            // safe to resubmit.
            let race = is_lost_race(&e);
            let unavailable = crate::availability::is_unavailable(&e);
            let message = e.to_string();
            let mut first = Some(e);
            return batch
                .iter()
                .map(|_| {
                    if race {
                        return Err(Outcome::LostRace);
                    }
                    Err(Outcome::Failed(match first.take() {
                        Some(e) => AppendError::Database(e),
                        None => shared_error(&message, unavailable),
                    }))
                })
                .collect();
        }
    };
    rows.into_iter()
        .map(|(outcome, txid, last, kind, value)| {
            let kind = kind.unwrap_or_default();
            let value = value.unwrap_or_default();
            match (outcome.as_str(), txid, last) {
                ("ok", Some(transaction_id), Some(position)) => Ok(LogPosition {
                    transaction_id,
                    position,
                }),
                ("conflict", ..) => Err(Outcome::Failed(AppendError::Conflict)),
                ("claim_taken", ..) => Err(Outcome::Failed(AppendError::ClaimTaken(ClaimConflict { kind, value }))),
                ("claim_missing", ..) => Err(Outcome::Failed(AppendError::ClaimMissing(ClaimMissing { kind, value }))),
                ("lost_race", ..) => Err(Outcome::LostRace),
                _ => Err(Outcome::Failed(AppendError::Failed(kind, value))),
            }
        })
        .collect()
}

/// The error of a failed batch for every command but the first, which gets the original
/// (`sqlx::Error` is not `Clone`): of the same class for the availability check.
fn shared_error(message: &str, unavailable: bool) -> AppendError {
    if unavailable {
        AppendError::Database(sqlx::Error::Io(std::io::Error::other(message.to_string())))
    } else {
        AppendError::Failed("XX000".into(), message.to_string())
    }
}

fn is_lost_race(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40P01" | "40001")))
}

/// An append's claim operations, as the parallel arrays `keyledger_append_one` takes (migration
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

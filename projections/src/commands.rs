//! Executing a command: load the aggregate from the log, let it decide, append its events (with
//! claims) through `PersistedEventStore`. Lost optimistic-lock races are retried for commands that
//! are safe to re-decide; otherwise they surface as a conflict.

use std::collections::HashMap;
use std::sync::Mutex;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{EventStoreAggregateContext, PersistedEventStore};
use cqrs_es::{Aggregate, AggregateContext, AggregateError, EventStore as _};
use keyledger_domain::{NoServices, Tenanted};

use crate::log::LogPosition;
use cqrs_es::persist::SerializedEvent;
use cqrs_es::EventEnvelope;

use crate::store::{AppendExtras, AppendScope, ClaimConflict, ClaimMissing, EventStore, APPEND_SCOPE};

/// Why a command did not land.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    #[error("{0}")]
    Domain(E),
    #[error(transparent)]
    Claim(ClaimConflict),
    /// A parent the command needs (a membership's user or organization) is gone.
    #[error(transparent)]
    Missing(ClaimMissing),
    #[error("the object was changed concurrently")]
    Conflict,
    #[error("storage failure: {0}")]
    Storage(String),
    /// The database is unreachable or out of connections (`availability::is_unavailable`):
    /// nothing was appended, or the command's outcome is unknown; a retry may succeed.
    #[error("database unavailable: {0}")]
    Unavailable(String),
}

/// What a command produced.
#[derive(Debug)]
pub struct Executed<A: Aggregate> {
    pub events: Vec<A::Event>,
    /// Where the last event landed in the log (None when the command emitted nothing).
    pub position: Option<LogPosition>,
    /// The aggregate after the command.
    pub state: A,
}

/// How often a lost race is re-decided before answering 409.
pub const MAX_ATTEMPTS: usize = 5;

/// One aggregate's decision, not yet appended: its events, and the same serialized after the
/// loaded sequence, for an append that spans several aggregates ([`EventStore::append_many`]).
#[derive(Debug)]
pub struct Decided<A: Aggregate> {
    pub events: Vec<A::Event>,
    pub serialized: Vec<SerializedEvent>,
}

/// How a command treats its aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Load, decide, append once; a lost race is a conflict.
    Once,
    /// Load, decide, append; a lost race reloads and re-decides (commands safe to re-decide).
    Retry,
    /// An id the caller has just generated: nothing to load, so the read is skipped. Should the id
    /// exist after all, the append's unique (aggregate, sequence) key refuses it as a conflict.
    New,
}

/// Runs commands against the PostgreSQL event store.
#[derive(Clone, Debug)]
pub struct CommandBus {
    store: EventStore,
}

impl CommandBus {
    pub fn new(store: EventStore) -> Self {
        Self { store }
    }

    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// Executes `command` on aggregate `id`, loading it first unless `mode` is [`Mode::New`].
    pub async fn execute<A>(
        &self,
        id: &str,
        command: A::Command,
        metadata: &HashMap<String, String>,
        extras: AppendExtras,
        mode: Mode,
    ) -> Result<Executed<A>, CommandError<A::Error>>
    where
        A: Aggregate<Services = NoServices> + Tenanted + Clone,
        A::Command: Clone,
        A::Error: Clone,
    {
        let es = PersistedEventStore::<EventStore, A>::new_event_store(self.store.clone())
            .with_upcasters(vec![Box::new(crate::decode::Upcaster)]);
        let attempts = if mode == Mode::Retry { MAX_ATTEMPTS } else { 1 };
        let mut last = CommandError::Conflict;
        for _ in 0..attempts {
            let mut ctx = if mode == Mode::New {
                EventStoreAggregateContext {
                    aggregate_id: id.to_string(),
                    aggregate: A::default(),
                    current_sequence: 0,
                    current_snapshot: None,
                }
            } else {
                es.load_aggregate(id).await.map_err(map_err)?
            };
            let sink = EventSink::<A>::default();
            ctx.aggregate()
                .handle(command.clone(), &NoServices, &sink)
                .await
                .map_err(CommandError::Domain)?;
            let events = sink.collect().await;
            let state = ctx.aggregate().clone();
            if events.is_empty() {
                return Ok(Executed {
                    events,
                    position: None,
                    state,
                });
            }
            let mut meta = metadata.clone();
            if let Some(org) = state.organization_id(id) {
                meta.insert("organization_id".into(), org.to_string());
            }
            let scope = AppendScope {
                extras: extras.clone(),
                appended: Mutex::new(None),
            };
            let (result, position) = APPEND_SCOPE
                .scope(scope, async {
                    let r = es.commit(events.clone(), ctx, meta).await;
                    let p = APPEND_SCOPE.with(|s| s.appended.lock().ok().and_then(|g| *g));
                    (r, p)
                })
                .await;
            match result {
                Ok(_) => {
                    return Ok(Executed {
                        events,
                        position,
                        state,
                    })
                }
                Err(AggregateError::AggregateConflict) => last = CommandError::Conflict,
                Err(e) => return Err(map_err(e)),
            }
        }
        Err(last)
    }
}

impl CommandBus {
    /// Loads aggregate `id` and lets it decide `command`, without appending. The serialized
    /// events carry the sequences after the loaded ones, so appending them is the usual
    /// optimistic-lock check; a decision made on a stale aggregate loses that race.
    pub async fn decide<A>(
        &self,
        id: &str,
        command: A::Command,
        metadata: &HashMap<String, String>,
    ) -> Result<Decided<A>, CommandError<A::Error>>
    where
        A: Aggregate<Services = NoServices> + Tenanted,
        A::Error: Clone,
    {
        let es = PersistedEventStore::<EventStore, A>::new_event_store(self.store.clone())
            .with_upcasters(vec![Box::new(crate::decode::Upcaster)]);
        let mut ctx = es.load_aggregate(id).await.map_err(map_err)?;
        let sink = EventSink::<A>::default();
        ctx.aggregate()
            .handle(command, &NoServices, &sink)
            .await
            .map_err(CommandError::Domain)?;
        let events = sink.collect().await;
        let mut meta = metadata.clone();
        if let Some(org) = ctx.aggregate().organization_id(id) {
            meta.insert("organization_id".into(), org.to_string());
        }
        let serialized = events
            .iter()
            .zip(ctx.current_sequence + 1..)
            .map(|(e, sequence)| {
                SerializedEvent::try_from(&EventEnvelope::<A> {
                    aggregate_id: id.to_string(),
                    sequence,
                    payload: e.clone(),
                    metadata: meta.clone(),
                })
                .map_err(|err| CommandError::Storage(err.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Decided { events, serialized })
    }
}

/// Maps a failed multi-aggregate append (`EventStore::append_many`) like a command's.
pub fn append_error<E: std::error::Error + Clone>(e: cqrs_es::persist::PersistenceError) -> CommandError<E> {
    map_err(AggregateError::from(e))
}

fn map_err<E: std::error::Error + Clone>(e: AggregateError<E>) -> CommandError<E> {
    match e {
        AggregateError::UserError(e) => CommandError::Domain(e),
        AggregateError::AggregateConflict => CommandError::Conflict,
        AggregateError::UnexpectedError(inner) => match inner.downcast::<ClaimConflict>() {
            Ok(c) => CommandError::Claim(*c),
            Err(other) => match other.downcast::<ClaimMissing>() {
                Ok(m) => CommandError::Missing(*m),
                Err(other) => storage(other.as_ref()),
            },
        },
        AggregateError::DatabaseConnectionError(e) | AggregateError::DeserializationError(e) => storage(e.as_ref()),
    }
}

/// A storage failure, told apart by whether the database was unavailable.
pub(crate) fn storage<E: std::error::Error>(e: &(dyn std::error::Error + Send + Sync + 'static)) -> CommandError<E> {
    if crate::availability::chain_is_unavailable(e) {
        CommandError::Unavailable(e.to_string())
    } else {
        CommandError::Storage(e.to_string())
    }
}

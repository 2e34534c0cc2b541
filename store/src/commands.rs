//! Executing a command: load the aggregate from its stream, let it decide, append its events with
//! their claims and side rows ([`EventStore::append`]), and hand back the position they landed
//! at. Lost optimistic-lock races are decided again for commands that are safe to re-decide;
//! otherwise they surface as a conflict.

use std::collections::HashMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use keyledger_domain::{Claims, NoServices, Tenanted};
use serde_json::Value;

use crate::append::{AppendError, ClaimConflict, ClaimMissing, EventStore, NewEvent, SideRows};
use crate::log::LogPosition;

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

/// One aggregate's decision, not yet appended: its typed events, and the same ready to append
/// after the loaded sequence, for an append that spans several aggregates (a cascade).
#[derive(Debug)]
pub struct Decided<A: Aggregate> {
    pub events: Vec<A::Event>,
    pub new_events: Vec<NewEvent>,
    /// The aggregate after the decision.
    pub state: A,
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

    /// Loads aggregate `id` from its stream: its state and its last sequence (0: no events).
    pub async fn load<A>(&self, id: &str) -> Result<(A, i64), CommandError<A::Error>>
    where
        A: Aggregate,
    {
        let rows = crate::log::stream(self.store.pool(), A::TYPE, id)
            .await
            .map_err(|e| storage(&e))?;
        let mut state = A::default();
        let mut sequence = 0;
        for (seq, event_type, version, payload) in rows {
            let event =
                crate::decode::decode_as::<A::Event>(&event_type, &version, &payload).map_err(CommandError::Storage)?;
            state.apply(event);
            sequence = seq;
        }
        Ok((state, sequence))
    }

    /// Loads aggregate `id` (unless `mode` is [`Mode::New`]) and lets it decide `command`,
    /// without appending. The events carry the sequences after the loaded ones, so appending
    /// them is the usual optimistic-lock check; a decision made on a stale aggregate loses it.
    pub async fn decide<A>(
        &self,
        id: &str,
        command: A::Command,
        metadata: &HashMap<String, String>,
        mode: Mode,
    ) -> Result<Decided<A>, CommandError<A::Error>>
    where
        A: Aggregate<Services = NoServices> + Tenanted,
        A::Event: Claims,
    {
        let (mut state, sequence) = if mode == Mode::New {
            (A::default(), 0)
        } else {
            self.load::<A>(id).await?
        };
        let sink = EventSink::<A>::default();
        state
            .handle(command, &NoServices, &sink)
            .await
            .map_err(CommandError::Domain)?;
        let events = sink.collect().await;
        let mut meta: serde_json::Map<String, Value> = metadata
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        if let Some(org) = state.organization_id(id) {
            meta.insert("organization_id".into(), Value::String(org.to_string()));
        }
        let meta = Value::Object(meta);
        let new_events = events
            .iter()
            .zip(sequence + 1..)
            .map(|(e, seq)| NewEvent::of::<A>(id, seq, e, &meta))
            .collect::<Result<Vec<_>, _>>()
            .map_err(append_error)?;
        Ok(Decided {
            events,
            new_events,
            state,
        })
    }

    /// Executes `command` on aggregate `id`: decide, then append with `side` rows.
    pub async fn execute<A>(
        &self,
        id: &str,
        command: A::Command,
        metadata: &HashMap<String, String>,
        side: SideRows,
        mode: Mode,
    ) -> Result<Executed<A>, CommandError<A::Error>>
    where
        A: Aggregate<Services = NoServices> + Tenanted,
        A::Command: Clone,
        A::Event: Claims,
    {
        let attempts = if mode == Mode::Retry { MAX_ATTEMPTS } else { 1 };
        for _ in 0..attempts {
            let decided = self.decide::<A>(id, command.clone(), metadata, mode).await?;
            if decided.events.is_empty() {
                return Ok(Executed {
                    events: decided.events,
                    position: None,
                    state: decided.state,
                });
            }
            match self.store.append(decided.new_events, side.clone()).await {
                Ok(at) => {
                    return Ok(Executed {
                        events: decided.events,
                        position: Some(at),
                        state: decided.state,
                    })
                }
                Err(AppendError::Conflict) => continue,
                Err(e) => return Err(append_error(e)),
            }
        }
        Err(CommandError::Conflict)
    }
}

/// Maps a failed append to the command's error.
pub fn append_error<E: std::error::Error>(e: AppendError) -> CommandError<E> {
    match e {
        AppendError::Conflict => CommandError::Conflict,
        AppendError::ClaimTaken(c) => CommandError::Claim(c),
        AppendError::ClaimMissing(m) => CommandError::Missing(m),
        AppendError::Database(e) => storage(&e),
        e @ (AppendError::Failed(..) | AppendError::Closed) => CommandError::Storage(e.to_string()),
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

//! keyledger's storage layer: the PostgreSQL event log (a `PersistedEventRepository`), the
//! gap-free ordered reader, command execution with set-wide claims, and the projections that
//! turn the log into read models. It knows SQL and events, never HTTP.

pub mod audit;
pub mod availability;
pub mod cascade;
pub mod checkpoint;
pub mod commands;
pub mod decode;
pub mod engine;
pub mod feed;
pub mod history;
pub mod log;
pub mod objects;
pub mod queries;
pub mod store;
pub mod webhooks;

pub use log::{LogPosition, StoredEvent};
pub use store::EventStore;

/// Embedded migrations (the `migrations/` folder at the workspace root).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("event {event_id} could not be decoded: {message}")]
    Decode { event_id: String, message: String },
    #[error("{0}")]
    Other(String),
}

impl StorageError {
    /// The database is unreachable or out of connections (see [`availability::is_unavailable`]):
    /// worth a 503 and a retry, not a 500.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Database(e) if availability::is_unavailable(e))
    }
}

//! keyledger's event store: the PostgreSQL log (append, gap-free ordered reader, aggregate
//! streams), projection checkpoints, the command bus that loads, decides and appends, and the
//! advisory-lock leases that pick which process runs a worker. It knows SQL and events, never
//! HTTP, and writes no read model.

// The workspace lint table denies these everywhere (tests may, see clippy.toml); the crate
// states it too, so the rule is visible where the code is.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::todo)
)]

pub mod append;
pub mod availability;
pub mod cascade;
pub mod checkpoint;
pub mod commands;
pub mod decode;
pub mod lease;
pub mod log;

pub use append::EventStore;
pub use log::{LogPosition, StoredEvent};

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

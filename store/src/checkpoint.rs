//! Projection checkpoints: one row per projection, advanced in the same transaction as the
//! projection's writes; and waiting for them (read-your-writes).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{PgExecutor, PgPool};
use tokio::sync::watch;

use crate::log::LogPosition;

/// A projection's checkpoint (START when it has no row).
pub async fn load<'e>(db: impl PgExecutor<'e>, name: &str) -> Result<LogPosition, sqlx::Error> {
    Ok(load_all(db, &[name]).await?.into_iter().next().unwrap_or_default())
}

/// Locks the checkpoint row for the rest of the transaction and returns it. Every writer of a
/// projection (worker or rebuild) takes this lock first, so they serialize without deadlocks.
pub async fn lock<'e>(db: impl PgExecutor<'e>, name: &str) -> Result<LogPosition, sqlx::Error> {
    Ok(lock_all(db, &[name]).await?.into_iter().next().unwrap_or_default())
}

pub async fn store<'e>(db: impl PgExecutor<'e>, name: &str, at: LogPosition) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into projection_checkpoint (name, transaction_id, position, updated_at) \
         values ($1, $2::bigint::text::xid8, $3, now()) \
         on conflict (name) do update set transaction_id = excluded.transaction_id, \
         position = excluded.position, updated_at = now()",
    )
    .bind(name)
    .bind(at.transaction_id)
    .bind(at.position)
    .execute(db)
    .await?;
    Ok(())
}

/// The checkpoints of `names`, in that order (START for a projection without a row).
pub async fn load_all<'e>(db: impl PgExecutor<'e>, names: &[&str]) -> Result<Vec<LogPosition>, sqlx::Error> {
    select_all(db, names, "").await
}

/// Locks the checkpoint rows of `names` (in name order, so every locker takes them in one
/// order) for the rest of the transaction and returns them in the order of `names`.
pub async fn lock_all<'e>(db: impl PgExecutor<'e>, names: &[&str]) -> Result<Vec<LogPosition>, sqlx::Error> {
    select_all(db, names, " order by name for update").await
}

async fn select_all<'e>(db: impl PgExecutor<'e>, names: &[&str], tail: &str) -> Result<Vec<LogPosition>, sqlx::Error> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(&format!(
        "select name, transaction_id::text::bigint, position from projection_checkpoint where name = any($1){tail}"
    ))
    .bind(names)
    .fetch_all(db)
    .await?;
    let found: HashMap<String, LogPosition> = rows
        .into_iter()
        .map(|(n, t, p)| {
            (
                n,
                LogPosition {
                    transaction_id: t,
                    position: p,
                },
            )
        })
        .collect();
    Ok(names
        .iter()
        .map(|n| found.get(*n).copied().unwrap_or_default())
        .collect())
}

/// Stores the checkpoints of `names` (`at` in the same order) in one statement.
pub async fn store_all<'e>(db: impl PgExecutor<'e>, names: &[&str], at: &[LogPosition]) -> Result<(), sqlx::Error> {
    let txids: Vec<i64> = at.iter().map(|p| p.transaction_id).collect();
    let positions: Vec<i64> = at.iter().map(|p| p.position).collect();
    sqlx::query(
        "insert into projection_checkpoint (name, transaction_id, position, updated_at) \
         select n, t::text::xid8, p, now() from unnest($1::text[], $2::bigint[], $3::bigint[]) as u(n, t, p) \
         on conflict (name) do update set transaction_id = excluded.transaction_id, \
         position = excluded.position, updated_at = now()",
    )
    .bind(names)
    .bind(&txids)
    .bind(&positions)
    .execute(db)
    .await?;
    Ok(())
}

/// Moves a checkpoint forward to `at` (never backwards: a rebuild may have moved it further).
pub async fn advance<'e>(db: impl PgExecutor<'e>, name: &str, at: LogPosition) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update projection_checkpoint set transaction_id = $2::bigint::text::xid8, position = $3, updated_at = now() \
         where name = $1 and (transaction_id, position) < ($2::bigint::text::xid8, $3)",
    )
    .bind(name)
    .bind(at.transaction_id)
    .bind(at.position)
    .execute(db)
    .await?;
    Ok(())
}

/// The checkpoints this process has seen, per projection, for waiting on them.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    senders: Arc<HashMap<&'static str, watch::Sender<LogPosition>>>,
}

impl Progress {
    pub fn new(names: &[&'static str]) -> Self {
        let senders = names
            .iter()
            .map(|n| (*n, watch::channel(LogPosition::START).0))
            .collect();
        Self {
            senders: Arc::new(senders),
        }
    }

    /// Follows one projection's checkpoint as this process's worker moves it (`None`: unknown
    /// projection). Subscribers of the public feed watch `events`.
    pub fn watch(&self, name: &str) -> Option<watch::Receiver<LogPosition>> {
        self.senders.get(name).map(|s| s.subscribe())
    }

    pub fn publish(&self, name: &str, at: LogPosition) {
        if let Some(s) = self.senders.get(name) {
            s.send_if_modified(|cur| {
                let newer = at > *cur;
                if newer {
                    *cur = at;
                }
                newer
            });
        }
    }

    /// Waits until the named projections have applied `at`, or `timeout` passes (returns false
    /// then). Progress made by workers of another process is seen by polling the checkpoint table.
    pub async fn wait_for(&self, pool: &PgPool, names: &[&str], at: LogPosition, timeout: Duration) -> Caught {
        let deadline = tokio::time::Instant::now() + timeout;
        for (name, sender) in self.senders.iter().filter(|(n, _)| names.contains(n)) {
            let mut rx = sender.subscribe();
            loop {
                if *rx.borrow_and_update() >= at {
                    break;
                }
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return Caught::TimedOut;
                }
                let slice = (deadline - now).min(Duration::from_millis(50));
                if tokio::time::timeout(slice, rx.changed()).await.is_err() {
                    // No local progress: another process may own this projection.
                    match load(pool, name).await {
                        Ok(cp) if cp >= at => break,
                        Ok(_) => {}
                        // No projection can progress without the database: waiting on is futile.
                        Err(e) if crate::availability::is_unavailable(&e) => return Caught::Unavailable,
                        Err(e) => tracing::debug!(error = %e, "reading a checkpoint failed"),
                    }
                }
            }
        }
        Caught::Up
    }
}

/// How a read-your-writes wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caught {
    /// Every named projection has passed the position.
    Up,
    /// The bound passed first.
    TimedOut,
    /// The database became unavailable while waiting.
    Unavailable,
}

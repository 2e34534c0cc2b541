//! Which process runs a worker (a projection, the webhook dispatcher, the NATS publisher): the holder of a PostgreSQL session advisory lock, on a
//! connection kept out of the pool. If the holder dies its connection closes and the lock goes
//! with it, so a standby takes over. Never hand a connection that may hold the lock back to the pool.

use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};

/// A held subscriber lock (the connection it lives on).
pub struct Ownership {
    conn: PoolConnection<Postgres>,
}

impl Ownership {
    /// Takes the lock named `key`, or `None` when another session holds it (or the database is
    /// unreachable).
    pub async fn try_take(pool: &PgPool, key: &str) -> Option<Ownership> {
        let mut conn = pool.acquire().await.ok()?;
        let got: Result<(bool,), sqlx::Error> = sqlx::query_as("select pg_try_advisory_lock(hashtext($1))")
            .bind(key)
            .fetch_one(&mut *conn)
            .await;
        match got {
            Ok((true,)) => Some(Ownership { conn }),
            _ => None,
        }
    }

    /// True while the lock's connection answers; a dead connection means the lock is gone.
    pub async fn alive(&mut self) -> bool {
        sqlx::query("select 1").execute(&mut *self.conn).await.is_ok()
    }

    /// Gives the lock up (and the connection back to the pool once it no longer holds it).
    pub async fn release(mut self) {
        if sqlx::query("select pg_advisory_unlock_all()")
            .execute(&mut *self.conn)
            .await
            .is_err()
        {
            drop(self.conn.detach());
        }
    }

    /// Forgets a lock whose connection failed, closing the connection instead of pooling it.
    pub fn abandon(self) {
        drop(self.conn.detach());
    }

    /// Keeps the lock in `slot` if its connection still answers, else tries to take it anew
    /// (abandoning the dead connection). True while this process holds the lock; `took` tells
    /// whether it was (re)taken by this call.
    pub async fn keep_or_take(slot: &mut Option<Ownership>, pool: &PgPool, key: &str) -> Held {
        if let Some(owner) = slot.as_mut() {
            if owner.alive().await {
                return Held::Kept;
            }
            if let Some(dead) = slot.take() {
                dead.abandon();
            }
        }
        *slot = Self::try_take(pool, key).await;
        if slot.is_some() {
            Held::Taken
        } else {
            Held::Not
        }
    }
}

/// What [`Ownership::keep_or_take`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Held before and still held.
    Kept,
    /// Taken by this call (first time, or after the previous holder went away).
    Taken,
    /// Another process holds it.
    Not,
}

impl Held {
    pub fn held(self) -> bool {
        self != Held::Not
    }
}

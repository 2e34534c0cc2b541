//! Which process runs a subscriber: the holder of a PostgreSQL session advisory lock, on a
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
}

//! Periodic deletes of rows that no longer mean anything (expired Idempotency-Keys, rate-limit
//! rows past their time, used or expired one-time codes, pending authentications and authorization codes): one loop
//! shape for all of them. Any number of processes may sweep at once; each delete is idempotent.

use std::future::Future;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

/// Runs `sweep` now and every `period` until shutdown, logging what it deleted (`what`).
pub async fn every<F, Fut>(what: &'static str, period: Duration, mut shutdown: watch::Receiver<bool>, sweep: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<u64, sqlx::Error>>,
{
    loop {
        match sweep().await {
            Ok(n) if n > 0 => tracing::debug!(deleted = n, "expired {what} deleted"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweeping {what}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// How long an expired one-time code stays readable (`GET …/magic_auth/{id}` and the like show
/// it as expired) before it is deleted.
const CODES_KEPT: &str = "1 day";

/// Deletes one-time codes expired more than [`CODES_KEPT`] ago, and pending authentications
/// authorization codes and Admin Portal links expired more than an hour ago; returns how many rows went.
pub async fn sign_in_leftovers(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let codes = sqlx::query(&format!(
        "delete from one_time_code where expires_at < now() - interval '{CODES_KEPT}'"
    ))
    .execute(pool)
    .await?;
    let pending = sqlx::query("delete from pending_authentication where expires_at < now() - interval '1 hour'")
        .execute(pool)
        .await?;
    let authorization = sqlx::query("delete from authorization_code where expires_at < now() - interval '1 hour'")
        .execute(pool)
        .await?;
    let portal = sqlx::query("delete from portal_link where expires_at < now() - interval '1 hour'")
        .execute(pool)
        .await?;
    let mut sso = 0;
    for table in ["sso_state", "sso_code", "sso_access_token", "saml_assertion"] {
        sso += sqlx::query(&format!(
            "delete from {table} where expires_at < now() - interval '1 hour'"
        ))
        .execute(pool)
        .await?
        .rows_affected();
    }
    Ok(codes.rows_affected() + pending.rows_affected() + authorization.rows_affected() + portal.rows_affected() + sso)
}

//! Rate limits shared by every server on one database: one `rate_limit` row per limited key
//! (migration 0017), checked and updated by a single upsert, so two servers (or fifty
//! concurrent requests) share one count. It never stores a key in the clear (only a SHA-256 of
//! `<limit>:<key>`), never normalizes keys itself, and never lets a check pass when it could
//! not ask the database.
//!
//! # Algorithm: GCRA
//! A limit of `n` per `period` is a generic cell rate algorithm with emission interval
//! `period / n` and a burst of `n`: each row holds one timestamp, the "theoretical arrival time"
//! (tat). A check at `now` passes when `max(tat, now) + interval <= now + period`, and then moves
//! tat to that value; a refused check leaves tat alone, so being refused costs nothing extra.
//! Chosen over a fixed window, which lets `2n` through within a moment at a window boundary,
//! and over a sliding log (a row per attempt, exact but big under a storm) or a sliding-window
//! counter (two counters, and an estimate): GCRA lets at most `n` through at once, then one per
//! `period / n`, keeps one row per key, and knows exactly when the next check will pass (the
//! `Retry-After`). The database's clock is the only clock, so servers need not agree on time.
//!
//! # Keys
//! Callers pass normalized keys: an email as its lookup key
//! ([`keyledger_domain::values::Email::lookup_key`]), an IP through [`ip_key`]. `Alice@x` and
//! `alice@x` are different keys here.
//!
//! # When the database is unavailable
//! The check fails closed: `503 database_unavailable` with `Retry-After` (the answer every other
//! request gets then). Failing open would hand a password guesser unlimited attempts whenever
//! the database is degraded, and the endpoints being limited need the database to answer
//! anyway, so refusing costs no availability that was not already lost. A check waits at most
//! [`CHECK_TIMEOUT`] (connection included), so an outage cannot pile requests up; any other
//! database error is a logged 500, never a pass.

use std::time::Duration;

use axum::http::StatusCode;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio::sync::watch;

use crate::error::ApiError;

/// The limits the authentication endpoints apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// Password attempts per email (key: the email's lookup key).
    PasswordPerEmail,
    /// Magic Auth and password-reset codes sent per email (key: the email's lookup key).
    CodesPerEmail,
    /// `POST /user_management/authenticate` calls per client IP.
    AuthenticatePerIp,
}

impl Limit {
    /// The name hashed with each key and used as a metrics label: never rename one (live rows
    /// would be forgotten).
    pub const fn name(self) -> &'static str {
        match self {
            Limit::PasswordPerEmail => "password_per_email",
            Limit::CodesPerEmail => "codes_per_email",
            Limit::AuthenticatePerIp => "authenticate_per_ip",
        }
    }
}

/// How many checks of each limit pass per `period`; 0 turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub password_per_email: u32,
    pub codes_per_email: u32,
    pub authenticate_per_ip: u32,
    /// The window every count is per: a minute, except in tests.
    pub period: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            password_per_email: 10,
            codes_per_email: 3,
            authenticate_per_ip: 300,
            period: Duration::from_secs(60),
        }
    }
}

impl Settings {
    fn count(&self, limit: Limit) -> u32 {
        match limit {
            Limit::PasswordPerEmail => self.password_per_email,
            Limit::CodesPerEmail => self.codes_per_email,
            Limit::AuthenticatePerIp => self.authenticate_per_ip,
        }
    }
}

/// Longest a check may take, waiting for a connection included (a locked row, a stalled
/// server): past it the check fails closed like an unavailable database.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How often [`sweeper`] deletes rows that no longer limit anything.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The rate limiter of one server; clones share it.
#[derive(Debug, Clone)]
pub struct RateLimits {
    pool: PgPool,
    settings: Settings,
}

/// One check, in one statement. `$2` is the emission interval and `$3` the period, both in
/// microseconds. `excluded.tat` is `now + interval`, so `now` is `excluded.tat - interval` and
/// `max(tat, now) + interval` is `greatest(r.tat + interval, excluded.tat)`; the SET clause
/// sees the row as it was, locked, after any concurrent check's commit.
const CHECK: &str = "
with c as (select clock_timestamp() as now)
insert into rate_limit as r (key, tat, allowed)
select $1, c.now + $2 * interval '1 microsecond', true from c
on conflict (key) do update set
    allowed = greatest(r.tat + $2 * interval '1 microsecond', excluded.tat)
        <= excluded.tat + ($3 - $2) * interval '1 microsecond',
    tat = case
        when greatest(r.tat + $2 * interval '1 microsecond', excluded.tat)
            <= excluded.tat + ($3 - $2) * interval '1 microsecond'
        then greatest(r.tat + $2 * interval '1 microsecond', excluded.tat)
        else r.tat
    end
returning allowed, extract(epoch from (tat - (select now from c)))::float8 as ahead";

impl RateLimits {
    pub fn new(pool: PgPool, settings: Settings) -> Self {
        Self { pool, settings }
    }

    pub fn settings(&self) -> Settings {
        self.settings
    }

    /// Counts one attempt of `limit` for `key` (already normalized by the caller, see the
    /// module doc). Over the limit: `429 rate_limit_exceeded` with `Retry-After` in seconds;
    /// database unavailable: `503 database_unavailable` (fail closed).
    pub async fn check(&self, limit: Limit, key: &str) -> Result<(), ApiError> {
        let count = self.settings.count(limit);
        if count == 0 {
            return Ok(());
        }
        let period = micros(self.settings.period).max(1);
        let interval = (period / i64::from(count)).max(1);
        let query = sqlx::query_as::<_, (bool, f64)>(CHECK)
            .bind(hashed_key(limit, key).to_vec())
            .bind(interval)
            .bind(period)
            .fetch_one(&self.pool);
        let (allowed, ahead) = match tokio::time::timeout(CHECK_TIMEOUT, query).await {
            Ok(Ok(row)) => row,
            Ok(Err(e)) => {
                crate::metrics::rate_limit_check(limit.name(), "error");
                // Unavailable: a logged 503; anything else (a bug): a logged 500.
                return Err(ApiError::from(e));
            }
            Err(_) => {
                crate::metrics::rate_limit_check(limit.name(), "error");
                tracing::warn!(limit = limit.name(), timeout = ?CHECK_TIMEOUT, "rate limit check timed out; refusing");
                return Err(ApiError::database_unavailable());
            }
        };
        if allowed {
            crate::metrics::rate_limit_check(limit.name(), "allowed");
            return Ok(());
        }
        crate::metrics::rate_limit_check(limit.name(), "refused");
        // The next check passes once now + period >= tat + interval.
        let wait = ahead + (interval - period) as f64 / 1e6;
        Err(exceeded(retry_after_secs(wait)))
    }
}

/// What a refused check answers (WorkOS's shape).
fn exceeded(retry_after: u32) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_exceeded",
        format!("too many requests; retry after {retry_after} seconds"),
    )
    .with_retry_after(retry_after)
}

/// Whole seconds to wait, rounded up and at least 1 (a `Retry-After: 0` invites a retry storm).
fn retry_after_secs(wait: f64) -> u32 {
    if !wait.is_finite() || wait <= 1.0 {
        return 1;
    }
    // Bounded by the period (at most a u32 of seconds in any sane setting).
    wait.ceil().min(f64::from(u32::MAX)) as u32
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// The key of a client address: an IPv4 address as itself, an IPv6 address as its /64 (one
/// subscriber usually holds a whole /64, and would otherwise have 2^64 keys); an IPv4-mapped
/// IPv6 address as the IPv4 address it maps.
pub fn ip_key(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                let prefix = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                format!("{prefix}/64")
            }
        },
    }
}

/// The stored key: SHA-256 of `<limit name>:<key>`.
pub fn hashed_key(limit: Limit, key: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(limit.name().as_bytes());
    h.update(b":");
    h.update(key.as_bytes());
    h.finalize().into()
}

/// Deletes rows whose tat has passed: such a row limits nothing (a check treats it as absent).
/// A sequential scan, once a minute per server: the table has no index on tat, so that checks
/// update their rows in place (HOT) instead of maintaining one.
pub async fn sweep(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("delete from rate_limit where tat < clock_timestamp()")
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// Sweeps now and every [`SWEEP_EVERY`] until shutdown (any number of processes may sweep).
pub async fn sweeper(pool: PgPool, shutdown: watch::Receiver<bool>) {
    crate::sweep::every("rate limit rows", SWEEP_EVERY, shutdown, || sweep(&pool)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_never_zero() {
        for (wait, secs) in [
            (-3.0, 1),
            (0.0, 1),
            (0.2, 1),
            (1.0, 1),
            (1.01, 2),
            (5.999, 6),
            (6.0, 6),
            (f64::NAN, 1),
        ] {
            assert_eq!(retry_after_secs(wait), secs, "wait {wait}");
        }
    }

    #[test]
    fn an_ipv6_client_is_limited_by_its_64_and_a_mapped_ipv4_as_itself() {
        let key = |s: &str| ip_key(s.parse().unwrap());
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:bbbb::9"), key("2001:db8:1:2:aaaa::1"));
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
        assert_eq!(key("::1"), "::/64");
    }

    #[test]
    fn keys_are_hashed_with_their_limit() {
        let a = hashed_key(Limit::PasswordPerEmail, "alice@example.com");
        assert_eq!(a, hashed_key(Limit::PasswordPerEmail, "alice@example.com"));
        assert_ne!(a, hashed_key(Limit::CodesPerEmail, "alice@example.com"));
        assert_ne!(a, hashed_key(Limit::PasswordPerEmail, "Alice@example.com"));
        let expected: [u8; 32] = Sha256::digest(b"password_per_email:alice@example.com").into();
        assert_eq!(a, expected);
    }

    #[test]
    fn the_defaults_are_the_documented_ones() {
        let s = Settings::default();
        assert_eq!(
            (
                s.count(Limit::PasswordPerEmail),
                s.count(Limit::CodesPerEmail),
                s.count(Limit::AuthenticatePerIp)
            ),
            (10, 3, 300)
        );
        assert_eq!(s.period, Duration::from_secs(60));
    }
}

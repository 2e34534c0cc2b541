//! `keyledger_api::rate_limit` against real PostgreSQL: the count lives in the database, so
//! servers (pools) share it; the refusal is WorkOS's 429 with `Retry-After`; the window slides;
//! keys are stored hashed; a limit of 0 is off; an unreachable database refuses (503), never
//! passes. No endpoint uses the limiter yet: the HTTP-level tests come with authenticate.

use std::time::{Duration, Instant};

use axum::response::IntoResponse;
use keyledger_api::error::ApiError;
use keyledger_api::rate_limit::{self, hashed_key, Limit, RateLimits, Settings};
use keyledger_domain::values::Email;
use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::fresh_database;

fn per(count: u32, period: Duration) -> Settings {
    Settings {
        password_per_email: count,
        codes_per_email: count,
        authenticate_per_ip: count,
        period,
    }
}

async fn limiter(settings: Settings) -> (RateLimits, PgPool, String) {
    let url = fresh_database().await;
    let pool = keyledger_api::connect(&url).await.expect("connect");
    (RateLimits::new(pool.clone(), settings), pool, url)
}

/// Status, `Retry-After` and body of an error as the API would answer it.
async fn answer(e: ApiError) -> (u16, Option<u32>, Value) {
    let r = e.into_response();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().expect("ascii").parse().expect("whole seconds"));
    let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.expect("body");
    (status, retry, serde_json::from_slice(&body).expect("JSON body"))
}

/// How many of `n` checks in a row pass.
async fn passes(limits: &RateLimits, limit: Limit, key: &str, n: usize) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        if limits.check(limit, key).await.is_ok() {
            ok += 1;
        }
    }
    ok
}

#[tokio::test]
async fn the_check_after_the_limit_is_refused_with_429_and_the_seconds_until_the_next_pass() {
    // 3 per minute: one every 20 s after the burst.
    let (limits, _, _) = limiter(per(3, Duration::from_secs(60))).await;
    for i in 0..3 {
        limits
            .check(Limit::PasswordPerEmail, "alice@example.com")
            .await
            .unwrap_or_else(|e| panic!("check {i} refused: {e:?}"));
    }
    let refused = limits
        .check(Limit::PasswordPerEmail, "alice@example.com")
        .await
        .expect_err("the fourth check is refused");
    let (status, retry, body) = answer(refused).await;
    assert_eq!(status, 429);
    assert_eq!(body["code"], "rate_limit_exceeded", "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(body.get("errors").is_none(), "{body}");
    assert!(matches!(retry, Some(19..=20)), "Retry-After {retry:?}, expected 20 s");
    // Refusals do not push the next pass further out.
    let again = limits.check(Limit::PasswordPerEmail, "alice@example.com").await;
    let (_, retry_again, _) = answer(again.expect_err("still refused")).await;
    assert!(matches!(retry_again, Some(19..=20)), "Retry-After {retry_again:?}");
    // Other keys and other limits on the same key count apart.
    assert_eq!(passes(&limits, Limit::PasswordPerEmail, "bob@example.com", 3).await, 3);
    assert_eq!(passes(&limits, Limit::CodesPerEmail, "alice@example.com", 3).await, 3);
    assert_eq!(
        passes(&limits, Limit::AuthenticatePerIp, "alice@example.com", 4).await,
        3
    );
}

#[tokio::test]
async fn the_default_limits_are_10_password_attempts_3_codes_and_300_authenticate_calls() {
    let (limits, _, _) = limiter(Settings::default()).await;
    assert_eq!(passes(&limits, Limit::PasswordPerEmail, "a@example.com", 11).await, 10);
    assert_eq!(passes(&limits, Limit::CodesPerEmail, "a@example.com", 4).await, 3);
    // 300 per minute is one every 200 ms after the burst: checks made while the burst is being
    // used up earn that many more passes.
    let started = Instant::now();
    let mut passed = 0;
    let refused = loop {
        match limits.check(Limit::AuthenticatePerIp, "192.0.2.7").await {
            Ok(()) => passed += 1,
            Err(e) => break e,
        }
        assert!(passed <= 400, "no refusal after {passed} checks");
    };
    let earned = started.elapsed().as_millis() / 200;
    assert!(
        (300..=300 + earned + 1).contains(&(passed as u128)),
        "{passed} passed in {:?}",
        started.elapsed()
    );
    let (_, retry, _) = answer(refused).await;
    // The header rounds up to a whole second.
    assert_eq!(retry, Some(1));
}

#[tokio::test]
async fn two_servers_on_one_database_share_one_count() {
    let (first, _, url) = limiter(per(4, Duration::from_secs(60))).await;
    let other_pool = keyledger_api::connect(&url).await.expect("connect");
    let second = RateLimits::new(other_pool, per(4, Duration::from_secs(60)));
    let mut passed = 0;
    for i in 0..8 {
        let server = if i % 2 == 0 { &first } else { &second };
        if server.check(Limit::CodesPerEmail, "carol@example.com").await.is_ok() {
            passed += 1;
        }
    }
    assert_eq!(passed, 4, "4 per minute across both servers");
    assert!(first.check(Limit::CodesPerEmail, "carol@example.com").await.is_err());
    assert!(second.check(Limit::CodesPerEmail, "carol@example.com").await.is_err());
}

#[tokio::test]
async fn of_fifty_concurrent_checks_with_a_limit_of_ten_exactly_ten_pass() {
    let (limits, _, url) = limiter(per(10, Duration::from_secs(60))).await;
    // Two servers' pools, so the race is between connections of different processes' kind.
    let other = RateLimits::new(keyledger_api::connect(&url).await.expect("connect"), limits.settings());
    let checks = (0..50).map(|i| {
        let l = if i % 2 == 0 { limits.clone() } else { other.clone() };
        tokio::spawn(async move { l.check(Limit::PasswordPerEmail, "dave@example.com").await })
    });
    let results = futures::future::join_all(checks).await;
    let mut passed = 0;
    for r in results {
        match r.expect("task") {
            Ok(()) => passed += 1,
            Err(e) => {
                let (status, retry, body) = answer(e).await;
                assert_eq!(status, 429, "{body}");
                assert!(retry.is_some());
            }
        }
    }
    assert_eq!(passed, 10);
}

#[tokio::test]
async fn the_window_slides_one_pass_per_interval_and_a_quiet_period_restores_the_burst() {
    // 2 per 4 s: a burst of 2, then one every 2 s.
    let (limits, _, _) = limiter(per(2, Duration::from_secs(4))).await;
    let key = "erin@example.com";
    assert_eq!(passes(&limits, Limit::PasswordPerEmail, key, 3).await, 2);
    let (_, retry, _) = answer(limits.check(Limit::PasswordPerEmail, key).await.expect_err("refused")).await;
    assert_eq!(retry, Some(2));
    tokio::time::sleep(Duration::from_millis(2200)).await;
    // One interval later, one more passes (not a fresh burst: no fixed window reset).
    let started = Instant::now();
    let passed = passes(&limits, Limit::PasswordPerEmail, key, 2).await;
    if started.elapsed() < Duration::from_millis(1500) {
        assert_eq!(passed, 1, "one pass per 2 s interval after the burst");
    }
    // A whole quiet period: the full burst is back.
    tokio::time::sleep(Duration::from_millis(4200)).await;
    assert_eq!(passes(&limits, Limit::PasswordPerEmail, key, 3).await, 2);
}

#[tokio::test]
async fn keys_are_taken_as_given_so_callers_pass_an_emails_lookup_key() {
    let (limits, _, _) = limiter(per(2, Duration::from_secs(60))).await;
    // The limiter does not normalize: these are two keys...
    assert_eq!(
        passes(&limits, Limit::PasswordPerEmail, "Frank@Example.com", 2).await,
        2
    );
    assert_eq!(
        passes(&limits, Limit::PasswordPerEmail, "frank@example.com", 2).await,
        2
    );
    // ...and a caller that passes the lookup key counts every spelling as one address.
    let (limits, _, _) = limiter(per(2, Duration::from_secs(60))).await;
    let mut passed = 0;
    for spelling in [" Grace@Example.COM", "grace@example.com", "GRACE@EXAMPLE.COM "] {
        if limits
            .check(Limit::PasswordPerEmail, &Email::lookup_key(spelling))
            .await
            .is_ok()
        {
            passed += 1;
        }
    }
    assert_eq!(passed, 2);
}

#[tokio::test]
async fn only_a_sha256_of_limit_and_key_is_stored() {
    let (limits, pool, _) = limiter(per(5, Duration::from_secs(60))).await;
    limits
        .check(Limit::PasswordPerEmail, "heidi@example.com")
        .await
        .expect("passes");
    limits
        .check(Limit::CodesPerEmail, "heidi@example.com")
        .await
        .expect("passes");
    let mut keys: Vec<Vec<u8>> = sqlx::query_scalar("select key from rate_limit")
        .fetch_all(&pool)
        .await
        .expect("rows");
    keys.sort();
    let mut expected = vec![
        hashed_key(Limit::PasswordPerEmail, "heidi@example.com").to_vec(),
        hashed_key(Limit::CodesPerEmail, "heidi@example.com").to_vec(),
    ];
    expected.sort();
    assert_eq!(keys, expected);
    let plain: i64 = sqlx::query_scalar("select count(*) from rate_limit r where r::text ilike '%heidi%'")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(plain, 0);
}

#[tokio::test]
async fn a_limit_of_zero_is_off_and_touches_nothing() {
    let (limits, pool, _) = limiter(Settings {
        password_per_email: 0,
        ..per(1, Duration::from_secs(60))
    })
    .await;
    assert_eq!(
        passes(&limits, Limit::PasswordPerEmail, "ivan@example.com", 50).await,
        50
    );
    let rows: i64 = sqlx::query_scalar("select count(*) from rate_limit")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(rows, 0);
    // The other limits still hold.
    assert_eq!(passes(&limits, Limit::CodesPerEmail, "ivan@example.com", 2).await, 1);
}

#[tokio::test]
async fn the_sweep_deletes_rows_that_no_longer_limit_and_keeps_the_others() {
    let (limits, pool, _) = limiter(per(10, Duration::from_secs(60))).await;
    limits
        .check(Limit::PasswordPerEmail, "judy@example.com")
        .await
        .expect("passes");
    limits
        .check(Limit::PasswordPerEmail, "mallory@example.com")
        .await
        .expect("passes");
    // Judy's last attempt is long past.
    sqlx::query("update rate_limit set tat = now() - interval '1 second' where key = $1")
        .bind(hashed_key(Limit::PasswordPerEmail, "judy@example.com").to_vec())
        .execute(&pool)
        .await
        .expect("age a row");
    assert_eq!(rate_limit::sweep(&pool).await.expect("sweep"), 1);
    let left: Vec<Vec<u8>> = sqlx::query_scalar("select key from rate_limit")
        .fetch_all(&pool)
        .await
        .expect("rows");
    assert_eq!(
        left,
        vec![hashed_key(Limit::PasswordPerEmail, "mallory@example.com").to_vec()]
    );
    // Mallory's count survived the sweep.
    assert_eq!(
        passes(&limits, Limit::PasswordPerEmail, "mallory@example.com", 10).await,
        9
    );
}

#[tokio::test]
async fn an_unreachable_database_refuses_with_503_in_bounded_time_never_passes() {
    // A port on loopback where nothing listens (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy(&format!("postgres://postgres@127.0.0.1:{port}/postgres"))
        .expect("lazy pool");
    let limits = RateLimits::new(pool, per(10, Duration::from_secs(60)));
    let started = Instant::now();
    let refused = limits
        .check(Limit::PasswordPerEmail, "ken@example.com")
        .await
        .expect_err("fails closed");
    assert!(
        started.elapsed() <= rate_limit::CHECK_TIMEOUT + Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let (status, retry, body) = answer(refused).await;
    assert_eq!(status, 503);
    assert_eq!(body["code"], "database_unavailable", "{body}");
    assert_eq!(retry, Some(1));
}

#[tokio::test]
async fn a_closed_pool_refuses_too() {
    let (limits, pool, _) = limiter(per(10, Duration::from_secs(60))).await;
    limits
        .check(Limit::PasswordPerEmail, "leo@example.com")
        .await
        .expect("passes");
    pool.close().await;
    let (status, _, body) = answer(
        limits
            .check(Limit::PasswordPerEmail, "leo@example.com")
            .await
            .expect_err("fails closed"),
    )
    .await;
    assert_eq!(status, 503, "{body}");
}

#[tokio::test]
async fn the_counts_live_in_an_unlogged_table_so_a_check_waits_for_no_disk_flush() {
    let (_, pool, _) = limiter(Settings::default()).await;
    let persistence: String =
        sqlx::query_scalar("select relpersistence::text from pg_class where relname = 'rate_limit'")
            .fetch_one(&pool)
            .await
            .expect("the table");
    assert_eq!(persistence, "u");
}

//! A database outage under load: the server's own throwaway PostgreSQL (the embedded one) is
//! stopped while writers run. Every answer is then a fast 503 JSON error, `/health` is 503, and
//! after PostgreSQL comes back the same process serves 201s again without losing any write it
//! acknowledged.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyledger_embedded_pg::EmbeddedPostgres;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::TestApp;

/// The pool's acquire bound in this test (the server's default).
const BOUND: Duration = keyledger_api::DEFAULT_DB_ACQUIRE_TIMEOUT;
/// Scheduling slack on a loaded 2-core machine: a 503 may take the bound plus this.
const SLACK: Duration = Duration::from_millis(2000);

const UP: u8 = 0;
const DOWN: u8 = 1;
const BACK: u8 = 2;

#[derive(Debug)]
struct Answer {
    phase: u8,
    status: StatusCode,
    took: Duration,
    body: Value,
    retry_after: Option<String>,
}

async fn send(req: reqwest::RequestBuilder, phase: u8) -> Answer {
    let started = Instant::now();
    let resp = req
        .send()
        .await
        .expect("the server answers (no hang past the client timeout)");
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = resp.text().await.expect("body");
    Answer {
        phase,
        status,
        took: started.elapsed(),
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        retry_after,
    }
}

/// Polls `cond` over the recorded answers until it holds or `within` passes.
async fn until(answers: &Mutex<Vec<Answer>>, within: Duration, what: &str, cond: impl Fn(&[Answer]) -> bool) {
    let deadline = Instant::now() + within;
    loop {
        if cond(&answers.lock().expect("lock")) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_answers_fast_503s_and_recovers_without_losing_acknowledged_writes() {
    let dir = std::env::temp_dir().join(format!("kl-outage-{}", ulid::Ulid::new()));
    let pg = EmbeddedPostgres::start(&dir)
        .await
        .expect("start a throwaway PostgreSQL");
    let url = pg.database_url();
    let pool = keyledger_api::connect(&url).await.expect("connect");
    keyledger_api::migrate(&pool).await.expect("migrate");
    pool.close().await;
    let app = TestApp::spawn_on(url).await;

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let phase = Arc::new(AtomicU8::new(UP));
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::<Answer>::new()));
    let health = Arc::new(Mutex::new(Vec::<Answer>::new()));
    let mut tasks = Vec::new();
    for w in 0..4 {
        let (http, phase, stop, answers) = (http.clone(), phase.clone(), stop.clone(), answers.clone());
        let (base, key) = (app.base.clone(), app.key.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let req = http
                    .post(format!("{base}/organizations"))
                    .bearer_auth(&key)
                    .json(&json!({ "name": format!("writer {w} #{n}") }));
                let a = send(req, phase.load(Ordering::SeqCst)).await;
                answers.lock().expect("lock").push(a);
            }
        }));
    }
    {
        let (http, phase, stop, health) = (http.clone(), phase.clone(), stop.clone(), health.clone());
        let base = app.base.clone();
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let a = send(http.get(format!("{base}/health")), phase.load(Ordering::SeqCst)).await;
                health.lock().expect("lock").push(a);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }

    until(&answers, Duration::from_secs(30), "20 writes acknowledged", |a| {
        a.iter().filter(|a| a.status == StatusCode::CREATED).count() >= 20
    })
    .await;
    phase.store(DOWN, Ordering::SeqCst);
    pg.stop().await.expect("stop PostgreSQL");
    let down = |a: &Answer| a.phase == DOWN && a.status == StatusCode::SERVICE_UNAVAILABLE;
    until(&answers, Duration::from_secs(30), "writers see 503s", |a| {
        a.iter().filter(|a| down(a)).count() >= 12
    })
    .await;
    until(&health, Duration::from_secs(30), "/health says 503", |a| {
        a.iter().any(down)
    })
    .await;

    phase.store(BACK, Ordering::SeqCst);
    let pg = EmbeddedPostgres::start(&dir).await.expect("restart PostgreSQL");
    until(&answers, Duration::from_secs(60), "201s after the restart", |a| {
        a.iter()
            .filter(|a| a.phase == BACK && a.status == StatusCode::CREATED)
            .count()
            >= 5
    })
    .await;
    until(&health, Duration::from_secs(30), "/health says 200 again", |a| {
        a.iter().any(|a| a.phase == BACK && a.status == StatusCode::OK)
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.expect("task");
    }

    let answers = std::mem::take(&mut *answers.lock().expect("lock"));
    let health = std::mem::take(&mut *health.lock().expect("lock"));
    for a in answers.iter().chain(health.iter()) {
        assert!(
            matches!(
                a.status,
                StatusCode::CREATED | StatusCode::OK | StatusCode::SERVICE_UNAVAILABLE
            ),
            "only success or 503, never a 500: {a:?}"
        );
        if a.status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(a.body["code"], "database_unavailable", "a JSON error: {a:?}");
            assert!(a.body["message"].is_string(), "a JSON error: {a:?}");
            assert_eq!(a.retry_after.as_deref(), Some("1"), "Retry-After: {a:?}");
        }
        // Whatever the answer (a 503, or a 201 for a write that landed just before the stop),
        // no request sent while the database was down waits past the bound.
        if a.status == StatusCode::SERVICE_UNAVAILABLE || a.phase == DOWN {
            assert!(a.took <= BOUND + SLACK, "answered within the bound: {a:?}");
        }
    }
    let acknowledged: Vec<String> = answers
        .iter()
        .filter(|a| a.status == StatusCode::CREATED)
        .map(|a| a.body["id"].as_str().expect("id").to_string())
        .collect();
    for id in &acknowledged {
        let (status, org) = app.get(&format!("/organizations/{id}")).await;
        assert_eq!(status, StatusCode::OK, "acknowledged {id} is present: {org}");
    }
    let (logged,): (i64,) = sqlx::query_as(
        "select count(distinct aggregate_id) from event where aggregate_type = 'Organization' and aggregate_id = any($1)",
    )
    .bind(&acknowledged)
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(
        logged as usize,
        acknowledged.len(),
        "every acknowledged write is in the log"
    );

    app.stop().await;
    pg.stop().await.expect("stop PostgreSQL");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_exhausted_pool_answers_503_within_the_acquire_bound_and_recovers_when_connections_free_up() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Busy", json!([])).await;
    let path = format!("/organizations/{}", org["id"].as_str().expect("id"));
    // Hold every connection of the server's request pool (it is the TestApp's pool).
    let max = app.pool.options().get_max_connections();
    let mut held = Vec::new();
    for _ in 0..max {
        held.push(app.pool.acquire().await.expect("a connection"));
    }
    let started = Instant::now();
    let (status, body) = app.get(&path).await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "database_unavailable", "{body}");
    assert!(
        took >= BOUND && took <= BOUND + SLACK,
        "answered after the acquire bound: {took:?}"
    );
    let started = Instant::now();
    let (status, body) = app.request_with_key(reqwest::Method::GET, "/health", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(started.elapsed() <= BOUND + SLACK, "/health does not hang");

    drop(held);
    assert_eq!(
        app.get(&path).await.0,
        StatusCode::OK,
        "served again once connections are free"
    );
    app.stop().await;
}

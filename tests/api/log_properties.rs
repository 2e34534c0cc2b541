//! The properties that make the log a log: gap-free ordered reads under concurrent writers,
//! set-wide rules under races, crash safety, and rebuild equal to incremental.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyledger_domain::ids::new_id;
use keyledger_domain::user::User;
use keyledger_projections::{engine, rebuild};
use keyledger_store::append::SideRows;
use keyledger_store::commands::{CommandBus, Mode};
use keyledger_store::{log, EventStore, LogPosition};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_concurrent_reader_sees_every_event_once_and_in_order_while_writers_append() {
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 300;
    let url = fresh_database().await;
    let pool = keyledger_api::connect(&url).await.expect("connect");
    let bus = CommandBus::new(EventStore::new(pool.clone()));
    let done = Arc::new(AtomicBool::new(false));

    let reader = {
        let pool = pool.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut seen: Vec<(LogPosition, String)> = Vec::new();
            let mut cp = LogPosition::START;
            let mut deadline: Option<Instant> = None;
            loop {
                let batch = log::read_after(&pool, cp, 97).await.expect("read");
                if batch.is_empty() {
                    if done.load(Ordering::SeqCst) {
                        // Every write is committed, but the xmin horizon is cluster-wide: a long
                        // transaction elsewhere can keep them invisible for a while. Wait for
                        // all of them; a skipped event would never come, so the count stays short.
                        let until = *deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(30));
                        if seen.len() >= WRITERS * PER_WRITER || Instant::now() > until {
                            return seen;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                for e in batch {
                    assert!(e.log_position > cp, "out of order: {:?} after {:?}", e.log_position, cp);
                    cp = e.log_position;
                    seen.push((e.log_position, e.aggregate_id));
                }
            }
        })
    };

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let bus = bus.clone();
        writers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..PER_WRITER {
                let id = new_id("user");
                bus.execute::<User>(
                    &id,
                    create_user_command(&format!("w{w}-{i}@example.com")),
                    &HashMap::new(),
                    SideRows::default(),
                    Mode::Once,
                )
                .await
                .expect("append");
                ids.push(id);
            }
            ids
        }));
    }
    let mut written = HashSet::new();
    for w in writers {
        written.extend(w.await.expect("writer"));
    }
    done.store(true, Ordering::SeqCst);
    let seen = reader.await.expect("reader");

    let seen_ids: Vec<String> = seen.iter().map(|(_, id)| id.clone()).collect();
    let unique: HashSet<String> = seen_ids.iter().cloned().collect();
    assert_eq!(
        seen_ids.len(),
        WRITERS * PER_WRITER,
        "reader saw {} events, expected {}",
        seen_ids.len(),
        WRITERS * PER_WRITER
    );
    assert_eq!(unique.len(), seen_ids.len(), "an event was seen twice");
    assert_eq!(
        unique, written,
        "the reader's events differ from the acknowledged writes"
    );
}

#[tokio::test]
async fn twenty_concurrent_sign_ups_with_one_email_let_exactly_one_win() {
    let app = TestApp::spawn().await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let http = app.http.clone();
        let url = format!("{}/user_management/users", app.base);
        let key = app.key.clone();
        // Case varies: the rule is case-insensitive.
        let email = if i % 2 == 0 {
            "Race@Example.com"
        } else {
            "race@example.COM"
        };
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(key)
                .json(&json!({ "email": email }))
                .send()
                .await
                .expect("send");
            let status = r.status();
            let body: Value = r.json().await.expect("json");
            (status, body)
        }));
    }
    let mut created = 0;
    for t in tasks {
        let (status, body) = t.await.expect("task");
        match status {
            StatusCode::CREATED => created += 1,
            StatusCode::UNPROCESSABLE_ENTITY => assert_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                &body,
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_parameters/email_not_available",
                "loser's error",
            ),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(created, 1, "exactly one sign-up must win");
    let (events,): (i64,) = sqlx::query_as("select count(*) from event where event_type = 'UserCreated'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(events, 1, "one UserCreated event");
    let (claims,): (i64,) = sqlx::query_as("select count(*) from claim where kind = 'user_email'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(claims, 1, "the losers left no claim behind");
    let (_, list) = app.get("/user_management/users?email=RACE@example.com").await;
    assert_eq!(
        list["data"].as_array().map(Vec::len),
        Some(1),
        "one user with that email: {list}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_of_one_user_no_more_than_the_retries_all_land_in_sequence() {
    // A racer's attempt fails only when another racer's commit landed between its read and its
    // append, and each racer commits once: with at most MAX_ATTEMPTS racers, a racer loses at
    // most MAX_ATTEMPTS - 1 times, so every update must land (no 409).
    const RACERS: usize = keyledger_store::commands::MAX_ATTEMPTS;
    let app = TestApp::spawn().await;
    let user = app.create_user("seq@example.com").await;
    let id = id_of(&user);
    let start = Arc::new(tokio::sync::Barrier::new(RACERS));
    let mut tasks = Vec::new();
    for i in 0..RACERS {
        let http = app.http.clone();
        let url = format!("{}/user_management/users/{id}", app.base);
        let key = app.key.clone();
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let r = http
                .put(url)
                .bearer_auth(key)
                .json(&json!({ "first_name": format!("n{i}") }))
                .send()
                .await
                .expect("send");
            let status = r.status();
            (status, r.text().await.unwrap_or_default())
        }));
    }
    for t in tasks {
        let (status, body) = t.await.expect("task");
        assert_eq!(status, StatusCode::OK, "every update lands: {body}");
    }
    let rows: Vec<(i64, Value)> =
        sqlx::query_as("select sequence, payload from event where aggregate_id = $1 order by sequence")
            .bind(&id)
            .fetch_all(&app.pool)
            .await
            .expect("rows");
    let seqs: Vec<i64> = rows.iter().map(|r| r.0).collect();
    let want: Vec<i64> = (1..=1 + RACERS as i64).collect();
    assert_eq!(seqs, want, "one event per update, sequences gap-free and unique");
    // Each racer's name is in exactly one event, and the read model shows the last one.
    let names: Vec<String> = rows[1..]
        .iter()
        .map(|(_, p)| {
            let text = p.to_string();
            (0..RACERS)
                .map(|i| format!("n{i}"))
                .find(|n| text.contains(&format!("\"{n}\"")))
                .unwrap_or_else(|| panic!("no racer's name in {p}"))
        })
        .collect();
    let distinct: HashSet<&String> = names.iter().collect();
    assert_eq!(
        distinct.len(),
        RACERS,
        "every racer's update is its own event: {names:?}"
    );
    let (s, got) = app.get(&format!("/user_management/users/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got["first_name"].as_str(), names.last().map(String::as_str), "{got}");
    app.stop().await;
}

/// Every read-model table, as sorted text rows.
async fn snapshot(pool: &sqlx::PgPool) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for p in engine::ALL {
        for t in p.tables() {
            let rows: Vec<(String,)> = sqlx::query_as(&format!("select t::text from {t} t order by t::text"))
                .fetch_all(pool)
                .await
                .expect("snapshot");
            out.push((t.to_string(), rows.into_iter().map(|r| r.0).collect()));
        }
    }
    out
}

#[tokio::test]
async fn a_rebuild_equals_the_incrementally_built_read_models_row_for_row() {
    let mut app = TestApp::spawn().await;
    let mut users = Vec::new();
    for i in 0..15 {
        users.push(app.create_user(&format!("rb{i}@example.com")).await);
    }
    let org = app
        .create_organization("Rebuild Co", json!([{ "domain": "rebuild.example.com", "state": "pending" }, { "domain": "rb.example.org", "state": "verified" }]))
        .await;
    let org_id = org["id"].as_str().expect("id");
    for u in users.iter().take(5) {
        app.create_membership(u["id"].as_str().expect("id"), org_id, Some("admin"))
            .await;
    }
    let (s, _) = app
        .put(&format!("/organizations/{org_id}"), json!({ "name": "Rebuild Inc" }))
        .await;
    assert_eq!(s, StatusCode::OK);
    // The organization's policy (its own table of the organizations projection).
    let (s, _) = app
        .put(
            &format!("/organizations/{org_id}/policy"),
            json!({ "membership": "auto", "authentication": "sso_required" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .put(
            &format!("/user_management/users/{}", users[0]["id"].as_str().expect("id")),
            json!({ "last_name": "Z" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .delete(&format!(
            "/user_management/users/{}",
            users[1]["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(s, StatusCode::OK);
    // The sessions projection and the feed's authentication events: a sign-in into the
    // organization, one that fails, a refresh that switches nothing, a revocation.
    let (s, signer) = app
        .post(
            "/user_management/users",
            json!({ "email": "rb-signin@example.com", "password": "rebuild password", "email_verified": true }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{signer}");
    app.create_membership(signer["id"].as_str().expect("id"), org_id, Some("admin"))
        .await;
    let grant = |password: &str| {
        json!({ "grant_type": "password", "client_id": app.client_id(), "client_secret": app.key,
                "email": "rb-signin@example.com", "password": password })
    };
    for password in ["rebuild password", "wrong password", "rebuild password"] {
        app.request_with_key(
            reqwest::Method::POST,
            "/user_management/authenticate",
            Some(grant(password)),
            None,
        )
        .await;
    }
    let sessions = app
        .all_pages(&format!(
            "/user_management/users/{}/sessions?limit=100",
            signer["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    let (s, _) = app
        .post(
            "/user_management/sessions/revoke",
            json!({ "session_id": sessions[0]["id"] }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // The invitations projection: one accepted (with its membership), one revoked, one resent.
    let mut invitations = Vec::new();
    for email in ["rb-inv-1@example.com", "rb-inv-2@example.com", "rb-inv-3@example.com"] {
        let (s, inv) = app
            .post(
                "/user_management/invitations",
                json!({ "email": email, "organization_id": org_id, "role_slug": "admin" }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{inv}");
        invitations.push(inv["id"].as_str().expect("id").to_string());
    }
    for (id, op) in invitations.iter().zip(["accept", "revoke", "resend"]) {
        let (s, b) = app
            .post(&format!("/user_management/invitations/{id}/{op}"), json!({}))
            .await;
        assert_eq!(s, StatusCode::OK, "{op}: {b}");
    }
    // The connections projection: one changed and deactivated, one deleted, one draft.
    let mut connections = Vec::new();
    for secret in [Some("rb-secret"), Some("rb-secret-2"), None] {
        let mut oidc = json!({ "discovery_endpoint": "https://idp.example.com/.well-known/openid-configuration",
            "client_id": "rb" });
        if let Some(s) = secret {
            oidc["client_secret"] = json!(s);
        }
        let (s, c) = app
            .post(
                "/connections",
                json!({ "organization_id": org_id, "oidc_options": oidc }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{c}");
        connections.push(c["id"].as_str().expect("id").to_string());
    }
    let (s, b) = app
        .patch(
            &format!("/connections/{}", connections[0]),
            json!({ "name": "Rebuilt SSO", "state": "inactive" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = app.delete(&format!("/connections/{}", connections[1])).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    // The audit_logs projection: a schema, an audit event and an export.
    let (s, _) = app
        .post(
            "/audit_logs/actions/rb.done/schemas",
            json!({ "targets": [{ "type": "t" }] }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let audit = json!({ "organization_id": org_id, "event": { "action": "rb.done", "occurred_at": "2026-01-01T00:00:00Z",
        "actor": { "id": "u", "type": "user" }, "targets": [{ "id": "t1", "type": "t" }], "context": { "location": "x" } } });
    let (s, _) = app.post("/audit_logs/events", audit).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .post("/audit_logs/exports", json!({ "organization_id": org_id, "range_start": "2026-01-01T00:00:00Z", "range_end": "2026-02-01T00:00:00Z" }))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    // The webhooks projection: one endpoint created and changed, one created and deleted.
    let mut endpoints = Vec::new();
    for port in [9, 10] {
        let (s, e) = app
            .post(
                "/webhook_endpoints",
                json!({ "endpoint_url": format!("http://127.0.0.1:{port}/hook"), "events": ["user.created"] }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{e}");
        endpoints.push(e["id"].as_str().expect("id").to_string());
    }
    let (s, e) = app
        .patch(
            &format!("/webhook_endpoints/{}", endpoints[0]),
            json!({ "events": ["user.created", "user.deleted"], "status": "disabled" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{e}");
    let (s, _) = app.delete(&format!("/webhook_endpoints/{}", endpoints[1])).await;
    assert!(s.is_success(), "{s}");
    // An organization deleted with its domain (the domain's document goes with it).
    let gone = app
        .create_organization(
            "Gone Co",
            json!([{ "domain": "gone.example.com", "state": "verified" }]),
        )
        .await;
    let (s, _) = app
        .put(
            &format!("/organizations/{}/policy", gone["id"].as_str().expect("id")),
            json!({ "default_role": "admin" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .delete(&format!("/organizations/{}", gone["id"].as_str().expect("id")))
        .await;
    assert!(s.is_success(), "{s}");
    app.stop_workers_and_wait().await;

    let index_names = "select tablename || '.' || indexname from pg_indexes where schemaname = 'public' order by 1";
    let indexes_before: Vec<(String,)> = sqlx::query_as(index_names).fetch_all(&app.pool).await.expect("indexes");
    let policies = "select c.relname || ':' || c.relrowsecurity || ':' || c.relforcerowsecurity || ':' \
                    || coalesce(p.policyname, '') || ':' || coalesce(p.qual, '') \
                    from pg_class c join pg_namespace n on n.oid = c.relnamespace and n.nspname = 'public' \
                    left join pg_policies p on p.schemaname = 'public' and p.tablename = c.relname \
                    where c.relkind = 'r' order by 1";
    let policies_before: Vec<(String,)> = sqlx::query_as(policies).fetch_all(&app.pool).await.expect("policies");
    assert!(
        policies_before
            .iter()
            .any(|(p,)| p.starts_with("event_feed:true:true:tenant_wall")),
        "{policies_before:?}"
    );
    let before = snapshot(&app.pool).await;
    assert!(
        before.iter().all(|(_, rows)| !rows.is_empty()),
        "every table has rows to compare"
    );
    let same_as_before = |label: &'static str| {
        let (pool, before, indexes_before, policies_before) = (&app.pool, &before, &indexes_before, &policies_before);
        async move {
            let after = snapshot(pool).await;
            for ((t, b), (_, a)) in before.iter().zip(after.iter()) {
                assert_eq!(b, a, "table {t} differs after {label}");
            }
            let indexes_after: Vec<(String,)> = sqlx::query_as(index_names).fetch_all(pool).await.expect("indexes");
            assert_eq!(indexes_before, &indexes_after, "index names survive the swap ({label})");
            let policies_after: Vec<(String,)> = sqlx::query_as(policies).fetch_all(pool).await.expect("policies");
            assert_eq!(
                policies_before, &policies_after,
                "row-level security survives the swap ({label})"
            );
            for s in engine::status(pool).await.expect("status") {
                assert_eq!(s.behind, 0, "{} is caught up after {label}", s.name);
            }
        }
    };
    for p in engine::ALL {
        engine::rebuild(&app.pool, &p, |_, _| {}).await.expect("rebuild");
    }
    same_as_before("rebuilding each projection").await;
    // All together from one read of the log, as `projections rebuild` does.
    engine::rebuild_all(&app.pool, &engine::ALL, |_, _| {})
        .await
        .expect("rebuild all");
    same_as_before("rebuilding all at once").await;
    // Reading a few events at a time and writing documents out of memory after each read, as
    // on a log too large to fold in memory: they are loaded back, rewritten and deleted by
    // primary key.
    let spill = rebuild::Options {
        max_docs: 2,
        read_batch: 3,
    };
    rebuild::rebuild_with(&app.pool, &engine::ALL, &spill, |_, _| {})
        .await
        .expect("rebuild spilling documents");
    same_as_before("rebuilding with documents spilled").await;
}

struct Server {
    child: Child,
    base: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

async fn start_binary(db_url: &str, key: &str) -> Server {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_keyledger"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("DATABASE_URL", db_url)
        .env("KEYLEDGER_BOOTSTRAP_API_KEY", key)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn keyledger");
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/health")).await {
            if r.status() == StatusCode::OK {
                break;
            }
        }
        assert!(Instant::now() < deadline, "server did not become healthy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Server { child, base }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_killed_mid_load_and_mid_group_commit_loses_no_acknowledged_write_and_its_projections_converge() {
    let db_url = fresh_database().await;
    let key = "sk_test_crash_0123456789";
    let mut server = start_binary(&db_url, key).await;
    let http = reqwest::Client::new();
    // Every writer records every outcome: acknowledged ids, and anything else that happened
    // before the kill (a 5xx, a refusal, a transport error), which fails the test.
    let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let killed = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for w in 0..8 {
        let http = http.clone();
        let base = server.base.clone();
        let (acked, failures, killed) = (acked.clone(), failures.clone(), killed.clone());
        load.push(tokio::spawn(async move {
            for i in 0.. {
                let r = http
                    .post(format!("{base}/user_management/users"))
                    .bearer_auth(key)
                    .json(&json!({ "email": format!("crash-{w}-{i}@example.com") }))
                    .send()
                    .await;
                let failure = match r {
                    Ok(resp) if resp.status() == StatusCode::CREATED => {
                        let body: Value = resp.json().await.unwrap_or(Value::Null);
                        match body["id"].as_str() {
                            Some(id) => {
                                acked.lock().expect("lock").push(id.to_string());
                                continue;
                            }
                            None => format!("writer {w}: a 201 without an id: {body}"),
                        }
                    }
                    Ok(resp) => format!(
                        "writer {w}: {} {}",
                        resp.status(),
                        resp.text().await.unwrap_or_default()
                    ),
                    Err(e) => format!("writer {w}: {e}"),
                };
                // After the kill, connections fail: that ends the writer, and is expected.
                if !killed.load(Ordering::SeqCst) {
                    failures.lock().expect("lock").push(failure);
                }
                return;
            }
        }));
    }
    // Let the load run to 150 acknowledged writes, then kill without warning.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = acked.lock().expect("lock").len();
        let failed = failures.lock().expect("lock").clone();
        assert!(failed.is_empty(), "a write failed before the kill: {failed:?}");
        if n >= 150 {
            break;
        }
        assert!(Instant::now() < deadline, "only {n} writes acknowledged within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    killed.store(true, Ordering::SeqCst);
    server.child.kill().expect("SIGKILL");
    let _ = server.child.wait();
    for l in load {
        l.await.expect("writer");
    }
    let failed = failures.lock().expect("lock").clone();
    assert!(failed.is_empty(), "a write failed before the kill: {failed:?}");
    let acked: Vec<String> = acked.lock().expect("lock").clone();
    assert!(acked.len() >= 150, "{} acknowledged", acked.len());

    let mut server = start_binary(&db_url, key).await;
    let pool = keyledger_api::connect(&db_url).await.expect("connect");
    // Every acknowledged write is in the log ...
    let logged: HashSet<String> = sqlx::query_scalar("select aggregate_id from event where event_type = 'UserCreated'")
        .fetch_all(&pool)
        .await
        .expect("log")
        .into_iter()
        .collect();
    let missing: Vec<&String> = acked.iter().filter(|id| !logged.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged writes missing from the log: {missing:?}"
    );
    // Projections converge on the log: one row per created user, one feed event per log event.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (log_users,): (i64,) = sqlx::query_as("select count(*) from event where event_type = 'UserCreated'")
            .fetch_one(&pool)
            .await
            .expect("count");
        let (view,): (i64,) = sqlx::query_as("select count(*) from user_view")
            .fetch_one(&pool)
            .await
            .expect("count");
        let (feed,): (i64,) = sqlx::query_as("select count(*) from event_feed")
            .fetch_one(&pool)
            .await
            .expect("count");
        let (distinct,): (i64,) = sqlx::query_as("select count(distinct id) from event_feed")
            .fetch_one(&pool)
            .await
            .expect("count");
        if view == log_users && feed == log_users {
            assert_eq!(distinct, feed, "no feed event duplicated");
            assert!(log_users >= acked.len() as i64);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "projections did not converge: log {log_users}, view {view}, feed {feed}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ... and, once the projections have converged, served by the API.
    for id in &acked {
        let r = http
            .get(format!("{}/user_management/users/{id}", server.base))
            .bearer_auth(key)
            .send()
            .await
            .expect("get");
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "acknowledged user {id} is present after the restart"
        );
    }
    // The log after the crash: every aggregate's sequences are 1..n without gaps, event ids and
    // global positions are unique.
    let (gaps,): (i64,) = sqlx::query_as(
        "select count(*) from (select sequence, row_number() over \
         (partition by aggregate_type, aggregate_id order by sequence) as n from event) s \
         where sequence <> n",
    )
    .fetch_one(&pool)
    .await
    .expect("gaps");
    assert_eq!(gaps, 0, "an aggregate's sequences have a gap or a repeat");
    let (rows, positions, ids): (i64, i64, i64) =
        sqlx::query_as("select count(*), count(distinct position), count(distinct id) from event")
            .fetch_one(&pool)
            .await
            .expect("counts");
    assert_eq!((positions, ids), (rows, rows), "positions and ids are unique");
    // The load went through group commit: concurrent creates shared commits (so the kill hit
    // a server whose committers were batching).
    let (shared,): (i64,) = sqlx::query_as(
        "select count(*) from (select transaction_id from event group by transaction_id \
         having count(distinct aggregate_id) > 1) t",
    )
    .fetch_one(&pool)
    .await
    .expect("shared");
    assert!(shared > 0, "no two creates shared a commit");
    let _ = server.child.kill();
    let _ = server.child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_on_one_database_share_projections_and_one_takes_over_when_the_other_stops() {
    let first = TestApp::spawn().await;
    // Each projection (and the webhook dispatcher) has exactly one owner across both processes:
    // a session advisory lock (`lease_holders` fails on two holders of one). The first server
    // takes them all before the second starts, and keeps them.
    let keys = lease_keys();
    wait_leases_held_by(&first.pool, &keys, &first.name).await;
    let second = TestApp::spawn_on(first.db_url.clone()).await;
    // Writes through either server read their own writes.
    let a = second.create_user("via-second@example.com").await;
    let (s, body) = second
        .get(&format!("/user_management/users/{}", a["id"].as_str().expect("id")))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    // Stop the first: the second takes every lease over and keeps projecting.
    let held = lease_holders(&second.pool, &keys).await;
    assert!(
        held.iter().all(|(_, h)| h.as_deref() == Some(first.name.as_str())),
        "the first server holds every lease before it stops: {held:?}"
    );
    first.stop().await;
    wait_leases_held_by(&second.pool, &keys, &second.name).await;
    let b = second.create_user("after-takeover@example.com").await;
    let (s, body) = second
        .get(&format!("/user_management/users/{}", b["id"].as_str().expect("id")))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let events = second.all_events("&events=user.created").await;
    assert_eq!(events.len(), 2, "both sign-ups are in the feed");
    second.stop().await;
}

#[tokio::test]
async fn with_a_tenant_set_the_per_organization_read_models_show_only_that_tenants_rows() {
    let mut app = TestApp::spawn().await;
    let user = app.create_user("wall@example.com").await;
    let a = app
        .create_organization("Tenant A", json!([{ "domain": "a.example.com", "state": "pending" }]))
        .await;
    let b = app
        .create_organization("Tenant B", json!([{ "domain": "b.example.com", "state": "pending" }]))
        .await;
    let (a, b) = (id_of(&a), id_of(&b));
    app.create_membership(&id_of(&user), &a, None).await;
    app.create_membership(&id_of(&user), &b, None).await;
    app.stop_workers_and_wait().await;

    for (table, total) in [("organization_membership_view", 2), ("organization_domain_view", 2)] {
        let (n,): (i64,) = sqlx::query_as(&format!("select count(*) from {table}"))
            .fetch_one(&app.pool)
            .await
            .expect("count");
        assert_eq!(n, total, "{table}: without a tenant every row is visible");
        let mut tx = app.pool.begin().await.expect("begin");
        sqlx::query(keyledger_projections::queries::SCOPE)
            .bind(&a)
            .execute(&mut *tx)
            .await
            .expect("scope");
        // No filter in the query: the policy alone keeps tenant B out.
        let orgs: Vec<(String,)> = sqlx::query_as(&format!("select distinct organization_id from {table}"))
            .fetch_all(&mut *tx)
            .await
            .expect("rows");
        assert_eq!(
            orgs,
            vec![(a.clone(),)],
            "{table}: only tenant A is visible to tenant A"
        );
        tx.rollback().await.expect("rollback");
    }
    let mut tx = app.pool.begin().await.expect("begin");
    sqlx::query(keyledger_projections::queries::SCOPE)
        .bind(&b)
        .execute(&mut *tx)
        .await
        .expect("scope");
    let feed: Vec<(Option<String>,)> = sqlx::query_as("select distinct organization_id from event_feed")
        .fetch_all(&mut *tx)
        .await
        .expect("rows");
    assert_eq!(
        feed,
        vec![(Some(b.clone()),)],
        "the feed shows tenant B only its own events"
    );
}

#[tokio::test]
async fn a_create_on_an_id_that_exists_after_all_is_refused_as_a_conflict_and_changes_nothing() {
    let url = fresh_database().await;
    let pool = keyledger_api::connect(&url).await.expect("connect");
    let bus = CommandBus::new(EventStore::new(pool.clone()));
    let id = new_id("user");
    bus.execute::<User>(
        &id,
        create_user_command("first@example.com"),
        &HashMap::new(),
        SideRows::default(),
        Mode::New,
    )
    .await
    .expect("first create");
    let again = bus
        .execute::<User>(
            &id,
            create_user_command("second@example.com"),
            &HashMap::new(),
            SideRows::default(),
            Mode::New,
        )
        .await;
    assert!(
        matches!(again, Err(keyledger_store::commands::CommandError::Conflict)),
        "a second create on the same id is a conflict: {again:?}"
    );
    let (events,): (i64,) = sqlx::query_as("select count(*) from event")
        .fetch_one(&pool)
        .await
        .expect("count");
    let (claims,): (i64,) = sqlx::query_as("select count(*) from claim")
        .fetch_one(&pool)
        .await
        .expect("count");
    // The first create's claims: its email and its liveness (`live_user`).
    assert_eq!(
        (events, claims),
        (1, 2),
        "the refused create left no event and no claim"
    );
}

#[tokio::test]
async fn a_projection_behind_more_than_a_batch_of_other_events_catches_up() {
    // Regression: a worker that skipped over more than one batch (500) of events it ignores, and
    // then met one of its own, went back to its saved checkpoint and skipped again, forever.
    let mut app = TestApp::spawn().await;
    let names: Vec<String> = (0..620).map(|i| format!("Batch Org {i}")).collect();
    futures::future::join_all(names.chunks(20).map(|chunk| {
        let app = &app;
        async move {
            for n in chunk {
                app.create_organization(n, json!([])).await;
            }
        }
    }))
    .await;
    let user = app.create_user("after-the-batch@example.com").await;
    let user_id = id_of(&user);
    let db_url = app.db_url.clone();
    app.stop_workers_and_wait().await;
    // Replay `users` from the start: 620 organization events come before its only event.
    sqlx::query("update projection_checkpoint set transaction_id = '0', position = 0 where name = 'users'")
        .execute(&app.pool)
        .await
        .expect("reset the checkpoint");
    sqlx::query("delete from user_view")
        .execute(&app.pool)
        .await
        .expect("clear users");
    let app = TestApp::spawn_on(db_url).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (s, body) = app.get(&format!("/user_management/users/{user_id}")).await;
        if s == StatusCode::OK {
            assert_eq!(body["email"], "after-the-batch@example.com");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the users projection never got past the organizations' events: {s} {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn lag_counts_can_stop_at_a_cap_and_are_exact_below_it() {
    let mut app = TestApp::spawn().await;
    for i in 0..5 {
        app.create_user(&format!("lag{i}@example.com")).await;
    }
    app.stop_workers_and_wait().await;
    assert_eq!(log::count_after(&app.pool, LogPosition::START).await.expect("count"), 5);
    assert_eq!(
        log::count_after_at_most(&app.pool, LogPosition::START, 3)
            .await
            .expect("count"),
        3
    );
    assert_eq!(
        log::count_after_at_most(&app.pool, LogPosition::START, 10)
            .await
            .expect("count"),
        5
    );
    use keyledger_projections::feed::{self, FeedCursor, FeedFilter};
    let all = FeedFilter::default();
    assert_eq!(
        feed::count_after(&app.pool, FeedCursor::START, &all)
            .await
            .expect("count"),
        5
    );
    assert_eq!(
        feed::count_after_at_most(&app.pool, FeedCursor::START, &all, 2)
            .await
            .expect("count"),
        2
    );
    let none = FeedFilter {
        events: Some(vec!["user.deleted".into()]),
        organization_id: None,
    };
    assert_eq!(
        feed::count_after_at_most(&app.pool, FeedCursor::START, &none, 2)
            .await
            .expect("count"),
        0
    );
}

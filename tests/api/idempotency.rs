//! Tests: `Idempotency-Key` on the management API's writes (docs/API.md): a repeat replays the
//! first response without a second command, another request with the key is refused, racing
//! repeats run the command once, keys belong to their API key and expire after 24 hours, and only
//! successes and deterministic 4xx are replayed.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

/// A request's answer: status, JSON body and whether it was a replay.
type Answer = (StatusCode, Value, bool);

async fn send(app: &TestApp, api_key: &str, method: Method, path: &str, key: Option<&str>, body: &Value) -> Answer {
    let mut req = app
        .http
        .request(method, format!("{}{path}", app.base))
        .bearer_auth(api_key)
        .json(body);
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status();
    let replayed = resp.headers().get("idempotent-replayed").is_some();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, body, replayed)
}

async fn with_key(app: &TestApp, method: Method, path: &str, key: &str, body: &Value) -> Answer {
    send(app, &app.key, method, path, Some(key), body).await
}

#[tokio::test]
async fn a_repeated_post_replays_the_first_response_and_appends_nothing() {
    let app = TestApp::spawn().await;
    let user = id_of(&app.create_user("member@example.com").await);
    let org = id_of(&app.create_organization("Base", json!([])).await);
    let cases = [
        ("/user_management/users", json!({ "email": "ann@example.com" })),
        ("/organizations", json!({ "name": "Acme" })),
        (
            "/user_management/organization_memberships",
            json!({ "user_id": user, "organization_id": org }),
        ),
        (
            "/organization_domains",
            json!({ "domain": "acme.example", "organization_id": org }),
        ),
    ];
    for (path, body) in cases {
        let key = format!("create {path}");
        let first = with_key(&app, Method::POST, path, &key, &body).await;
        assert_eq!((first.0, first.2), (StatusCode::CREATED, false), "{path}: {first:?}");
        let log = app.log_len().await;
        let again = with_key(&app, Method::POST, path, &key, &body).await;
        assert_eq!((again.0, &again.1), (first.0, &first.1), "{path}: the same answer");
        assert!(again.2, "{path}: marked as a replay");
        assert_eq!(app.log_len().await, log, "{path}: no second command");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_repeated_put_replays_the_first_response_even_after_a_later_change() {
    let app = TestApp::spawn().await;
    let user = id_of(&app.create_user("ann@example.com").await);
    let org = id_of(&app.create_organization("Acme", json!([])).await);
    let member = id_of(&app.create_membership(&user, &org, None).await);
    let cases = [
        (
            format!("/user_management/users/{user}"),
            json!({ "first_name": "Ann" }),
            json!({ "first_name": "Later" }),
        ),
        (
            format!("/organizations/{org}"),
            json!({ "name": "Acme 2" }),
            json!({ "name": "Later" }),
        ),
        (
            format!("/user_management/organization_memberships/{member}"),
            json!({ "role_slug": "admin" }),
            json!({ "role_slug": "member" }),
        ),
    ];
    for (path, body, later) in cases {
        let key = format!("put {path}");
        let first = with_key(&app, Method::PUT, &path, &key, &body).await;
        assert_eq!(first.0, StatusCode::OK, "{path}: {first:?}");
        let (s, changed) = app.put(&path, later).await;
        assert_eq!(s, StatusCode::OK, "{changed}");
        let log = app.log_len().await;
        let again = with_key(&app, Method::PUT, &path, &key, &body).await;
        assert_eq!((again.0, &again.1, again.2), (first.0, &first.1, true), "{path}");
        assert_eq!(app.log_len().await, log, "{path}: not applied again");
        assert_ne!(app.get(&path).await.1, first.1, "{path}: the later change stands");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_same_key_with_another_body_path_or_method_is_refused_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let body = json!({ "name": "Acme" });
    let first = with_key(&app, Method::POST, "/organizations", "k", &body).await;
    assert_eq!(first.0, StatusCode::CREATED);
    let org = id_of(&first.1);
    let log = app.log_len().await;
    let others = [
        (Method::POST, "/organizations".to_string(), json!({ "name": "Other" })),
        (Method::POST, "/user_management/users".to_string(), body.clone()),
        (Method::PUT, format!("/organizations/{org}"), body.clone()),
    ];
    for (method, path, other) in others {
        let (s, b, _) = with_key(&app, method.clone(), &path, "k", &other).await;
        assert_error(
            s,
            &b,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters/idempotency_key_reused",
            &format!("{method} {path}"),
        );
        assert_eq!(app.log_len().await, log);
    }
    // The first request still replays.
    assert_eq!(
        with_key(&app, Method::POST, "/organizations", "k", &body).await,
        (first.0, first.1, true)
    );
    // A bad key is refused before anything runs.
    for bad in ["k".repeat(256), "tab\there".to_string()] {
        let (s, b, _) = with_key(&app, Method::POST, "/organizations", &bad, &json!({ "name": "Bad" })).await;
        assert_error(
            s,
            &b,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters/invalid_idempotency_key",
            &bad,
        );
    }
    assert_eq!(app.log_len().await, log);
    app.stop().await;
}

#[tokio::test]
async fn organization_create_honours_idempotency_key_in_its_body() {
    let app = TestApp::spawn().await;
    let body = json!({ "name": "Acme", "idempotency_key": "in-body" });
    let first = send(&app, &app.key, Method::POST, "/organizations", None, &body).await;
    assert_eq!((first.0, first.2), (StatusCode::CREATED, false), "{first:?}");
    let log = app.log_len().await;
    let again = send(&app, &app.key, Method::POST, "/organizations", None, &body).await;
    assert_eq!((again.0, again.1, again.2), (first.0, first.1, true));
    assert_eq!(app.log_len().await, log);
    let other = json!({ "name": "Other", "idempotency_key": "in-body" });
    let (s, b, _) = send(&app, &app.key, Method::POST, "/organizations", None, &other).await;
    assert_error(
        s,
        &b,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request_parameters/idempotency_key_reused",
        "body key",
    );
    let (s, b, _) = send(
        &app,
        &app.key,
        Method::POST,
        "/organizations",
        None,
        &json!({ "name": "Bad", "idempotency_key": 5 }),
    )
    .await;
    assert_error(
        s,
        &b,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request_parameters/invalid_idempotency_key",
        "number key",
    );
    assert_eq!(app.log_len().await, log);
    app.stop().await;
}

#[tokio::test]
async fn eight_concurrent_requests_with_one_key_run_the_command_once() {
    let app = TestApp::spawn().await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (http, base, key) = (app.http.clone(), app.base.clone(), app.key.clone());
        tasks.push(tokio::spawn(async move {
            let resp = http
                .post(format!("{base}/organizations"))
                .bearer_auth(key)
                .header("idempotency-key", "one-key")
                .json(&json!({ "name": "Racers", "domain_data": [{ "domain": "racers.example", "state": "pending" }] }))
                .send()
                .await
                .expect("send");
            let s = resp.status();
            (s, resp.json::<Value>().await.unwrap_or(Value::Null))
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.expect("join"));
    }
    for a in &answers {
        assert_eq!(a, &answers[0], "every racer gets the one answer");
    }
    assert_eq!(answers[0].0, StatusCode::CREATED, "{:?}", answers[0]);
    let (n,): (i64,) = sqlx::query_as("select count(*) from event where event_type = 'OrganizationCreated'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(n, 1, "exactly one organization in the log");
    app.stop().await;
}

#[tokio::test]
async fn keys_expire_after_24_hours_and_the_sweep_deletes_them() {
    let app = TestApp::spawn().await;
    let body = json!({ "name": "Acme" });
    let first = with_key(&app, Method::POST, "/organizations", "old", &body).await;
    let age = |hours: i32| {
        sqlx::query("update idempotency_key set created_at = now() - make_interval(hours => $1)")
            .bind(hours)
            .execute(&app.pool)
    };
    age(23).await.expect("age");
    assert_eq!(keyledger_api::idempotency::sweep(&app.pool).await.expect("sweep"), 0);
    let again = with_key(&app, Method::POST, "/organizations", "old", &body).await;
    assert_eq!(
        (again.0, again.1, again.2),
        (first.0, first.1.clone(), true),
        "within 24 hours"
    );
    age(25).await.expect("age");
    assert_eq!(keyledger_api::idempotency::sweep(&app.pool).await.expect("sweep"), 1);
    let (rows,): (i64,) = sqlx::query_as("select count(*) from idempotency_key")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(rows, 0, "the sweep deleted the key");
    // Expired: the key is free for any request.
    let other = with_key(&app, Method::POST, "/organizations", "old", &json!({ "name": "New" })).await;
    assert_eq!((other.0, other.2), (StatusCode::CREATED, false), "{other:?}");
    assert_ne!(id_of(&other.1), id_of(&first.1));
    app.stop().await;
}

#[tokio::test]
async fn keys_belong_to_the_api_key_that_sent_them() {
    let app = TestApp::spawn().await;
    let second = keyledger_api::auth::create_key(&app.pool, "second").await.expect("key");
    let body = json!({ "name": "Acme" });
    let a = send(&app, &app.key, Method::POST, "/organizations", Some("shared"), &body).await;
    let b = send(&app, &second, Method::POST, "/organizations", Some("shared"), &body).await;
    assert_eq!((a.0, b.0, b.2), (StatusCode::CREATED, StatusCode::CREATED, false));
    assert_ne!(id_of(&a.1), id_of(&b.1), "two API keys, two organizations");
    let b_again = send(&app, &second, Method::POST, "/organizations", Some("shared"), &body).await;
    assert_eq!((b_again.1, b_again.2), (b.1, true));
    app.stop().await;
}

#[tokio::test]
async fn deterministic_4xx_are_replayed_but_conflicts_and_5xx_are_not() {
    let app = TestApp::spawn().await;
    // 404 and 422: the same request would fail the same way, so the answer is kept.
    let unknown = json!({ "domain": "x.example", "organization_id": "org_unknown" });
    let bad_email = json!({ "email": "not an email" });
    let rename = json!({ "name": "Renamed" });
    for (method, path, body, status) in [
        (Method::POST, "/organization_domains", &unknown, StatusCode::NOT_FOUND),
        (
            Method::POST,
            "/user_management/users",
            &bad_email,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::PUT,
            "/organizations/org_unknown",
            &rename,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::PUT,
            "/user_management/users/user_unknown",
            &bad_email,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let first = with_key(&app, method.clone(), path, path, body).await;
        assert_eq!((first.0, first.2), (status, false), "{first:?}");
        let again = with_key(&app, method, path, path, body).await;
        assert_eq!((again.0, again.1, again.2), (first.0, first.1, true), "{path}");
    }
    // 409 (a claim held by another object) is not kept: once the holder is gone, the retry runs.
    let holder = id_of(
        &app.post("/organizations", json!({ "name": "Holder", "external_id": "ext-1" }))
            .await
            .1,
    );
    let body = json!({ "name": "Second", "external_id": "ext-1" });
    let first = with_key(&app, Method::POST, "/organizations", "conflict", &body).await;
    assert_eq!((first.0, first.2), (StatusCode::CONFLICT, false), "{first:?}");
    assert_eq!(app.delete(&format!("/organizations/{holder}")).await.0, StatusCode::OK);
    let retry = with_key(&app, Method::POST, "/organizations", "conflict", &body).await;
    assert_eq!((retry.0, retry.2), (StatusCode::CREATED, false), "{retry:?}");
    // 500 is not kept either: a storage failure (here a constraint that refuses the event).
    sqlx::query("alter table event add constraint refuse_users check (event_type <> 'UserCreated') not valid")
        .execute(&app.pool)
        .await
        .expect("constraint");
    let body = json!({ "email": "ann@example.com" });
    let failed = with_key(&app, Method::POST, "/user_management/users", "five", &body).await;
    assert_eq!(
        (failed.0, failed.2),
        (StatusCode::INTERNAL_SERVER_ERROR, false),
        "{failed:?}"
    );
    sqlx::query("alter table event drop constraint refuse_users")
        .execute(&app.pool)
        .await
        .expect("drop");
    let retry = with_key(&app, Method::POST, "/user_management/users", "five", &body).await;
    assert_eq!((retry.0, retry.2), (StatusCode::CREATED, false), "{retry:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_key_whose_command_committed_without_a_stored_response_is_never_run_again() {
    let app = TestApp::spawn().await;
    let body = json!({ "name": "Acme" });
    assert_eq!(
        with_key(&app, Method::POST, "/organizations", "lost", &body).await.0,
        StatusCode::CREATED
    );
    // What a crash between the append's commit and storing the response leaves behind.
    let (state,): (String,) = sqlx::query_as(
        "update idempotency_key set state = 'committed', status = null, body = null, \
         leased_until = now() - interval '1 second' returning state",
    )
    .fetch_one(&app.pool)
    .await
    .expect("simulate");
    assert_eq!(state, "committed");
    let log = app.log_len().await;
    let (s, b, _) = with_key(&app, Method::POST, "/organizations", "lost", &body).await;
    assert_error(
        s,
        &b,
        StatusCode::CONFLICT,
        "idempotency_response_lost",
        "committed, no response",
    );
    assert_eq!(app.log_len().await, log, "not run again");
    app.stop().await;
}

#[tokio::test]
async fn an_append_whose_reservation_was_taken_over_is_refused() {
    let app = TestApp::spawn().await;
    let body = json!({ "name": "Acme" });
    // A first request that reserved the key and then stalled past its lease, simulated by a row
    // with a lapsed lease: the repeat takes the key over and runs the command itself.
    let first = with_key(&app, Method::POST, "/organizations", "taken", &body).await;
    sqlx::query("update idempotency_key set state = 'running', leased_until = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .expect("lapse");
    let (owner,): (String,) = sqlx::query_as("select owner from idempotency_key")
        .fetch_one(&app.pool)
        .await
        .expect("owner");
    let again = with_key(&app, Method::POST, "/organizations", "taken", &body).await;
    assert_eq!((again.0, again.2), (StatusCode::CREATED, false), "{again:?}");
    assert_ne!(id_of(&again.1), id_of(&first.1));
    let (now_owner,): (String,) = sqlx::query_as("select owner from idempotency_key")
        .fetch_one(&app.pool)
        .await
        .expect("owner");
    assert_ne!(owner, now_owner, "the repeat owns the key");
    assert_rejected_append_with_fence(&app, &owner).await;
    app.stop().await;
}

/// The stalled first request's append, made now with its old fence: refused, nothing appended.
async fn assert_rejected_append_with_fence(app: &TestApp, owner: &str) {
    use keyledger_store::append::{IdempotencyFence, SideRows};
    let (scope,): (String,) = sqlx::query_as("select scope from idempotency_key")
        .fetch_one(&app.pool)
        .await
        .expect("scope");
    let bus = keyledger_store::commands::CommandBus::new(keyledger_store::EventStore::new(app.pool.clone()));
    let extras = SideRows {
        idempotency: Some(IdempotencyFence {
            scope,
            key: "taken".into(),
            owner: owner.to_string(),
        }),
        ..Default::default()
    };
    let log = app.log_len().await;
    let r = bus
        .execute::<keyledger_domain::organization::Organization>(
            &keyledger_domain::ids::new_id("org"),
            keyledger_domain::organization::OrganizationCommand::Create {
                name: "Stalled".into(),
                external_id: None,
                metadata: Default::default(),
                allow_profiles_outside_organization: false,
                domains: Vec::new(),
                at: chrono::Utc::now(),
            },
            &Default::default(),
            extras,
            keyledger_store::commands::Mode::New,
        )
        .await;
    assert!(
        matches!(&r, Err(keyledger_store::commands::CommandError::Claim(c)) if c.kind == keyledger_store::append::IDEMPOTENCY_KEY),
        "{r:?}"
    );
    assert_eq!(app.log_len().await, log, "the stalled append left nothing");
}

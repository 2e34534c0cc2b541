//! Audit logs: ingesting audit events (idempotency, schemas), the organization's trail (its audit
//! events merged with keyledger's change events, behind the tenant wall), exports with
//! short-lived download links, and the CLI export.

use std::process::Command;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_error, assert_rejected, id_of, ids, TestApp};

fn event(org: &str, action: &str, actor: &str, target_type: &str, occurred_at: &str) -> Value {
    json!({
        "organization_id": org,
        "event": {
            "action": action,
            "occurred_at": occurred_at,
            "actor": { "id": actor, "type": "user", "name": format!("Name of {actor}") },
            "targets": [{ "id": format!("{target_type}_1"), "type": target_type }],
            "context": { "location": "203.0.113.7", "user_agent": "Tests/1.0" },
            "metadata": { "k": "v" },
        }
    })
}

async fn post_event(app: &TestApp, body: Value) {
    let (s, b) = app.post("/audit_logs/events", body).await;
    assert_eq!(s, StatusCode::OK, "create audit event: {b}");
    assert_eq!(b, json!({ "success": true }));
}

async fn post_with_key(app: &TestApp, key: &str, body: &Value) -> (StatusCode, Value) {
    let resp = app
        .http
        .post(format!("{}/audit_logs/events", app.base))
        .bearer_auth(&app.key)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .expect("send");
    let s = resp.status();
    (s, resp.json().await.unwrap_or(Value::Null))
}

async fn org(app: &TestApp, name: &str) -> String {
    id_of(&app.create_organization(name, json!([])).await)
}

/// The organization's trail, oldest first, following `after` cursors.
async fn trail(app: &TestApp, org: &str, query: &str) -> Vec<Value> {
    app.all_pages(&format!(
        "/audit_logs/events?organization_id={org}&limit=100&order=asc{query}"
    ))
    .await
}

fn actions(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["action"].as_str().unwrap_or_default().to_string())
        .collect()
}

async fn audit_rows(app: &TestApp) -> i64 {
    let (n,): (i64,) = sqlx::query_as("select count(*) from event where aggregate_type = 'AuditLogEvent'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    n
}

#[tokio::test]
async fn an_audit_event_is_stored_in_the_log_as_the_organizations_and_read_back() {
    let app = TestApp::spawn().await;
    let org = org(&app, "Acme").await;
    let before = app.log_len().await;
    post_event(
        &app,
        event(&org, "invoice.paid", "user_1", "invoice", "2026-01-02T03:04:05.678Z"),
    )
    .await;
    assert_eq!(app.log_len().await, before + 1, "one event appended");
    let (agg, event_org, event_type): (String, Option<String>, String) =
        sqlx::query_as("select aggregate_type, organization_id, event_type from event order by position desc limit 1")
            .fetch_one(&app.pool)
            .await
            .expect("row");
    assert_eq!(
        (agg.as_str(), event_org.as_deref(), event_type.as_str()),
        ("AuditLogEvent", Some(org.as_str()), "AuditLogEventCreated")
    );
    let got = trail(&app, &org, "&actions=invoice.paid").await;
    assert_eq!(got.len(), 1, "{got:?}");
    let e = &got[0];
    assert!(
        e["id"].as_str().is_some_and(|i| i.starts_with("audit_log_event_")),
        "{e}"
    );
    assert_eq!(e["object"], "audit_log_event");
    assert_eq!(e["occurred_at"], "2026-01-02T03:04:05.678Z");
    assert_eq!(
        e["actor"],
        json!({ "id": "user_1", "type": "user", "name": "Name of user_1" })
    );
    assert_eq!(
        e["targets"],
        json!([{ "id": "invoice_1", "type": "invoice", "name": null }])
    );
    assert_eq!(
        e["context"],
        json!({ "location": "203.0.113.7", "user_agent": "Tests/1.0" })
    );
    assert_eq!(e["metadata"], json!({ "k": "v" }));
    assert_eq!(e["version"], 1);
    // Audit events are not WorkOS Events.
    let events = app.all_events("").await;
    assert!(
        events
            .iter()
            .all(|e| !e["event"].as_str().unwrap_or_default().starts_with("invoice")),
        "GET /events is unchanged: {events:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_trail_filters_by_action_actor_target_type_and_range_in_every_list_form() {
    let app = TestApp::spawn().await;
    let org = org(&app, "Filters").await;
    post_event(&app, event(&org, "a.one", "u1", "team", "2026-01-01T00:00:00Z")).await;
    post_event(&app, event(&org, "a.two", "u2", "invoice", "2026-02-01T00:00:00Z")).await;
    post_event(&app, event(&org, "a.three", "u3", "doc", "2026-03-01T00:00:00Z")).await;
    let audit_only = "&actions=a.one,a.two,a.three";
    let cases: &[(&str, &[&str])] = &[
        ("&actions=a.one,a.three", &["a.one", "a.three"]),
        ("&actions=a.one&actions=a.two", &["a.one", "a.two"]),
        ("&actions[]=a.two&actions[]=a.three", &["a.two", "a.three"]),
        ("&actor_ids=u2", &["a.two"]),
        ("&actor_ids[]=u1&actor_ids[]=u3", &["a.one", "a.three"]),
        ("&targets=invoice,doc", &["a.two", "a.three"]),
        ("&targets=team&targets=doc", &["a.one", "a.three"]),
        ("&range_start=2026-02-01T00:00:00Z", &["a.two", "a.three"]),
        ("&range_end=2026-02-01T00:00:00Z", &["a.one"]),
        (
            "&range_start=2026-01-15T00:00:00Z&range_end=2026-02-15T00:00:00Z",
            &["a.two"],
        ),
    ];
    for (q, want) in cases {
        let query = if q.contains("actions") {
            q.to_string()
        } else {
            format!("{audit_only}{q}")
        };
        let got = trail(&app, &org, &query).await;
        assert_eq!(actions(&got), *want, "filter {q}");
    }
    // The organization's creation is in the unfiltered trail, before its audit events.
    assert_eq!(
        actions(&trail(&app, &org, "").await),
        ["organization.created", "a.one", "a.two", "a.three"]
    );
    app.stop().await;
}

#[tokio::test]
async fn the_trail_pages_both_ways_in_every_order() {
    let app = TestApp::spawn().await;
    let org = org(&app, "Pages").await;
    for i in 0..5 {
        post_event(&app, event(&org, &format!("p.{i}"), "u", "t", "2026-01-01T00:00:00Z")).await;
    }
    let all = trail(&app, &org, "").await;
    let all_ids: Vec<String> = all.iter().map(id_of).collect();
    assert_eq!(all_ids.len(), 6, "organization.created and five audit events");
    let org = org.as_str();
    let page = |q: String| {
        let app = &app;
        async move {
            let (s, b) = app
                .get(&format!("/audit_logs/events?organization_id={org}&limit=2{q}"))
                .await;
            assert_eq!(s, StatusCode::OK, "{q}: {b}");
            b
        }
    };
    // asc: forwards with `after`, backwards with `before`.
    let p1 = page("&order=asc".into()).await;
    assert_eq!(ids(&p1), all_ids[0..2]);
    assert_eq!(p1["list_metadata"]["before"], Value::Null);
    let p2 = page(format!("&order=asc&after={}", all_ids[1])).await;
    assert_eq!(ids(&p2), all_ids[2..4]);
    let back = page(format!("&order=asc&before={}", all_ids[4])).await;
    assert_eq!(ids(&back), all_ids[2..4]);
    assert_eq!(back["list_metadata"]["before"].as_str(), Some(all_ids[2].as_str()));
    // desc (the default): newest first.
    let d1 = page(String::new()).await;
    assert_eq!(ids(&d1), vec![all_ids[5].clone(), all_ids[4].clone()]);
    let d2 = page(format!("&after={}", all_ids[4])).await;
    assert_eq!(ids(&d2), vec![all_ids[3].clone(), all_ids[2].clone()]);
    let last = page(format!("&after={}", all_ids[2])).await;
    assert_eq!(ids(&last), vec![all_ids[1].clone(), all_ids[0].clone()]);
    assert_eq!(last["list_metadata"]["after"], Value::Null, "end of the list");
    // normal: newest first, `before` goes to older records.
    let n = page(format!("&order=normal&before={}", all_ids[4])).await;
    assert_eq!(ids(&n), vec![all_ids[3].clone(), all_ids[2].clone()]);
    app.stop().await;
}

#[tokio::test]
async fn change_events_of_the_organization_appear_with_their_api_key_and_targets() {
    let app = TestApp::spawn().await;
    let org = org(&app, "Changes").await;
    let user = app.create_user("member@example.com").await;
    let m = app.create_membership(&id_of(&user), &org, None).await;
    let (s, _) = app
        .put(&format!("/organizations/{org}"), json!({ "name": "Changed" }))
        .await;
    assert_eq!(s, StatusCode::OK);
    let got = trail(&app, &org, "").await;
    assert_eq!(
        actions(&got),
        [
            "organization.created",
            "organization_membership.created",
            "organization.updated"
        ]
    );
    let key_id: (String,) = sqlx::query_as("select id from api_key limit 1")
        .fetch_one(&app.pool)
        .await
        .expect("key");
    for e in &got {
        assert!(e["id"].as_str().is_some_and(|i| i.starts_with("event_")), "{e}");
        assert_eq!(e["object"], "audit_log_event");
        assert_eq!(e["actor"]["id"].as_str(), Some(key_id.0.as_str()), "{e}");
        assert_eq!(e["actor"]["type"], "api_key", "{e}");
        assert_eq!(e["actor"]["name"], "tests", "{e}");
        assert_eq!(e["context"]["location"], "127.0.0.1", "{e}");
    }
    assert_eq!(
        got[1]["targets"],
        json!([
            { "id": id_of(&m), "type": "organization_membership", "name": null },
            { "id": id_of(&user), "type": "user", "name": null },
            { "id": org, "type": "organization", "name": "Changes" },
        ])
    );
    assert_eq!(got[2]["targets"][0]["name"], "Changed");
    // Target and actor filters apply to change events too.
    assert_eq!(
        actions(&trail(&app, &org, "&targets=user").await),
        ["organization_membership.created"]
    );
    assert_eq!(trail(&app, &org, &format!("&actor_ids={}", key_id.0)).await.len(), 3);
    app.stop().await;
}

#[tokio::test]
async fn one_organizations_trail_never_shows_another_organizations_events() {
    let app = TestApp::spawn().await;
    let a = org(&app, "Tenant A").await;
    let b = org(&app, "Tenant B").await;
    post_event(&app, event(&a, "a.did", "u", "t", "2026-01-01T00:00:00Z")).await;
    post_event(&app, event(&b, "b.did", "u", "t", "2026-01-01T00:00:00Z")).await;
    let user = app.create_user("b@example.com").await;
    app.create_membership(&id_of(&user), &b, None).await;
    let trail_a = trail(&app, &a, "").await;
    assert_eq!(actions(&trail_a), ["organization.created", "a.did"]);
    let trail_b = trail(&app, &b, "").await;
    assert_eq!(
        actions(&trail_b),
        ["organization.created", "b.did", "organization_membership.created"]
    );
    // Another tenant's event id is no cursor here.
    for cursor in ids(&json!({ "data": trail_b })) {
        let (s, body) = app
            .get(&format!("/audit_logs/events?organization_id={a}&after={cursor}"))
            .await;
        assert_error(
            s,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters/invalid_cursor",
            "foreign cursor",
        );
    }
    // An unknown organization has an empty trail.
    assert!(trail(&app, "org_unknown", "").await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_repeated_idempotency_key_returns_the_same_response_and_appends_once() {
    let app = TestApp::spawn().await;
    let a = org(&app, "Idem A").await;
    let b = org(&app, "Idem B").await;
    let body = event(&a, "idem.once", "u", "t", "2026-01-01T00:00:00Z");
    let first = post_with_key(&app, "key-1", &body).await;
    assert_eq!(first, (StatusCode::OK, json!({ "success": true })));
    let before = app.log_len().await;
    let again = post_with_key(&app, "key-1", &body).await;
    assert_eq!(again, first, "a repeat answers the same");
    assert_eq!(app.log_len().await, before, "a repeat appends nothing");
    // The same key with another body is refused and changes nothing.
    let other = event(&a, "idem.other", "u", "t", "2026-01-01T00:00:00Z");
    let (s, resp) = post_with_key(&app, "key-1", &other).await;
    assert_error(
        s,
        &resp,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request_parameters/idempotency_key_reused",
        "other body",
    );
    assert_eq!(app.log_len().await, before);
    // Keys belong to the API key (one mechanism for every write, docs/API.md): the same key for
    // another organization is another request, refused; another key appends.
    let for_b = event(&b, "idem.once", "u", "t", "2026-01-01T00:00:00Z");
    let (s, resp) = post_with_key(&app, "key-1", &for_b).await;
    assert_error(
        s,
        &resp,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request_parameters/idempotency_key_reused",
        "other organization",
    );
    let (s, _) = post_with_key(&app, "key-2", &for_b).await;
    assert_eq!(s, StatusCode::OK);
    post_event(&app, body.clone()).await;
    post_event(&app, body).await;
    assert_eq!(audit_rows(&app).await, 4);
    assert_eq!(trail(&app, &a, "&actions=idem.once").await.len(), 3);
    app.stop().await;
}

#[tokio::test]
async fn concurrent_requests_with_one_idempotency_key_append_exactly_once() {
    let app = TestApp::spawn().await;
    let a = org(&app, "Racers").await;
    let body = event(&a, "race", "u", "t", "2026-01-01T00:00:00Z");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (http, base, key, body) = (app.http.clone(), app.base.clone(), app.key.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let resp = http
                .post(format!("{base}/audit_logs/events"))
                .bearer_auth(key)
                .header("idempotency-key", "the-one-key")
                .json(&body)
                .send()
                .await
                .expect("send");
            let s = resp.status();
            (s, resp.json::<Value>().await.unwrap_or(Value::Null))
        }));
    }
    for t in tasks {
        let (s, b) = t.await.expect("join");
        assert_eq!(
            (s, b),
            (StatusCode::OK, json!({ "success": true })),
            "every racer succeeds"
        );
    }
    assert_eq!(audit_rows(&app).await, 1, "exactly one event in the log");
    app.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_older_than_24_hours_creates_a_new_event() {
    let app = TestApp::spawn().await;
    let a = org(&app, "Expiry").await;
    let body = event(&a, "expiring", "u", "t", "2026-01-01T00:00:00Z");
    assert_eq!(post_with_key(&app, "old-key", &body).await.0, StatusCode::OK);
    sqlx::query("update idempotency_key set created_at = now() - interval '23 hours'")
        .execute(&app.pool)
        .await
        .expect("age");
    assert_eq!(post_with_key(&app, "old-key", &body).await.0, StatusCode::OK);
    assert_eq!(audit_rows(&app).await, 1, "still within 24 hours");
    sqlx::query("update idempotency_key set created_at = now() - interval '25 hours'")
        .execute(&app.pool)
        .await
        .expect("age");
    // Expired: even another body is accepted, as a new event.
    let other = event(&a, "expiring.other", "u", "t", "2026-01-01T00:00:00Z");
    assert_eq!(post_with_key(&app, "old-key", &other).await.0, StatusCode::OK);
    assert_eq!(audit_rows(&app).await, 2, "a new event");
    assert_eq!(post_with_key(&app, "old-key", &other).await.0, StatusCode::OK);
    assert_eq!(audit_rows(&app).await, 2, "the renewed key holds again");
    app.stop().await;
}

/// A change to a request body (table-driven cases).
type Change = Box<dyn Fn(&mut Value)>;

fn schema_v1() -> Value {
    json!({
        "targets": [{ "type": "invoice", "metadata": { "type": "object", "properties": { "cost": { "type": "number" } } } }],
        "actor": { "metadata": { "type": "object", "properties": { "role": { "type": "string" } } } },
        "metadata": { "type": "object", "properties": { "tx": { "type": "string" } } },
    })
}

#[tokio::test]
async fn each_schema_post_adds_a_version_and_actions_show_the_latest() {
    let app = TestApp::spawn().await;
    let (s, v1) = app.post("/audit_logs/actions/invoice.paid/schemas", schema_v1()).await;
    assert_eq!(s, StatusCode::CREATED, "{v1}");
    assert_eq!(v1["object"], "audit_log_schema");
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["targets"], schema_v1()["targets"]);
    assert_eq!(v1["actor"], schema_v1()["actor"]);
    assert!(v1["created_at"].is_string());
    let (s, v2) = app
        .post(
            "/audit_logs/actions/invoice.paid/schemas",
            json!({ "targets": [{ "type": "team" }] }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v2}");
    assert_eq!(v2["version"], 2);
    let (s, _) = app
        .post(
            "/audit_logs/actions/user.signed_in/schemas",
            json!({ "targets": [{ "type": "user" }] }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);

    let (s, list) = app.get("/audit_logs/actions/invoice.paid/schemas").await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let versions: Vec<i64> = list["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|v| v["version"].as_i64())
        .collect();
    assert_eq!(versions, [2, 1], "newest first");
    let (_, page) = app
        .get("/audit_logs/actions/invoice.paid/schemas?order=asc&limit=1")
        .await;
    assert_eq!(page["data"][0]["version"], 1);
    assert_eq!(page["list_metadata"]["after"], "1");
    let (_, page2) = app
        .get("/audit_logs/actions/invoice.paid/schemas?order=asc&limit=1&after=1")
        .await;
    assert_eq!(page2["data"][0]["version"], 2);

    let (s, acts) = app.get("/audit_logs/actions?order=asc").await;
    assert_eq!(s, StatusCode::OK, "{acts}");
    let data = acts["data"].as_array().expect("data");
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["object"], "audit_log_action");
    assert_eq!(data[0]["name"], "invoice.paid");
    assert_eq!(data[0]["schema"]["version"], 2, "the latest schema");
    assert!(data[0]["created_at"].is_string() && data[0]["updated_at"].is_string());
    assert_eq!(data[1]["name"], "user.signed_in");
    let (s, body) = app.get("/audit_logs/actions/never.defined/schemas").await;
    assert_error(s, &body, StatusCode::NOT_FOUND, "entity_not_found", "unknown action");
    app.stop().await;
}

#[tokio::test]
async fn events_that_do_not_match_their_actions_schema_are_refused_with_400() {
    let app = TestApp::spawn().await;
    let org = org(&app, "Schemas").await;
    let (s, _) = app.post("/audit_logs/actions/invoice.paid/schemas", schema_v1()).await;
    assert_eq!(s, StatusCode::CREATED);
    let good = || {
        json!({
            "organization_id": org,
            "event": {
                "action": "invoice.paid",
                "occurred_at": "2026-01-01T00:00:00Z",
                "actor": { "id": "u", "type": "user", "metadata": { "role": "admin" } },
                "targets": [{ "id": "inv_1", "type": "invoice", "metadata": { "cost": 12.5 } }],
                "context": { "location": "1.2.3.4" },
                "metadata": { "tx": "t1" },
            }
        })
    };
    post_event(&app, good()).await;
    let cases: Vec<(&str, Change, &str)> = vec![
        (
            "wrong target type",
            Box::new(|b: &mut Value| b["event"]["targets"][0]["type"] = json!("team")),
            "/targets/0/type",
        ),
        (
            "missing target",
            Box::new(|b: &mut Value| b["event"]["targets"] = json!([])),
            "/targets",
        ),
        (
            "mistyped target metadata",
            Box::new(|b: &mut Value| b["event"]["targets"][0]["metadata"]["cost"] = json!("12")),
            "/targets/0/metadata/cost",
        ),
        (
            "missing actor metadata",
            Box::new(|b: &mut Value| {
                b["event"]["actor"].as_object_mut().map(|o| o.remove("metadata"));
            }),
            "/actor/metadata",
        ),
        (
            "mistyped event metadata",
            Box::new(|b: &mut Value| b["event"]["metadata"]["tx"] = json!(5)),
            "/metadata/tx",
        ),
        (
            "missing event metadata key",
            Box::new(|b: &mut Value| b["event"]["metadata"] = json!({ "other": "x" })),
            "/metadata",
        ),
        (
            "unknown version",
            Box::new(|b: &mut Value| b["event"]["version"] = json!(7)),
            "/version",
        ),
    ];
    for (name, change, path) in cases {
        let mut body = good();
        change(&mut body);
        let before = app.log_len().await;
        let (s, resp) = app.post("/audit_logs/events", body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{name}: {resp}");
        assert_eq!(resp["code"], "invalid_audit_log_event", "{name}");
        assert_eq!(resp["message"], "Invalid Audit Log event.", "{name}");
        assert!(
            resp["errors"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["instancePath"] == path)),
            "{name}: wants {path} in {resp}"
        );
        assert_eq!(app.log_len().await, before, "{name}: nothing appended");
    }
    // Version 2 wants a team; the event's own version picks the schema it is checked against.
    let (s, _) = app
        .post(
            "/audit_logs/actions/invoice.paid/schemas",
            json!({ "targets": [{ "type": "team" }] }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, resp) = app.post("/audit_logs/events", good()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "the latest (v2) wants a team: {resp}");
    let mut v1 = good();
    v1["event"]["version"] = json!(1);
    post_event(&app, v1).await;
    let mut team = good();
    team["event"]["targets"] = json!([{ "id": "team_1", "type": "team" }]);
    post_event(&app, team).await;
    let versions: Vec<i64> = trail(&app, &org, "&actions=invoice.paid")
        .await
        .iter()
        .filter_map(|e| e["version"].as_i64())
        .collect();
    assert_eq!(
        versions,
        [1, 1, 2],
        "each event records the version it was checked against"
    );
    app.stop().await;
}

#[tokio::test]
async fn bad_input_to_every_audit_log_endpoint_is_refused_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let org = org(&app, "Bad input").await;
    let good = event(&org, "ok.action", "u", "t", "2026-01-01T00:00:00Z");
    let with = |path: &[&str], v: Value| {
        let mut b = good.clone();
        let mut cur = &mut b;
        for p in &path[..path.len() - 1] {
            cur = &mut cur[*p];
        }
        cur[path[path.len() - 1]] = v;
        b
    };
    let without = |path: &[&str]| {
        let mut b = good.clone();
        let mut cur = &mut b;
        for p in &path[..path.len() - 1] {
            cur = &mut cur[*p];
        }
        cur.as_object_mut().map(|o| o.remove(path[path.len() - 1]));
        b
    };
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let cases: Vec<(&str, Value, (StatusCode, &str))> = vec![
        (
            "no organization_id",
            without(&["organization_id"]),
            (unprocessable, "invalid_request_parameters/required"),
        ),
        (
            "no event",
            without(&["event"]),
            (unprocessable, "invalid_request_parameters/required"),
        ),
        (
            "no action",
            without(&["event", "action"]),
            (unprocessable, "invalid_request_parameters/required"),
        ),
        (
            "empty action",
            with(&["event", "action"], json!("")),
            (unprocessable, "invalid_request_parameters/invalid_value"),
        ),
        (
            "no actor",
            without(&["event", "actor"]),
            (unprocessable, "invalid_request_parameters/required"),
        ),
        (
            "actor without id",
            without(&["event", "actor", "id"]),
            (unprocessable, "invalid_request_parameters/required"),
        ),
        (
            "no targets",
            without(&["event", "targets"]),
            (unprocessable, "invalid_request_parameters/required"),
        ),
        (
            "targets not a list",
            with(&["event", "targets"], json!("x")),
            (unprocessable, "invalid_request_parameters/invalid_type"),
        ),
        (
            "no context",
            without(&["event", "context"]),
            (unprocessable, "invalid_request_parameters/required"),
        ),
        (
            "no location",
            without(&["event", "context", "location"]),
            (unprocessable, "invalid_request_parameters/required"),
        ),
        (
            "bad occurred_at",
            with(&["event", "occurred_at"], json!("yesterday")),
            (unprocessable, "invalid_request_parameters/invalid_timestamp"),
        ),
        (
            "negative version",
            with(&["event", "version"], json!(-1)),
            (unprocessable, "invalid_request_parameters/invalid_value"),
        ),
        (
            "unknown field",
            with(&["event", "extra"], json!(1)),
            (unprocessable, "invalid_request_parameters/unknown_field"),
        ),
        (
            "nested metadata",
            with(&["event", "metadata"], json!({ "k": { "x": 1 } })),
            (unprocessable, "invalid_request_parameters/invalid_metadata"),
        ),
        (
            "bad metadata key",
            with(&["event", "metadata"], json!({ "bad key": "v" })),
            (unprocessable, "invalid_request_parameters/invalid_metadata"),
        ),
        (
            "long metadata value",
            with(&["event", "metadata"], json!({ "k": "x".repeat(501) })),
            (unprocessable, "invalid_request_parameters/invalid_metadata"),
        ),
        (
            "unknown organization",
            with(&["organization_id"], json!("org_nope")),
            (StatusCode::NOT_FOUND, "entity_not_found"),
        ),
    ];
    for (name, body, want) in cases {
        assert_rejected(&app, Method::POST, "/audit_logs/events", Some(body), want, name).await;
    }
    let (s, b) = app
        .raw(Method::POST, "/audit_logs/events", "application/json", b"{".to_vec())
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_json", "truncated body");
    // A bad Idempotency-Key header.
    let (s, b) = post_with_key(&app, &"k".repeat(300), &good).await;
    assert_error(
        s,
        &b,
        unprocessable,
        "invalid_request_parameters/invalid_idempotency_key",
        "long key",
    );

    let schema_cases: Vec<(&str, &str, Value, &str)> = vec![
        ("no targets", "/audit_logs/actions/a.b/schemas", json!({}), "required"),
        (
            "empty targets",
            "/audit_logs/actions/a.b/schemas",
            json!({ "targets": [] }),
            "invalid_schema",
        ),
        (
            "empty type",
            "/audit_logs/actions/a.b/schemas",
            json!({ "targets": [{ "type": "" }] }),
            "invalid_value",
        ),
        (
            "twice",
            "/audit_logs/actions/a.b/schemas",
            json!({ "targets": [{ "type": "t" }, { "type": "t" }] }),
            "invalid_schema",
        ),
        (
            "unsupported keyword",
            "/audit_logs/actions/a.b/schemas",
            json!({ "targets": [{ "type": "t", "metadata": { "type": "object", "properties": { "k": { "type": "string", "pattern": "x" } } } }] }),
            "invalid_schema",
        ),
        (
            "array type",
            "/audit_logs/actions/a.b/schemas",
            json!({ "targets": [{ "type": "t" }], "metadata": { "type": "array" } }),
            "invalid_schema",
        ),
        (
            "actor without metadata",
            "/audit_logs/actions/a.b/schemas",
            json!({ "targets": [{ "type": "t" }], "actor": {} }),
            "required",
        ),
        (
            "space in action",
            "/audit_logs/actions/a%20b/schemas",
            json!({ "targets": [{ "type": "t" }] }),
            "invalid_value",
        ),
    ];
    for (name, path, body, code) in schema_cases {
        let code = format!("invalid_request_parameters/{code}");
        assert_rejected(&app, Method::POST, path, Some(body), (unprocessable, &code), name).await;
    }

    let export = |f: &dyn Fn(&mut Value)| {
        let mut b = json!({ "organization_id": org, "range_start": "2026-01-01T00:00:00Z", "range_end": "2026-02-01T00:00:00Z" });
        f(&mut b);
        b
    };
    let range = (StatusCode::BAD_REQUEST, "invalid_audit_log_export_range_date");
    let export_cases: Vec<(&str, Value, (StatusCode, &str))> = vec![
        (
            "start after end",
            export(&|b| b["range_start"] = json!("2026-03-01T00:00:00Z")),
            range,
        ),
        (
            "start equals end",
            export(&|b| b["range_end"] = json!("2026-01-01T00:00:00Z")),
            range,
        ),
        ("bad start", export(&|b| b["range_start"] = json!("soon")), range),
        (
            "bad end",
            export(&|b| b["range_end"] = json!(5)),
            (unprocessable, "invalid_request_parameters/invalid_type"),
        ),
        (
            "no range_end",
            export(&|b| {
                b.as_object_mut().map(|o| o.remove("range_end"));
            }),
            (unprocessable, "invalid_request_parameters/required"),
        ),
        (
            "unknown field",
            export(&|b| b["nope"] = json!(1)),
            (unprocessable, "invalid_request_parameters/unknown_field"),
        ),
        (
            "actions not a list",
            export(&|b| b["actions"] = json!("a")),
            (unprocessable, "invalid_request_parameters/invalid_type"),
        ),
        (
            "unknown organization",
            export(&|b| b["organization_id"] = json!("org_nope")),
            (StatusCode::NOT_FOUND, "entity_not_found"),
        ),
    ];
    for (name, body, want) in export_cases {
        assert_rejected(&app, Method::POST, "/audit_logs/exports", Some(body), want, name).await;
    }

    let list_cases: Vec<(&str, (StatusCode, &str))> = vec![
        ("/audit_logs/events", (StatusCode::BAD_REQUEST, "missing_filter")),
        (
            "/audit_logs/events?organization_id=o&limit=0",
            (unprocessable, "invalid_request_parameters/invalid_limit"),
        ),
        (
            "/audit_logs/events?organization_id=o&order=up",
            (unprocessable, "invalid_request_parameters/invalid_order"),
        ),
        (
            "/audit_logs/events?organization_id=o&range_start=x",
            (unprocessable, "invalid_request_parameters/invalid_timestamp"),
        ),
        (
            "/audit_logs/events?organization_id=o&range_start=2026-02-01T00:00:00Z&range_end=2026-01-01T00:00:00Z",
            (unprocessable, "invalid_request_parameters/invalid_range"),
        ),
        (
            "/audit_logs/events?organization_id=o&after=event_nope",
            (unprocessable, "invalid_request_parameters/invalid_cursor"),
        ),
        (
            "/audit_logs/events?organization_id=a&organization_id=b",
            (unprocessable, "invalid_request_parameters/duplicate_parameter"),
        ),
        (
            "/audit_logs/actions?limit=101",
            (unprocessable, "invalid_request_parameters/invalid_limit"),
        ),
        (
            "/audit_logs/exports/audit_log_export_nope",
            (StatusCode::NOT_FOUND, "entity_not_found"),
        ),
    ];
    for (path, want) in list_cases {
        assert_rejected(&app, Method::GET, path, None, want, path).await;
    }
    app.stop().await;
}

/// Parses RFC 4180 CSV (quoted fields with doubled quotes, CRLF line ends).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => row.push(std::mem::take(&mut field)),
            ('\r', false) => {}
            ('\n', false) => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (c, _) => field.push(c),
        }
    }
    assert!(
        !quoted && field.is_empty() && row.is_empty(),
        "the CSV ends with a complete line"
    );
    rows
}

#[tokio::test]
async fn an_export_is_downloaded_as_csv_through_a_link_without_an_api_key() {
    let app = TestApp::spawn().await;
    let org = org(&app, "Exporter").await;
    let other = org_other(&app).await;
    post_event(&app, event(&org, "in.range", "u1", "invoice", "2026-01-10T00:00:00Z")).await;
    post_event(
        &app,
        event(&org, "in.range.other", "u2", "team", "2026-01-11T00:00:00Z"),
    )
    .await;
    post_event(&app, event(&org, "too.late", "u1", "invoice", "2026-03-01T00:00:00Z")).await;
    post_event(
        &app,
        event(&other, "other.org", "u1", "invoice", "2026-01-10T00:00:00Z"),
    )
    .await;
    let (s, created) = app
        .post(
            "/audit_logs/exports",
            json!({ "organization_id": org, "range_start": "2026-01-01T00:00:00Z", "range_end": "2026-02-01T00:00:00Z" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(created["object"], "audit_log_export");
    assert_eq!(created["state"], "ready");
    let id = id_of(&created);
    assert!(id.starts_with("audit_log_export_"), "{id}");
    // Events recorded after the export are not in it.
    post_event(
        &app,
        event(&org, "after.export", "u1", "invoice", "2026-01-12T00:00:00Z"),
    )
    .await;

    let (s, got) = app.get(&format!("/audit_logs/exports/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    let url = got["url"].as_str().expect("url").to_string();
    assert!(
        url.starts_with(&format!("{}/audit_logs/exports/{id}/download?token=", app.base)),
        "{url}"
    );
    let (_, again) = app.get(&format!("/audit_logs/exports/{id}")).await;
    assert_ne!(again["url"], got["url"], "each GET makes a new link");

    let resp = reqwest::get(&url).await.expect("download");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/csv")));
    let rows = parse_csv(&resp.text().await.expect("body"));
    assert_eq!(
        rows[0],
        [
            "id",
            "action",
            "occurred_at",
            "actor_id",
            "actor_type",
            "actor_name",
            "targets",
            "location",
            "user_agent",
            "metadata",
            "version"
        ]
    );
    let actions: Vec<&str> = rows[1..].iter().map(|r| r[1].as_str()).collect();
    assert_eq!(actions, ["in.range", "in.range.other"], "{rows:?}");
    assert_eq!(rows[1][2], "2026-01-10T00:00:00.000Z");
    assert_eq!(rows[1][3], "u1");
    assert_eq!(rows[1][5], "Name of u1");
    let targets: Value = serde_json::from_str(&rows[1][6]).expect("targets json");
    assert_eq!(targets[0]["type"], "invoice");
    assert_eq!(rows[1][7], "203.0.113.7");
    assert_eq!(rows[1][9], "{\"k\":\"v\"}");

    // Filters narrow an export.
    let (s, filtered) = app
        .post(
            "/audit_logs/exports",
            json!({ "organization_id": org, "range_start": "2026-01-01T00:00:00Z", "range_end": "2026-02-01T00:00:00Z",
                    "targets": ["team"], "actor_names": ["Name of u2"] }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{filtered}");
    let text = reqwest::get(filtered["url"].as_str().expect("url"))
        .await
        .expect("download")
        .text()
        .await
        .expect("body");
    let rows = parse_csv(&text);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[1][1], "in.range.other");
    app.stop().await;
}

async fn org_other(app: &TestApp) -> String {
    org(app, "Someone else").await
}

#[tokio::test]
async fn an_expired_or_forged_download_link_is_refused() {
    let app = TestApp::spawn().await;
    let org = org(&app, "Links").await;
    let (s, created) = app
        .post(
            "/audit_logs/exports",
            json!({ "organization_id": org, "range_start": "2026-01-01T00:00:00Z", "range_end": "2026-02-01T00:00:00Z" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let id = id_of(&created);
    let (_, got) = app.get(&format!("/audit_logs/exports/{id}")).await;
    let url = got["url"].as_str().expect("url").to_string();
    let token = url.split("token=").nth(1).expect("token").to_string();
    let fetch = |path: String| {
        let app = &app;
        async move {
            let resp = app.http.get(format!("{}{path}", app.base)).send().await.expect("send");
            let s = resp.status();
            (s, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let mut forged = token.clone();
    forged.replace_range(0..1, if token.starts_with('a') { "b" } else { "a" });
    let cases = [
        (
            "forged token",
            format!("/audit_logs/exports/{id}/download?token={forged}"),
            StatusCode::NOT_FOUND,
            "link_not_found",
        ),
        (
            "no token",
            format!("/audit_logs/exports/{id}/download"),
            StatusCode::NOT_FOUND,
            "link_not_found",
        ),
        (
            "another export's path",
            format!("/audit_logs/exports/audit_log_export_other/download?token={token}"),
            StatusCode::NOT_FOUND,
            "link_not_found",
        ),
    ];
    for (name, path, status, code) in cases {
        let (s, b) = fetch(path).await;
        assert_error(s, &b, status, code, name);
    }
    let (s, _) = fetch(format!("/audit_logs/exports/{id}/download?token={token}")).await;
    assert_eq!(s, StatusCode::OK, "the real link works");
    sqlx::query("update audit_log_export_link set expires_at = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .expect("expire");
    let (s, b) = fetch(format!("/audit_logs/exports/{id}/download?token={token}")).await;
    assert_error(s, &b, StatusCode::FORBIDDEN, "link_expired", "expired link");
    let (_, fresh) = app.get(&format!("/audit_logs/exports/{id}")).await;
    let (s, _) = fetch(
        fresh["url"]
            .as_str()
            .expect("url")
            .trim_start_matches(&app.base)
            .to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "a new GET gives a working link");
    let (n,): (i64,) = sqlx::query_as("select count(*) from audit_log_export_link")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    let (hex_tokens,): (i64,) =
        sqlx::query_as("select count(*) from audit_log_export_link where encode(token_hash, 'hex') = $1")
            .bind(&token)
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!((n, hex_tokens), (3, 0), "a link per create and GET, stored hashed");
    app.stop().await;
}

#[tokio::test]
async fn the_cli_exports_an_organizations_trail_as_jsonl_and_csv() {
    let mut app = TestApp::spawn().await;
    let org = org(&app, "Cli").await;
    post_event(&app, event(&org, "cli.one", "u1", "t", "2026-01-10T00:00:00Z")).await;
    post_event(&app, event(&org, "cli.two", "u1", "t", "2026-02-10T00:00:00Z")).await;
    app.stop_workers_and_wait().await;
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_keyledger"))
            .args(["events", "export", "--organization", &org])
            .args(args)
            .env("DATABASE_URL", &app.db_url)
            .env("RUST_LOG", "error")
            .output()
            .expect("run keyledger");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let jsonl = run(&["--format", "jsonl"]);
    let lines: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(actions(&lines), ["organization.created", "cli.one", "cli.two"]);
    let csv = run(&["--format", "csv", "--since", "2026-02-01T00:00:00Z"]);
    let rows = parse_csv(&csv);
    assert_eq!(rows[0][0], "id");
    let csv_actions: Vec<&str> = rows[1..].iter().map(|r| r[1].as_str()).collect();
    assert_eq!(csv_actions, ["organization.created", "cli.two"], "{csv}");
    let until = run(&["--until", "2026-02-01T00:00:00Z", "--since", "2026-01-01T00:00:00Z"]);
    let until: Vec<Value> = until
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(actions(&until), ["cli.one"]);
    let bad = Command::new(env!("CARGO_BIN_EXE_keyledger"))
        .args(["events", "export", "--organization", "org_nope"])
        .env("DATABASE_URL", &app.db_url)
        .output()
        .expect("run");
    assert!(!bad.status.success(), "an unknown organization fails");
}

#[tokio::test]
async fn with_a_tenant_set_the_audit_tables_show_only_that_tenants_rows() {
    let app = TestApp::spawn().await;
    let a = org(&app, "Wall A").await;
    let b = org(&app, "Wall B").await;
    for o in [&a, &b] {
        post_event(&app, event(o, "walled", "u", "t", "2026-01-01T00:00:00Z")).await;
        let (s, _) = app
            .post(
                "/audit_logs/exports",
                json!({ "organization_id": o, "range_start": "2026-01-01T00:00:00Z", "range_end": "2026-02-01T00:00:00Z" }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let mut tx = app.pool.begin().await.expect("begin");
    sqlx::query(keyledger_projections::queries::SCOPE)
        .bind(&a)
        .execute(&mut *tx)
        .await
        .expect("scope");
    for table in ["audit_log_event", "audit_log_export"] {
        // No filter in the query: the policy alone hides B's rows.
        let orgs: Vec<(String,)> = sqlx::query_as(&format!("select organization_id from {table}"))
            .fetch_all(&mut *tx)
            .await
            .expect("select");
        assert_eq!(orgs, vec![(a.clone(),)], "{table}");
    }
    tx.rollback().await.expect("rollback");
    app.stop().await;
}

#[tokio::test]
async fn export_links_use_the_configured_public_url_and_large_exports_stream_every_row() {
    let app = TestApp::spawn().await;
    let org = org(&app, "Big export").await;
    let mut pending = Vec::new();
    for i in 0..505 {
        let (http, base, key) = (app.http.clone(), app.base.clone(), app.key.clone());
        let body = event(&org, &format!("bulk.{i}"), "u", "t", "2026-01-05T00:00:00Z");
        pending.push(tokio::spawn(async move {
            let resp = http
                .post(format!("{base}/audit_logs/events"))
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .expect("send");
            assert_eq!(resp.status(), StatusCode::OK);
        }));
        if pending.len() == 8 {
            for p in pending.drain(..) {
                p.await.expect("join");
            }
        }
    }
    for p in pending {
        p.await.expect("join");
    }
    let (s, created) = app
        .post(
            "/audit_logs/exports",
            json!({ "organization_id": org, "range_start": "2026-01-01T00:00:00Z", "range_end": "2026-02-01T00:00:00Z" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let text = reqwest::get(created["url"].as_str().expect("url"))
        .await
        .expect("download")
        .text()
        .await
        .expect("body");
    let rows = parse_csv(&text);
    assert_eq!(rows.len(), 1 + 505, "header and every event, across pages");
    let mut actions: Vec<&str> = rows[1..].iter().map(|r| r[1].as_str()).collect();
    actions.sort_unstable();
    actions.dedup();
    assert_eq!(actions.len(), 505, "no row twice");

    // A second server on the same database, with a public URL.
    let config = keyledger_api::Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        public_url: Some("https://id.example.com/".into()),
        ..keyledger_api::Config::default()
    };
    let other = keyledger_api::build(app.pool.clone(), config).await.expect("build");
    let resp = app
        .http
        .get(format!("http://{}/audit_logs/exports/{}", other.addr, id_of(&created)))
        .bearer_auth(&app.key)
        .send()
        .await
        .expect("send");
    let got: Value = resp.json().await.expect("json");
    let url = got["url"].as_str().expect("url");
    assert!(
        url.starts_with(&format!(
            "https://id.example.com/audit_logs/exports/{}/download?token=",
            id_of(&created)
        )),
        "{url}"
    );
    other.stop().await.expect("stop");
    app.stop().await;
}

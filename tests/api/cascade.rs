//! Tests: deleting a user or an organization deletes its memberships (and an organization's
//! domains) in one append, in the documented order (docs/EVENTS.md, "Cascades"), and no
//! membership created concurrently outlives its user or organization.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

/// (event name, data.id) of each event.
fn summary(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap_or_default().to_string(),
                e["data"]["id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn pairs(event: &str, ids: &[String]) -> Vec<(String, String)> {
    ids.iter().map(|id| (event.to_string(), id.clone())).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn deleting_an_organization_emits_its_memberships_then_domains_then_itself() {
    let app = TestApp::spawn().await;
    let org = app
        .create_organization(
            "Acme",
            json!([{ "domain": "acme.com", "state": "pending" }, { "domain": "acme.org", "state": "verified" }]),
        )
        .await;
    let org_id = id_of(&org);
    let domains: Vec<String> = org["domains"].as_array().into_iter().flatten().map(id_of).collect();
    let mut members = Vec::new();
    for email in ["b@example.com", "a@example.com", "c@example.com"] {
        let user = id_of(&app.create_user(email).await);
        members.push(id_of(&app.create_membership(&user, &org_id, None).await));
    }
    let before = app.all_events("").await.len();
    let (s, body) = app.delete(&format!("/organizations/{org_id}")).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let tail = summary(&app.all_events("").await[before..]);
    let mut want = pairs("organization_membership.deleted", &sorted(members));
    want.extend(pairs("organization_domain.deleted", &domains));
    want.push(("organization.deleted".into(), org_id.clone()));
    assert_eq!(tail, want, "the whole cascade, in order, and nothing else");
    // The organization's own feed shows the same, and the read models hold none of it.
    let scoped = summary(&app.all_events(&format!("&organization_id={org_id}")).await);
    assert!(scoped.ends_with(&want), "{scoped:?}");
    for d in &domains {
        assert_eq!(
            app.get(&format!("/organization_domains/{d}")).await.0,
            StatusCode::NOT_FOUND
        );
    }
    let (s, list) = app
        .get(&format!(
            "/user_management/organization_memberships?organization_id={org_id}"
        ))
        .await;
    assert_eq!((s, ids(&list).len()), (StatusCode::OK, 0), "{list}");
    // A verified domain is free again.
    let other = id_of(&app.create_organization("Other", json!([])).await);
    let (s, body) = app
        .put(
            &format!("/organizations/{other}"),
            json!({ "domain_data": [{ "domain": "acme.org", "state": "verified" }] }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn deleting_a_user_emits_its_memberships_then_itself_in_one_command() {
    let app = TestApp::spawn().await;
    let user = id_of(&app.create_user("ann@example.com").await);
    let mut members = Vec::new();
    for name in ["Zeta", "Alpha"] {
        let org = id_of(&app.create_organization(name, json!([])).await);
        members.push(id_of(&app.create_membership(&user, &org, None).await));
    }
    let (s, body) = app
        .put(
            &format!("/user_management/organization_memberships/{}/deactivate", members[0]),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let before = app.all_events("").await.len();
    let (s, body) = app.delete(&format!("/user_management/users/{user}")).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let tail = summary(&app.all_events("").await[before..]);
    let mut want = pairs("organization_membership.deleted", &sorted(members.clone()));
    want.push(("user.deleted".into(), user.clone()));
    assert_eq!(tail, want, "inactive memberships go too");
    // One transaction: every event of the cascade has the user deletion's transaction.
    let (txs,): (i64,) = sqlx::query_as(
        "select count(distinct transaction_id) from event where aggregate_id = any($1) and event_type in ('MembershipDeleted', 'UserDeleted')",
    )
    .bind([members.clone(), vec![user.clone()]].concat())
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(txs, 1);
    // Deleting again is a 404 and appends nothing.
    assert_rejected(
        &app,
        reqwest::Method::DELETE,
        &format!("/user_management/users/{user}"),
        None,
        (StatusCode::NOT_FOUND, "entity_not_found"),
        "second delete",
    )
    .await;
    app.stop().await;
}

/// What a racing request answered: 2xx, or a clean refusal.
fn clean(status: StatusCode, body: &Value, what: &str) -> bool {
    assert!(
        status.is_success()
            || [
                StatusCode::NOT_FOUND,
                StatusCode::CONFLICT,
                StatusCode::UNPROCESSABLE_ENTITY
            ]
            .contains(&status),
        "{what}: {status} {body}"
    );
    status.is_success()
}

/// Deletes until the answer is final (a 409 after exhausted retries is allowed, then retried).
async fn delete_until_gone(app: &TestApp, path: &str) {
    for _ in 0..20 {
        let (s, body) = app.delete(path).await;
        clean(s, &body, path);
        if s == StatusCode::OK || s == StatusCode::NOT_FOUND {
            return;
        }
    }
    panic!("{path} never got deleted");
}

/// After every projection caught up: no membership of a deleted parent lives in the read model,
/// the log or the claims, and every created membership was deleted.
async fn assert_no_orphans(app: &mut TestApp, created: &HashSet<String>, column: &str, parents: &[String]) {
    app.stop_workers_and_wait().await;
    let (n,): (i64,) = sqlx::query_as(&format!(
        "select count(*) from organization_membership_view where {column} = any($1)"
    ))
    .bind(parents)
    .fetch_one(&app.pool)
    .await
    .expect("read model");
    assert_eq!(n, 0, "memberships of deleted parents in the read model");
    // Live in the log: a membership stream of a deleted parent whose last event is not a delete.
    let live: Vec<(String,)> = sqlx::query_as(&format!(
        "select c.aggregate_id from event c where c.event_type = 'MembershipCreated' \
         and c.payload -> 'MembershipCreated' ->> '{column}' = any($1) \
         and not exists (select 1 from event d where d.aggregate_id = c.aggregate_id and d.event_type = 'MembershipDeleted')"
    ))
    .bind(parents)
    .fetch_all(&app.pool)
    .await
    .expect("log");
    assert!(
        live.is_empty(),
        "live memberships of deleted parents in the log: {live:?}"
    );
    let (claims,): (i64,) = sqlx::query_as(
        "select count(*) from claim where kind in ('membership', 'live_user', 'live_organization') \
         and (split_part(value, ':', 1) = any($1) or split_part(value, ':', 2) = any($1) or value = any($1))",
    )
    .bind(parents)
    .fetch_one(&app.pool)
    .await
    .expect("claims");
    assert_eq!(claims, 0, "claims naming deleted parents");
    // Every acknowledged create was later deleted (no acknowledged membership vanished silently).
    let deleted: Vec<(String,)> = sqlx::query_as(
        "select aggregate_id from event where event_type = 'MembershipDeleted' and aggregate_id = any($1)",
    )
    .bind(created.iter().cloned().collect::<Vec<_>>())
    .fetch_all(&app.pool)
    .await
    .expect("deletes");
    assert_eq!(
        deleted.len(),
        created.len(),
        "each created membership got its delete event"
    );
}

#[tokio::test]
async fn no_membership_created_while_its_user_is_deleted_survives() {
    let mut app = TestApp::spawn().await;
    let orgs: Vec<String> = {
        let mut v = Vec::new();
        for i in 0..3 {
            v.push(id_of(&app.create_organization(&format!("Org {i}"), json!([])).await));
        }
        v
    };
    let mut created = HashSet::new();
    let mut users = Vec::new();
    let mut raced = 0;
    for round in 0..15 {
        let user = id_of(&app.create_user(&format!("racer{round}@example.com")).await);
        users.push(user.clone());
        let mut tasks = Vec::new();
        for org in &orgs {
            tasks.push(spawn_create_membership(&app, &user, org));
        }
        delete_until_gone(&app, &format!("/user_management/users/{user}")).await;
        for t in tasks {
            let (s, body) = t.await.expect("join");
            if clean(s, &body, "create membership") {
                created.insert(id_of(&body));
            } else {
                raced += 1;
            }
        }
    }
    assert!(!created.is_empty(), "some creates won their race");
    eprintln!("{} memberships created, {raced} refused", created.len());
    assert_no_orphans(&mut app, &created, "user_id", &users).await;
}

/// Starts creating a membership of `user` in `org` (racing whatever the caller does next).
fn spawn_create_membership(app: &TestApp, user: &str, org: &str) -> tokio::task::JoinHandle<(StatusCode, Value)> {
    let (http, base, key) = (app.http.clone(), app.base.clone(), app.key.clone());
    let body = json!({ "user_id": user, "organization_id": org });
    tokio::spawn(async move {
        let resp = http
            .post(format!("{base}/user_management/organization_memberships"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("send");
        let s = resp.status();
        (s, resp.json::<Value>().await.unwrap_or(Value::Null))
    })
}

#[tokio::test]
async fn no_membership_created_while_its_organization_is_deleted_survives() {
    let mut app = TestApp::spawn().await;
    let mut users = Vec::new();
    for i in 0..3 {
        users.push(id_of(&app.create_user(&format!("member{i}@example.com")).await));
    }
    let mut created = HashSet::new();
    let mut orgs = Vec::new();
    for round in 0..15 {
        let org = id_of(
            &app.create_organization(
                &format!("Doomed {round}"),
                json!([{ "domain": format!("doomed{round}.example"), "state": "verified" }]),
            )
            .await,
        );
        orgs.push(org.clone());
        let mut tasks = Vec::new();
        for user in &users {
            tasks.push(spawn_create_membership(&app, user, &org));
        }
        delete_until_gone(&app, &format!("/organizations/{org}")).await;
        for t in tasks {
            let (s, body) = t.await.expect("join");
            if clean(s, &body, "create membership") {
                created.insert(id_of(&body));
            }
        }
    }
    assert!(!created.is_empty(), "some creates won their race");
    assert_no_orphans(&mut app, &created, "organization_id", &orgs).await;
    // Each organization's domain went with it.
    let (n,): (i64,) = sqlx::query_as(
        "select count(*) from event where event_type = 'OrganizationDomainDeleted' and aggregate_id = any($1)",
    )
    .bind(&orgs)
    .fetch_one(&app.pool)
    .await
    .expect("domain deletes");
    assert_eq!(n, orgs.len() as i64);
}

#[tokio::test]
async fn a_membership_whose_user_or_organization_is_gone_from_the_log_is_refused_by_the_append() {
    // The read model still shows both (as it would for a moment during a deletion); the append
    // finds the parent's liveness claim gone and refuses, appending nothing.
    let app = TestApp::spawn().await;
    let user = id_of(&app.create_user("ann@example.com").await);
    let org = id_of(&app.create_organization("Acme", json!([])).await);
    for (kind, id, what) in [
        ("live_user", &user, "user"),
        ("live_organization", &org, "organization"),
    ] {
        sqlx::query("update claim set value = value || '-hidden' where kind = $1 and value = $2")
            .bind(kind)
            .bind(id)
            .execute(&app.pool)
            .await
            .expect("hide");
        let before = app.log_len().await;
        let (s, body) = app
            .post(
                "/user_management/organization_memberships",
                json!({ "user_id": user, "organization_id": org }),
            )
            .await;
        assert_error(s, &body, StatusCode::NOT_FOUND, "entity_not_found", what);
        assert!(body["message"].as_str().is_some_and(|m| m.starts_with(what)), "{body}");
        assert_eq!(app.log_len().await, before, "{what}: nothing appended");
        sqlx::query("update claim set value = $2 where kind = $1 and value = $2 || '-hidden'")
            .bind(kind)
            .bind(id)
            .execute(&app.pool)
            .await
            .expect("restore");
    }
    app.create_membership(&user, &org, None).await;
    app.stop().await;
}

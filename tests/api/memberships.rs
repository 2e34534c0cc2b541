//! Tests: organization memberships through `/user_management/organization_memberships` —
//! roles, the embedded user and organization name, list filters, status changes, deletion and
//! the one-membership-per-pair rule under concurrency. Rejected requests must change nothing.

use std::collections::HashSet;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

const MEMBERSHIPS: &str = "/user_management/organization_memberships";

fn path(id: &str) -> String {
    format!("{MEMBERSHIPS}/{id}")
}

/// A user and an organization, returned as (user, organization).
async fn user_and_org(app: &TestApp, email: &str, org: &str) -> (Value, Value) {
    let user = app.create_user(email).await;
    let org = app.create_organization(org, json!([])).await;
    (user, org)
}

/// Number of stored events of memberships.
async fn membership_events(app: &TestApp) -> i64 {
    let (n,): (i64,) = sqlx::query_as("select count(*) from event where aggregate_type = 'OrganizationMembership'")
        .fetch_one(&app.pool)
        .await
        .expect("count membership events");
    n
}

#[tokio::test]
async fn creating_a_membership_defaults_to_member_and_embeds_the_user_and_organization_name() {
    let app = TestApp::spawn().await;
    let (user, org) = user_and_org(&app, "ann@example.com", "Acme").await;
    let (uid, oid) = (id_of(&user), id_of(&org));

    let (s, m) = app
        .post(MEMBERSHIPS, json!({ "user_id": uid, "organization_id": oid }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    assert_eq!(m["object"], "organization_membership");
    assert!(m["id"].as_str().is_some_and(|i| i.starts_with("om_")), "id prefix: {m}");
    assert_eq!(m["user_id"], uid.as_str());
    assert_eq!(m["organization_id"], oid.as_str());
    assert_eq!(m["organization_name"], "Acme");
    assert_eq!(m["status"], "active");
    assert_eq!(m["role"], json!({ "slug": "member" }));
    assert_eq!(m["roles"], json!([{ "slug": "member" }]));
    let (s, current_user) = app.get(&format!("/user_management/users/{uid}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(m["user"], current_user, "the membership embeds the full user object");

    let (s, got) = app.get(&path(&id_of(&m))).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(got, m, "GET returns what POST returned");
    app.stop().await;
}

#[tokio::test]
async fn creating_a_membership_with_role_slug_or_role_slugs_admin_gives_the_admin_role() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme", json!([])).await;
    let oid = id_of(&org);
    let cases = [
        ("role_slug", json!("admin")),
        ("role_slugs", json!(["admin"])),
        ("role_slugs one member", json!(["member"])),
    ];
    for (i, (case, value)) in cases.into_iter().enumerate() {
        let user = app.create_user(&format!("u{i}@example.com")).await;
        let field = case.split(' ').next().unwrap_or(case);
        let mut body = json!({ "user_id": id_of(&user), "organization_id": oid });
        body[field] = value.clone();
        let (s, m) = app.post(MEMBERSHIPS, body).await;
        assert_eq!(s, StatusCode::CREATED, "{case}: {m}");
        let want = value.as_str().map_or_else(|| value[0].clone(), |v| json!(v));
        assert_eq!(m["role"]["slug"], want, "{case}: role");
        assert_eq!(m["roles"], json!([{ "slug": want }]), "{case}: roles");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_membership_shows_the_organizations_current_name_after_a_rename() {
    let app = TestApp::spawn().await;
    let (user, org) = user_and_org(&app, "ann@example.com", "Old Name").await;
    let m = app.create_membership(&id_of(&user), &id_of(&org), None).await;
    assert_eq!(m["organization_name"], "Old Name");

    let (s, body) = app
        .put(
            &format!("/organizations/{}", id_of(&org)),
            json!({ "name": "New Name" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");

    let (_, got) = app.get(&path(&id_of(&m))).await;
    assert_eq!(got["organization_name"], "New Name", "get: {got}");
    let (_, list) = app.get(&format!("{MEMBERSHIPS}?user_id={}", id_of(&user))).await;
    assert_eq!(list["data"][0]["organization_name"], "New Name", "list: {list}");
    app.stop().await;
}

#[tokio::test]
async fn listing_memberships_filters_by_organization_and_by_user() {
    let app = TestApp::spawn().await;
    let ann = id_of(&app.create_user("ann@example.com").await);
    let bob = id_of(&app.create_user("bob@example.com").await);
    let acme = id_of(&app.create_organization("Acme", json!([])).await);
    let globex = id_of(&app.create_organization("Globex", json!([])).await);
    let ann_acme = id_of(&app.create_membership(&ann, &acme, None).await);
    let bob_acme = id_of(&app.create_membership(&bob, &acme, None).await);
    let ann_globex = id_of(&app.create_membership(&ann, &globex, None).await);

    let cases: [(&str, String, Vec<&String>); 5] = [
        (
            "by organization",
            format!("organization_id={acme}"),
            vec![&ann_acme, &bob_acme],
        ),
        (
            "by other organization",
            format!("organization_id={globex}"),
            vec![&ann_globex],
        ),
        ("by user", format!("user_id={ann}"), vec![&ann_acme, &ann_globex]),
        (
            "by user and organization",
            format!("user_id={bob}&organization_id={acme}"),
            vec![&bob_acme],
        ),
        (
            "by unknown organization",
            "organization_id=org_nothing".to_string(),
            vec![],
        ),
    ];
    for (case, query, want) in cases {
        let (s, list) = app.get(&format!("{MEMBERSHIPS}?{query}&order=asc")).await;
        assert_eq!(s, StatusCode::OK, "{case}: {list}");
        assert_eq!(list["object"], "list", "{case}");
        let want: Vec<String> = want.into_iter().cloned().collect();
        assert_eq!(ids(&list), want, "{case}");
    }
    app.stop().await;
}

#[tokio::test]
async fn listing_memberships_filters_by_status_in_every_list_form() {
    let app = TestApp::spawn().await;
    let org = id_of(&app.create_organization("Acme", json!([])).await);
    let mut all = Vec::new();
    for i in 0..3 {
        let u = id_of(&app.create_user(&format!("u{i}@example.com")).await);
        all.push(id_of(&app.create_membership(&u, &org, None).await));
    }
    let (s, body) = app.put(&format!("{}/deactivate", path(&all[1])), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let active = vec![all[0].clone(), all[2].clone()];
    let inactive = vec![all[1].clone()];

    let cases = [
        ("single", "statuses=inactive", &inactive),
        ("single active", "statuses=active", &active),
        ("comma-joined", "statuses=active,inactive", &all),
        ("repeated", "statuses=active&statuses=inactive", &all),
        ("bracketed", "statuses[]=active&statuses[]=inactive", &all),
        ("bracketed encoded", "statuses%5B%5D=inactive", &inactive),
        ("no filter: only active, as the spec says", "", &active),
    ];
    for (case, query, want) in cases {
        let (s, list) = app
            .get(&format!("{MEMBERSHIPS}?organization_id={org}&order=asc&{query}"))
            .await;
        assert_eq!(s, StatusCode::OK, "{case}: {list}");
        assert_eq!(&ids(&list), want, "{case}");
    }
    let before = app.log_len().await;
    let (s, body) = app
        .get(&format!("{MEMBERSHIPS}?organization_id={org}&statuses=sleeping"))
        .await;
    assert_error(
        s,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request_parameters/invalid_status",
        "unknown status",
    );
    assert_eq!(app.log_len().await, before);
    app.stop().await;
}

#[tokio::test]
async fn listing_memberships_pages_with_limit_and_after_cursors() {
    let app = TestApp::spawn().await;
    let org = id_of(&app.create_organization("Acme", json!([])).await);
    let mut created = Vec::new();
    for i in 0..5 {
        let u = id_of(&app.create_user(&format!("u{i}@example.com")).await);
        created.push(id_of(&app.create_membership(&u, &org, None).await));
    }
    for order in ["asc", "desc"] {
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        for page in 0.. {
            assert!(page < 10, "{order}: paging does not end");
            let mut q = format!("{MEMBERSHIPS}?organization_id={org}&limit=2&order={order}");
            if let Some(a) = &after {
                q.push_str(&format!("&after={a}"));
            }
            let (s, list) = app.get(&q).await;
            assert_eq!(s, StatusCode::OK, "{order} page {page}: {list}");
            let page_ids = ids(&list);
            assert!(page_ids.len() <= 2, "{order}: limit respected");
            seen.extend(page_ids);
            match list["list_metadata"]["after"].as_str() {
                Some(a) => after = Some(a.to_string()),
                None => break,
            }
        }
        let mut want = created.clone();
        if order == "desc" {
            want.reverse();
        }
        assert_eq!(seen, want, "{order}: every membership once, in order");
    }
    app.stop().await;
}

#[tokio::test]
async fn updating_a_membership_changes_its_role_and_records_the_previous_one() {
    let app = TestApp::spawn().await;
    let (user, org) = user_and_org(&app, "ann@example.com", "Acme").await;
    let m = id_of(&app.create_membership(&id_of(&user), &id_of(&org), None).await);

    let (s, body) = app.put(&path(&m), json!({ "role_slug": "admin" })).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["role"], json!({ "slug": "admin" }));
    assert_eq!(body["roles"], json!([{ "slug": "admin" }]));
    let (_, got) = app.get(&path(&m)).await;
    assert_eq!(got["role"]["slug"], "admin");

    let updates = app.all_events("&events=organization_membership.updated").await;
    assert_eq!(updates.len(), 1, "{updates:?}");
    assert_eq!(updates[0]["data"]["role"]["slug"], "admin");
    assert_eq!(
        updates[0]["context"]["previous_attributes"]["role"],
        json!({ "slug": "member" })
    );

    // Back to member through role_slugs; the same role again is not a change.
    let (s, body) = app.put(&path(&m), json!({ "role_slugs": ["member"] })).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["role"]["slug"], "member");
    let before = app.log_len().await;
    let (s, body) = app.put(&path(&m), json!({ "role_slug": "member" })).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(app.log_len().await, before, "an unchanged role emits no event");
    app.stop().await;
}

#[tokio::test]
async fn deactivating_and_reactivating_a_membership_is_idempotent() {
    let app = TestApp::spawn().await;
    let (user, org) = user_and_org(&app, "ann@example.com", "Acme").await;
    let m = id_of(&app.create_membership(&id_of(&user), &id_of(&org), None).await);
    let steps = [
        ("deactivate", "inactive", 1),
        ("deactivate again", "inactive", 0),
        ("reactivate", "active", 1),
        ("reactivate again", "active", 0),
    ];
    for (step, want_status, new_events) in steps {
        let action = step.split(' ').next().unwrap_or(step);
        let before = app.log_len().await;
        let (s, body) = app.put(&format!("{}/{action}", path(&m)), json!({})).await;
        assert_eq!(s, StatusCode::OK, "{step}: {body}");
        assert_eq!(body["status"], want_status, "{step}: response");
        let (_, got) = app.get(&path(&m)).await;
        assert_eq!(got["status"], want_status, "{step}: GET");
        assert_eq!(app.log_len().await - before, new_events, "{step}: events appended");
    }
    let updates = app.all_events("&events=organization_membership.updated").await;
    let statuses: Vec<&Value> = updates.iter().map(|e| &e["data"]["status"]).collect();
    assert_eq!(
        statuses,
        [&json!("inactive"), &json!("active")],
        "one feed event per real change"
    );
    app.stop().await;
}

#[tokio::test]
async fn deleting_a_membership_removes_it_and_frees_the_pair_for_a_new_one() {
    let app = TestApp::spawn().await;
    let (user, org) = user_and_org(&app, "ann@example.com", "Acme").await;
    let (uid, oid) = (id_of(&user), id_of(&org));
    let m = id_of(&app.create_membership(&uid, &oid, None).await);

    let (s, body) = app.delete(&path(&m)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, body) = app.get(&path(&m)).await;
    assert_error(s, &body, StatusCode::NOT_FOUND, "entity_not_found", "get after delete");
    let (_, list) = app.get(&format!("{MEMBERSHIPS}?organization_id={oid}")).await;
    assert_eq!(ids(&list), Vec::<String>::new(), "list after delete");

    let before = app.log_len().await;
    for (method, suffix) in [
        (Method::DELETE, ""),
        (Method::PUT, "/deactivate"),
        (Method::PUT, "/reactivate"),
    ] {
        let body = (method == Method::PUT).then(|| json!({}));
        let (s, resp) = app
            .request(method.clone(), &format!("{}{suffix}", path(&m)), body)
            .await;
        assert_error(
            s,
            &resp,
            StatusCode::NOT_FOUND,
            "entity_not_found",
            &format!("{method} {suffix} on deleted"),
        );
    }
    assert_eq!(app.log_len().await, before, "nothing done to a deleted membership");

    let again = app.create_membership(&uid, &oid, Some("admin")).await;
    assert_ne!(id_of(&again), m, "a new membership has a new id");
    let deleted = app.all_events("&events=organization_membership.deleted").await;
    assert_eq!(deleted.len(), 1);
    assert_eq!(
        deleted[0]["data"]["id"],
        m.as_str(),
        "the deleted event carries the last state"
    );
    app.stop().await;
}

#[tokio::test]
async fn deleting_a_user_deletes_its_memberships() {
    let app = TestApp::spawn().await;
    let ann = id_of(&app.create_user("ann@example.com").await);
    let bob = id_of(&app.create_user("bob@example.com").await);
    let acme = id_of(&app.create_organization("Acme", json!([])).await);
    let globex = id_of(&app.create_organization("Globex", json!([])).await);
    let m1 = id_of(&app.create_membership(&ann, &acme, None).await);
    let m2 = id_of(&app.create_membership(&ann, &globex, None).await);
    let bobs = id_of(&app.create_membership(&bob, &acme, None).await);

    let (s, body) = app.delete(&format!("/user_management/users/{ann}")).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    for m in [&m1, &m2] {
        let (s, body) = app.get(&path(m)).await;
        assert_error(
            s,
            &body,
            StatusCode::NOT_FOUND,
            "entity_not_found",
            "membership of the deleted user",
        );
    }
    let (_, list) = app.get(&format!("{MEMBERSHIPS}?organization_id={acme}")).await;
    assert_eq!(ids(&list), vec![bobs.clone()], "other users' memberships stay");
    let (_, list) = app.get(&format!("{MEMBERSHIPS}?user_id={ann}")).await;
    assert_eq!(ids(&list), Vec::<String>::new());

    let events = app
        .all_events("&events=organization_membership.deleted,user.deleted")
        .await;
    let names: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap_or(""),
                e["data"]["id"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("organization_membership.deleted", m1.as_str()),
            ("organization_membership.deleted", m2.as_str()),
            ("user.deleted", ann.as_str()),
        ],
        "memberships end before the user"
    );
    app.stop().await;
}

#[tokio::test]
async fn creating_a_membership_with_an_invalid_role_is_rejected_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let (user, org) = user_and_org(&app, "ann@example.com", "Acme").await;
    let (uid, oid) = (id_of(&user), id_of(&org));
    let cases = [
        ("unknown role_slug", json!({ "role_slug": "owner" }), "invalid_role"),
        (
            "unknown role in role_slugs",
            json!({ "role_slugs": ["owner"] }),
            "invalid_role",
        ),
        (
            "two roles",
            json!({ "role_slugs": ["admin", "member"] }),
            "multiple_roles_not_enabled",
        ),
        (
            "both forms",
            json!({ "role_slug": "admin", "role_slugs": ["admin"] }),
            "invalid_role",
        ),
    ];
    let before = app.log_len().await;
    for (case, extra, code) in cases {
        let mut body = json!({ "user_id": uid, "organization_id": oid });
        for (k, v) in extra.as_object().into_iter().flatten() {
            body[k] = v.clone();
        }
        let (s, resp) = app.post(MEMBERSHIPS, body).await;
        assert_error(s, &resp, StatusCode::UNPROCESSABLE_ENTITY, code, case);
        assert_eq!(resp["errors"][0]["code"], code, "{case}: field error");
        assert_eq!(app.log_len().await, before, "{case}: log unchanged");
    }
    let (_, list) = app.get(&format!("{MEMBERSHIPS}?organization_id={oid}")).await;
    assert_eq!(ids(&list), Vec::<String>::new(), "no membership was made");
    app.stop().await;
}

#[tokio::test]
async fn updating_a_membership_with_an_invalid_role_is_rejected_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let (user, org) = user_and_org(&app, "ann@example.com", "Acme").await;
    let m = app.create_membership(&id_of(&user), &id_of(&org), Some("admin")).await;
    let mid = id_of(&m);
    let cases = [
        ("unknown role_slug", json!({ "role_slug": "owner" }), "invalid_role"),
        (
            "two roles",
            json!({ "role_slugs": ["admin", "member"] }),
            "multiple_roles_not_enabled",
        ),
        (
            "unknown field",
            json!({ "role": "member" }),
            "invalid_request_parameters/unknown_field",
        ),
    ];
    let before = app.log_len().await;
    for (case, body, code) in cases {
        let (s, resp) = app.put(&path(&mid), body).await;
        assert_error(s, &resp, StatusCode::UNPROCESSABLE_ENTITY, code, case);
        assert_eq!(app.log_len().await, before, "{case}: log unchanged");
    }
    let (_, got) = app.get(&path(&mid)).await;
    assert_eq!(got, m, "the membership is as it was");
    app.stop().await;
}

#[tokio::test]
async fn creating_a_duplicate_membership_returns_422_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let (user, org) = user_and_org(&app, "ann@example.com", "Acme").await;
    let (uid, oid) = (id_of(&user), id_of(&org));
    let first = app.create_membership(&uid, &oid, None).await;
    let before = app.log_len().await;
    let (s, body) = app
        .post(
            MEMBERSHIPS,
            json!({ "user_id": uid, "organization_id": oid, "role_slug": "admin" }),
        )
        .await;
    assert_error(
        s,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request_parameters/organization_membership_already_exists",
        "duplicate",
    );
    assert_eq!(app.log_len().await, before, "log unchanged");
    let (_, list) = app.get(&format!("{MEMBERSHIPS}?organization_id={oid}")).await;
    assert_eq!(list["data"], json!([first]), "only the first membership, unchanged");
    app.stop().await;
}

#[tokio::test]
async fn membership_requests_naming_unknown_objects_return_404_and_change_nothing() {
    let app = TestApp::spawn().await;
    let (user, org) = user_and_org(&app, "ann@example.com", "Acme").await;
    let (uid, oid) = (id_of(&user), id_of(&org));
    let unknown = "om_01HZZZZZZZZZZZZZZZZZZZZZZZ";
    let cases: [(&str, Method, String, Option<Value>); 8] = [
        (
            "create with unknown user",
            Method::POST,
            MEMBERSHIPS.to_string(),
            Some(json!({ "user_id": "user_nobody", "organization_id": oid })),
        ),
        (
            "create with unknown organization",
            Method::POST,
            MEMBERSHIPS.to_string(),
            Some(json!({ "user_id": uid, "organization_id": "org_nothing" })),
        ),
        ("get unknown", Method::GET, path(unknown), None),
        (
            "update unknown",
            Method::PUT,
            path(unknown),
            Some(json!({ "role_slug": "admin" })),
        ),
        (
            "update unknown without role",
            Method::PUT,
            path(unknown),
            Some(json!({})),
        ),
        (
            "deactivate unknown",
            Method::PUT,
            format!("{}/deactivate", path(unknown)),
            Some(json!({})),
        ),
        (
            "reactivate unknown",
            Method::PUT,
            format!("{}/reactivate", path(unknown)),
            Some(json!({})),
        ),
        ("delete unknown", Method::DELETE, path(unknown), None),
    ];
    let before = app.log_len().await;
    for (case, method, p, body) in cases {
        let (s, resp) = app.request(method, &p, body).await;
        assert_error(s, &resp, StatusCode::NOT_FOUND, "entity_not_found", case);
        assert_eq!(app.log_len().await, before, "{case}: log unchanged");
    }
    app.stop().await;
}

#[tokio::test]
async fn listing_memberships_without_organization_or_user_returns_400() {
    let app = TestApp::spawn().await;
    for query in ["", "?statuses=active", "?organization_id=", "?limit=5"] {
        let (s, body) = app.get(&format!("{MEMBERSHIPS}{query}")).await;
        assert_error(
            s,
            &body,
            StatusCode::BAD_REQUEST,
            "missing_user_id_or_organization_id",
            &format!("query {query:?}"),
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn twenty_concurrent_creates_of_the_same_membership_make_exactly_one() {
    let app = TestApp::spawn().await;
    let (user, org) = user_and_org(&app, "ann@example.com", "Acme").await;
    let body = json!({ "user_id": id_of(&user), "organization_id": id_of(&org) });
    // Spawned tasks (one per request) so the server really sees them at once.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let req = app
            .http
            .post(format!("{}{MEMBERSHIPS}", app.base))
            .bearer_auth(&app.key)
            .json(&body);
        tasks.spawn(async move {
            let resp = req.send().await.expect("send");
            let status = resp.status();
            (status, resp.json::<Value>().await.expect("json body"))
        });
    }
    let results: Vec<(StatusCode, Value)> = tasks.join_all().await;

    let created: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(created.len(), 1, "exactly one 201: {results:?}");
    for (s, b) in results.iter().filter(|(s, _)| *s != StatusCode::CREATED) {
        assert_error(
            *s,
            b,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters/organization_membership_already_exists",
            "losing create",
        );
    }
    assert_eq!(membership_events(&app).await, 1, "one membership event in the log");
    let (_, list) = app.get(&format!("{MEMBERSHIPS}?organization_id={}", id_of(&org))).await;
    assert_eq!(ids(&list), vec![id_of(created[0])], "one membership row");
    let feed = app.all_events("&events=organization_membership.created").await;
    assert_eq!(feed.len(), 1, "one public event");
    let distinct: HashSet<String> = feed.iter().map(|e| e["data"]["id"].to_string()).collect();
    assert_eq!(distinct.len(), 1);
    app.stop().await;
}

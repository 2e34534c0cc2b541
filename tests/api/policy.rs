//! `GET`/`PUT /organizations/{id}/policy` (keyledger's extension): defaults, partial changes,
//! refusals that change nothing, tenant tokens, `as_of`, the public event and the audit trail.

use reqwest::Method;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

const PASSWORD: &str = "correct horse battery staple";

fn policy_path(org: &str) -> String {
    format!("/organizations/{org}/policy")
}

async fn org(app: &TestApp, name: &str, domain: &str) -> String {
    id_of(
        &app.create_organization(name, json!([{ "domain": domain, "state": "verified" }]))
            .await,
    )
}

async fn set(app: &TestApp, org: &str, body: Value) -> Value {
    let (s, b) = app.put(&policy_path(org), body).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b
}

fn fields(p: &Value) -> (String, String, String) {
    let f = |k: &str| p[k].as_str().unwrap_or_else(|| panic!("{k} in {p}")).to_string();
    (f("membership"), f("default_role"), f("authentication"))
}

fn triple(m: &str, r: &str, a: &str) -> (String, String, String) {
    (m.into(), r.into(), a.into())
}

#[tokio::test]
async fn an_organization_that_never_set_a_policy_has_the_defaults_and_no_update_time() {
    let app = TestApp::spawn().await;
    let org = org(&app, "Acme", "acme.example").await;
    let (s, p) = app.get(&policy_path(&org)).await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(
        p,
        json!({ "object": "organization_policy", "organization_id": org, "membership": "invite_only",
                "default_role": "member", "authentication": "any", "updated_at": null })
    );
}

#[tokio::test]
async fn a_policy_change_keeps_the_fields_it_does_not_name_and_reads_back_the_same() {
    let app = TestApp::spawn().await;
    let org = org(&app, "Acme", "acme.example").await;
    let first = set(&app, &org, json!({ "membership": "auto" })).await;
    assert_eq!(fields(&first), triple("auto", "member", "any"));
    assert!(first["updated_at"].is_string(), "{first}");
    let second = set(
        &app,
        &org,
        json!({ "default_role": "admin", "authentication": "sso_required", "membership": null }),
    )
    .await;
    assert_eq!(fields(&second), triple("auto", "admin", "sso_required"));
    let (s, read) = app.get(&policy_path(&org)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(read, second, "the read shows what the change answered");
}

#[tokio::test]
async fn a_policy_change_that_changes_nothing_stores_no_event() {
    let app = TestApp::spawn().await;
    let org = org(&app, "Acme", "acme.example").await;
    let before = app.log_len().await;
    let same = set(
        &app,
        &org,
        json!({ "membership": "invite_only", "authentication": "any" }),
    )
    .await;
    assert_eq!(same["updated_at"], Value::Null, "still the defaults: {same}");
    set(&app, &org, json!({})).await;
    assert_eq!(app.log_len().await, before, "no event for a change to the same values");
    set(&app, &org, json!({ "membership": "auto" })).await;
    let after = app.log_len().await;
    set(&app, &org, json!({ "membership": "auto" })).await;
    assert_eq!(app.log_len().await, after);
}

#[tokio::test]
async fn invalid_values_are_refused_with_an_error_per_field_and_change_nothing() {
    let app = TestApp::spawn().await;
    let org = org(&app, "Acme", "acme.example").await;
    set(&app, &org, json!({ "membership": "auto" })).await;
    let path = policy_path(&org);
    let before = state_snapshot(&app.pool).await;
    let (s, b) = app
        .put(
            &path,
            json!({ "membership": "sometimes", "default_role": "owner", "authentication": "sso" }),
        )
        .await;
    assert_error(
        s,
        &b,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request_parameters/invalid_membership_policy",
        "three bad fields",
    );
    let errors: Vec<(&str, &str)> = b["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["field"].as_str().unwrap(), e["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        errors,
        vec![
            ("membership", "invalid_membership_policy"),
            ("default_role", "invalid_role"),
            ("authentication", "invalid_authentication_policy"),
        ]
    );
    assert_eq!(state_snapshot(&app.pool).await, before, "nothing changed");
    // One bad field among good ones: the good ones are not applied either.
    assert_rejected(
        &app,
        Method::PUT,
        &path,
        Some(json!({ "membership": "invite_only", "default_role": "owner" })),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters/invalid_role",
        ),
        "bad role with a good membership",
    )
    .await;
    let (s, b) = app.put(&path, json!({ "membership": "auto", "color": "red" })).await;
    assert!(s.is_client_error(), "unknown field: {s} {b}");
    let (s, b) = app.put(&path, json!({ "membership": 1 })).await;
    assert!(s.is_client_error(), "a number: {s} {b}");
    let (_, p) = app.get(&path).await;
    assert_eq!(fields(&p), triple("auto", "member", "any"));
}

#[tokio::test]
async fn the_policy_of_an_unknown_or_deleted_organization_is_404() {
    let app = TestApp::spawn().await;
    assert_rejected(
        &app,
        Method::PUT,
        &policy_path("org_01NOPE"),
        Some(json!({ "membership": "auto" })),
        (StatusCode::NOT_FOUND, "entity_not_found"),
        "put unknown",
    )
    .await;
    let (s, b) = app.get(&policy_path("org_01NOPE")).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "entity_not_found", "get unknown");
    let org = org(&app, "Gone", "gone.example").await;
    set(&app, &org, json!({ "membership": "auto" })).await;
    let (s, _) = app.delete(&format!("/organizations/{org}")).await;
    assert!(s.is_success());
    let (s, b) = app.get(&policy_path(&org)).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "entity_not_found", "get deleted");
    let (s, b) = app
        .put(&policy_path(&org), json!({ "membership": "invite_only" }))
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "entity_not_found", "put deleted");
}

#[tokio::test]
async fn the_policy_endpoints_need_a_valid_api_key() {
    let app = TestApp::spawn().await;
    let org = org(&app, "Acme", "acme.example").await;
    for (method, body) in [
        (Method::GET, None),
        (Method::PUT, Some(json!({ "membership": "auto" }))),
    ] {
        for key in [None, Some("sk_test_wrong")] {
            let (s, b) = app
                .request_with_key(method.clone(), &policy_path(&org), body.clone(), key)
                .await;
            assert_error(
                s,
                &b,
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                &format!("{method} {key:?}"),
            );
        }
    }
    let (_, p) = app.get(&policy_path(&org)).await;
    assert_eq!(p["membership"], "invite_only");
}

#[tokio::test]
async fn an_admin_access_token_reads_its_organizations_policy_only_and_cannot_change_it() {
    let app = TestApp::spawn().await;
    let a = org(&app, "Alpha", "alpha.example").await;
    let b = org(&app, "Beta", "beta.example").await;
    set(&app, &a, json!({ "authentication": "sso_required" })).await;
    set(&app, &b, json!({ "membership": "auto" })).await;
    let (s, ann) = app
        .post(
            "/user_management/users",
            json!({ "email": "ann@example.com", "password": PASSWORD, "email_verified": true }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{ann}");
    app.create_membership(&id_of(&ann), &a, Some("admin")).await;
    let (s, signed) = app
        .request_with_key(
            Method::POST,
            "/user_management/authenticate",
            Some(
                json!({ "grant_type": "password", "client_id": app.client_id(), "client_secret": app.key,
                         "email": "ann@example.com", "password": PASSWORD }),
            ),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{signed}");
    let token = signed["access_token"].as_str().unwrap().to_string();
    let (s, own) = app
        .request_with_key(Method::GET, &policy_path(&a), None, Some(&token))
        .await;
    assert_eq!(s, StatusCode::OK, "{own}");
    assert_eq!(own["authentication"], "sso_required");
    let (s, other) = app
        .request_with_key(Method::GET, &policy_path(&b), None, Some(&token))
        .await;
    assert_error(
        s,
        &other,
        StatusCode::NOT_FOUND,
        "entity_not_found",
        "another organization",
    );
    let (s, other) = app
        .request_with_key(
            Method::GET,
            &format!("{}?as_of=2026-01-01T00:00:00Z", policy_path(&a)),
            None,
            Some(&token),
        )
        .await;
    assert_error(s, &other, StatusCode::FORBIDDEN, "forbidden", "as_of with a token");
    let before = state_snapshot(&app.pool).await;
    let (s, refused) = app
        .request_with_key(
            Method::PUT,
            &policy_path(&a),
            Some(json!({ "authentication": "any" })),
            Some(&token),
        )
        .await;
    assert_error(s, &refused, StatusCode::FORBIDDEN, "forbidden", "a token cannot write");
    assert_eq!(state_snapshot(&app.pool).await, before);
}

#[tokio::test]
async fn as_of_reads_the_policy_as_it_was_before_and_after_each_change() {
    let app = TestApp::spawn().await;
    let org = org(&app, "Acme", "acme.example").await;
    let created = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let first = set(&app, &org, json!({ "membership": "auto" })).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let between = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let second = set(&app, &org, json!({ "authentication": "sso_required" })).await;
    let at = |t: chrono::DateTime<chrono::Utc>| {
        format!(
            "{}?as_of={}",
            policy_path(&org),
            t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        )
    };
    let (s, p) = app.get(&at(created)).await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(
        (fields(&p), p["updated_at"].clone()),
        (triple("invite_only", "member", "any"), Value::Null)
    );
    let (_, p) = app.get(&at(between)).await;
    assert_eq!(p, first, "between the changes");
    let (_, p) = app.get(&at(chrono::Utc::now())).await;
    assert_eq!(p, second, "after both");
    let (s, b) = app
        .get(&format!("{}?as_of=2000-01-01T00:00:00Z", policy_path(&org)))
        .await;
    assert_error(
        s,
        &b,
        StatusCode::NOT_FOUND,
        "entity_not_found",
        "before the organization existed",
    );
    let (s, b) = app.get(&format!("{}?as_of=yesterday", policy_path(&org))).await;
    assert_error(
        s,
        &b,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request_parameters",
        "bad as_of",
    );
}

#[tokio::test]
async fn a_policy_change_is_a_public_event_and_an_audit_trail_entry_with_the_previous_values() {
    let app = TestApp::spawn().await;
    let org = org(&app, "Acme", "acme.example").await;
    let first = set(&app, &org, json!({ "membership": "auto" })).await;
    let second = set(&app, &org, json!({ "default_role": "admin" })).await;
    let events = app.all_events("&events=organization.policy_updated").await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["event"], "organization.policy_updated");
    assert_eq!(events[0]["data"], first);
    assert_eq!(events[1]["data"], second);
    assert_eq!(
        events[1]["context"]["previous_attributes"],
        json!({ "default_role": "member" }),
        "{}",
        events[1]
    );
    let trail: Vec<Value> = app
        .all_pages(&format!("/audit_logs/events?organization_id={org}&order=asc&limit=100"))
        .await
        .into_iter()
        .filter(|e| e["action"] == "organization_policy.updated")
        .collect();
    assert_eq!(trail.len(), 2, "{trail:?}");
    assert_eq!(
        trail[0]["metadata"]["previous_membership"],
        Value::Null,
        "never set before: {}",
        trail[0]
    );
    let m = &trail[1]["metadata"];
    assert_eq!(
        (
            m["membership"].clone(),
            m["default_role"].clone(),
            m["previous_default_role"].clone(),
            m["previous_membership"].clone()
        ),
        (json!("auto"), json!("admin"), json!("member"), json!("auto")),
        "{m}"
    );
    assert_eq!(trail[1]["targets"][0]["id"], json!(org));
    // The action is keyledger's own: an application cannot forge it.
    let (s, b) = app
        .post(
            "/audit_logs/events",
            json!({ "organization_id": org, "event": { "action": "organization_policy.updated",
                "occurred_at": "2026-01-01T00:00:00Z", "actor": { "id": "u", "type": "user" },
                "targets": [{ "id": "t", "type": "t" }], "context": { "location": "x" } } }),
        )
        .await;
    assert_error(
        s,
        &b,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request_parameters/reserved_action",
        "forged action",
    );
}

#[tokio::test]
async fn webhook_endpoints_may_subscribe_to_policy_changes() {
    let app = TestApp::spawn().await;
    let (s, e) = app
        .post(
            "/webhook_endpoints",
            json!({ "endpoint_url": "http://127.0.0.1:9/hook", "events": ["organization.policy_updated"] }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
}

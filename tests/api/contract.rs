//! Tests: the WorkOS contract gaps of issue 7 — emails in NFC without invisible characters,
//! memberships listed active by default and reactivated by a matching create,
//! `stripe_customer_id` never null, garbage cursors refused on every list, the audit log
//! configuration and retention operations, and user fields the SDKs send (`name`, the end
//! user's `ip_address`/`user_agent`). Rejected requests must change nothing.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

const USERS: &str = "/user_management/users";
const MEMBERSHIPS: &str = "/user_management/organization_memberships";

/// The stored events of one aggregate, oldest first: (event_type, payload, metadata).
async fn stored(app: &TestApp, aggregate_id: &str) -> Vec<(String, Value, Value)> {
    sqlx::query_as("select event_type, payload, metadata from event where aggregate_id = $1 order by sequence")
        .bind(aggregate_id)
        .fetch_all(&app.pool)
        .await
        .expect("stored events")
}

#[tokio::test]
async fn cafe_written_composed_and_decomposed_is_one_user() {
    let app = TestApp::spawn().await;
    let composed = "caf\u{e9}@example.com";
    let decomposed = "cafe\u{301}@example.com";
    let user = app.create_user(composed).await;
    assert_eq!(user["email"], composed, "stored in NFC");
    assert_rejected(
        &app,
        Method::POST,
        USERS,
        Some(json!({ "email": decomposed })),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters/email_not_available",
        ),
        "the decomposed spelling of a taken email",
    )
    .await;
    assert_rejected(
        &app,
        Method::POST,
        USERS,
        Some(json!({ "email": "CAFE\u{301}@EXAMPLE.COM" })),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters/email_not_available",
        ),
        "the decomposed spelling in upper case",
    )
    .await;
    // A user created with the decomposed spelling is stored composed.
    let other = app.create_user("jose\u{301}@example.com").await;
    assert_eq!(other["email"], "jos\u{e9}@example.com");
    // Lookups normalise the same way, and stay case-insensitive.
    for spelling in [
        "cafe%CC%81%40example.com",
        "caf%C3%A9%40example.com",
        "CAF%C3%89%40Example.com",
    ] {
        let list = app.get(&format!("{USERS}?email={spelling}")).await.1;
        assert_eq!(ids(&list), vec![id_of(&user)], "email filter {spelling}");
    }
    app.stop().await;
}

#[tokio::test]
async fn emails_with_invisible_or_direction_characters_are_refused_on_create_and_update() {
    let app = TestApp::spawn().await;
    let user = app.create_user("ann@example.com").await;
    let cases = [
        ("zero width space", "a\u{200B}nn@example.com"),
        ("soft hyphen", "an\u{AD}n@example.com"),
        ("byte order mark", "\u{FEFF}bob@example.com"),
        ("right-to-left override", "bob\u{202E}@example.com"),
        ("first strong isolate", "bob@exa\u{2068}mple.com"),
        ("left-to-right mark", "bob@example.com\u{200E}"),
        ("arabic letter mark", "b\u{61C}ob@example.com"),
    ];
    for (what, email) in cases {
        assert_rejected(
            &app,
            Method::POST,
            USERS,
            Some(json!({ "email": email })),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_parameters/invalid_email",
            ),
            &format!("create with a {what}"),
        )
        .await;
        let path = format!("{USERS}/{}", id_of(&user));
        assert_rejected(
            &app,
            Method::PUT,
            &path,
            Some(json!({ "email": email })),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_parameters/invalid_email",
            ),
            &format!("update with a {what}"),
        )
        .await;
    }
    let (_, body) = app.post(USERS, json!({ "email": "a\u{200B}b@example.com" })).await;
    assert_eq!(body["errors"][0]["field"], "email", "{body}");
    let (_, list) = app.get(USERS).await;
    assert_eq!(ids(&list), vec![id_of(&user)], "no user was created");
    app.stop().await;
}

async fn org_and_members(app: &TestApp, n: usize) -> (String, Vec<String>, Vec<String>) {
    let org = id_of(&app.create_organization("Acme", json!([])).await);
    let (mut users, mut members) = (Vec::new(), Vec::new());
    for i in 0..n {
        let u = id_of(&app.create_user(&format!("u{i}@example.com")).await);
        members.push(id_of(&app.create_membership(&u, &org, None).await));
        users.push(u);
    }
    (org, users, members)
}

#[tokio::test]
async fn a_key_given_twice_in_a_body_is_refused_rather_than_one_value_dropped() {
    let app = TestApp::spawn().await;
    let before = app.log_len().await;
    let cases: [(&str, &[u8], &str); 2] = [
        (
            USERS,
            br#"{"email": "a@example.com", "email": "b@example.com"}"#,
            "email",
        ),
        (
            "/organizations",
            br#"{"name": "Acme", "metadata": {"tier": "gold", "tier": "free"}}"#,
            "tier",
        ),
    ];
    for (path, body, key) in cases {
        let (s, resp) = app.raw(Method::POST, path, "application/json", body.to_vec()).await;
        assert_error(
            s,
            &resp,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters/duplicate_field",
            path,
        );
        assert_eq!(resp["errors"][0]["field"], key, "{resp}");
        assert_eq!(resp["message"], format!("{key} is given twice in one object"), "{resp}");
    }
    assert_eq!(app.log_len().await, before, "nothing was created");
    app.stop().await;
}

#[tokio::test]
async fn membership_lists_show_only_active_memberships_unless_statuses_says_otherwise() {
    let app = TestApp::spawn().await;
    let (org, users, m) = org_and_members(&app, 3).await;
    let (s, body) = app.put(&format!("{MEMBERSHIPS}/{}/deactivate", m[1]), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let cases = [
        (
            "by organization",
            format!("organization_id={org}"),
            vec![m[0].clone(), m[2].clone()],
        ),
        ("by the inactive member", format!("user_id={}", users[1]), vec![]),
        (
            "by the inactive member, statuses=inactive",
            format!("user_id={}&statuses=inactive", users[1]),
            vec![m[1].clone()],
        ),
        (
            "as_of, by organization",
            format!("organization_id={org}&as_of={at}"),
            vec![m[0].clone(), m[2].clone()],
        ),
        (
            "as_of, statuses=active,inactive",
            format!("organization_id={org}&as_of={at}&statuses=active,inactive"),
            m.clone(),
        ),
    ];
    for (case, query, want) in cases {
        let (s, list) = app.get(&format!("{MEMBERSHIPS}?{query}&order=asc")).await;
        assert_eq!(s, StatusCode::OK, "{case}: {list}");
        assert_eq!(ids(&list), want, "{case}");
    }
    app.stop().await;
}

#[tokio::test]
async fn creating_a_membership_that_matches_an_inactive_one_reactivates_it_with_the_given_role() {
    let app = TestApp::spawn().await;
    let (org, users, m) = org_and_members(&app, 1).await;
    let (s, body) = app.put(&format!("{MEMBERSHIPS}/{}/deactivate", m[0]), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let events_before = app.all_events("&events=organization_membership.updated").await.len();

    let (s, again) = app
        .post(
            MEMBERSHIPS,
            json!({ "user_id": users[0], "organization_id": org, "role_slug": "admin" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{again}");
    assert_eq!(again["id"], m[0].as_str(), "the same membership: {again}");
    assert_eq!(again["status"], "active", "{again}");
    assert_eq!(again["role"]["slug"], "admin", "{again}");
    assert_eq!(again["user"]["id"], users[0].as_str(), "{again}");

    let types: Vec<String> = stored(&app, &m[0]).await.into_iter().map(|e| e.0).collect();
    assert_eq!(
        types,
        [
            "MembershipCreated",
            "MembershipDeactivated",
            "MembershipReactivated",
            "MembershipRoleChanged"
        ],
        "reactivation and role change are recorded"
    );
    let updated = app.all_events("&events=organization_membership.updated").await;
    assert_eq!(updated.len(), events_before + 2, "two public updates: {updated:?}");
    let last = &updated[updated.len() - 1];
    assert_eq!(last["data"]["status"], "active");
    assert_eq!(last["data"]["role"]["slug"], "admin");

    // Now active: a second create is the usual refusal and changes nothing.
    assert_rejected(
        &app,
        Method::POST,
        MEMBERSHIPS,
        Some(json!({ "user_id": users[0], "organization_id": org })),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters/organization_membership_already_exists",
        ),
        "create matching an active membership",
    )
    .await;
    // Reactivating with the role it already has records only the reactivation.
    app.put(&format!("{MEMBERSHIPS}/{}/deactivate", m[0]), json!({})).await;
    let (s, again) = app
        .post(
            MEMBERSHIPS,
            json!({ "user_id": users[0], "organization_id": org, "role_slugs": ["admin"] }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{again}");
    let types: Vec<String> = stored(&app, &m[0]).await.into_iter().map(|e| e.0).collect();
    assert_eq!(
        types.last().map(String::as_str),
        Some("MembershipReactivated"),
        "{types:?}"
    );
    assert_eq!(types.len(), 6, "{types:?}");
    let (_, list) = app.get(&format!("{MEMBERSHIPS}?organization_id={org}")).await;
    assert_eq!(ids(&list), vec![m[0].clone()], "still one membership");
    app.stop().await;
}

#[tokio::test]
async fn stripe_customer_id_is_absent_until_set_and_never_null() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme", json!([])).await;
    let id = id_of(&org);
    assert!(org.get("stripe_customer_id").is_none(), "absent on create: {org}");
    let path = format!("/organizations/{id}");
    let (s, set) = app.put(&path, json!({ "stripe_customer_id": "cus_123" })).await;
    assert_eq!(s, StatusCode::OK, "{set}");
    assert_eq!(set["stripe_customer_id"], "cus_123");
    let (_, list) = app.get("/organizations").await;
    assert_eq!(list["data"][0]["stripe_customer_id"], "cus_123");
    let (s, cleared) = app.put(&path, json!({ "stripe_customer_id": null })).await;
    assert_eq!(s, StatusCode::OK, "{cleared}");
    assert!(
        cleared.get("stripe_customer_id").is_none(),
        "absent once cleared: {cleared}"
    );
    let updates = app.all_events("&events=organization.updated").await;
    assert_eq!(updates.len(), 2, "{updates:?}");
    assert_eq!(
        updates[0]["context"]["previous_attributes"]["stripe_customer_id"],
        Value::Null,
        "it was unset before: {}",
        updates[0]
    );
    assert!(
        updates[0]["context"]["previous_attributes"]
            .as_object()
            .is_some_and(|o| o.contains_key("stripe_customer_id")),
        "{}",
        updates[0]
    );
    assert_eq!(
        updates[1]["context"]["previous_attributes"]["stripe_customer_id"],
        "cus_123"
    );
    assert!(updates[1]["data"].get("stripe_customer_id").is_none(), "{}", updates[1]);
    app.stop().await;
}

#[tokio::test]
async fn garbage_cursors_are_refused_on_every_list_with_invalid_cursor() {
    let app = TestApp::spawn().await;
    let (org, users, _) = org_and_members(&app, 2).await;
    let endpoint = {
        let (s, we) = app
            .post(
                "/webhook_endpoints",
                json!({ "endpoint_url": "https://hooks.example.com/x", "events": ["organization.deleted"] }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{we}");
        id_of(&we)
    };
    let lists = [
        USERS.to_string(),
        "/organizations".to_string(),
        format!("{MEMBERSHIPS}?organization_id={org}"),
        format!("{MEMBERSHIPS}?organization_id={org}&as_of=2030-01-01T00:00:00Z"),
        "/events".to_string(),
        "/webhook_endpoints".to_string(),
        format!("/webhook_endpoints/{endpoint}/deliveries"),
        "/audit_logs/actions".to_string(),
        format!("/audit_logs/events?organization_id={org}"),
    ];
    // Garbage, an id of another kind of object, and the right prefix without a ULID.
    let cursors = ["garbage", org.as_str(), "user_123", "om_x"];
    for list in &lists {
        let sep = if list.contains('?') { '&' } else { '?' };
        for field in ["before", "after"] {
            for cursor in cursors {
                if list.starts_with("/organizations") && cursor == org {
                    continue; // a real organization id is a position of the organization list
                }
                let path = format!("{list}{sep}{field}={cursor}");
                assert_rejected(
                    &app,
                    Method::GET,
                    &path,
                    None,
                    (
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_request_parameters/invalid_cursor",
                    ),
                    &path,
                )
                .await;
                let (_, body) = app.get(&path).await;
                assert_eq!(body["errors"][0]["field"], field, "{path}: {body}");
            }
        }
    }
    // An id of the right kind stays a position after its object is deleted: paging survives.
    let (s, _) = app.delete(&format!("{USERS}/{}", users[0])).await;
    assert_eq!(s, StatusCode::OK);
    let (s, page) = app.get(&format!("{USERS}?order=asc&after={}", users[0])).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_eq!(ids(&page), vec![users[1].clone()]);
    app.stop().await;
}

#[tokio::test]
async fn audit_log_retention_is_read_set_validated_and_recorded_in_the_log_and_the_trail() {
    let app = TestApp::spawn().await;
    let org = id_of(&app.create_organization("Acme", json!([])).await);
    let other = id_of(&app.create_organization("Other", json!([])).await);
    let retention = format!("/organizations/{org}/audit_logs_retention");
    let configuration = format!("/organizations/{org}/audit_log_configuration");

    let (s, body) = app.get(&retention).await;
    assert_eq!((s, body), (StatusCode::OK, json!({ "retention_period_in_days": null })));
    let (s, body) = app.get(&configuration).await;
    assert_eq!(
        (s, body),
        (
            StatusCode::OK,
            json!({ "organization_id": org, "retention_period_in_days": 30, "state": "active" })
        )
    );

    let (s, body) = app.put(&retention, json!({ "retention_period_in_days": 365 })).await;
    assert_eq!((s, body), (StatusCode::OK, json!({ "retention_period_in_days": 365 })));
    assert_eq!(app.get(&retention).await.1["retention_period_in_days"], 365);
    assert_eq!(app.get(&configuration).await.1["retention_period_in_days"], 365);
    let before = app.log_len().await;
    let (s, _) = app.put(&retention, json!({ "retention_period_in_days": 365 })).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(app.log_len().await, before, "setting the same value appends nothing");
    let (s, body) = app.put(&retention, json!({ "retention_period": "1_MONTH" })).await;
    assert_eq!((s, body), (StatusCode::OK, json!({ "retention_period_in_days": 30 })));

    let events = stored(&app, &org).await;
    let changes: Vec<&Value> = events
        .iter()
        .filter(|e| e.0 == "OrganizationAuditLogsRetentionChanged")
        .map(|e| &e.1["OrganizationAuditLogsRetentionChanged"])
        .collect();
    assert_eq!(changes.len(), 2, "{events:?}");
    assert_eq!(
        (
            &changes[0]["retention_period_in_days"],
            &changes[0]["previous_retention_period_in_days"]
        ),
        (&json!(365), &Value::Null)
    );
    assert_eq!(
        (
            &changes[1]["retention_period_in_days"],
            &changes[1]["previous_retention_period_in_days"]
        ),
        (&json!(30), &json!(365))
    );
    let trail = app
        .all_pages(&format!("/audit_logs/events?organization_id={org}&order=asc&limit=100"))
        .await;
    let shown: Vec<&Value> = trail
        .iter()
        .filter(|e| e["action"] == "audit_logs_retention.updated")
        .collect();
    assert_eq!(shown.len(), 2, "{trail:?}");
    assert_eq!(shown[1]["metadata"]["retention_period_in_days"], 30);
    assert_eq!(shown[1]["metadata"]["previous_retention_period_in_days"], 365);
    assert_eq!(shown[1]["actor"]["type"], "api_key");
    assert_eq!(
        shown[1]["targets"],
        json!([{ "id": org, "type": "organization", "name": null }])
    );
    let (_, not_public) = app.get("/events?limit=100").await;
    assert!(
        !not_public.to_string().contains("retention"),
        "no public event: {not_public}"
    );
    let other_trail = app
        .all_pages(&format!("/audit_logs/events?organization_id={other}&limit=100"))
        .await;
    assert!(
        other_trail
            .iter()
            .all(|e| e["action"] != "audit_logs_retention.updated"),
        "{other_trail:?}"
    );
    assert_eq!(
        app.get(&format!("/organizations/{other}/audit_logs_retention")).await.1["retention_period_in_days"],
        Value::Null
    );
    app.stop().await;
}

#[tokio::test]
async fn bad_retention_requests_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let org = id_of(&app.create_organization("Acme", json!([])).await);
    let retention = format!("/organizations/{org}/audit_logs_retention");
    let invalid = StatusCode::UNPROCESSABLE_ENTITY;
    let cases = [
        (
            "7 days",
            json!({ "retention_period_in_days": 7 }),
            "invalid_retention_period",
        ),
        (
            "31 days",
            json!({ "retention_period_in_days": 31 }),
            "invalid_retention_period",
        ),
        (
            "negative",
            json!({ "retention_period_in_days": -30 }),
            "invalid_retention_period",
        ),
        ("a string", json!({ "retention_period_in_days": "30" }), "invalid_type"),
        ("empty body", json!({}), "required"),
        (
            "an unknown period",
            json!({ "retention_period": "2_YEARS" }),
            "invalid_retention_period",
        ),
        (
            "both forms",
            json!({ "retention_period": "1_YEAR", "retention_period_in_days": 365 }),
            "invalid_retention_period",
        ),
        ("unknown field", json!({ "days": 30 }), "unknown_field"),
    ];
    for (case, body, code) in cases {
        let want = format!("invalid_request_parameters/{code}");
        assert_rejected(&app, Method::PUT, &retention, Some(body), (invalid, &want), case).await;
    }
    let unknown = "org_01JZZZZZZZZZZZZZZZZZZZZZZZ";
    for (method, path) in [
        (Method::GET, format!("/organizations/{unknown}/audit_logs_retention")),
        (Method::GET, format!("/organizations/{unknown}/audit_log_configuration")),
    ] {
        assert_rejected(
            &app,
            method,
            &path,
            None,
            (StatusCode::NOT_FOUND, "entity_not_found"),
            &path,
        )
        .await;
    }
    let path = format!("/organizations/{unknown}/audit_logs_retention");
    assert_rejected(
        &app,
        Method::PUT,
        &path,
        Some(json!({ "retention_period_in_days": 30 })),
        (StatusCode::NOT_FOUND, "entity_not_found"),
        "set on an unknown organization",
    )
    .await;
    let (s, _) = app.delete(&format!("/organizations/{org}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_rejected(
        &app,
        Method::PUT,
        &retention,
        Some(json!({ "retention_period_in_days": 30 })),
        (StatusCode::NOT_FOUND, "entity_not_found"),
        "set on a deleted organization",
    )
    .await;
    // The trail's action name is reserved: an application cannot forge a retention change.
    let other = id_of(&app.create_organization("Other", json!([])).await);
    let forged = json!({ "organization_id": other, "event": {
        "action": "audit_logs_retention.updated", "occurred_at": "2026-01-01T00:00:00Z",
        "actor": { "id": "u", "type": "user" }, "targets": [{ "id": other, "type": "organization" }],
        "context": { "location": "203.0.113.1" } } });
    assert_rejected(
        &app,
        Method::POST,
        "/audit_logs/events",
        Some(forged),
        (invalid, "invalid_request_parameters/reserved_action"),
        "a forged retention change",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_users_name_is_stored_returned_updated_and_in_its_events() {
    let app = TestApp::spawn().await;
    let (s, user) = app
        .post(USERS, json!({ "email": "ann@example.com", "name": "Ann Lee" }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{user}");
    assert_eq!(user["name"], "Ann Lee");
    let id = id_of(&user);
    let path = format!("{USERS}/{id}");
    assert_eq!(app.get(&path).await.1["name"], "Ann Lee");
    let (s, up) = app.put(&path, json!({ "name": "Ann B. Lee" })).await;
    assert_eq!(s, StatusCode::OK, "{up}");
    assert_eq!(up["name"], "Ann B. Lee");
    let (_, cleared) = app.put(&path, json!({ "name": null })).await;
    assert_eq!(cleared["name"], Value::Null);
    let events = stored(&app, &id).await;
    assert_eq!(events[0].1["UserCreated"]["name"], "Ann Lee", "{:?}", events[0]);
    assert_eq!(events[1].1["UserUpdated"]["changes"]["name"], "Ann B. Lee");
    let feed = app.all_events("&events=user.created,user.updated").await;
    assert_eq!(feed[0]["data"]["name"], "Ann Lee");
    assert_eq!(feed[1]["context"]["previous_attributes"], json!({ "name": "Ann Lee" }));
    // A user created without a name has it null, and the stored event has no name at all.
    let plain = app.create_user("bob@example.com").await;
    assert_eq!(plain["name"], Value::Null);
    assert!(stored(&app, &id_of(&plain)).await[0].1["UserCreated"]
        .get("name")
        .is_none());
    assert_rejected(
        &app,
        Method::POST,
        USERS,
        Some(json!({ "email": "cy@example.com", "name": "x".repeat(257) })),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters/invalid_value",
        ),
        "a name too long",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn the_end_users_ip_address_and_user_agent_go_into_the_events_metadata() {
    let app = TestApp::spawn().await;
    let (s, user) = app
        .post(
            USERS,
            json!({ "email": "ann@example.com", "ip_address": "203.0.113.9",
                    "user_agent": "Browser/1.0", "signals_id": "sig_1" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{user}");
    let events = stored(&app, &id_of(&user)).await;
    let meta = &events[0].2;
    assert_eq!(meta["end_user_ip_address"], "203.0.113.9", "{meta}");
    assert_eq!(meta["end_user_user_agent"], "Browser/1.0", "{meta}");
    assert_eq!(meta["radar_signals_id"], "sig_1", "{meta}");
    assert!(meta["ip"].is_string(), "the connection's own IP stays: {meta}");
    let cases = [
        (
            "a bad ip_address",
            json!({ "email": "b@example.com", "ip_address": "not-an-ip" }),
            "invalid_ip_address",
        ),
        (
            "a user_agent with a control character",
            json!({ "email": "b@example.com", "user_agent": "a\u{7}b" }),
            "invalid_value",
        ),
        (
            "password_salt_position (ssha256 only)",
            json!({ "email": "b@example.com", "password_salt_position": "prefix" }),
            "unsupported_password_hash_type",
        ),
    ];
    for (case, body, code) in cases {
        let want = format!("invalid_request_parameters/{code}");
        assert_rejected(
            &app,
            Method::POST,
            USERS,
            Some(body),
            (StatusCode::UNPROCESSABLE_ENTITY, &want),
            case,
        )
        .await;
    }
    app.stop().await;
}

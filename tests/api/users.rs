//! Tests: `/user_management/users` through the real HTTP API — create, read, list, update, delete —
//! and that every rejected request leaves the log and the read models exactly as they were.
//! Passwords must never leave the server: not in responses, event payloads or the `event` table.

use std::collections::HashSet;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

const USERS: &str = "/user_management/users";

/// Percent-encodes a query-string value.
fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn user_path(id: &str) -> String {
    format!("{USERS}/{id}")
}

/// The stored password hash of a user, if any.
async fn credential(app: &TestApp, user_id: &str) -> Option<String> {
    sqlx::query_as::<_, (String,)>("select password_hash from credential where user_id = $1")
        .bind(user_id)
        .fetch_optional(&app.pool)
        .await
        .expect("read credential")
        .map(|r| r.0)
}

/// Every payload and metadata of the event log as text.
async fn log_text(app: &TestApp) -> String {
    let rows: Vec<(String, String)> = sqlx::query_as("select payload::text, metadata::text from event")
        .fetch_all(&app.pool)
        .await
        .expect("read event table");
    rows.into_iter().map(|(p, m)| format!("{p}\n{m}\n")).collect()
}

#[tokio::test]
async fn creating_a_user_without_a_password_returns_the_stored_user() {
    let app = TestApp::spawn().await;
    let (s, user) = app
        .post(
            USERS,
            json!({
                "email": "Ann.Lee@Example.com",
                "first_name": "Ann",
                "last_name": "Lee",
                "email_verified": true,
                "external_id": "ext-ann",
                "metadata": { "team": "blue" },
            }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{user}");
    assert_eq!(user["object"], "user");
    assert!(id_of(&user).starts_with("user_"), "{user}");
    assert_eq!(user["email"], "Ann.Lee@Example.com");
    assert_eq!(user["first_name"], "Ann");
    assert_eq!(user["last_name"], "Lee");
    assert_eq!(user["email_verified"], true);
    assert_eq!(user["external_id"], "ext-ann");
    assert_eq!(user["metadata"], json!({ "team": "blue" }));
    assert!(
        user["created_at"].is_string() && user["updated_at"].is_string(),
        "{user}"
    );

    let (s, got) = app.get(&user_path(&id_of(&user))).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(got, user, "GET returns what create returned");
    assert_eq!(
        credential(&app, &id_of(&user)).await,
        None,
        "no password, no credential"
    );
}

#[tokio::test]
async fn a_password_is_stored_only_as_a_hash_and_never_appears_anywhere() {
    let app = TestApp::spawn().await;
    let first = "Zebra-Quartz-1947-plaintext";
    let second = "Walrus-Ember-2081-plaintext";
    let (s, user) = app
        .post(USERS, json!({ "email": "pw@example.com", "password": first }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{user}");
    let id = id_of(&user);
    let hash = credential(&app, &id).await.expect("a credential row");
    assert!(hash.starts_with("$argon2id$"), "stored as argon2id: {hash}");
    assert!(!hash.contains(first), "the hash is not the password");

    let (s, updated) = app.put(&user_path(&id), json!({ "password": second })).await;
    assert_eq!(s, StatusCode::OK, "{updated}");
    let new_hash = credential(&app, &id).await.expect("a credential row");
    assert_ne!(new_hash, hash, "a password change replaces the hash");

    let (_, got) = app.get(&user_path(&id)).await;
    let (_, list) = app.get(USERS).await;
    let events = app.all_events("").await;
    let log = log_text(&app).await;
    let responses = [
        ("create response", user.to_string()),
        ("update response", updated.to_string()),
        ("GET response", got.to_string()),
        ("list response", list.to_string()),
        ("GET /events", Value::Array(events).to_string()),
        ("event table", log),
    ];
    for (what, text) in responses {
        for secret in [first, second, hash.as_str(), new_hash.as_str()] {
            assert!(!text.contains(secret), "{what} leaks a password or its hash: {text}");
        }
        assert!(!text.contains("password_hash"), "{what} mentions password_hash: {text}");
    }
    assert!(user.get("password").is_none() && updated.get("password").is_none());
}

#[tokio::test]
async fn a_password_change_adds_a_credential_row_for_a_user_without_one() {
    let app = TestApp::spawn().await;
    let user = app.create_user("nopw@example.com").await;
    let id = id_of(&user);
    assert_eq!(credential(&app, &id).await, None);
    let before = app.log_len().await;

    let (s, body) = app
        .put(&user_path(&id), json!({ "password": "a-long-enough-one" }))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(credential(&app, &id).await.is_some_and(|h| h.starts_with("$argon2id$")));
    assert!(app.log_len().await > before, "the change is an event");
    let changed = app.all_events("&events=user.updated").await;
    assert_eq!(changed.len(), 1, "one user.updated event: {changed:?}");
}

#[tokio::test]
async fn getting_a_user_by_external_id_returns_that_user() {
    let app = TestApp::spawn().await;
    let (s, user) = app
        .post(USERS, json!({ "email": "x@example.com", "external_id": "crm-42" }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{user}");
    app.create_user("other@example.com").await;

    let (s, got) = app.get(&format!("{USERS}/external_id/crm-42")).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(got, user);

    let (s, body) = app.get(&format!("{USERS}/external_id/crm-43")).await;
    assert_error(
        s,
        &body,
        StatusCode::NOT_FOUND,
        "entity_not_found",
        "unknown external_id",
    );
}

#[tokio::test]
async fn listing_users_by_email_matches_case_insensitively() {
    let app = TestApp::spawn().await;
    let ann = app.create_user("Ann.Lee+tag@Example.com").await;
    app.create_user("bob@example.com").await;

    for query in [
        "Ann.Lee+tag@Example.com",
        "ann.lee+tag@example.com",
        "ANN.LEE+TAG@EXAMPLE.COM",
    ] {
        let (s, list) = app.get(&format!("{USERS}?email={}", enc(query))).await;
        assert_eq!(s, StatusCode::OK, "{list}");
        assert_eq!(ids(&list), vec![id_of(&ann)], "email filter {query:?}");
        assert_eq!(list["object"], "list");
    }
    let (s, list) = app.get(&format!("{USERS}?email={}", enc("nobody@example.com"))).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert!(ids(&list).is_empty(), "no match: {list}");
}

#[tokio::test]
async fn listing_users_by_organization_id_returns_only_its_members() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme", json!([])).await;
    let other = app.create_organization("Globex", json!([])).await;
    let a = app.create_user("a@example.com").await;
    let b = app.create_user("b@example.com").await;
    let c = app.create_user("c@example.com").await;
    app.create_membership(&id_of(&a), &id_of(&org), None).await;
    app.create_membership(&id_of(&b), &id_of(&org), None).await;
    app.create_membership(&id_of(&c), &id_of(&other), None).await;

    let (s, list) = app.get(&format!("{USERS}?organization_id={}", id_of(&org))).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let got: HashSet<String> = ids(&list).into_iter().collect();
    assert_eq!(got, HashSet::from([id_of(&a), id_of(&b)]));

    let (s, list) = app.get(&format!("{USERS}?organization_id=org_unknown")).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert!(ids(&list).is_empty(), "{list}");
}

/// Follows `list_metadata[cursor]` from a first page to the end, collecting ids.
async fn walk(app: &TestApp, first: &str, cursor: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut path = first.to_string();
    for _ in 0..20 {
        let (s, page) = app.get(&path).await;
        assert_eq!(s, StatusCode::OK, "{path}: {page}");
        let page_ids = ids(&page);
        assert!(page_ids.len() <= 3, "{path}: limit honoured: {page}");
        out.extend(page_ids);
        match page["list_metadata"][cursor].as_str() {
            Some(c) => path = format!("{first}&{cursor}={c}"),
            None => return out,
        }
    }
    panic!("pagination from {first} did not end");
}

#[tokio::test]
async fn paging_through_users_visits_every_user_exactly_once_in_either_order() {
    let app = TestApp::spawn().await;
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(id_of(&app.create_user(&format!("page{i}@example.com")).await));
    }
    let mut ascending = created.clone();
    ascending.sort();
    let mut descending = ascending.clone();
    descending.reverse();

    let (s, first) = app.get(&format!("{USERS}?limit=3&order=asc")).await;
    assert_eq!(s, StatusCode::OK, "{first}");
    assert!(
        first["list_metadata"]["before"].is_null(),
        "first page has no before: {first}"
    );

    let cases = [
        (
            "asc via after",
            format!("{USERS}?limit=3&order=asc"),
            "after",
            ascending.clone(),
        ),
        (
            "desc via after",
            format!("{USERS}?limit=3&order=desc"),
            "after",
            descending.clone(),
        ),
        (
            "default order is desc",
            format!("{USERS}?limit=3"),
            "after",
            descending.clone(),
        ),
    ];
    for (what, first, cursor, want) in cases {
        let got = walk(&app, &first, cursor).await;
        assert_eq!(got, want, "{what}: every id once, in order");
    }

    // Backwards: from after the last id, `before` cursors walk towards the start.
    let last = ascending.last().expect("ids").clone();
    let mut back = Vec::new();
    let mut path = format!("{USERS}?limit=3&order=asc&before={last}");
    for _ in 0..10 {
        let (s, page) = app.get(&path).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        let mut page_ids = ids(&page);
        let mut sorted = page_ids.clone();
        sorted.sort();
        assert_eq!(page_ids, sorted, "a page keeps display order: {page}");
        page_ids.append(&mut back);
        back = page_ids;
        match page["list_metadata"]["before"].as_str() {
            Some(c) => path = format!("{USERS}?limit=3&order=asc&before={c}"),
            None => break,
        }
    }
    assert_eq!(back, ascending[..6].to_vec(), "before walks every earlier id once");
}

#[tokio::test]
async fn updating_a_user_changes_the_given_fields_and_keeps_the_rest() {
    let app = TestApp::spawn().await;
    let (_, user) = app
        .post(
            USERS,
            json!({ "email": "old@example.com", "first_name": "Old", "last_name": "Name", "metadata": { "a": "1" } }),
        )
        .await;
    let id = id_of(&user);
    let (s, updated) = app
        .put(
            &user_path(&id),
            json!({ "email": "New@Example.com", "first_name": "New", "email_verified": true, "metadata": { "b": "2" } }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{updated}");
    assert_eq!(updated["email"], "New@Example.com");
    assert_eq!(updated["first_name"], "New");
    assert_eq!(updated["last_name"], "Name", "untouched field kept");
    assert_eq!(updated["email_verified"], true);
    assert_eq!(updated["metadata"], json!({ "b": "2" }));
    assert_eq!(updated["created_at"], user["created_at"]);
    let (_, got) = app.get(&user_path(&id)).await;
    assert_eq!(got, updated);

    // An update that changes nothing records nothing.
    let before = app.log_len().await;
    for body in [json!({}), json!({ "first_name": "New", "metadata": { "b": "2" } })] {
        let (s, same) = app.put(&user_path(&id), body.clone()).await;
        assert_eq!(s, StatusCode::OK, "{body}: {same}");
        assert_eq!(same, updated, "{body}");
    }
    assert_eq!(app.log_len().await, before, "no-op updates append nothing");

    // Changing only the case of one's own email is allowed.
    let (s, recased) = app.put(&user_path(&id), json!({ "email": "new@example.com" })).await;
    assert_eq!(s, StatusCode::OK, "{recased}");
    assert_eq!(recased["email"], "new@example.com");

    // The old email is free again; the new one is taken (in any case).
    app.create_user("old@example.com").await;
    let (s, body) = app.post(USERS, json!({ "email": "new@example.com" })).await;
    assert_error(
        s,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request_parameters/email_not_available",
        "new email taken",
    );

    // Clearing with null.
    let (s, cleared) = app
        .put(&user_path(&id), json!({ "first_name": null, "metadata": null }))
        .await;
    assert_eq!(s, StatusCode::OK, "{cleared}");
    assert!(cleared["first_name"].is_null(), "{cleared}");
    assert_eq!(cleared["metadata"], json!({}), "{cleared}");
}

#[tokio::test]
async fn updating_a_user_with_a_null_external_id_clears_and_frees_it() {
    let app = TestApp::spawn().await;
    let (_, user) = app
        .post(USERS, json!({ "email": "e@example.com", "external_id": "ext-1" }))
        .await;
    let id = id_of(&user);
    let (s, updated) = app.put(&user_path(&id), json!({ "external_id": null })).await;
    assert_eq!(s, StatusCode::OK, "{updated}");
    assert!(updated["external_id"].is_null(), "{updated}");

    let (s, body) = app.get(&format!("{USERS}/external_id/ext-1")).await;
    assert_error(
        s,
        &body,
        StatusCode::NOT_FOUND,
        "entity_not_found",
        "cleared external_id",
    );
    let (s, other) = app
        .post(USERS, json!({ "email": "f@example.com", "external_id": "ext-1" }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "the external_id is free again: {other}");
}

#[tokio::test]
async fn deleting_a_user_makes_it_404_and_frees_its_email_and_external_id() {
    let app = TestApp::spawn().await;
    let (_, user) = app
        .post(
            USERS,
            json!({ "email": "gone@example.com", "external_id": "ext-gone", "password": "long-enough-pw" }),
        )
        .await;
    let id = id_of(&user);
    let org = app.create_organization("Acme", json!([])).await;
    let m = app.create_membership(&id, &id_of(&org), None).await;

    let (s, body) = app.delete(&user_path(&id)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, body) = app.get(&user_path(&id)).await;
    assert_error(s, &body, StatusCode::NOT_FOUND, "entity_not_found", "deleted user");
    let (s, body) = app.get(&format!("{USERS}/external_id/ext-gone")).await;
    assert_error(
        s,
        &body,
        StatusCode::NOT_FOUND,
        "entity_not_found",
        "deleted user by external_id",
    );
    let (s, body) = app
        .get(&format!("/user_management/organization_memberships/{}", id_of(&m)))
        .await;
    assert_error(
        s,
        &body,
        StatusCode::NOT_FOUND,
        "entity_not_found",
        "membership of a deleted user",
    );
    assert_eq!(credential(&app, &id).await, None, "the credential is erased");
    let (_, list) = app.get(USERS).await;
    assert!(!ids(&list).contains(&id), "not listed: {list}");

    assert_rejected(
        &app,
        Method::DELETE,
        &user_path(&id),
        None,
        (StatusCode::NOT_FOUND, "entity_not_found"),
        "deleting twice",
    )
    .await;

    let (s, again) = app
        .post(USERS, json!({ "email": "GONE@example.com", "external_id": "ext-gone" }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "email and external_id are reusable: {again}");
    assert_ne!(id_of(&again), id);
}

#[tokio::test]
async fn creating_a_user_with_an_invalid_email_returns_422_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let cases = [
        ("", "empty"),
        ("no-at-sign", "no @"),
        ("@example.com", "empty local part"),
        ("a@localhost", "single-label domain"),
        ("a b@example.com", "space in local part"),
        ("a@exa mple.com", "space in domain"),
        ("a@@example.com", "two @"),
    ];
    for (email, why) in cases {
        assert_rejected(
            &app,
            Method::POST,
            USERS,
            Some(json!({ "email": email })),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_parameters/invalid_email",
            ),
            &format!("create with {why} ({email:?})"),
        )
        .await;
    }
    let user = app.create_user("valid@example.com").await;
    assert_rejected(
        &app,
        Method::PUT,
        &user_path(&id_of(&user)),
        Some(json!({ "email": "not-an-email" })),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters/invalid_email",
        ),
        "update with an invalid email",
    )
    .await;
    let (_, list) = app.get(USERS).await;
    assert_eq!(ids(&list), vec![id_of(&user)], "only the valid user exists");
}

#[tokio::test]
async fn creating_a_user_with_a_taken_email_returns_422_in_any_case() {
    let app = TestApp::spawn().await;
    let first = app.create_user("taken@example.com").await;
    for email in ["taken@example.com", "TAKEN@Example.COM", "  taken@example.com  "] {
        assert_rejected(
            &app,
            Method::POST,
            USERS,
            Some(json!({ "email": email })),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_parameters/email_not_available",
            ),
            &format!("create with {email:?}"),
        )
        .await;
    }
    let other = app.create_user("other@example.com").await;
    assert_rejected(
        &app,
        Method::PUT,
        &user_path(&id_of(&other)),
        Some(json!({ "email": "Taken@example.com", "first_name": "Changed" })),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters/email_not_available",
        ),
        "update to a taken email",
    )
    .await;
    let (_, got) = app.get(&user_path(&id_of(&other))).await;
    assert_eq!(got, other, "the refused update changed nothing");
    let (_, list) = app.get(USERS).await;
    assert_eq!(ids(&list).len(), 2, "{list}");
    let (_, got) = app.get(&user_path(&id_of(&first))).await;
    assert_eq!(got, first);
}

#[tokio::test]
async fn a_taken_external_id_is_refused_on_create_and_update() {
    let app = TestApp::spawn().await;
    let (s, owner) = app
        .post(USERS, json!({ "email": "a@example.com", "external_id": "ext-a" }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{owner}");
    assert_rejected(
        &app,
        Method::POST,
        USERS,
        Some(json!({ "email": "b@example.com", "external_id": "ext-a" })),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters/external_id_not_available",
        ),
        "create with a taken external_id",
    )
    .await;
    let b = app.create_user("b@example.com").await;
    assert_rejected(
        &app,
        Method::PUT,
        &user_path(&id_of(&b)),
        Some(json!({ "external_id": "ext-a" })),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters/external_id_not_available",
        ),
        "update to a taken external_id",
    )
    .await;
    let (_, got) = app.get(&user_path(&id_of(&b))).await;
    assert!(got["external_id"].is_null(), "{got}");
    let (_, got) = app.get(&format!("{USERS}/external_id/ext-a")).await;
    assert_eq!(got["id"], owner["id"]);
}

#[tokio::test]
async fn metadata_over_the_limits_returns_422_and_at_the_limits_is_accepted() {
    let app = TestApp::spawn().await;
    let too_many: serde_json::Map<String, Value> = (0..51).map(|i| (format!("k{i}"), json!("v"))).collect();
    let cases = [
        (Value::Object(too_many), "51 keys"),
        (json!({ "k".repeat(41): "v" }), "a 41-character key"),
        (json!({ "k": "v".repeat(601) }), "a 601-character value"),
        (json!({ "": "v" }), "an empty key"),
    ];
    let user = app.create_user("meta@example.com").await;
    for (metadata, why) in cases {
        assert_rejected(
            &app,
            Method::POST,
            USERS,
            Some(json!({ "email": "new@example.com", "metadata": metadata })),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_parameters/invalid_metadata",
            ),
            &format!("create with {why}"),
        )
        .await;
        assert_rejected(
            &app,
            Method::PUT,
            &user_path(&id_of(&user)),
            Some(json!({ "metadata": metadata })),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_parameters/invalid_metadata",
            ),
            &format!("update with {why}"),
        )
        .await;
    }
    let (_, got) = app.get(&user_path(&id_of(&user))).await;
    assert_eq!(got, user, "refused updates changed nothing");

    let at_limit: serde_json::Map<String, Value> =
        (0..50).map(|i| (format!("{i:0>40}"), json!("v".repeat(600)))).collect();
    let (s, body) = app
        .post(USERS, json!({ "email": "limit@example.com", "metadata": at_limit }))
        .await;
    assert_eq!(
        s,
        StatusCode::CREATED,
        "50 keys of 40 characters with 600-character values fit: {body}"
    );
}

#[tokio::test]
async fn unknown_user_ids_return_404_on_get_put_and_delete() {
    let app = TestApp::spawn().await;
    app.create_user("someone@example.com").await;
    let unknown = "user_01HZZZZZZZZZZZZZZZZZZZZZZZ";
    let cases = [
        (Method::GET, None, "get"),
        (Method::PUT, Some(json!({ "first_name": "X" })), "put"),
        (Method::DELETE, None, "delete"),
    ];
    for (method, body, what) in cases {
        for id in [unknown, "nonsense"] {
            assert_rejected(
                &app,
                method.clone(),
                &user_path(id),
                body.clone(),
                (StatusCode::NOT_FOUND, "entity_not_found"),
                &format!("{what} {id}"),
            )
            .await;
        }
    }
}

#[tokio::test]
async fn requests_without_a_valid_api_key_return_401_and_change_nothing() {
    let app = TestApp::spawn().await;
    let user = app.create_user("kept@example.com").await;
    let wrong = format!("sk_{}", "0".repeat(48));
    let keys: [(Option<&str>, &str); 4] = [
        (None, "no key"),
        (Some(wrong.as_str()), "unknown sk_ key"),
        (Some("not-a-key"), "not an sk_ key"),
        (Some(""), "empty bearer token"),
    ];
    let requests = [
        (Method::GET, USERS.to_string(), None),
        (
            Method::POST,
            USERS.to_string(),
            Some(json!({ "email": "intruder@example.com" })),
        ),
        (Method::GET, user_path(&id_of(&user)), None),
        (
            Method::PUT,
            user_path(&id_of(&user)),
            Some(json!({ "first_name": "Mallory" })),
        ),
        (Method::DELETE, user_path(&id_of(&user)), None),
    ];
    let before = app.log_len().await;
    for (key, why) in keys {
        for (method, path, body) in &requests {
            let (s, b) = app.request_with_key(method.clone(), path, body.clone(), key).await;
            assert_error(
                s,
                &b,
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                &format!("{method} {path} with {why}"),
            );
        }
    }
    assert_eq!(app.log_len().await, before, "no request without a key changed the log");
    let (_, got) = app.get(&user_path(&id_of(&user))).await;
    assert_eq!(got, user);
}

#[tokio::test]
async fn a_password_shorter_than_eight_characters_returns_422() {
    let app = TestApp::spawn().await;
    for password in ["", "short", "7-chars"] {
        assert_rejected(
            &app,
            Method::POST,
            USERS,
            Some(json!({ "email": "short@example.com", "password": password })),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_parameters/password_strength_error",
            ),
            &format!("create with password {password:?}"),
        )
        .await;
    }
    let user = app.create_user("has-no-pw@example.com").await;
    assert_rejected(
        &app,
        Method::PUT,
        &user_path(&id_of(&user)),
        Some(json!({ "password": "7-chars", "first_name": "Changed" })),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters/password_strength_error",
        ),
        "update with a 7-character password",
    )
    .await;
    assert_eq!(credential(&app, &id_of(&user)).await, None);
    let (_, got) = app.get(&user_path(&id_of(&user))).await;
    assert_eq!(got, user, "the refused update changed nothing");
}

#[tokio::test]
async fn a_password_together_with_a_password_hash_returns_422() {
    let app = TestApp::spawn().await;
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$0Qp4Yl0Yl2CPbkHcvHDFHDDcKwBRLIafc5jqIV8M8Vw";
    let bodies = [
        json!({ "email": "both@example.com", "password": "long-enough-pw", "password_hash": hash, "password_hash_type": "argon2" }),
        json!({ "email": "both@example.com", "password": "long-enough-pw", "password_hash": hash }),
        json!({ "email": "both@example.com", "password": "long-enough-pw", "password_hash_type": "argon2" }),
    ];
    for (i, body) in bodies.into_iter().enumerate() {
        assert_rejected(
            &app,
            Method::POST,
            USERS,
            Some(body),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_parameters/password_and_password_hash_provided",
            ),
            &format!("create case {i}"),
        )
        .await;
    }
    let user = app.create_user("exists@example.com").await;
    assert_rejected(
        &app,
        Method::PUT,
        &user_path(&id_of(&user)),
        Some(json!({ "password": "long-enough-pw", "password_hash": hash, "password_hash_type": "argon2" })),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters/password_and_password_hash_provided",
        ),
        "update with both",
    )
    .await;
    assert_eq!(credential(&app, &id_of(&user)).await, None);
    let (_, list) = app.get(USERS).await;
    assert_eq!(ids(&list), vec![id_of(&user)]);
}

#[tokio::test]
async fn concurrent_creates_with_the_same_email_leave_exactly_one_user() {
    let app = TestApp::spawn().await;
    let emails = [
        "race@example.com",
        "RACE@example.com",
        "Race@Example.com",
        "race@EXAMPLE.com",
    ];
    let create = |e: &str| app.post(USERS, json!({ "email": e }));
    let (a, b, c, d) = tokio::join!(
        create(emails[0]),
        create(emails[1]),
        create(emails[2]),
        create(emails[3])
    );
    let results = [a, b, c, d];
    let created = results.iter().filter(|(s, _)| *s == StatusCode::CREATED).count();
    assert_eq!(created, 1, "exactly one create wins: {results:?}");
    for (s, body) in results.iter().filter(|(s, _)| *s != StatusCode::CREATED) {
        assert_error(
            *s,
            body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters/email_not_available",
            "a losing create",
        );
    }
    let (_, list) = app.get(&format!("{USERS}?email={}", enc("race@example.com"))).await;
    assert_eq!(ids(&list).len(), 1, "{list}");
}

/// An argon2id PHC string with these parameters (16-byte salt, 32-byte hash).
fn argon2_hash(params: &str) -> String {
    format!("$argon2id$v=19${params}$c2FsdHNhbHRzYWx0c2FsdA$0Qp4Yl0Yl2CPbkHcvHDFHDDcKwBRLIafc5jqIV8M8Vw")
}

/// Sends `body` and checks the 422 names `password_hash` with `code` and `mentions`, and that the
/// log did not change.
async fn assert_hash_refused(app: &TestApp, method: Method, path: &str, body: Value, code: &str, mentions: &str) {
    let before = app.log_len().await;
    let (s, b) = app.request(method, path, Some(body.clone())).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {b}");
    assert_eq!(b["errors"][0]["field"], "password_hash", "{body}: {b}");
    assert_eq!(b["errors"][0]["code"], code, "{body}: {b}");
    let message = b["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains(mentions), "{body}: the message names {mentions}: {b}");
    assert_eq!(app.log_len().await, before, "{body}: the log changed");
}

#[tokio::test]
async fn an_imported_argon2_hash_with_costs_beyond_the_bounds_returns_422_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let user = app.create_user("imports@example.com").await;
    let path = user_path(&id_of(&user));
    // (parameters, what the message names): each beyond one bound (docs/API.md).
    let cases = [
        ("m=262145,t=1,p=1", "m=262145"),
        ("m=2097152,t=1,p=1", "m=2097152"),
        ("m=19456,t=11,p=1", "t=11"),
        ("m=19456,t=2,p=9", "p=9"),
        ("m=262144,t=5,p=1", "m=262144 KiB × t=5"),
    ];
    for (params, mentions) in cases {
        let hash = argon2_hash(params);
        let body = json!({ "email": "costly@example.com", "password_hash": hash, "password_hash_type": "argon2" });
        assert_hash_refused(&app, Method::POST, USERS, body, "password_hash_cost_too_high", mentions).await;
        let body = json!({ "password_hash": hash, "password_hash_type": "argon2", "first_name": "Changed" });
        assert_hash_refused(&app, Method::PUT, &path, body, "password_hash_cost_too_high", mentions).await;
    }
    // Malformed ones are invalid, not costly.
    let short_salt = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$0Qp4Yl0Yl2CPbkHcvHDFHDDcKwBRLIafc5jqIV8M8Vw";
    let body = json!({ "password_hash": short_salt, "password_hash_type": "argon2" });
    assert_hash_refused(&app, Method::PUT, &path, body, "invalid_password_hash", "salt").await;
    assert_eq!(
        credential(&app, &id_of(&user)).await,
        None,
        "no refused hash was stored"
    );
    let (_, got) = app.get(&path).await;
    assert_eq!(got, user, "the refused updates changed nothing");
    let (_, list) = app.get(&format!("{USERS}?email=costly%40example.com")).await;
    assert_eq!(list["data"], json!([]), "no refused create made a user");

    // At the bounds (and at common recommendations) the hash is stored as given.
    let at_bounds = argon2_hash("m=262144,t=4,p=8");
    let (s, b) = app
        .put(
            &path,
            json!({ "password_hash": at_bounds, "password_hash_type": "argon2" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(credential(&app, &id_of(&user)).await, Some(at_bounds));
    let rfc9106 = argon2_hash("m=65536,t=3,p=4");
    let (s, b) = app
        .post(
            USERS,
            json!({ "email": "rfc9106@example.com", "password_hash": rfc9106, "password_hash_type": "argon2" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(credential(&app, &id_of(&b)).await, Some(rfc9106));
    app.stop().await;
}

//! `/user_management/invitations` and `invitation_token` on the password sign-in: every
//! endpoint's happy path and refusals, the membership an acceptance makes, concurrency, mail.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::helpers::{assert_error, assert_rejected, TestApp};

const PASSWORD: &str = "correct horse battery staple";

async fn invite(app: &TestApp, body: Value) -> Value {
    let (s, inv) = app.post("/user_management/invitations", body).await;
    assert_eq!(s, StatusCode::CREATED, "{inv}");
    inv
}

async fn org(app: &TestApp, name: &str) -> String {
    app.create_organization(name, json!([])).await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Moves an invitation's expiry into the past, in the log and in the read model (expiry is a
/// time, not an event).
async fn expire(app: &TestApp, id: &str) {
    let past = "2020-01-01T00:00:00.000Z";
    sqlx::query(
        "update event set payload = jsonb_set(payload, '{InvitationCreated,expires_at}', to_jsonb($2::text)) \
         where aggregate_id = $1 and event_type = 'InvitationCreated'",
    )
    .bind(id)
    .bind(past)
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("update invitation_view set body = jsonb_set(body, '{expires_at}', to_jsonb($2::text)) where id = $1")
        .bind(id)
        .bind(past)
        .execute(&app.pool)
        .await
        .unwrap();
}

async fn authenticate(app: &TestApp, body: Value) -> (StatusCode, Value) {
    app.request_with_key(Method::POST, "/user_management/authenticate", Some(body), None)
        .await
}

fn password_grant(app: &TestApp, email: &str, invitation_token: Option<&str>) -> Value {
    let mut b = json!({
        "grant_type": "password",
        "client_id": app.client_id(),
        "client_secret": app.key,
        "email": email,
        "password": PASSWORD,
    });
    if let Some(t) = invitation_token {
        b["invitation_token"] = json!(t);
    }
    b
}

async fn memberships_of(app: &TestApp, user_id: &str) -> Vec<Value> {
    let (s, body) = app
        .get(&format!(
            "/user_management/organization_memberships?user_id={user_id}&statuses=active,inactive"
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body["data"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn an_invitation_is_created_read_listed_and_found_by_its_token() {
    let app = TestApp::spawn().await;
    let org_id = org(&app, "Acme").await;
    let inviter = app.create_user("boss@example.com").await;
    let inv = invite(
        &app,
        json!({ "email": "New@Example.com", "organization_id": org_id, "role_slug": "admin",
                "expires_in_days": 3, "inviter_user_id": inviter["id"] }),
    )
    .await;
    let id = inv["id"].as_str().unwrap();
    assert!(id.starts_with("invitation_"), "{inv}");
    assert_eq!(inv["object"], "invitation");
    assert_eq!(inv["email"], "New@Example.com");
    assert_eq!(inv["state"], "pending");
    assert_eq!(inv["organization_id"], json!(org_id));
    assert_eq!(inv["inviter_user_id"], inviter["id"]);
    assert_eq!(inv["role_slug"], "admin");
    assert_eq!(inv["accepted_at"], Value::Null);
    assert_eq!(inv["revoked_at"], Value::Null);
    assert_eq!(inv["accepted_user_id"], Value::Null);
    let token = inv["token"].as_str().unwrap();
    assert!(token.len() >= 32, "a long random token: {token}");
    assert_eq!(
        inv["accept_invitation_url"],
        format!("http://localhost/invite?invitation_token={token}")
    );
    let expires = chrono::DateTime::parse_from_rfc3339(inv["expires_at"].as_str().unwrap()).unwrap();
    let created = chrono::DateTime::parse_from_rfc3339(inv["created_at"].as_str().unwrap()).unwrap();
    assert_eq!((expires - created).num_days(), 3);

    let (s, got) = app.get(&format!("/user_management/invitations/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got, inv);
    // The answer is exactly the documented `Invitation` schema, field for field.
    let doc = crate::openapi::fetch_document(&app).await;
    let schema = json!({ "$ref": "#/components/schemas/Invitation" });
    let wrong = crate::openapi::mismatches(&doc, &schema, &inv, "invitation");
    assert!(wrong.is_empty(), "{wrong:?}");
    let mut extra = inv.clone();
    extra["surprise"] = json!(1);
    assert!(!crate::openapi::mismatches(&doc, &schema, &extra, "extra").is_empty());
    let (s, by_token) = app.get(&format!("/user_management/invitations/by_token/{token}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(by_token, inv);

    // The token is in no event, and the log holds only its hash and sealed copy beside it.
    let (n,): (i64,) = sqlx::query_as("select count(*) from event where payload::text like '%' || $1 || '%'")
        .bind(token)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, 0, "the token is in an event");
    let events = app.all_events("&events=invitation.created").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["data"]["id"], json!(id));
    assert!(events[0]["data"].get("token").is_none(), "{}", events[0]);
    assert!(events[0]["data"].get("accept_invitation_url").is_none());

    // Filters: by organization, by email (case-insensitive), and both.
    let other = invite(&app, json!({ "email": "solo@example.com" })).await;
    assert_eq!(other["organization_id"], Value::Null);
    assert_eq!(other["role_slug"], Value::Null);
    let ids = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, all) = app.get("/user_management/invitations").await;
    assert_eq!(ids(&all), vec![other["id"].as_str().unwrap(), id]);
    let (_, by_org) = app
        .get(&format!("/user_management/invitations?organization_id={org_id}"))
        .await;
    assert_eq!(ids(&by_org), vec![id]);
    let (_, by_email) = app.get("/user_management/invitations?email=new%40EXAMPLE.com").await;
    assert_eq!(ids(&by_email), vec![id]);
    assert_eq!(by_email["data"][0]["token"], json!(token));
    let (_, none) = app
        .get(&format!(
            "/user_management/invitations?organization_id={org_id}&email=solo%40example.com"
        ))
        .await;
    assert!(ids(&none).is_empty());
    let (s, b) = app
        .get("/user_management/invitations?after=user_01HXYZ123456789ABCDEFGHJK")
        .await;
    assert_error(
        s,
        &b,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request_parameters/invalid_cursor",
        "cursor",
    );
    app.stop().await;
}

#[tokio::test]
async fn unknown_invitations_and_tokens_are_404() {
    let app = TestApp::spawn().await;
    let inv = invite(&app, json!({ "email": "x@example.com" })).await;
    let token = inv["token"].as_str().unwrap();
    let unknown = "invitation_01HXYZ123456789ABCDEFGHJK";
    for (m, path) in [
        (Method::GET, format!("/user_management/invitations/{unknown}")),
        (Method::POST, format!("/user_management/invitations/{unknown}/accept")),
        (Method::POST, format!("/user_management/invitations/{unknown}/revoke")),
        (Method::POST, format!("/user_management/invitations/{unknown}/resend")),
        (
            Method::GET,
            "/user_management/invitations/by_token/wrong-token".to_string(),
        ),
        // The token with one character changed.
        (
            Method::GET,
            format!("/user_management/invitations/by_token/{}x", &token[..token.len() - 1]),
        ),
    ] {
        let body = (m == Method::POST).then(|| json!({}));
        assert_rejected(
            &app,
            m.clone(),
            &path,
            body,
            (StatusCode::NOT_FOUND, "entity_not_found"),
            &path,
        )
        .await;
    }
    app.stop().await;
}

#[tokio::test]
async fn bad_creates_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let org_id = org(&app, "Acme").await;
    let member = app.create_user("member@example.com").await;
    app.create_membership(member["id"].as_str().unwrap(), &org_id, None)
        .await;
    app.create_user("exists@example.com").await;
    invite(
        &app,
        json!({ "email": "pending@example.com", "organization_id": org_id }),
    )
    .await;
    invite(&app, json!({ "email": "pending-app@example.com" })).await;
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            json!({}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters",
        ),
        (
            json!({ "email": "not an email" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters/invalid_email",
        ),
        (
            json!({ "email": "a@example.com", "unknown": 1 }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters",
        ),
        (
            json!({ "email": "a@example.com", "expires_in_days": 0 }),
            StatusCode::BAD_REQUEST,
            "expires_in_days_too_short",
        ),
        (
            json!({ "email": "a@example.com", "expires_in_days": 31 }),
            StatusCode::BAD_REQUEST,
            "expires_in_days_too_long",
        ),
        (
            json!({ "email": "a@example.com", "expires_in_days": "7" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters",
        ),
        (
            json!({ "email": "a@example.com", "organization_id": org_id, "role_slug": "owner" }),
            StatusCode::BAD_REQUEST,
            "invalid_role",
        ),
        (
            json!({ "email": "a@example.com", "role_slug": "admin" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters/organization_required",
        ),
        (
            json!({ "email": "a@example.com", "organization_id": "org_01HXYZ123456789ABCDEFGHJK" }),
            StatusCode::NOT_FOUND,
            "entity_not_found",
        ),
        (
            json!({ "email": "a@example.com", "inviter_user_id": "user_01HXYZ123456789ABCDEFGHJK" }),
            StatusCode::NOT_FOUND,
            "entity_not_found",
        ),
        (
            json!({ "email": "MEMBER@example.com", "organization_id": org_id }),
            StatusCode::BAD_REQUEST,
            "user_already_organization_member",
        ),
        (
            json!({ "email": "exists@example.com" }),
            StatusCode::BAD_REQUEST,
            "user_already_exists",
        ),
        (
            json!({ "email": "Pending@example.com", "organization_id": org_id }),
            StatusCode::BAD_REQUEST,
            "email_already_invited_to_organization",
        ),
        (
            json!({ "email": "pending-app@example.com" }),
            StatusCode::BAD_REQUEST,
            "email_already_invited",
        ),
    ];
    for (body, status, code) in cases {
        let ctx = format!("create {body}");
        assert_rejected(
            &app,
            Method::POST,
            "/user_management/invitations",
            Some(body),
            (status, code),
            &ctx,
        )
        .await;
    }
    // The same email may be invited to another organization, and to the application.
    let other = org(&app, "Other").await;
    invite(
        &app,
        json!({ "email": "pending@example.com", "organization_id": other }),
    )
    .await;
    invite(&app, json!({ "email": "pending@example.com" })).await;
    app.stop().await;
}

#[tokio::test]
async fn accepting_makes_the_membership_with_the_invited_role_and_signs_up_a_new_user() {
    let app = TestApp::spawn().await;
    let org_id = org(&app, "Acme").await;
    let inv = invite(
        &app,
        json!({ "email": "newbie@example.com", "organization_id": org_id, "role_slug": "admin" }),
    )
    .await;
    let id = inv["id"].as_str().unwrap();
    let (s, accepted) = app
        .post(&format!("/user_management/invitations/{id}/accept"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{accepted}");
    assert_eq!(accepted["state"], "accepted");
    assert!(accepted["accepted_at"].is_string());
    let user_id = accepted["accepted_user_id"].as_str().unwrap().to_string();
    let (_, user) = app.get(&format!("/user_management/users/{user_id}")).await;
    assert_eq!(user["email"], "newbie@example.com");
    assert_eq!(user["email_verified"], true, "the invitation proved the address");
    let (kind,): (String,) =
        sqlx::query_as("select event_type from event where aggregate_id = $1 order by sequence limit 1")
            .bind(&user_id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(kind, "UserSignedUp");
    let (method,): (Option<String>,) = sqlx::query_as(
        "select payload -> 'UserSignedUp' ->> 'method' from event where aggregate_id = $1 and sequence = 1",
    )
    .bind(&user_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(method.as_deref(), Some("invitation"));
    let ms = memberships_of(&app, &user_id).await;
    assert_eq!(ms.len(), 1, "{ms:?}");
    assert_eq!(ms[0]["organization_id"], json!(org_id));
    assert_eq!(ms[0]["role"]["slug"], "admin");
    assert_eq!(ms[0]["status"], "active");
    // The acceptance and the membership share one append (one transaction).
    let txs: Vec<(String,)> = sqlx::query_as(
        "select distinct transaction_id::text from event where event_type in ('InvitationAccepted', 'MembershipCreated')",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(txs.len(), 1, "one transaction: {txs:?}");
    let names: Vec<String> = app
        .all_events("")
        .await
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect();
    for n in [
        "invitation.created",
        "user.created",
        "invitation.accepted",
        "organization_membership.created",
    ] {
        assert!(names.contains(&n.to_string()), "{n} in {names:?}");
    }

    // Accepting again, revoking or resending it: refused, nothing changes.
    let path = |op: &str| format!("/user_management/invitations/{id}/{op}");
    assert_rejected(
        &app,
        Method::POST,
        &path("accept"),
        Some(json!({})),
        (StatusCode::BAD_REQUEST, "invite_not_pending"),
        "accept twice",
    )
    .await;
    assert_rejected(
        &app,
        Method::POST,
        &path("revoke"),
        Some(json!({})),
        (StatusCode::BAD_REQUEST, "invite_not_pending"),
        "revoke accepted",
    )
    .await;
    assert_rejected(
        &app,
        Method::POST,
        &path("resend"),
        Some(json!({})),
        (StatusCode::BAD_REQUEST, "invite_accepted"),
        "resend accepted",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn an_existing_user_accepts_without_a_second_user_and_an_invitation_without_organization_makes_no_membership() {
    let app = TestApp::spawn().await;
    let org_id = org(&app, "Acme").await;
    let user = app.create_user("known@example.com").await;
    let user_id = user["id"].as_str().unwrap();
    let inv = invite(&app, json!({ "email": "KNOWN@example.com", "organization_id": org_id })).await;
    let (s, a) = app
        .post(
            &format!("/user_management/invitations/{}/accept", inv["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(a["accepted_user_id"], json!(user_id));
    assert_eq!(a["role_slug"], "member", "the default role");
    let ms = memberships_of(&app, user_id).await;
    assert_eq!(ms.len(), 1);
    assert_eq!(ms[0]["role"]["slug"], "member");
    let (_, users) = app.get("/user_management/users?email=known@example.com").await;
    assert_eq!(users["data"].as_array().unwrap().len(), 1);

    let solo = invite(&app, json!({ "email": "solo@example.com" })).await;
    let (s, a) = app
        .post(
            &format!("/user_management/invitations/{}/accept", solo["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{a}");
    assert!(memberships_of(&app, a["accepted_user_id"].as_str().unwrap())
        .await
        .is_empty());
    app.stop().await;
}

#[tokio::test]
async fn revoked_and_expired_invitations_cannot_be_accepted_or_resent() {
    let app = TestApp::spawn().await;
    let org_id = org(&app, "Acme").await;
    let inv = invite(&app, json!({ "email": "r@example.com", "organization_id": org_id })).await;
    let id = inv["id"].as_str().unwrap();
    let (s, r) = app
        .post(&format!("/user_management/invitations/{id}/revoke"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["state"], "revoked");
    assert!(r["revoked_at"].is_string());
    let path = |id: &str, op: &str| format!("/user_management/invitations/{id}/{op}");
    assert_rejected(
        &app,
        Method::POST,
        &path(id, "accept"),
        None,
        (StatusCode::BAD_REQUEST, "invite_not_pending"),
        "accept revoked",
    )
    .await;
    assert_rejected(
        &app,
        Method::POST,
        &path(id, "revoke"),
        None,
        (StatusCode::BAD_REQUEST, "invite_not_pending"),
        "revoke twice",
    )
    .await;
    assert_rejected(
        &app,
        Method::POST,
        &path(id, "resend"),
        Some(json!({})),
        (StatusCode::BAD_REQUEST, "invite_revoked"),
        "resend revoked",
    )
    .await;
    assert_eq!(app.all_events("&events=invitation.revoked").await.len(), 1);
    // A revoked invitation frees its email: a new one may be sent.
    invite(&app, json!({ "email": "r@example.com", "organization_id": org_id })).await;

    let inv = invite(&app, json!({ "email": "e@example.com", "organization_id": org_id })).await;
    let id = inv["id"].as_str().unwrap();
    expire(&app, id).await;
    let (_, got) = app.get(&format!("/user_management/invitations/{id}")).await;
    assert_eq!(got["state"], "expired");
    assert_rejected(
        &app,
        Method::POST,
        &path(id, "accept"),
        None,
        (StatusCode::BAD_REQUEST, "invite_not_pending"),
        "accept expired",
    )
    .await;
    assert_rejected(
        &app,
        Method::POST,
        &path(id, "revoke"),
        None,
        (StatusCode::BAD_REQUEST, "invite_not_pending"),
        "revoke expired",
    )
    .await;
    assert_rejected(
        &app,
        Method::POST,
        &path(id, "resend"),
        Some(json!({})),
        (StatusCode::BAD_REQUEST, "invite_expired"),
        "resend expired",
    )
    .await;
    let (s, b) = authenticate(&app, password_grant(&app, "e@example.com", inv["token"].as_str())).await;
    assert_error(
        s,
        &b,
        StatusCode::BAD_REQUEST,
        "invalid_credentials",
        "no such user yet",
    );
    // An expired invitation is replaced by a new one (it is closed, with no public event).
    let again = invite(&app, json!({ "email": "e@example.com", "organization_id": org_id })).await;
    assert_ne!(again["id"], inv["id"]);
    let (_, old) = app.get(&format!("/user_management/invitations/{id}")).await;
    assert_eq!(old["state"], "expired");
    app.stop().await;
}

#[tokio::test]
async fn resending_records_an_event_and_bad_resend_bodies_are_422() {
    let app = TestApp::spawn().await;
    let inv = invite(&app, json!({ "email": "again@example.com" })).await;
    let id = inv["id"].as_str().unwrap();
    let (s, r) = app
        .post(
            &format!("/user_management/invitations/{id}/resend"),
            json!({ "locale": "en" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["token"], inv["token"], "the same token");
    let (s, r) = app
        .request(Method::POST, &format!("/user_management/invitations/{id}/resend"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "no body: {r}");
    assert_eq!(app.all_events("&events=invitation.resent").await.len(), 2);
    assert_rejected(
        &app,
        Method::POST,
        &format!("/user_management/invitations/{id}/resend"),
        Some(json!({ "nope": true })),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request_parameters"),
        "unknown field",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn concurrent_accepts_of_one_invitation_have_exactly_one_winner() {
    let app = TestApp::spawn().await;
    let org_id = org(&app, "Acme").await;
    let inv = invite(&app, json!({ "email": "race@example.com", "organization_id": org_id })).await;
    let path = format!("/user_management/invitations/{}/accept", inv["id"].as_str().unwrap());
    let tries = (0..8).map(|_| app.post(&path, json!({})));
    let results = futures::future::join_all(tries).await;
    let won: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::OK)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(won.len(), 1, "{results:?}");
    for (s, b) in results.iter().filter(|(s, _)| *s != StatusCode::OK) {
        assert!(
            *s == StatusCode::BAD_REQUEST && b["code"] == "invite_not_pending" || *s == StatusCode::CONFLICT,
            "{s} {b}"
        );
    }
    let user_id = won[0]["accepted_user_id"].as_str().unwrap();
    assert_eq!(memberships_of(&app, user_id).await.len(), 1);
    let (users,): (i64,) = sqlx::query_as("select count(*) from event where event_type = 'UserSignedUp'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(users, 1, "one user signed up");
    let (n,): (i64,) = sqlx::query_as("select count(*) from event where event_type = 'InvitationAccepted'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
    app.stop().await;
}

#[tokio::test]
async fn concurrent_creates_for_one_email_and_organization_leave_one_pending_invitation() {
    let app = TestApp::spawn().await;
    let org_id = org(&app, "Acme").await;
    let tries = (0..6).map(|_| {
        app.post(
            "/user_management/invitations",
            json!({ "email": "dup@example.com", "organization_id": org_id }),
        )
    });
    let results = futures::future::join_all(tries).await;
    let created = results.iter().filter(|(s, _)| *s == StatusCode::CREATED).count();
    assert_eq!(created, 1, "{results:?}");
    for (s, b) in results.iter().filter(|(s, _)| *s != StatusCode::CREATED) {
        assert_eq!(*s, StatusCode::BAD_REQUEST, "{b}");
        assert_eq!(b["code"], "email_already_invited_to_organization", "{b}");
    }
    let (tokens,): (i64,) = sqlx::query_as("select count(*) from invitation_token")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(tokens, 1, "the losers' tokens are removed");
    app.stop().await;
}

#[tokio::test]
async fn a_password_sign_in_with_an_invitation_token_accepts_it_and_lands_in_its_organization() {
    let app = TestApp::spawn().await;
    let org_a = org(&app, "A").await;
    let org_b = org(&app, "B").await;
    // Unverified, and already a member of A: without the invitation this sign-in would stop at
    // email verification.
    let (s, user) = app
        .post(
            "/user_management/users",
            json!({ "email": "ivy@example.com", "password": PASSWORD }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{user}");
    let user_id = user["id"].as_str().unwrap();
    app.create_membership(user_id, &org_a, None).await;
    let inv = invite(
        &app,
        json!({ "email": "ivy@example.com", "organization_id": org_b, "role_slug": "admin" }),
    )
    .await;
    let token = inv["token"].as_str().unwrap();

    // Wrong tokens and another email's invitation are refused, changing nothing.
    let other = invite(
        &app,
        json!({ "email": "someone@example.com", "organization_id": org_b }),
    )
    .await;
    for (t, code) in [
        ("not-a-token", "invitation_invalid"),
        (other["token"].as_str().unwrap(), "invitation_cannot_be_used_for_email"),
    ] {
        let (s, b) = authenticate(&app, password_grant(&app, "ivy@example.com", Some(t))).await;
        assert_error(s, &b, StatusCode::BAD_REQUEST, code, t);
    }
    assert_eq!(memberships_of(&app, user_id).await.len(), 1);

    let (s, signed) = authenticate(&app, password_grant(&app, "ivy@example.com", Some(token))).await;
    assert_eq!(s, StatusCode::OK, "{signed}");
    assert_eq!(signed["organization_id"], json!(org_b));
    assert_eq!(signed["user"]["email_verified"], true);
    let claims = app
        .verify_access_token(signed["access_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(claims["org_id"], json!(org_b));
    assert_eq!(claims["role"], "admin");
    let (_, got) = app
        .get(&format!("/user_management/invitations/{}", inv["id"].as_str().unwrap()))
        .await;
    assert_eq!(got["state"], "accepted");
    assert_eq!(got["accepted_user_id"], json!(user_id));
    // Used once: the token is spent.
    let (s, b) = authenticate(&app, password_grant(&app, "ivy@example.com", Some(token))).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "invitation_invalid", "used token");
    // A wrong password with a good token accepts nothing.
    let mut wrong = password_grant(&app, "ivy@example.com", Some(other["token"].as_str().unwrap()));
    wrong["password"] = json!("wrong password");
    let (s, b) = authenticate(&app, wrong).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_credentials", "wrong password");
    app.stop().await;
}

/// A minimal SMTP server on loopback: accepts every message and hands its DATA over.
async fn smtp_sink() -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut lines = BufReader::new(r).lines();
                let _ = w.write_all(b"220 sink ESMTP\r\n").await;
                let mut data: Option<String> = None;
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(d) = data.as_mut() {
                        if line == "." {
                            let _ = tx.send(std::mem::take(d));
                            data = None;
                            let _ = w.write_all(b"250 queued\r\n").await;
                        } else {
                            d.push_str(&line);
                            d.push('\n');
                        }
                        continue;
                    }
                    let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" | "HELO" => b"250 sink\r\n",
                        "DATA" => {
                            data = Some(String::new());
                            b"354 go ahead\r\n"
                        }
                        "QUIT" => {
                            let _ = w.write_all(b"221 bye\r\n").await;
                            break;
                        }
                        _ => b"250 ok\r\n",
                    };
                    let _ = w.write_all(reply).await;
                }
            });
        }
    });
    (port, rx)
}

async fn next_mail(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(std::time::Duration::from_secs(20), rx.recv())
        .await
        .expect("a mail within 20 s")
        .expect("the sink is running")
}

#[tokio::test]
async fn with_smtp_configured_creating_and_resending_send_the_invitation_email() {
    let (port, mut rx) = smtp_sink().await;
    let app = TestApp::spawn_with(|c| {
        c.mail = keyledger_api::mail::MailConfig {
            smtp_url: Some(format!("smtp://127.0.0.1:{port}").parse().unwrap()),
            ..Default::default()
        };
        c.auth.invitation_url = Some("https://app.example.com/join?x=1".into());
    })
    .await;
    let org_id = org(&app, "Acme Widgets").await;
    let inv = invite(&app, json!({ "email": "mail@example.com", "organization_id": org_id })).await;
    let token = inv["token"].as_str().unwrap();
    assert_eq!(
        inv["accept_invitation_url"],
        format!("https://app.example.com/join?x=1&invitation_token={token}")
    );
    let first = next_mail(&mut rx).await;
    let unfolded = first.replace("=\n", "");
    assert!(unfolded.contains("mail@example.com"), "{first}");
    assert!(unfolded.contains("Acme Widgets"), "{first}");
    assert!(unfolded.contains(token), "the link: {first}");
    let (s, _) = app
        .post(
            &format!("/user_management/invitations/{}/resend", inv["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let second = next_mail(&mut rx).await;
    assert!(second.replace("=\n", "").contains(token), "{second}");
    app.stop().await;
}

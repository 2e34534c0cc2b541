//! `POST /user_management/authenticate` (password, refresh token, organization selection),
//! sessions, and their events: the happy paths and every refusal.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::TestApp;

const PASSWORD: &str = "correct horse battery staple";

/// A user with a password (and a verified email unless said otherwise).
async fn user_with_password(app: &TestApp, email: &str, verified: bool) -> Value {
    let (s, body) = app
        .post(
            "/user_management/users",
            json!({ "email": email, "password": PASSWORD, "email_verified": verified }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    body
}

fn password_grant(app: &TestApp, email: &str, password: &str) -> Value {
    json!({
        "grant_type": "password",
        "client_id": app.client_id(),
        "client_secret": app.key,
        "email": email,
        "password": password,
        "ip_address": "203.0.113.9",
        "user_agent": "tests/1.0",
        "device_id": "device-1",
    })
}

/// POSTs to the authenticate endpoint without the management API key header (the body is the
/// credential).
async fn authenticate(app: &TestApp, body: Value) -> (StatusCode, Value) {
    app.request_with_key(reqwest::Method::POST, "/user_management/authenticate", Some(body), None)
        .await
}

async fn sign_in(app: &TestApp, email: &str) -> Value {
    let (s, body) = authenticate(app, password_grant(app, email, PASSWORD)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body
}

fn refresh_grant(app: &TestApp, token: &str) -> Value {
    json!({
        "grant_type": "refresh_token",
        "client_id": app.client_id(),
        "client_secret": app.key,
        "refresh_token": token,
    })
}

/// The claims of an access token, verified against the server's JWKS.
async fn claims(app: &TestApp, token: &str) -> Value {
    let verified = app.verify_access_token(token).await;
    verified.unwrap_or_else(|e| panic!("access token does not verify: {e}"))
}

async fn sessions_of(app: &TestApp, user_id: &str) -> Vec<Value> {
    let (s, body) = app
        .get(&format!("/user_management/users/{user_id}/sessions?limit=100"))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body["data"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_password_sign_in_returns_the_user_and_tokens_that_verify_and_records_the_session() {
    let app = TestApp::spawn().await;
    let user = user_with_password(&app, "ann@example.com", true).await;
    let user_id = user["id"].as_str().unwrap();
    let signed = sign_in(&app, "Ann@Example.com").await;
    assert_eq!(signed["user"]["id"], user["id"]);
    assert_eq!(signed["authentication_method"], "Password");
    assert!(signed.get("organization_id").is_none(), "{signed}");
    let c = claims(&app, signed["access_token"].as_str().unwrap()).await;
    assert_eq!(c["sub"], user["id"]);
    let sid = c["sid"].as_str().unwrap().to_string();
    assert!(sid.starts_with("session_"), "{c}");
    assert!(c.get("org_id").is_none_or(Value::is_null), "{c}");

    let sessions = sessions_of(&app, user_id).await;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0]["id"], json!(sid));
    assert_eq!(sessions[0]["status"], "active");
    assert_eq!(sessions[0]["auth_method"], "password");
    assert_eq!(sessions[0]["ip_address"], "203.0.113.9");
    assert_eq!(sessions[0]["user_agent"], "tests/1.0");
    let (stored,): (Value,) = sqlx::query_as("select payload from event where event_type = 'SessionCreated'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored["SessionCreated"]["device_id"], "device-1", "{stored}");

    let events = app
        .all_events("&events=authentication.password_succeeded,session.created")
        .await;
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(
        names,
        ["authentication.password_succeeded", "session.created"],
        "{events:?}"
    );
    assert_eq!(events[0]["data"]["user_id"], user["id"]);
    assert_eq!(events[0]["data"]["status"], "succeeded");
    assert_eq!(events[0]["data"]["ip_address"], "203.0.113.9");
    assert_eq!(events[1]["data"]["id"], json!(sid));
}

#[tokio::test]
async fn wrong_password_and_unknown_email_get_the_same_answer_and_are_recorded() {
    let app = TestApp::spawn().await;
    let user = user_with_password(&app, "ann@example.com", true).await;
    let (s1, wrong) = authenticate(&app, password_grant(&app, "ann@example.com", "not the password")).await;
    let (s2, unknown) = authenticate(&app, password_grant(&app, "nobody@example.com", PASSWORD)).await;
    assert_eq!(s1, StatusCode::BAD_REQUEST, "{wrong}");
    assert_eq!((s1, &wrong), (s2, &unknown));
    assert_eq!(wrong["code"], "invalid_credentials");
    // A user without a password cannot sign in by password either, with the same answer.
    app.create_user("nopass@example.com").await;
    let (s3, nopass) = authenticate(&app, password_grant(&app, "nopass@example.com", PASSWORD)).await;
    assert_eq!((s3, &nopass), (s1, &wrong));

    let failed = app.all_events("&events=authentication.password_failed").await;
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert_eq!(failed[0]["data"]["user_id"], user["id"]);
    assert_eq!(failed[0]["data"]["error"]["code"], "invalid_credentials");
    assert_eq!(failed[1]["data"]["user_id"], Value::Null);
    assert_eq!(failed[1]["data"]["email"], "nobody@example.com");
    assert!(sessions_of(&app, user["id"].as_str().unwrap()).await.is_empty());
}

#[tokio::test]
async fn a_wrong_client_id_or_secret_is_refused_and_nothing_is_recorded() {
    let app = TestApp::spawn().await;
    user_with_password(&app, "ann@example.com", true).await;
    let mut cases = Vec::new();
    for (field, value) in [
        ("client_id", json!("client_01NOTTHISENVIRONMENT00000")),
        ("client_id", Value::Null),
        ("client_secret", json!("sk_not_a_key_of_this_server")),
        ("client_secret", json!("not even a key")),
        ("client_secret", Value::Null),
    ] {
        let mut body = password_grant(&app, "ann@example.com", PASSWORD);
        body[field] = value;
        cases.push(body);
    }
    for body in cases {
        let (s, err) = authenticate(&app, body.clone()).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}: {err}");
        assert_eq!(err["code"], "invalid_client");
    }
    let events = app.all_events("").await;
    assert!(
        events
            .iter()
            .all(|e| !e["event"].as_str().unwrap_or("").starts_with("authentication.")),
        "{events:?}"
    );
}

#[tokio::test]
async fn malformed_requests_are_422_and_change_nothing() {
    let app = TestApp::spawn().await;
    user_with_password(&app, "ann@example.com", true).await;
    let base = password_grant(&app, "ann@example.com", PASSWORD);
    let mut cases = Vec::new();
    for (field, value) in [
        ("grant_type", json!("client_credentials")),
        ("email", json!("not an email")),
        ("email", Value::Null),
        ("password", Value::Null),
        ("ip_address", json!("999.1.1.1")),
    ] {
        let mut b = base.clone();
        b[field] = value;
        cases.push(b);
    }
    for b in cases {
        let (s, err) = authenticate(&app, b.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}: {err}");
    }
    let (s, err) = app
        .raw(
            reqwest::Method::POST,
            "/user_management/authenticate",
            "application/json",
            b"{".to_vec(),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{err}");
    let events = app
        .all_events("&events=session.created,authentication.password_failed")
        .await;
    assert!(events.is_empty(), "{events:?}");
}

#[tokio::test]
async fn an_unverified_email_needs_verification_unless_turned_off() {
    let app = TestApp::spawn().await;
    let user = user_with_password(&app, "ann@example.com", false).await;
    let (s, err) = authenticate(&app, password_grant(&app, "ann@example.com", PASSWORD)).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{err}");
    assert_eq!(err["code"], "email_verification_required");
    assert_eq!(err["user"]["id"], user["id"]);
    assert_eq!(err["email"], "ann@example.com");
    assert!(
        err["pending_authentication_token"]
            .as_str()
            .is_some_and(|t| t.len() > 20),
        "{err}"
    );
    assert!(sessions_of(&app, user["id"].as_str().unwrap()).await.is_empty());

    let relaxed = TestApp::spawn_with(|c| c.auth.require_email_verification = false).await;
    user_with_password(&relaxed, "ann@example.com", false).await;
    sign_in(&relaxed, "ann@example.com").await;
}

#[tokio::test]
async fn a_member_of_several_organizations_selects_one_with_the_pending_token() {
    let app = TestApp::spawn().await;
    let user = user_with_password(&app, "ann@example.com", true).await;
    let user_id = user["id"].as_str().unwrap();
    let a = app.create_organization("Alpha", json!([])).await;
    let b = app.create_organization("Beta", json!([])).await;
    let c = app.create_organization("Gamma", json!([])).await;
    app.create_membership(user_id, a["id"].as_str().unwrap(), Some("admin"))
        .await;
    app.create_membership(user_id, b["id"].as_str().unwrap(), None).await;

    let (s, err) = authenticate(&app, password_grant(&app, "ann@example.com", PASSWORD)).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{err}");
    assert_eq!(err["code"], "organization_selection_required");
    let mut names: Vec<&str> = err["organizations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["Alpha", "Beta"]);
    let pending = err["pending_authentication_token"].as_str().unwrap().to_string();
    let select = |org: &Value, token: &str| {
        json!({
            "grant_type": "urn:workos:oauth:grant-type:organization-selection",
            "client_id": app.client_id(),
            "client_secret": app.key,
            "pending_authentication_token": token,
            "organization_id": org["id"],
        })
    };
    // Not a member of Gamma: refused, and the token is spent (single use).
    let (s, err) = authenticate(&app, select(&c, &pending)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["code"], "organization_membership_not_found");
    let (s, _) = authenticate(&app, password_grant(&app, "ann@example.com", PASSWORD)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, err) = authenticate(&app, password_grant(&app, "ann@example.com", PASSWORD)).await;
    let pending = err["pending_authentication_token"].as_str().unwrap().to_string();
    let (s, signed) = authenticate(&app, select(&a, &pending)).await;
    assert_eq!(s, StatusCode::OK, "{signed}");
    assert_eq!(signed["organization_id"], a["id"]);
    let claims = claims(&app, signed["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["org_id"], a["id"]);
    assert_eq!(claims["role"], "admin");
    // The token is single use.
    let (s, err) = authenticate(&app, select(&a, &pending)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["code"], "invalid_pending_authentication_token");
    let (s, err) = authenticate(&app, select(&a, "made-up-token")).await;
    assert_eq!(
        (s, err["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_pending_authentication_token"))
    );
}

#[tokio::test]
async fn a_single_membership_signs_in_to_that_organization_and_refresh_switches_only_to_member_organizations() {
    let app = TestApp::spawn().await;
    let user = user_with_password(&app, "ann@example.com", true).await;
    let user_id = user["id"].as_str().unwrap();
    let a = app.create_organization("Alpha", json!([])).await;
    let other = app.create_organization("Other", json!([])).await;
    app.create_membership(user_id, a["id"].as_str().unwrap(), Some("admin"))
        .await;
    let signed = sign_in(&app, "ann@example.com").await;
    assert_eq!(signed["organization_id"], a["id"]);
    let token = signed["refresh_token"].as_str().unwrap().to_string();

    // Switching to an organization the user is not a member of: refused, token not spent.
    let mut body = refresh_grant(&app, &token);
    body["organization_id"] = other["id"].clone();
    let (s, err) = authenticate(&app, body).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["code"], "organization_membership_not_found");

    let b = app.create_organization("Beta", json!([])).await;
    app.create_membership(user_id, b["id"].as_str().unwrap(), Some("member"))
        .await;
    let mut body = refresh_grant(&app, &token);
    body["organization_id"] = b["id"].clone();
    let (s, switched) = authenticate(&app, body).await;
    assert_eq!(s, StatusCode::OK, "{switched}");
    assert_eq!(switched["organization_id"], b["id"]);
    let c = claims(&app, switched["access_token"].as_str().unwrap()).await;
    assert_eq!(
        (c["org_id"].clone(), c["role"].clone()),
        (b["id"].clone(), json!("member"))
    );
    // The next plain refresh stays in the organization switched to.
    let (s, next) = authenticate(&app, refresh_grant(&app, switched["refresh_token"].as_str().unwrap())).await;
    assert_eq!(s, StatusCode::OK, "{next}");
    assert_eq!(next["organization_id"], b["id"]);
    let sessions = sessions_of(&app, user_id).await;
    assert_eq!(sessions[0]["organization_id"], b["id"]);
}

#[tokio::test]
async fn refresh_tokens_rotate_and_concurrent_refreshes_within_the_grace_window_share_one_successor() {
    let app = TestApp::spawn().await;
    user_with_password(&app, "ann@example.com", true).await;
    let first = sign_in(&app, "ann@example.com").await;
    let t0 = first["refresh_token"].as_str().unwrap().to_string();
    let (s, second) = authenticate(&app, refresh_grant(&app, &t0)).await;
    assert_eq!(s, StatusCode::OK, "{second}");
    let t1 = second["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(t0, t1);
    assert_eq!(second["user"]["email"], "ann@example.com");
    let c0 = claims(&app, first["access_token"].as_str().unwrap()).await;
    let c1 = claims(&app, second["access_token"].as_str().unwrap()).await;
    assert_eq!(c0["sid"], c1["sid"]);

    // Ten tabs refresh t1 at once: all succeed with the same successor.
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let body = refresh_grant(&app, &t1);
        let app_ref = &app;
        tasks.push(async move { authenticate(app_ref, body).await });
    }
    let results = futures::future::join_all(tasks).await;
    let mut successors: Vec<String> = Vec::new();
    for (s, body) in &results {
        assert_eq!(*s, StatusCode::OK, "{body}");
        successors.push(body["refresh_token"].as_str().unwrap().to_string());
    }
    successors.dedup();
    assert_eq!(successors.len(), 1, "{successors:?}");
    assert_ne!(successors[0], t1);
}

#[tokio::test]
async fn a_spent_refresh_token_after_the_grace_window_revokes_the_whole_session() {
    let app = TestApp::spawn_with(|c| c.auth.refresh_grace = Duration::ZERO).await;
    let user = user_with_password(&app, "ann@example.com", true).await;
    let first = sign_in(&app, "ann@example.com").await;
    let t0 = first["refresh_token"].as_str().unwrap().to_string();
    let (_, second) = authenticate(&app, refresh_grant(&app, &t0)).await;
    let t1 = second["refresh_token"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(20)).await;
    // The thief replays t0: refused, and the session ends.
    let (s, err) = authenticate(&app, refresh_grant(&app, &t0)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["code"], "invalid_grant");
    // The legitimate holder's newer token is dead too.
    let (s, _) = authenticate(&app, refresh_grant(&app, &t1)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let sessions = sessions_of(&app, user["id"].as_str().unwrap()).await;
    assert_eq!(sessions[0]["status"], "revoked", "{sessions:?}");
    assert!(sessions[0]["ended_at"].is_string());
    let revoked = app.all_events("&events=session.revoked").await;
    assert_eq!(revoked.len(), 1, "{revoked:?}");
}

#[tokio::test]
async fn forged_mangled_and_foreign_refresh_tokens_are_refused_without_ending_the_session() {
    let app = TestApp::spawn().await;
    let user = user_with_password(&app, "ann@example.com", true).await;
    let first = sign_in(&app, "ann@example.com").await;
    let t0 = first["refresh_token"].as_str().unwrap().to_string();
    let (sid, generation, mac) = {
        let mut p = t0.split('.');
        (
            p.next().unwrap().to_string(),
            p.next().unwrap().to_string(),
            p.next().unwrap().to_string(),
        )
    };
    let mut flipped = mac.clone().into_bytes();
    flipped[3] = if flipped[3] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    // Another environment's token for a session of the same id.
    let other = TestApp::spawn().await;
    user_with_password(&other, "ann@example.com", true).await;
    let foreign = sign_in(&other, "ann@example.com").await["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    for bad in [
        format!("{sid}.{generation}.{flipped}"),
        format!("{sid}.5.{mac}"),
        format!("{sid}.{generation}"),
        "session_01HXYZ123456789ABCDEFGHJK.0.AAAA".to_string(),
        "garbage".to_string(),
        foreign,
        String::new(),
    ] {
        let (s, err) = authenticate(&app, refresh_grant(&app, &bad)).await;
        assert!(
            s == StatusCode::BAD_REQUEST || s == StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {s} {err}"
        );
    }
    let sessions = sessions_of(&app, user["id"].as_str().unwrap()).await;
    assert_eq!(sessions[0]["status"], "active");
    let (s, body) = authenticate(&app, refresh_grant(&app, &t0)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_revoked_session_cannot_refresh_and_logout_redirects_only_to_registered_uris() {
    let app = TestApp::spawn_with(|c| c.auth.redirect_uris = vec!["http://127.0.0.1:9/after".into()]).await;
    let user = user_with_password(&app, "ann@example.com", true).await;
    let user_id = user["id"].as_str().unwrap();
    let one = sign_in(&app, "ann@example.com").await;
    let two = sign_in(&app, "ann@example.com").await;
    let sid_one = claims(&app, one["access_token"].as_str().unwrap()).await["sid"].clone();
    let sid_two = claims(&app, two["access_token"].as_str().unwrap()).await["sid"].clone();

    let (s, body) = app
        .post("/user_management/sessions/revoke", json!({ "session_id": sid_one }))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, _) = authenticate(&app, refresh_grant(&app, one["refresh_token"].as_str().unwrap())).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Revoking again changes nothing; an unknown session is 404; the key is required.
    let (s, _) = app
        .post("/user_management/sessions/revoke", json!({ "session_id": sid_one }))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .post(
            "/user_management/sessions/revoke",
            json!({ "session_id": "session_01HXYZ123456789ABCDEFGHJK" }),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .request_with_key(
            reqwest::Method::POST,
            "/user_management/sessions/revoke",
            Some(json!({ "session_id": sid_two })),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Logout: an unregistered return_to is refused before anything changes.
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let logout = |sid: &Value, to: &str| {
        format!(
            "{}/user_management/sessions/logout?session_id={}&return_to={}",
            app.base,
            sid.as_str().unwrap(),
            to
        )
    };
    for evil in [
        "https://evil.example.com/after",
        "http://127.0.0.1:9/afterwards",
        // Exact match only: not even a path below or a query on a registered URI.
        "http://127.0.0.1:9/after/more",
        "http://127.0.0.1:9/after?x=1",
        "//evil.example.com",
    ] {
        let r = no_redirect
            .get(logout(&sid_two, &urlencode(evil)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{evil}");
    }
    let statuses: Vec<Value> = sessions_of(&app, user_id)
        .await
        .iter()
        .map(|s| s["status"].clone())
        .collect();
    assert!(statuses.contains(&json!("active")), "{statuses:?}");
    let r = no_redirect
        .get(logout(&sid_two, &urlencode("http://127.0.0.1:9/after")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(r.headers()["location"], "http://127.0.0.1:9/after");
    let (s, _) = authenticate(&app, refresh_grant(&app, two["refresh_token"].as_str().unwrap())).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let sessions = sessions_of(&app, user_id).await;
    assert!(sessions.iter().all(|s| s["status"] == "revoked"), "{sessions:?}");
    let revoked = app.all_events("&events=session.revoked").await;
    assert_eq!(revoked.len(), 2, "{revoked:?}");

    // Sessions of an unknown user: 404; a bad cursor: 422.
    let (s, _) = app
        .get("/user_management/users/user_01HXYZ123456789ABCDEFGHJK/sessions")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .get(&format!("/user_management/users/{user_id}/sessions?after=user_x"))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
}

fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test]
async fn password_attempts_per_email_and_calls_per_ip_are_rate_limited_across_servers() {
    let db = crate::helpers::fresh_database().await;
    let limited = |c: &mut keyledger_api::Config| {
        c.rate_limits.password_per_email = 3;
        c.rate_limits.authenticate_per_ip = 6;
    };
    let one = TestApp::spawn_on_with(db.clone(), limited).await;
    let two = TestApp::spawn_on_with(db, limited).await;
    user_with_password(&one, "ann@example.com", true).await;
    let wrong = |app: &TestApp, ip: &str| {
        let mut b = password_grant(app, "ann@example.com", "wrong password");
        b["ip_address"] = json!(ip);
        b
    };
    // Three attempts for the email, spread over two servers, then the fourth is refused, even
    // with the right password and from another address.
    for (app, ip) in [(&one, "198.51.100.1"), (&two, "198.51.100.2"), (&one, "198.51.100.3")] {
        let (s, body) = authenticate(app, wrong(app, ip)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    }
    let mut right = password_grant(&two, "ann@example.com", PASSWORD);
    right["ip_address"] = json!("198.51.100.4");
    let r = reqwest::Client::new()
        .post(format!("{}/user_management/authenticate", two.base))
        .json(&right)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "rate_limit_exceeded");
    // Another email is not limited by that one; one address is limited across emails.
    user_with_password(&one, "bob@example.com", true).await;
    let mut bob = password_grant(&one, "bob@example.com", PASSWORD);
    bob["ip_address"] = json!("203.0.113.50");
    let mut statuses = Vec::new();
    for i in 0..8 {
        let app = if i % 2 == 0 { &one } else { &two };
        let mut b = bob.clone();
        b["email"] = json!(format!("nobody{i}@example.com"));
        statuses.push(authenticate(app, b).await.0);
    }
    // 6 per minute per address: the last two are refused, or one when the calls were slow
    // enough (a loaded machine) for the bucket to refill by one in between.
    let refused = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert!((1..=2).contains(&refused), "{statuses:?}");
    // A refused call records no attempt.
    let failed = one.all_events("&events=authentication.password_failed").await;
    assert_eq!(failed.len(), 3 + 6, "{failed:?}");
}

#[tokio::test]
async fn expired_codes_and_pending_authentications_are_swept_and_fresh_ones_kept() {
    let app = TestApp::spawn().await;
    user_with_password(&app, "ann@example.com", false).await;
    for _ in 0..2 {
        let (s, _) = authenticate(&app, password_grant(&app, "ann@example.com", PASSWORD)).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
    }
    let count = |table: &'static str| {
        let pool = app.pool.clone();
        async move {
            let (n,): (i64,) = sqlx::query_as(&format!("select count(*) from {table}"))
                .fetch_one(&pool)
                .await
                .unwrap();
            n
        }
    };
    assert_eq!(
        (count("pending_authentication").await, count("one_time_code").await),
        (2, 2)
    );
    // One of each long expired; the other fresh.
    sqlx::query("update pending_authentication set expires_at = now() - interval '2 hours' where ctid = (select min(ctid) from pending_authentication)")
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("update one_time_code set expires_at = now() - interval '2 days' where ctid = (select min(ctid) from one_time_code)")
        .execute(&app.pool)
        .await
        .unwrap();
    let deleted = keyledger_api::sweep::sign_in_leftovers(&app.pool).await.unwrap();
    assert_eq!(deleted, 2);
    assert_eq!(
        (count("pending_authentication").await, count("one_time_code").await),
        (1, 1)
    );
    assert_eq!(keyledger_api::sweep::sign_in_leftovers(&app.pool).await.unwrap(), 0);
}

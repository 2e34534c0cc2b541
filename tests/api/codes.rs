//! Magic Auth, email verification, password reset and email change: the happy paths through
//! HTTP and every refusal (wrong, expired and used codes, the attempt limit, unknown ids, another
//! user's code, the rate limit, bad input), the codes never in the log, and their emails.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_error, assert_rejected, TestApp};
use crate::smtp::SmtpSink;

const PASSWORD: &str = "correct horse battery staple";

async fn authenticate(app: &TestApp, body: Value) -> (StatusCode, Value) {
    app.request_with_key(Method::POST, "/user_management/authenticate", Some(body), None)
        .await
}

fn grant(app: &TestApp, grant_type: &str, fields: Value) -> Value {
    let mut body = json!({
        "grant_type": grant_type,
        "client_id": app.client_id(),
        "client_secret": app.key,
        "ip_address": "203.0.113.9",
        "user_agent": "tests/1.0",
    });
    for (k, v) in fields.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

const MAGIC: &str = "urn:workos:oauth:grant-type:magic-auth:code";
const VERIFY: &str = "urn:workos:oauth:grant-type:email-verification:code";

async fn magic_auth(app: &TestApp, email: &str) -> Value {
    let (s, body) = app.post("/user_management/magic_auth", json!({ "email": email })).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    body
}

async fn with_magic_code(app: &TestApp, email: &str, code: &str) -> (StatusCode, Value) {
    authenticate(app, grant(app, MAGIC, json!({ "email": email, "code": code }))).await
}

/// A code that is not `code` (same shape).
fn other_code(code: &str) -> String {
    let n: u32 = code.parse().unwrap();
    format!("{:06}", (n + 1) % 1_000_000)
}

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

/// The stored events of the `OneTimeCode` aggregate: (event type, payload text).
async fn code_events(app: &TestApp) -> Vec<(String, String)> {
    sqlx::query_as("select event_type, payload::text from event where aggregate_type = 'OneTimeCode' order by 1")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

/// No code or token appears anywhere in the log.
async fn assert_not_in_log(app: &TestApp, secret: &str) {
    let hits: Vec<(String,)> = sqlx::query_as("select event_type from event where payload::text like '%' || $1 || '%'")
        .bind(secret)
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert!(hits.is_empty(), "the secret {secret} is in the log: {hits:?}");
}

#[tokio::test]
async fn magic_auth_to_a_new_email_signs_up_the_user_and_signs_them_in_once() {
    let app = TestApp::spawn().await;
    let created = magic_auth(&app, "New@Example.com").await;
    assert_eq!(created["object"], "magic_auth");
    assert!(created["id"].as_str().unwrap().starts_with("magic_auth_"), "{created}");
    assert!(created["user_id"].as_str().unwrap().starts_with("user_"), "{created}");
    assert_eq!(created["email"], "New@Example.com");
    let code = created["code"].as_str().unwrap().to_string();
    assert!(code.len() == 6 && code.chars().all(|c| c.is_ascii_digit()), "{code}");
    for k in ["expires_at", "created_at", "updated_at"] {
        assert!(created[k].is_string(), "{k}: {created}");
    }
    // WorkOS shows the code on GET too.
    let (s, got) = app
        .get(&format!(
            "/user_management/magic_auth/{}",
            created["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(got, created);
    // No user yet: the code only reserved an id.
    let (s, _) = app
        .get(&format!(
            "/user_management/users/{}",
            created["user_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (s, err) = with_magic_code(&app, "new@example.com", &other_code(&code)).await;
    assert_error(s, &err, StatusCode::BAD_REQUEST, "invalid_one_time_code", "wrong code");

    let (s, signed) = with_magic_code(&app, "NEW@example.com", &code).await;
    assert_eq!(s, StatusCode::OK, "{signed}");
    assert_eq!(signed["authentication_method"], "MagicAuth");
    assert_eq!(signed["user"]["id"], created["user_id"]);
    assert_eq!(signed["user"]["email"], "New@Example.com");
    assert_eq!(signed["user"]["email_verified"], true);
    assert!(app
        .verify_access_token(signed["access_token"].as_str().unwrap())
        .await
        .is_ok());

    let (s, err) = with_magic_code(&app, "new@example.com", &code).await;
    assert_error(
        s,
        &err,
        StatusCode::BAD_REQUEST,
        "one_time_code_previously_used",
        "reused code",
    );

    // The sign-up is stored as such and published as `user.created`.
    let stored: Vec<(String,)> = sqlx::query_as("select event_type from event where aggregate_id = $1")
        .bind(created["user_id"].as_str().unwrap())
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, vec![("UserSignedUp".to_string(),)]);
    let events = app
        .all_events(
            "&events=user.created,magic_auth.created,authentication.magic_auth_succeeded,authentication.magic_auth_failed,session.created",
        )
        .await;
    let names: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "magic_auth.created",
            "authentication.magic_auth_failed",
            "user.created",
            "authentication.magic_auth_succeeded",
            "session.created",
            "authentication.magic_auth_failed",
        ],
        "{events:?}"
    );
    let data = &events[0]["data"];
    assert_eq!(data["object"], "magic_auth");
    assert_eq!(data["id"], created["id"]);
    assert!(data.get("code").is_none(), "{data}");
    assert_eq!(events[1]["data"]["error"]["code"], "invalid_one_time_code");
    let sessions = app
        .get(&format!(
            "/user_management/users/{}/sessions",
            created["user_id"].as_str().unwrap()
        ))
        .await
        .1;
    assert_eq!(sessions["data"][0]["auth_method"], "magic_code");
    assert_not_in_log(&app, &code).await;
}

#[tokio::test]
async fn magic_auth_signs_in_an_existing_user_and_verifies_their_email() {
    let app = TestApp::spawn().await;
    let user = user_with_password(&app, "ann@example.com", false).await;
    let created = magic_auth(&app, "ann@example.com").await;
    assert_eq!(created["user_id"], user["id"]);
    let (s, signed) = with_magic_code(&app, "ann@example.com", created["code"].as_str().unwrap()).await;
    assert_eq!(s, StatusCode::OK, "{signed}");
    assert_eq!(signed["user"]["id"], user["id"]);
    assert_eq!(signed["user"]["email_verified"], true);
}

#[tokio::test]
async fn a_password_set_before_the_email_was_proved_goes_when_magic_auth_proves_it() {
    let app = TestApp::spawn().await;
    // Someone signed the address up with a password and never proved it (pre-hijacking).
    let planted = user_with_password(&app, "owner@example.com", false).await;
    let id = planted["id"].as_str().unwrap();
    let created = magic_auth(&app, "owner@example.com").await;
    let (s, signed) = with_magic_code(&app, "owner@example.com", created["code"].as_str().unwrap()).await;
    assert_eq!(s, StatusCode::OK, "{signed}");
    assert_eq!(signed["user"]["email_verified"], true);
    // The planted password no longer signs in, its credential row and the event tell why.
    let password = json!({ "email": "owner@example.com", "password": PASSWORD });
    let (s, b) = authenticate(&app, grant(&app, "password", password.clone())).await;
    assert_ne!(s, StatusCode::OK, "{b}");
    let (rows,): (i64,) = sqlx::query_as("select count(*) from credential where user_id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);
    let removed: Vec<(String,)> =
        sqlx::query_as("select event_type from event where aggregate_id = $1 and event_type = 'UserPasswordRemoved'")
            .bind(id)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(removed.len(), 1);

    // A verified user's own password stays through a Magic Auth sign-in.
    user_with_password(&app, "kept@example.com", true).await;
    let created = magic_auth(&app, "kept@example.com").await;
    let (s, _) = with_magic_code(&app, "kept@example.com", created["code"].as_str().unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    let kept = json!({ "email": "kept@example.com", "password": PASSWORD });
    let (s, b) = authenticate(&app, grant(&app, "password", kept)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

#[tokio::test]
async fn five_wrong_magic_auth_codes_kill_the_code() {
    let app = TestApp::spawn().await;
    let code = magic_auth(&app, "ann@example.com").await["code"]
        .as_str()
        .unwrap()
        .to_string();
    let wrong = other_code(&code);
    for i in 1..=4 {
        let (s, err) = with_magic_code(&app, "ann@example.com", &wrong).await;
        assert_error(
            s,
            &err,
            StatusCode::BAD_REQUEST,
            "invalid_one_time_code",
            &format!("attempt {i}"),
        );
    }
    let (s, err) = with_magic_code(&app, "ann@example.com", &wrong).await;
    assert_error(
        s,
        &err,
        StatusCode::BAD_REQUEST,
        "one_time_code_too_many_attempts",
        "attempt 5",
    );
    let (s, err) = with_magic_code(&app, "ann@example.com", &code).await;
    assert_error(
        s,
        &err,
        StatusCode::BAD_REQUEST,
        "one_time_code_too_many_attempts",
        "the right code, too late",
    );
}

#[tokio::test]
async fn concurrent_guesses_never_get_more_than_five_attempts() {
    let app = TestApp::spawn().await;
    let code = magic_auth(&app, "ann@example.com").await["code"]
        .as_str()
        .unwrap()
        .to_string();
    let wrong = other_code(&code);
    let guesses = (0..12).map(|_| with_magic_code(&app, "ann@example.com", &wrong));
    let answers = futures::future::join_all(guesses).await;
    let invalid = answers
        .iter()
        .filter(|(_, b)| b["code"] == "invalid_one_time_code")
        .count();
    assert_eq!(invalid, 4, "{answers:?}");
    let attempts: (i32,) = sqlx::query_as("select attempts from one_time_code")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(attempts.0, 5);
    let (s, err) = with_magic_code(&app, "ann@example.com", &code).await;
    assert_error(
        s,
        &err,
        StatusCode::BAD_REQUEST,
        "one_time_code_too_many_attempts",
        "after the storm",
    );
}

#[tokio::test]
async fn an_expired_magic_auth_code_is_refused() {
    let app = TestApp::spawn().await;
    let created = magic_auth(&app, "ann@example.com").await;
    sqlx::query("update one_time_code set expires_at = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .unwrap();
    let (s, err) = with_magic_code(&app, "ann@example.com", created["code"].as_str().unwrap()).await;
    assert_error(s, &err, StatusCode::BAD_REQUEST, "one_time_code_expired", "expired");
}

#[tokio::test]
async fn another_emails_code_or_an_older_code_does_not_sign_in() {
    let app = TestApp::spawn().await;
    let ann = magic_auth(&app, "ann@example.com").await;
    let bob = magic_auth(&app, "bob@example.com").await;
    let (s, err) = with_magic_code(&app, "bob@example.com", ann["code"].as_str().unwrap()).await;
    if ann["code"] != bob["code"] {
        assert_error(
            s,
            &err,
            StatusCode::BAD_REQUEST,
            "invalid_one_time_code",
            "ann's code for bob",
        );
    }
    let (s, err) = with_magic_code(&app, "carol@example.com", ann["code"].as_str().unwrap()).await;
    assert_error(
        s,
        &err,
        StatusCode::BAD_REQUEST,
        "invalid_one_time_code",
        "no code for carol",
    );
    // A newer code replaces the older one.
    let newer = magic_auth(&app, "ann@example.com").await;
    if ann["code"] != newer["code"] {
        let (s, err) = with_magic_code(&app, "ann@example.com", ann["code"].as_str().unwrap()).await;
        assert_error(
            s,
            &err,
            StatusCode::BAD_REQUEST,
            "invalid_one_time_code",
            "replaced code",
        );
    }
}

#[tokio::test]
async fn magic_auth_and_reset_codes_are_rate_limited_per_email() {
    let app = TestApp::spawn().await;
    for _ in 0..3 {
        magic_auth(&app, "ann@example.com").await;
    }
    let resp = app
        .http
        .post(format!("{}/user_management/magic_auth", app.base))
        .bearer_auth(&app.key)
        .json(&json!({ "email": "ANN@example.com" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().get("retry-after").is_some());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "rate_limit_exceeded", "{body}");
    // Another email is not limited by ann's codes.
    magic_auth(&app, "bob@example.com").await;

    user_with_password(&app, "carol@example.com", true).await;
    for _ in 0..3 {
        let (s, b) = app
            .post(
                "/user_management/password_reset",
                json!({ "email": "carol@example.com" }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
    let (s, b) = app
        .post(
            "/user_management/password_reset",
            json!({ "email": "carol@example.com" }),
        )
        .await;
    assert_error(
        s,
        &b,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_exceeded",
        "fourth reset",
    );
}

#[tokio::test]
async fn bad_input_is_422_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let user = user_with_password(&app, "ann@example.com", false).await;
    let id = user["id"].as_str().unwrap();
    user_with_password(&app, "bob@example.com", true).await;
    let cases: Vec<(Method, String, Value, (StatusCode, &str))> = vec![
        (
            Method::POST,
            "/user_management/magic_auth".into(),
            json!({ "email": "not an email" }),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_parameters/invalid_email",
            ),
        ),
        (
            Method::POST,
            "/user_management/magic_auth".into(),
            json!({}),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request_parameters"),
        ),
        (
            Method::POST,
            "/user_management/password_reset".into(),
            json!({ "email": 7 }),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request_parameters"),
        ),
        (
            Method::POST,
            "/user_management/password_reset".into(),
            json!({ "email": "nobody@example.com" }),
            (StatusCode::NOT_FOUND, "entity_not_found"),
        ),
        (
            Method::POST,
            format!("/user_management/users/{id}/email_verification/confirm"),
            json!({ "code": "" }),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_parameters/invalid_code",
            ),
        ),
        (
            Method::POST,
            format!("/user_management/users/{id}/email_change/send"),
            json!({ "new_email": "x@" }),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_parameters/invalid_email",
            ),
        ),
        (
            Method::POST,
            format!("/user_management/users/{id}/email_change/send"),
            json!({ "new_email": "bob@example.com" }),
            (StatusCode::CONFLICT, "email_not_available"),
        ),
        (
            Method::POST,
            format!("/user_management/users/{id}/email_change/send"),
            json!({ "new_email": "Ann@Example.com" }),
            (StatusCode::CONFLICT, "email_change_not_needed"),
        ),
        (
            Method::POST,
            format!("/user_management/users/{id}/email_change/confirm"),
            json!({ "code": "123456" }),
            (StatusCode::CONFLICT, "no_pending_email_change"),
        ),
        (
            Method::POST,
            "/user_management/password_reset/confirm".into(),
            json!({ "token": "nope", "new_password": "short" }),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_parameters/password_strength_error",
            ),
        ),
        (
            Method::POST,
            "/user_management/password_reset/confirm".into(),
            json!({ "token": "nope", "new_password": PASSWORD }),
            (
                StatusCode::BAD_REQUEST,
                "password_reset_error/password_reset_token_invalid",
            ),
        ),
    ];
    for (method, path, body, want) in cases {
        let ctx = format!("{method} {path} {body}");
        assert_rejected(&app, method, &path, Some(body), want, &ctx).await;
    }
}

#[tokio::test]
async fn unknown_ids_are_404() {
    let app = TestApp::spawn().await;
    let user = "user_01HXYZ123456789ABCDEFGHJK";
    for path in [
        "/user_management/magic_auth/magic_auth_01HXYZ123456789ABCDEFGHJK".to_string(),
        "/user_management/email_verification/email_verification_01HXYZ123456789ABCDEFGHJK".to_string(),
        "/user_management/password_reset/password_reset_01HXYZ123456789ABCDEFGHJK".to_string(),
        "/user_management/magic_auth/nonsense".to_string(),
    ] {
        let (s, b) = app.get(&path).await;
        assert_error(s, &b, StatusCode::NOT_FOUND, "entity_not_found", &path);
    }
    // An id of one kind is not found as another.
    let created = magic_auth(&app, "ann@example.com").await;
    let path = format!(
        "/user_management/email_verification/{}",
        created["id"].as_str().unwrap()
    );
    let (s, b) = app.get(&path).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "entity_not_found", &path);
    for (path, body) in [
        (
            format!("/user_management/users/{user}/email_verification/send"),
            json!({}),
        ),
        (
            format!("/user_management/users/{user}/email_verification/confirm"),
            json!({ "code": "123456" }),
        ),
        (
            format!("/user_management/users/{user}/email_change/send"),
            json!({ "new_email": "z@example.com" }),
        ),
        (
            format!("/user_management/users/{user}/email_change/confirm"),
            json!({ "code": "123456" }),
        ),
    ] {
        let (s, b) = app.post(&path, body).await;
        assert_error(s, &b, StatusCode::NOT_FOUND, "entity_not_found", &path);
    }
}

#[tokio::test]
async fn a_password_sign_in_of_an_unverified_email_continues_with_the_emailed_code_to_tokens() {
    let app = TestApp::spawn().await;
    let user = user_with_password(&app, "ann@example.com", false).await;
    let (s, err) = authenticate(
        &app,
        grant(
            &app,
            "password",
            json!({ "email": "ann@example.com", "password": PASSWORD }),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{err}");
    assert_eq!(err["code"], "email_verification_required");
    let verification_id = err["email_verification_id"].as_str().unwrap().to_string();
    let pending = err["pending_authentication_token"].as_str().unwrap().to_string();
    let (s, verification) = app
        .get(&format!("/user_management/email_verification/{verification_id}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{verification}");
    assert_eq!(verification["object"], "email_verification");
    assert_eq!(verification["user_id"], user["id"]);
    let code = verification["code"].as_str().unwrap().to_string();

    // A wrong code leaves the pending authentication usable.
    let (s, e) = authenticate(
        &app,
        grant(
            &app,
            VERIFY,
            json!({ "code": other_code(&code), "pending_authentication_token": pending }),
        ),
    )
    .await;
    assert_error(s, &e, StatusCode::BAD_REQUEST, "invalid_one_time_code", "wrong code");
    let (s, e) = authenticate(
        &app,
        grant(
            &app,
            VERIFY,
            json!({ "code": code, "pending_authentication_token": "forged" }),
        ),
    )
    .await;
    assert_error(
        s,
        &e,
        StatusCode::BAD_REQUEST,
        "invalid_pending_authentication_token",
        "forged token",
    );

    let (s, signed) = authenticate(
        &app,
        grant(
            &app,
            VERIFY,
            json!({ "code": code, "pending_authentication_token": pending }),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{signed}");
    assert_eq!(signed["user"]["id"], user["id"]);
    assert_eq!(signed["user"]["email_verified"], true);
    assert_eq!(signed["authentication_method"], "Password");
    assert!(app
        .verify_access_token(signed["access_token"].as_str().unwrap())
        .await
        .is_ok());

    let (s, e) = authenticate(
        &app,
        grant(
            &app,
            VERIFY,
            json!({ "code": code, "pending_authentication_token": pending }),
        ),
    )
    .await;
    assert_error(
        s,
        &e,
        StatusCode::BAD_REQUEST,
        "invalid_pending_authentication_token",
        "used token",
    );

    // Verified now: the password alone signs in.
    let (s, again) = authenticate(
        &app,
        grant(
            &app,
            "password",
            json!({ "email": "ann@example.com", "password": PASSWORD }),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{again}");
    let names: Vec<String> = app
        .all_events("&events=email_verification.created,authentication.email_verification_succeeded,authentication.email_verification_failed")
        .await
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "email_verification.created",
            "authentication.email_verification_failed",
            "authentication.email_verification_succeeded",
        ]
    );
    assert_not_in_log(&app, &code).await;
}

#[tokio::test]
async fn after_email_verification_a_member_of_several_organizations_still_selects_one() {
    let app = TestApp::spawn().await;
    let user = user_with_password(&app, "ann@example.com", false).await;
    let uid = user["id"].as_str().unwrap();
    let a = app.create_organization("A", json!([])).await;
    let b = app.create_organization("B", json!([])).await;
    app.create_membership(uid, a["id"].as_str().unwrap(), None).await;
    app.create_membership(uid, b["id"].as_str().unwrap(), None).await;
    let (_, err) = authenticate(
        &app,
        grant(
            &app,
            "password",
            json!({ "email": "ann@example.com", "password": PASSWORD }),
        ),
    )
    .await;
    let id = err["email_verification_id"].as_str().unwrap();
    let code = app.get(&format!("/user_management/email_verification/{id}")).await.1["code"].clone();
    let (s, next) = authenticate(
        &app,
        grant(
            &app,
            VERIFY,
            json!({ "code": code, "pending_authentication_token": err["pending_authentication_token"] }),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{next}");
    assert_eq!(next["code"], "organization_selection_required");
    let (s, signed) = authenticate(
        &app,
        grant(
            &app,
            "urn:workos:oauth:grant-type:organization-selection",
            json!({ "pending_authentication_token": next["pending_authentication_token"], "organization_id": b["id"] }),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{signed}");
    assert_eq!(signed["organization_id"], b["id"]);
}

#[tokio::test]
async fn send_and_confirm_email_verification() {
    let app = TestApp::spawn().await;
    let user = user_with_password(&app, "ann@example.com", false).await;
    let other = user_with_password(&app, "bob@example.com", false).await;
    let id = user["id"].as_str().unwrap();
    let (s, sent) = app
        .post(
            &format!("/user_management/users/{id}/email_verification/send"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{sent}");
    assert_eq!(sent["user"]["id"], user["id"]);
    let (code_id,): (String,) = sqlx::query_as("select id from one_time_code where user_id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let code = app
        .get(&format!("/user_management/email_verification/{code_id}"))
        .await
        .1["code"]
        .as_str()
        .unwrap()
        .to_string();
    let confirm = |uid: String, code: String| {
        let app = &app;
        async move {
            app.post(
                &format!("/user_management/users/{uid}/email_verification/confirm"),
                json!({ "code": code }),
            )
            .await
        }
    };
    // Another user's code does not verify this one, nor this code the other user.
    let other_id = other["id"].as_str().unwrap().to_string();
    let (s, e) = confirm(other_id, code.clone()).await;
    assert_error(
        s,
        &e,
        StatusCode::BAD_REQUEST,
        "email_verification_code_incorrect",
        "other user",
    );
    let (s, e) = confirm(id.to_string(), other_code(&code)).await;
    assert_error(
        s,
        &e,
        StatusCode::BAD_REQUEST,
        "email_verification_code_incorrect",
        "wrong code",
    );
    let (s, ok) = confirm(id.to_string(), code.clone()).await;
    assert_eq!(s, StatusCode::OK, "{ok}");
    assert_eq!(ok["user"]["email_verified"], true);
    let (s, e) = confirm(id.to_string(), code.clone()).await;
    assert_error(s, &e, StatusCode::BAD_REQUEST, "email_previously_verified", "again");
    let (s, e) = app
        .post(
            &format!("/user_management/users/{id}/email_verification/send"),
            json!({}),
        )
        .await;
    assert_error(s, &e, StatusCode::BAD_REQUEST, "email_already_verified", "send again");
    let changes: Vec<(String,)> =
        sqlx::query_as("select payload::text from event where aggregate_id = $1 and event_type = 'UserUpdated'")
            .bind(id)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert!(changes[0].0.contains("\"email_verified\": true"), "{changes:?}");
}

#[tokio::test]
async fn a_password_reset_sets_the_new_password_once() {
    let app = TestApp::spawn_with(|c| c.auth.password_reset_url = "https://app.example/reset?lang=en".into()).await;
    let user = user_with_password(&app, "ann@example.com", false).await;
    let (s, reset) = app
        .post("/user_management/password_reset", json!({ "email": "Ann@Example.com" }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{reset}");
    assert_eq!(reset["object"], "password_reset");
    assert!(reset["id"].as_str().unwrap().starts_with("password_reset_"));
    assert_eq!(reset["user_id"], user["id"]);
    let token = reset["password_reset_token"].as_str().unwrap().to_string();
    assert!(token.len() >= 40, "{token}");
    assert_eq!(
        reset["password_reset_url"],
        format!("https://app.example/reset?lang=en&token={token}")
    );
    let (s, got) = app
        .get(&format!(
            "/user_management/password_reset/{}",
            reset["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got, reset);

    // A too short password is refused and the token stays usable.
    let (s, e) = app
        .post(
            "/user_management/password_reset/confirm",
            json!({ "token": token, "new_password": "short" }),
        )
        .await;
    assert_error(
        s,
        &e,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request_parameters/password_strength_error",
        "short",
    );
    let new_password = "a brand new passphrase";
    let (s, done) = app
        .post(
            "/user_management/password_reset/confirm",
            json!({ "token": token, "new_password": new_password }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{done}");
    assert_eq!(done["user"]["id"], user["id"]);
    assert_eq!(done["user"]["email_verified"], true, "a reset proves the email");
    let (s, e) = app
        .post(
            "/user_management/password_reset/confirm",
            json!({ "token": token, "new_password": "yet another passphrase" }),
        )
        .await;
    assert_error(
        s,
        &e,
        StatusCode::BAD_REQUEST,
        "password_reset_error/password_reset_token_previously_used",
        "reuse",
    );

    let sign_in = |password: &'static str| {
        let app = &app;
        async move {
            authenticate(
                app,
                grant(
                    app,
                    "password",
                    json!({ "email": "ann@example.com", "password": password }),
                ),
            )
            .await
        }
    };
    let (s, e) = sign_in(PASSWORD).await;
    assert_error(s, &e, StatusCode::BAD_REQUEST, "invalid_credentials", "old password");
    let (s, ok) = sign_in("a brand new passphrase").await;
    assert_eq!(s, StatusCode::OK, "{ok}");

    let events = app
        .all_events("&events=password_reset.created,password_reset.succeeded")
        .await;
    let names: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(names, ["password_reset.created", "password_reset.succeeded"]);
    for e in &events {
        assert_eq!(e["data"]["id"], reset["id"]);
        assert!(e["data"].get("password_reset_token").is_none(), "{e}");
    }
    let stored: Vec<String> = code_events(&app).await.into_iter().map(|(t, _)| t).collect();
    assert_eq!(stored, ["PasswordResetCreated", "PasswordResetSucceeded"]);
    let changed: (i64,) =
        sqlx::query_as("select count(*) from event where aggregate_id = $1 and event_type = 'UserPasswordChanged'")
            .bind(user["id"].as_str().unwrap())
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(changed.0, 1);
    assert_not_in_log(&app, &token).await;
}

#[tokio::test]
async fn a_password_reset_ends_the_users_sessions() {
    let app = TestApp::spawn().await;
    let user = user_with_password(&app, "ann@example.com", true).await;
    let other = user_with_password(&app, "bob@example.com", true).await;
    let sign_in = |email: &'static str| {
        let app = &app;
        async move {
            let (s, b) = authenticate(
                app,
                grant(app, "password", json!({ "email": email, "password": PASSWORD })),
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{b}");
            b
        }
    };
    let ann = sign_in("ann@example.com").await;
    let bob = sign_in("bob@example.com").await;
    let (_, reset) = app
        .post("/user_management/password_reset", json!({ "email": "ann@example.com" }))
        .await;
    let (s, b) = app
        .post(
            "/user_management/password_reset/confirm",
            json!({ "token": reset["password_reset_token"], "new_password": "a brand new passphrase" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let refresh = |token: Value| {
        let app = &app;
        async move { authenticate(app, grant(app, "refresh_token", json!({ "refresh_token": token }))).await }
    };
    let (s, e) = refresh(ann["refresh_token"].clone()).await;
    assert_error(s, &e, StatusCode::BAD_REQUEST, "invalid_grant", "ann's old session");
    let (s, b) = refresh(bob["refresh_token"].clone()).await;
    assert_eq!(s, StatusCode::OK, "bob's session is not ann's: {b}");
    let (_, sessions) = app
        .get(&format!(
            "/user_management/users/{}/sessions",
            user["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(sessions["data"][0]["status"], "revoked", "{sessions}");
    let (_, sessions) = app
        .get(&format!(
            "/user_management/users/{}/sessions",
            other["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(sessions["data"][0]["status"], "active", "{sessions}");
}

#[tokio::test]
async fn an_expired_reset_token_is_refused() {
    let app = TestApp::spawn().await;
    user_with_password(&app, "ann@example.com", true).await;
    let (_, reset) = app
        .post("/user_management/password_reset", json!({ "email": "ann@example.com" }))
        .await;
    sqlx::query("update one_time_code set expires_at = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .unwrap();
    let (s, e) = app
        .post(
            "/user_management/password_reset/confirm",
            json!({ "token": reset["password_reset_token"], "new_password": "a brand new passphrase" }),
        )
        .await;
    assert_error(
        s,
        &e,
        StatusCode::BAD_REQUEST,
        "password_reset_error/password_reset_token_expired",
        "expired",
    );
}

#[tokio::test]
async fn an_email_change_moves_the_email_claim_once_confirmed() {
    let app = TestApp::spawn().await;
    let user = user_with_password(&app, "ann@example.com", true).await;
    let id = user["id"].as_str().unwrap();
    let (s, change) = app
        .post(
            &format!("/user_management/users/{id}/email_change/send"),
            json!({ "new_email": "Ann.Lee@Example.org" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{change}");
    assert_eq!(change["object"], "email_change");
    assert_eq!(change["new_email"], "Ann.Lee@Example.org");
    assert_eq!(change["user"]["email"], "ann@example.com");
    let (code,): (Vec<u8>,) = sqlx::query_as("select sealed from one_time_code where purpose = 'email_change'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let code_id: (String,) = sqlx::query_as("select id from one_time_code where purpose = 'email_change'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let code = String::from_utf8(
        crate::helpers::test_master_key()
            .open(code_id.0.as_bytes(), &code)
            .expect("sealed with the test key"),
    )
    .unwrap();
    let confirm = |code: String| {
        let app = &app;
        async move {
            app.post(
                &format!("/user_management/users/{id}/email_change/confirm"),
                json!({ "code": code }),
            )
            .await
        }
    };
    let (s, e) = confirm(other_code(&code)).await;
    assert_error(
        s,
        &e,
        StatusCode::BAD_REQUEST,
        "email_change_code_incorrect",
        "wrong code",
    );
    let (s, ok) = confirm(code.clone()).await;
    assert_eq!(s, StatusCode::OK, "{ok}");
    assert_eq!(ok["object"], "email_change_confirmation");
    assert_eq!(ok["user"]["email"], "Ann.Lee@Example.org");
    let (s, e) = confirm(code.clone()).await;
    assert_error(
        s,
        &e,
        StatusCode::CONFLICT,
        "email_change_code_previously_used",
        "reuse",
    );
    // The old email is free again; the new one is taken.
    let (s, b) = app
        .post("/user_management/users", json!({ "email": "ann@example.com" }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = app
        .post("/user_management/users", json!({ "email": "ann.lee@example.org" }))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert_not_in_log(&app, &code).await;
}

#[tokio::test]
async fn an_email_taken_between_send_and_confirm_is_refused_with_409() {
    let app = TestApp::spawn().await;
    let user = user_with_password(&app, "ann@example.com", true).await;
    let id = user["id"].as_str().unwrap();
    let (s, _) = app
        .post(
            &format!("/user_management/users/{id}/email_change/send"),
            json!({ "new_email": "new@example.com" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (code_id, sealed): (String, Vec<u8>) =
        sqlx::query_as("select id, sealed from one_time_code where purpose = 'email_change'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let code = String::from_utf8(
        crate::helpers::test_master_key()
            .open(code_id.as_bytes(), &sealed)
            .unwrap(),
    )
    .unwrap();
    app.create_user("new@example.com").await;
    let (s, e) = app
        .post(
            &format!("/user_management/users/{id}/email_change/confirm"),
            json!({ "code": code }),
        )
        .await;
    assert_error(s, &e, StatusCode::CONFLICT, "email_not_available", "taken meanwhile");
    let (_, u) = app.get(&format!("/user_management/users/{id}")).await;
    assert_eq!(u["email"], "ann@example.com");
}

#[tokio::test]
async fn with_smtp_configured_the_codes_and_the_reset_link_are_emailed() {
    let sink = SmtpSink::start().await;
    let url = sink.url();
    let app = TestApp::spawn_with(|c| {
        c.mail.smtp_url = Some(url.parse().expect("URL"));
    })
    .await;
    let magic = magic_auth(&app, "ann@example.com").await;
    user_with_password(&app, "bob@example.com", true).await;
    let (s, reset) = app
        .post("/user_management/password_reset", json!({ "email": "bob@example.com" }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{reset}");
    let mut got = sink.wait_for(2).await;
    got.sort_by(|a, b| a.to.cmp(&b.to));
    assert!(got[0].to.contains("ann@example.com"), "{:?}", got[0]);
    assert!(got[0].body.contains(magic["code"].as_str().unwrap()), "{}", got[0].body);
    assert!(got[1].to.contains("bob@example.com"), "{:?}", got[1]);
    assert!(
        got[1].body.contains(reset["password_reset_url"].as_str().unwrap()),
        "{}",
        got[1].body
    );
}

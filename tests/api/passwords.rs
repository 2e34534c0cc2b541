//! Tests: imported password hashes (bcrypt, pbkdf2, ssha, ssha256, argon2) through the real
//! HTTP API: what is stored, that `password::verify` accepts the password against each stored
//! form (and asks for a rehash), that bad imports change nothing, and that a storm of hashes is
//! bounded (503 `server_busy`) without stalling other requests.

use std::time::{Duration, Instant};

use keyledger_api::password::{self, Hashing};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

const USERS: &str = "/user_management/users";
const PW: &str = "correct horse battery staple";

/// The stored password hash of a user, if any.
async fn credential(app: &TestApp, user_id: &str) -> Option<String> {
    sqlx::query_as::<_, (String,)>("select password_hash from credential where user_id = $1")
        .bind(user_id)
        .fetch_optional(&app.pool)
        .await
        .expect("read credential")
        .map(|r| r.0)
}

/// (password_hash_type, password_hash, password_salt_position, what is stored): hashes of `PW`
/// computed with Python's hashlib, a bcrypt one made with rust-bcrypt at cost 4, argon2 ones
/// made with the reference implementation's CLI (Debian's `argon2`).
fn imports() -> Vec<(&'static str, &'static str, Option<&'static str>, &'static str)> {
    vec![
        (
            "bcrypt",
            "$2b$04$Y0T3ZETiX0TwJVLfZFOvLe5te/YCYbquuwBG9xmT9B1r2HnCF52im",
            None,
            "$2b$04$Y0T3ZETiX0TwJVLfZFOvLe5te/YCYbquuwBG9xmT9B1r2HnCF52im",
        ),
        (
            "pbkdf2",
            "$pbkdf2-sha256$i=1000,l=32$MDEyMzQ1Njc4OWFiY2RlZg$yqSq2SygY1sB4EcH9f2FG0JTMES+wqLsOT5YmiRBplI",
            None,
            "$pbkdf2-sha256$i=1000,l=32$MDEyMzQ1Njc4OWFiY2RlZg$yqSq2SygY1sB4EcH9f2FG0JTMES+wqLsOT5YmiRBplI",
        ),
        (
            "pbkdf2",
            "pbkdf2_sha256$1000$seasalt2024abcdefghij$3rHJvKAQ2uSme9LnbfOS383G11IllH4wOfAm7ZpBf34=",
            None,
            "$pbkdf2-sha256$i=1000,l=32$c2Vhc2FsdDIwMjRhYmNkZWZnaGlq$3rHJvKAQ2uSme9LnbfOS383G11IllH4wOfAm7ZpBf34",
        ),
        (
            "ssha",
            "{SSHA}axjXroWdrjIVf38p0IUbdYaQZtQBAgMEBQYHCA==",
            None,
            "{SSHA;suffix}axjXroWdrjIVf38p0IUbdYaQZtQBAgMEBQYHCA==",
        ),
        (
            "ssha",
            "{SSHA}05j6bHossbgwSkKAVF3fy8pm7RIBAgMEBQYHCA==",
            Some("prefix"),
            "{SSHA;prefix}05j6bHossbgwSkKAVF3fy8pm7RIBAgMEBQYHCA==",
        ),
        (
            "ssha256",
            "{SSHA256}4RCdQtRBvAvQSR9Gtkm3fc5bhSO2sZxjW2Uv2CPwYi0BAgMEBQYHCA==",
            Some("suffix"),
            "{SSHA256;suffix}4RCdQtRBvAvQSR9Gtkm3fc5bhSO2sZxjW2Uv2CPwYi0BAgMEBQYHCA==",
        ),
        (
            "argon2",
            "$argon2id$v=19$m=65536,t=3,p=4$a2V5bGVkZ2VyLXNhbHQxNg$zdetfLjUoA/jE/+gb0vV7rmghhgs5aHvUq02y03StHQ",
            None,
            "$argon2id$v=19$m=65536,t=3,p=4$a2V5bGVkZ2VyLXNhbHQxNg$zdetfLjUoA/jE/+gb0vV7rmghhgs5aHvUq02y03StHQ",
        ),
        (
            "argon2",
            "$argon2i$v=19$m=19456,t=2,p=1$a2V5bGVkZ2VyLXNhbHQxNg$QW/ODDoiW5Ek5LR0NHKOz7RZbkqZxnRRPYJ4Cb1mUGc",
            None,
            "$argon2i$v=19$m=19456,t=2,p=1$a2V5bGVkZ2VyLXNhbHQxNg$QW/ODDoiW5Ek5LR0NHKOz7RZbkqZxnRRPYJ4Cb1mUGc",
        ),
    ]
}

fn import_body(kind: &str, hash: &str, position: Option<&str>) -> Value {
    let mut b = json!({ "password_hash": hash, "password_hash_type": kind });
    if let Some(p) = position {
        b["password_salt_position"] = json!(p);
    }
    b
}

#[tokio::test]
async fn imported_hashes_of_every_type_are_stored_by_type_and_verify_with_a_rehash_asked() {
    let app = TestApp::spawn().await;
    let limiter = Hashing::new(1, 8);
    for (i, (kind, hash, position, stored)) in imports().into_iter().enumerate() {
        // On create...
        let mut body = import_body(kind, hash, position);
        body["email"] = json!(format!("import{i}@example.com"));
        let (s, user) = app.post(USERS, body).await;
        assert_eq!(s, StatusCode::CREATED, "{kind} {hash}: {user}");
        let text = user.to_string();
        assert!(!text.contains(hash) && !text.contains("password_hash"), "{text}");
        let got = credential(&app, &id_of(&user)).await;
        assert_eq!(got.as_deref(), Some(stored), "{kind} {hash}");
        // ...and on update, replacing a password.
        let other = app.create_user(&format!("update{i}@example.com")).await;
        let path = format!("{USERS}/{}", id_of(&other));
        let (s, b) = app.put(&path, json!({ "password": "an-earlier-password" })).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let (s, b) = app.put(&path, import_body(kind, hash, position)).await;
        assert_eq!(s, StatusCode::OK, "{kind} {hash}: {b}");
        assert_eq!(credential(&app, &id_of(&other)).await.as_deref(), Some(stored));

        // What sign-in will call, on the stored form.
        let ok = password::verify_with(&limiter, stored, PW.into())
            .await
            .expect("verifies");
        assert_eq!(
            ok,
            password::Verified {
                ok: true,
                needs_rehash: true
            },
            "{stored}"
        );
        for wrong in ["correct horse battery stapler", "", "CORRECT HORSE BATTERY STAPLE"] {
            let v = password::verify_with(&limiter, stored, wrong.into())
                .await
                .expect("verifies");
            assert!(!v.ok, "{stored}: {wrong:?} is refused");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn a_rehash_after_sign_in_stores_current_argon2id_unless_the_password_changed_meanwhile() {
    let app = TestApp::spawn().await;
    let limiter = Hashing::new(1, 8);
    let (kind, hash, position, stored) = imports()[0];
    let mut body = import_body(kind, hash, position);
    body["email"] = json!("rehash@example.com");
    let (s, user) = app.post(USERS, body).await;
    assert_eq!(s, StatusCode::CREATED, "{user}");
    let id = id_of(&user);
    let log = app.log_len().await;

    let replaced = password::rehash_with(&app.pool, &limiter, &id, stored, PW.into())
        .await
        .expect("rehash");
    assert!(replaced);
    let new = credential(&app, &id).await.expect("a credential");
    assert!(new.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{new}");
    let v = password::verify_with(&limiter, &new, PW.into())
        .await
        .expect("verifies");
    assert_eq!(
        v,
        password::Verified {
            ok: true,
            needs_rehash: false
        }
    );
    assert!(
        !password::verify_with(&limiter, &new, "wrong password".into())
            .await
            .expect("verifies")
            .ok
    );
    assert_eq!(app.log_len().await, log, "a rehash appends no event");

    // A rehash racing a password change loses: the stale `old` no longer matches.
    let again = password::rehash_with(&app.pool, &limiter, &id, stored, PW.into())
        .await
        .expect("rehash");
    assert!(!again, "the stale hash was not the stored one");
    assert_eq!(credential(&app, &id).await, Some(new));
    app.stop().await;
}

#[tokio::test]
async fn verifying_an_unknown_email_costs_a_real_verification_and_never_matches() {
    let limiter = Hashing::new(1, 8);
    let current = password::hash_with(&limiter, PW.into()).await.expect("hash");
    let started = Instant::now();
    let v = password::verify_unknown_with(&limiter, PW.into()).await.expect("runs");
    let unknown = started.elapsed();
    assert!(!v.ok);
    let started = Instant::now();
    assert!(
        password::verify_with(&limiter, &current, PW.into())
            .await
            .expect("runs")
            .ok
    );
    let known = started.elapsed();
    // The same argon2id work: within a factor of two either way (loose: a shared machine).
    assert!(
        unknown * 2 >= known && known * 2 >= unknown,
        "unknown {unknown:?} vs known {known:?}"
    );
    // A stored value that is no hash is an error, never a match.
    assert!(password::verify_with(&limiter, "plaintext", PW.into()).await.is_err());
}

/// (type, hash, salt position, field, code, what the message names)
type BadImport = (
    &'static str,
    String,
    Option<&'static str>,
    &'static str,
    &'static str,
    &'static str,
);

/// Sends `body` and checks the 422's field error, that the log did not change, and returns the
/// body.
async fn refused(app: &TestApp, method: Method, path: &str, body: Value, field: &str, code: &str) -> Value {
    let before = app.log_len().await;
    let (s, b) = app.request(method, path, Some(body.clone())).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {b}");
    assert_eq!(b["code"], "invalid_request_parameters", "{body}: {b}");
    assert_eq!(b["errors"][0]["field"], field, "{body}: {b}");
    assert_eq!(b["errors"][0]["code"], code, "{body}: {b}");
    assert_eq!(app.log_len().await, before, "{body}: the log changed");
    b
}

#[tokio::test]
async fn bad_imports_return_422_naming_the_problem_and_store_nothing() {
    let app = TestApp::spawn().await;
    let existing = app.create_user("existing@example.com").await;
    let path = format!("{USERS}/{}", id_of(&existing));
    let salt = "MDEyMzQ1Njc4OWFiY2RlZg";
    let h32 = "yqSq2SygY1sB4EcH9f2FG0JTMES+wqLsOT5YmiRBplI";
    let tail = "EGdrhbKUv8Oc9vGiXX0HQOxSg445d458Muh7DAHskb6QbtCvdxcie";
    let cases: Vec<BadImport> = vec![
        (
            "bcrypt",
            format!("$2b$14${tail}"),
            None,
            "password_hash",
            "password_hash_cost_too_high",
            "cost 14",
        ),
        (
            "bcrypt",
            format!("$2b$04${}", &tail[2..]),
            None,
            "password_hash",
            "invalid_password_hash",
            "bcrypt",
        ),
        (
            "bcrypt",
            format!("$2x$04${tail}"),
            None,
            "password_hash",
            "invalid_password_hash",
            "bcrypt",
        ),
        (
            "pbkdf2",
            format!("$pbkdf2-sha256$i=5000000,l=32${salt}${h32}"),
            None,
            "password_hash",
            "password_hash_cost_too_high",
            "i=5000000",
        ),
        (
            "pbkdf2",
            format!("pbkdf2_sha256$9000000$salt${h32}"),
            None,
            "password_hash",
            "password_hash_cost_too_high",
            "i=9000000",
        ),
        (
            "pbkdf2",
            format!("$pbkdf2-md5$i=1000${salt}${h32}"),
            None,
            "password_hash",
            "invalid_password_hash",
            "PBKDF2",
        ),
        (
            "pbkdf2",
            format!("$pbkdf2-sha256$i=1000,l=31${salt}${h32}"),
            None,
            "password_hash",
            "invalid_password_hash",
            "length",
        ),
        (
            "ssha",
            "{SSHA}c2FsdA==".into(),
            None,
            "password_hash",
            "invalid_password_hash",
            "salt",
        ),
        (
            "ssha",
            "{SMD5}axjXroWdrjIVf38p0IUbdYaQZtQBAgMEBQYHCA==".into(),
            None,
            "password_hash",
            "invalid_password_hash",
            "SSHA",
        ),
        (
            "ssha",
            "{SSHA}axjXroWdrjIVf38p0IUbdYaQZtQBAgMEBQYHCA==".into(),
            Some("middle"),
            "password_salt_position",
            "invalid_value",
            "prefix or suffix",
        ),
        (
            "ssha256",
            "{SSHA}axjXroWdrjIVf38p0IUbdYaQZtQBAgMEBQYHCA==".into(),
            None,
            "password_hash",
            "invalid_password_hash",
            "SHA-256",
        ),
        (
            "bcrypt",
            format!("$2b$04${tail}"),
            Some("prefix"),
            "password_salt_position",
            "unsupported_password_hash_type",
            "ssha",
        ),
        (
            "scrypt",
            "$scrypt$ln=15,r=8,p=1$c2FsdA$c2FsdA".into(),
            None,
            "password_hash_type",
            "unsupported_password_hash_type",
            "scrypt",
        ),
        (
            "firebase-scrypt",
            "abc".into(),
            None,
            "password_hash_type",
            "unsupported_password_hash_type",
            "firebase-scrypt",
        ),
        (
            "md5",
            "abc".into(),
            None,
            "password_hash_type",
            "unsupported_password_hash_type",
            "bcrypt",
        ),
    ];
    for (i, (kind, hash, position, field, code, names)) in cases.into_iter().enumerate() {
        let email = format!("bad{i}@example.com");
        let mut body = import_body(kind, &hash, position);
        body["email"] = json!(email);
        let b = refused(&app, Method::POST, USERS, body, field, code).await;
        let message = b["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains(names), "{kind} {hash}: names {names}: {b}");
        let (_, list) = app.get(&format!("{USERS}?email=bad{i}%40example.com")).await;
        assert_eq!(
            list["data"],
            json!([]),
            "{kind} {hash}: the refused create made no user"
        );

        let mut body = import_body(kind, &hash, position);
        body["first_name"] = json!("Changed");
        refused(&app, Method::PUT, &path, body, field, code).await;
    }
    assert_eq!(
        credential(&app, &id_of(&existing)).await,
        None,
        "no refused hash was stored"
    );
    let (_, got) = app.get(&path).await;
    assert_eq!(got, existing, "the refused updates changed nothing");
    // A salt position with no hash at all, or with a plain password.
    for body in [
        json!({ "email": "sp@example.com", "password_salt_position": "prefix" }),
        json!({ "email": "sp@example.com", "password": "long-enough-pw", "password_salt_position": "suffix" }),
    ] {
        refused(
            &app,
            Method::POST,
            USERS,
            body,
            "password_salt_position",
            "unsupported_password_hash_type",
        )
        .await;
    }
    app.stop().await;
}

#[tokio::test]
async fn beyond_the_hashing_queue_requests_get_503_server_busy_and_change_nothing() {
    // One hash at a time and nobody may wait: while one runs, the next is refused at once.
    let app = TestApp::spawn_with(|c| {
        c.hashing_concurrency = 1;
        c.hashing_queue = 0;
    })
    .await;
    let create = |i: usize| {
        let http = app.http.clone();
        let url = format!("{}{USERS}", app.base);
        let key = app.key.clone();
        async move {
            let r = http
                .post(url)
                .bearer_auth(key)
                .json(&json!({ "email": format!("storm{i}@example.com"), "password": PW }))
                .send()
                .await
                .expect("send");
            let status = r.status();
            let retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap_or("").to_string());
            let body: Value = r.json().await.expect("json body");
            (i, status, retry_after, body)
        }
    };
    let results = futures::future::join_all((0..6).map(create)).await;
    let created = results.iter().filter(|r| r.1 == StatusCode::CREATED).count();
    let busy: Vec<_> = results
        .iter()
        .filter(|r| r.1 == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert!(created >= 1, "{results:?}");
    assert!(!busy.is_empty(), "with no queue some are refused: {results:?}");
    assert_eq!(created + busy.len(), 6, "{results:?}");
    for (i, _, retry_after, body) in busy {
        assert_eq!(body["code"], "server_busy", "{body}");
        assert_eq!(retry_after.as_deref(), Some("1"), "{body}");
        let (_, list) = app.get(&format!("{USERS}?email=storm{i}%40example.com")).await;
        assert_eq!(list["data"], json!([]), "a refused create made no user");
    }
    app.stop().await;
}

#[tokio::test]
async fn other_requests_are_answered_while_password_hashes_queue() {
    let app = TestApp::spawn_with(|c| {
        c.hashing_concurrency = 1;
        c.hashing_queue = 64;
    })
    .await;
    let user = app.create_user("reader@example.com").await;
    let started = Instant::now();
    let storm = futures::future::join_all((0..6).map(|i| {
        app.post(
            USERS,
            json!({ "email": format!("queued{i}@example.com"), "password": PW }),
        )
    }));
    let reads = async {
        // Let the storm start, then read while it queues.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (s, got) = app.get(&format!("{USERS}/{}", id_of(&user))).await;
        (s, got, started.elapsed())
    };
    let (storm, (s, got, read_at)) = tokio::join!(storm, reads);
    let storm_took = started.elapsed();
    assert_eq!(s, StatusCode::OK, "{got}");
    assert!(
        storm.iter().all(|(s, _)| *s == StatusCode::CREATED),
        "all six wait their turn: {storm:?}"
    );
    assert!(
        read_at * 2 < storm_took,
        "the read ({read_at:?}) did not wait for the queued hashes ({storm_took:?})"
    );
    app.stop().await;
}

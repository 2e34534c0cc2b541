//! Access tokens and the JWKS (api/src/tokens.rs, api/src/signing_keys.rs, api/src/secrets.rs):
//! the published shape, tokens verifying against what is published, forged and stale tokens
//! refused, rotation with its overlap, restarts, a changed master key, concurrent first starts.

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use keyledger_api::secrets::MasterKey;
use keyledger_api::signing_keys;
use keyledger_api::tokens::{AccessClaims, TokenError, Tokens};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::{fresh_database, test_master_key, TestApp};

async fn get_jwks(app: &TestApp, client_id: &str) -> (StatusCode, Option<String>, Value) {
    let resp = app
        .http
        .get(format!("{}/sso/jwks/{client_id}", app.base))
        .send()
        .await
        .expect("get jwks");
    let status = resp.status();
    let cache = resp
        .headers()
        .get("cache-control")
        .map(|v| v.to_str().expect("ascii").to_string());
    (status, cache, resp.json().await.expect("json"))
}

async fn jwks(app: &TestApp) -> Value {
    let (s, _, body) = get_jwks(app, app.tokens().client_id()).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body
}

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_string())
        .collect()
}

fn header_of(token: &str) -> Value {
    let h = token.split('.').next().expect("header");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).expect("b64")).expect("json")
}

fn kid_of(token: &str) -> String {
    header_of(token)["kid"].as_str().expect("kid").to_string()
}

async fn sign(tokens: &Tokens) -> String {
    tokens
        .sign(
            "user_01TEST",
            "session_01TEST",
            Some(("org_01TEST", "admin")),
            &["posts:read".into()],
        )
        .await
        .expect("sign")
}

fn claims(tokens: &Tokens, iat: i64, exp: i64) -> AccessClaims {
    AccessClaims {
        iss: tokens.issuer().to_string(),
        sub: "user_01TEST".into(),
        sid: "session_01TEST".into(),
        org_id: None,
        role: None,
        roles: vec![],
        permissions: vec![],
        iat,
        exp,
        jti: "jti_test".into(),
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Verifies `token` against a JWKS document the way a relying party does (jsonwebtoken, RS256).
fn verify_with_jwks(jwks: &Value, token: &str, issuer: &str) -> Result<Value, String> {
    let kid = kid_of(token);
    let jwk = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .ok_or_else(|| format!("kid {kid} not in the JWKS"))?;
    let key = DecodingKey::from_rsa_components(jwk["n"].as_str().expect("n"), jwk["e"].as_str().expect("e"))
        .map_err(|e| e.to_string())?;
    let mut v = Validation::new(Algorithm::RS256);
    v.validate_aud = false;
    v.set_issuer(&[issuer]);
    jsonwebtoken::decode::<Value>(token, &key, &v)
        .map(|d| d.claims)
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwks_is_public_workos_shaped_cached_and_404_for_another_client_id() {
    let app = TestApp::spawn().await;
    let client_id = app.tokens().client_id().to_string();
    assert!(client_id.starts_with("client_"), "{client_id}");
    let (s, cache, body) = get_jwks(&app, &client_id).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(cache.as_deref(), Some("public, max-age=60"));
    let keys = body["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1, "the first key is created on first need: {body}");
    let k = &keys[0];
    let mut fields: Vec<&str> = k.as_object().expect("object").keys().map(String::as_str).collect();
    fields.sort();
    assert_eq!(fields, ["alg", "e", "kid", "kty", "n", "use", "x5c", "x5t#S256"], "{k}");
    assert_eq!(
        (&k["kty"], &k["alg"], &k["use"], &k["e"]),
        (&json!("RSA"), &json!("RS256"), &json!("sig"), &json!("AQAB"))
    );
    assert!(k["kid"].as_str().expect("kid").starts_with("key_"), "{k}");
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(k["n"].as_str().expect("n"))
            .expect("n b64")
            .len(),
        256
    );
    let cert = STANDARD.decode(k["x5c"][0].as_str().expect("x5c")).expect("x5c b64");
    assert_eq!(k["x5t#S256"], json!(URL_SAFE_NO_PAD.encode(Sha256::digest(&cert))));
    assert!(
        !body.to_string().contains("\"d\""),
        "private exponent published: {body}"
    );
    // Exactly what /openapi.json documents.
    let doc = crate::openapi::fetch_document(&app).await;
    let schema =
        &doc["paths"]["/sso/jwks/{clientId}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"];
    assert!(schema.is_object(), "undocumented");
    let wrong = crate::openapi::mismatches(&doc, schema, &body, "$");
    assert!(wrong.is_empty(), "{wrong:?}");
    // From memory: the same answer again, and the database holds exactly that one key.
    assert_eq!(jwks(&app).await, body);
    let (n,): (i64,) = sqlx::query_as("select count(*) from signing_key")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(n, 1);

    for other in ["client_01OTHER", "x", &format!("{client_id}x"), &"c".repeat(300)] {
        let (s, _, body) = get_jwks(&app, other).await;
        crate::helpers::assert_error(s, &body, StatusCode::NOT_FOUND, "entity_not_found", other);
    }
    // No API key needed, and a wrong one changes nothing.
    let (s, _) = app
        .request_with_key(
            reqwest::Method::GET,
            &format!("/sso/jwks/{client_id}"),
            None,
            Some("sk_wrong"),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_token_verifies_against_the_served_jwks_and_carries_workos_claims() {
    let app = TestApp::spawn().await;
    let tokens = app.tokens();
    let started = std::time::Instant::now();
    let token = sign(&tokens).await;
    let first = started.elapsed();
    let header = header_of(&token);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "JWT");
    let published = jwks(&app).await;
    assert_eq!(kids(&published), vec![kid_of(&token)]);
    let claims = verify_with_jwks(&published, &token, tokens.issuer()).expect("verifies against the JWKS");
    assert_eq!(
        tokens.issuer(),
        format!("{}/user_management/{}", app.base, tokens.client_id())
    );
    assert_eq!(claims["iss"], tokens.issuer());
    assert_eq!(claims["sub"], "user_01TEST");
    assert_eq!(claims["sid"], "session_01TEST");
    assert_eq!(claims["org_id"], "org_01TEST");
    assert_eq!(claims["role"], "admin");
    assert_eq!(claims["roles"], json!(["admin"]));
    assert_eq!(claims["permissions"], json!(["posts:read"]));
    let (iat, exp) = (
        claims["iat"].as_i64().expect("iat"),
        claims["exp"].as_i64().expect("exp"),
    );
    assert_eq!(exp - iat, 300, "default lifetime");
    assert!((iat - now()).abs() <= 5);
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 16));

    let verified = tokens.verify(&token).await.expect("verify");
    assert_eq!(verified.sub, "user_01TEST");
    assert_eq!(verified.org_id.as_deref(), Some("org_01TEST"));
    assert_eq!(verified.permissions, vec!["posts:read".to_string()]);

    // A session outside any organization: no organization claims at all.
    let plain = tokens.sign("user_01TEST", "session_02", None, &[]).await.expect("sign");
    let c = verify_with_jwks(&published, &plain, tokens.issuer()).expect("verifies");
    for absent in ["org_id", "role", "roles", "permissions"] {
        assert!(c.get(absent).is_none(), "{absent} in {c}");
    }
    assert_ne!(c["jti"], claims["jti"], "token ids repeat");

    // Signing once the key is loaded: measured, inline on the async thread.
    let n = 50;
    let started = std::time::Instant::now();
    for _ in 0..n {
        sign(&tokens).await;
    }
    let per = started.elapsed() / n;
    let started = std::time::Instant::now();
    for _ in 0..n {
        tokens.verify(&token).await.expect("verify");
    }
    let per_verify = started.elapsed() / n;
    eprintln!("first sign (creates the key): {first:?}; then sign {per:?}, verify {per_verify:?} each (debug build)");
    app.stop().await;
}

/// `header.payload.signature` from JSON parts and raw signature bytes.
fn forge(header: &Value, payload: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tampered_expired_and_foreign_tokens_are_refused() {
    let app = TestApp::spawn().await;
    let tokens = app.tokens();
    let token = sign(&tokens).await;
    let kid = kid_of(&token);
    let payload: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).expect("payload"))
            .expect("b64"),
    )
    .expect("json");
    let published = jwks(&app).await;
    let jwk = &published["keys"][0];

    // alg none, with and without a signature.
    for sig in [&b""[..], b"x"] {
        let t = forge(&json!({"alg": "none", "typ": "JWT", "kid": kid}), &payload, sig);
        assert_eq!(tokens.verify(&t).await, Err(TokenError::Algorithm), "alg none");
    }
    // HS256 keyed with public material an attacker has (the key confusion attack).
    let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().expect("n")).expect("n");
    let cert = STANDARD.decode(jwk["x5c"][0].as_str().expect("x5c")).expect("x5c");
    for secret in [jwk.to_string().into_bytes(), n.clone(), cert.clone()] {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(kid.clone());
        let t = jsonwebtoken::encode(&h, &payload, &EncodingKey::from_secret(&secret)).expect("hs256");
        assert_eq!(tokens.verify(&t).await, Err(TokenError::Algorithm), "HS256");
        // The same HMAC under a header that claims RS256.
        let relabeled = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "typ": "JWT", "kid": kid}).to_string()),
            t.split_once('.').expect("dot").1
        );
        assert_eq!(
            tokens.verify(&relabeled).await,
            Err(TokenError::Signature),
            "relabeled HS256"
        );
    }
    // A tampered payload under the genuine signature.
    let mut evil = payload.clone();
    evil["sub"] = json!("user_01ADMIN");
    let sig = URL_SAFE_NO_PAD
        .decode(token.split('.').nth(2).expect("sig"))
        .expect("sig");
    let tampered = forge(&header_of(&token), &evil, &sig);
    assert_eq!(tokens.verify(&tampered).await, Err(TokenError::Signature));
    assert!(verify_with_jwks(&published, &tampered, tokens.issuer()).is_err());
    // Garbage.
    for bad in ["", "abc", "a.b.c", &format!("{token}.x"), &token[..token.len() - 3]] {
        assert!(tokens.verify(bad).await.is_err(), "{bad} accepted");
    }
    // Expired (past the leeway), and just inside the leeway.
    let expired = tokens
        .sign_claims(&claims(&tokens, now() - 400, now() - 60))
        .await
        .expect("sign");
    assert_eq!(tokens.verify(&expired).await, Err(TokenError::Expired));
    let barely = tokens
        .sign_claims(&claims(&tokens, now() - 300, now() - 2))
        .await
        .expect("sign");
    assert!(tokens.verify(&barely).await.is_ok(), "within the leeway");
    // Another issuer, signed with our very key.
    let mut c = claims(&tokens, now(), now() + 300);
    c.iss = format!("http://evil.example/user_management/{}", tokens.client_id());
    let wrong_iss = tokens.sign_claims(&c).await.expect("sign");
    assert_eq!(tokens.verify(&wrong_iss).await, Err(TokenError::Issuer));
    // An unknown kid; and another environment's keys (other database, other secret key).
    let mut h = header_of(&token);
    h["kid"] = json!("key_01UNKNOWN");
    assert_eq!(
        tokens.verify(&forge(&h, &payload, &sig)).await,
        Err(TokenError::UnknownKey)
    );
    let other = TestApp::spawn_with(|c| c.master_key = Some(MasterKey::from_bytes([0x11; 32]))).await;
    let foreign = sign(&other.tokens()).await;
    assert_eq!(tokens.verify(&foreign).await, Err(TokenError::UnknownKey));
    // ... even when it names our kid (and our issuer).
    let mut c = claims(&tokens, now(), now() + 300);
    c.iss = tokens.issuer().to_string();
    let foreign = other.tokens().sign_claims(&c).await.expect("sign");
    let parts: Vec<&str> = foreign.split('.').collect();
    let mut h = header_of(&foreign);
    h["kid"] = json!(kid);
    let relabeled = format!("{}.{}.{}", URL_SAFE_NO_PAD.encode(h.to_string()), parts[1], parts[2]);
    assert_eq!(tokens.verify(&relabeled).await, Err(TokenError::Signature));
    other.stop().await;
    app.stop().await;
}

async fn wait_for_kids(app: &TestApp, want: usize) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let j = jwks(app).await;
        if kids(&j).len() == want {
            return j;
        }
        assert!(std::time::Instant::now() < deadline, "JWKS never had {want} keys: {j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_rotation_both_keys_are_published_old_tokens_verify_until_the_overlap_ends() {
    let app = TestApp::spawn_with(|c| c.signing_keys_refresh = Duration::from_millis(200)).await;
    let tokens = app.tokens();
    let old = sign(&tokens).await;
    let old_kid = kid_of(&old);
    // Another process rotates (the CLI's path), with a short overlap.
    let rotated = signing_keys::rotate(&app.pool, &test_master_key(), Duration::from_secs(3))
        .await
        .expect("rotate");
    let (retiring, until) = rotated.retiring.clone().expect("previous key retiring");
    assert_eq!(retiring, old_kid);
    let published = wait_for_kids(&app, 2).await;
    assert_eq!(
        kids(&published),
        vec![rotated.kid.clone(), old_kid.clone()],
        "active first"
    );
    let new = sign(&tokens).await;
    assert_eq!(kid_of(&new), rotated.kid, "new tokens carry the new kid");
    assert!(tokens.verify(&old).await.is_ok(), "old token during the overlap");
    assert!(tokens.verify(&new).await.is_ok());
    assert!(verify_with_jwks(&published, &old, tokens.issuer()).is_ok());
    assert!(verify_with_jwks(&published, &new, tokens.issuer()).is_ok());
    let listed = signing_keys::list(&app.pool).await.expect("list");
    let states: Vec<(String, String)> = listed.iter().map(|k| (k.kid.clone(), k.state.clone())).collect();
    assert_eq!(
        states,
        vec![
            (rotated.kid.clone(), "active".into()),
            (old_kid.clone(), "retiring".into())
        ]
    );
    // The overlap ends: the old key is gone from the JWKS and its tokens are refused.
    let wait = (until - chrono::Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(100);
    tokio::time::sleep(wait).await;
    assert_eq!(
        tokens.verify(&old).await,
        Err(TokenError::UnknownKey),
        "old token after the overlap"
    );
    assert!(tokens.verify(&new).await.is_ok());
    assert_eq!(kids(&wait_for_kids(&app, 1).await), vec![rotated.kid.clone()]);
    let listed = signing_keys::list(&app.pool).await.expect("list");
    assert_eq!(listed[1].state, "retired");
    // The next rotation deletes the retired key's material for good.
    let again = signing_keys::rotate(&app.pool, &test_master_key(), Duration::from_secs(60))
        .await
        .expect("rotate");
    let (n,): (i64,) = sqlx::query_as("select count(*) from signing_key where kid = $1")
        .bind(&old_kid)
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(n, 0, "retired key kept");
    assert_eq!(again.retiring.map(|r| r.0), Some(rotated.kid));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_rotations_and_first_starts_leave_exactly_one_active_key() {
    let db = fresh_database().await;
    // Servers behind one name share the public URL, hence the issuer.
    let public = |c: &mut keyledger_api::Config| c.public_url = Some("http://id.keyledger.test".into());
    let a = TestApp::spawn_on_with(db.clone(), public).await;
    let b = TestApp::spawn_on_with(db.clone(), public).await;
    assert_eq!(
        a.tokens().client_id(),
        b.tokens().client_id(),
        "two servers, one client id"
    );
    // Both servers need the first key at once.
    let (tokens_a, tokens_b) = (a.tokens(), b.tokens());
    let (ta, tb) = tokio::join!(sign(&tokens_a), sign(&tokens_b));
    assert_eq!(kid_of(&ta), kid_of(&tb), "two first keys");
    assert!(b.tokens().verify(&ta).await.is_ok());
    assert!(a.tokens().verify(&tb).await.is_ok());
    // Racing rotations.
    let key = test_master_key();
    let rotations =
        futures::future::join_all((0..4).map(|_| signing_keys::rotate(&a.pool, &key, Duration::from_secs(600)))).await;
    for r in &rotations {
        assert!(r.is_ok(), "{r:?}");
    }
    let states: Vec<(String,)> = sqlx::query_as("select state from signing_key order by state")
        .fetch_all(&a.pool)
        .await
        .expect("states");
    let states: Vec<&str> = states.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(states, ["active", "retiring", "retiring", "retiring", "retiring"]);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_keys_and_a_changed_master_key_is_refused_clearly() {
    let db = fresh_database().await;
    // A fixed public URL: the issuer does not follow the (new) port of each start.
    let public = |c: &mut keyledger_api::Config| c.public_url = Some("http://id.keyledger.test".into());
    let app = TestApp::spawn_on_with(db.clone(), public).await;
    let token = sign(&app.tokens()).await;
    let client_id = app.tokens().client_id().to_string();
    app.stop().await;

    let again = TestApp::spawn_on_with(db.clone(), public).await;
    assert_eq!(again.tokens().client_id(), client_id, "client id kept");
    let claims = again
        .tokens()
        .verify(&token)
        .await
        .expect("a token of before the restart");
    assert_eq!(
        claims.iss,
        format!("http://id.keyledger.test/user_management/{client_id}")
    );
    let fresh = sign(&again.tokens()).await;
    assert_eq!(kid_of(&fresh), kid_of(&token), "the key survived the restart");
    again.stop().await;

    // Another master key: the server refuses to start, saying why.
    let pool = keyledger_api::connect(&db).await.expect("connect");
    let config = keyledger_api::Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        master_key: Some(MasterKey::from_bytes([0x22; 32])),
        ..keyledger_api::Config::default()
    };
    let err = match keyledger_api::build(pool.clone(), config.clone()).await {
        Ok(_) => panic!("started with another master key"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("secret key changed"), "{err}");
    // Without the start-up check (its record removed), signing fails cleanly, never a panic.
    sqlx::query("delete from setting where name = 'master_key_check'")
        .execute(&pool)
        .await
        .expect("delete");
    let running = keyledger_api::build(pool.clone(), config).await.expect("build");
    let refused = running.tokens.sign("user_1", "session_1", None, &[]).await;
    assert!(refused.is_err(), "signed with a key that does not open");
    let (s, _, body) = get_jwks_at(&running, &client_id).await;
    assert_eq!(s, StatusCode::OK, "the public keys are still served: {body}");
    assert_eq!(kids(&body), vec![kid_of(&token)]);
    running.stop().await.expect("stop");
}

async fn get_jwks_at(running: &keyledger_api::Running, client_id: &str) -> (StatusCode, Option<String>, Value) {
    let resp = reqwest::get(format!("http://{}/sso/jwks/{client_id}", running.addr))
        .await
        .expect("get");
    (resp.status(), None, resp.json().await.expect("json"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_id_is_generated_once_or_taken_from_the_configuration() {
    let db = fresh_database().await;
    let pool = keyledger_api::connect(&db).await.expect("connect");
    let ids = futures::future::join_all((0..6).map(|_| keyledger_api::tokens::client_id(&pool, None))).await;
    let first = ids[0].as_ref().expect("client id").clone();
    assert!(first.starts_with("client_") && first.len() == 33, "{first}");
    for id in &ids {
        assert_eq!(
            id.as_ref().expect("client id"),
            &first,
            "concurrent first starts disagree"
        );
    }
    let app = TestApp::spawn_on_with(db.clone(), |c| c.client_id = Some("client_configured".into())).await;
    assert_eq!(app.tokens().client_id(), "client_configured");
    assert!(app.tokens().issuer().ends_with("/user_management/client_configured"));
    let (s, _, _) = get_jwks(&app, "client_configured").await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = get_jwks(&app, &first).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    app.stop().await;
    for bad in ["", "a/b", "client id"] {
        let config = keyledger_api::Config {
            listen: "127.0.0.1:0".parse().expect("addr"),
            client_id: Some(bad.into()),
            ..keyledger_api::Config::default()
        };
        assert!(
            keyledger_api::build(pool.clone(), config).await.is_err(),
            "{bad:?} accepted"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_prints_the_client_id_and_rotates_and_lists_keys_without_private_material() {
    let db = fresh_database().await;
    let secret = hex::encode([0x6b; 32]);
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyledger"))
            .args(args)
            .env("DATABASE_URL", &db)
            .env("KEYLEDGER_SECRET_KEY", &secret)
            .env_remove("KEYLEDGER_CLIENT_ID")
            .env("RUST_LOG", "warn")
            .output()
            .expect("run keyledger");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, id1, err) = run(&["client-id"]);
    assert!(ok, "{err}");
    let (_, id2, _) = run(&["client-id"]);
    assert_eq!(id1, id2);
    assert!(id1.trim().starts_with("client_"), "{id1}");
    let (ok, out, err) = run(&["signing-keys", "rotate", "--overlap-seconds", "10"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("active: key_"), "{out}");
    let (ok, out, err) = run(&["signing-keys", "rotate"]);
    assert!(ok, "{err}");
    assert!(out.contains("retiring: key_"), "{out}");
    let (ok, list, err) = run(&["signing-keys", "list"]);
    assert!(ok, "{err}");
    assert_eq!(list.lines().count(), 3, "{list}");
    assert!(list.contains(" active ") && list.contains(" retiring "), "{list}");
    // The overlap is never shorter than a token's life plus a minute (300 + 60 s).
    let (retire_after,): (chrono::DateTime<chrono::Utc>,) =
        sqlx::query_as("select retire_after from signing_key where state = 'retiring'")
            .fetch_one(&keyledger_api::connect(&db).await.expect("connect"))
            .await
            .expect("retiring");
    let left = (retire_after - chrono::Utc::now()).num_seconds();
    assert!((3500..=3600).contains(&left), "default overlap: {left}s");
    // Another master key: refused with the reason.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyledger"))
        .args(["signing-keys", "rotate"])
        .env("DATABASE_URL", &db)
        .env("KEYLEDGER_SECRET_KEY", hex::encode([0x01; 32]))
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("secret key changed"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyledger"))
        .args(["signing-keys", "rotate"])
        .env("DATABASE_URL", &db)
        .env("KEYLEDGER_SECRET_KEY", "not-a-key")
        .output()
        .expect("run");
    assert!(!out.status.success(), "a malformed key is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("64 hex digits"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyjwt_verifies_a_token_through_the_served_jwks() {
    let probe = tokio::process::Command::new("python3")
        .args(["-c", "import jwt, cryptography"])
        .output()
        .await;
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED pyjwt_verifies_a_token_through_the_served_jwks: python3 with PyJWT and cryptography not importable");
        return;
    }
    let app = TestApp::spawn().await;
    let tokens = app.tokens();
    let token = sign(&tokens).await;
    let script = r#"
import sys, jwt, base64
from cryptography import x509
url, token, iss = sys.argv[1:4]
client = jwt.PyJWKClient(url)
key = client.get_signing_key_from_jwt(token)
claims = jwt.decode(token, key.key, algorithms=["RS256"], issuer=iss, options={"verify_aud": False})
assert claims["sid"] == "session_01TEST" and claims["org_id"] == "org_01TEST", claims
jwk = client.get_jwk_set().keys[0]._jwk_data
cert = x509.load_der_x509_certificate(base64.b64decode(jwk["x5c"][0]))
assert cert.public_key().public_numbers().n == key.key.public_numbers().n
try:
    jwt.decode(token[:-4] + "AAAA", key.key, algorithms=["RS256"], issuer=iss, options={"verify_aud": False})
    raise SystemExit("tampered token accepted")
except jwt.InvalidSignatureError:
    pass
print("ok")
"#;
    let out = tokio::process::Command::new("python3")
        .args([
            "-c",
            script,
            &format!("{}/sso/jwks/{}", app.base, tokens.client_id()),
            &token,
            tokens.issuer(),
        ])
        .output()
        .await
        .expect("python3");
    assert!(
        out.status.success(),
        "PyJWT: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    app.stop().await;
}

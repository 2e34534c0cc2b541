//! An organization admin's access token on the management API (api/src/tenant.rs): the reads of
//! its own organization, every refusal around them (other organizations, writes,
//! environment-wide reads, non-admins, revoked sessions, forged tokens), and row-level security
//! as the second wall (migration 0020).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use keyledger_api::secrets::MasterKey;
use keyledger_api::tokens::AccessClaims;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{id_of, ids, wait_caught_up, TestApp};

const PASSWORD: &str = "correct horse battery staple";

/// Two organizations, A and B, each with a domain, members and audit events. Ann is A's admin
/// (and nothing else), Bob a plain member of A, Cid B's admin.
struct World {
    app: TestApp,
    a: String,
    b: String,
    a_domain: String,
    b_domain: String,
    ann: String,
    bob: String,
    cid: String,
    ann_membership: String,
    cid_membership: String,
    /// Ann's access token (an A admin's).
    token: String,
}

async fn user(app: &TestApp, email: &str) -> String {
    let (s, body) = app
        .post(
            "/user_management/users",
            json!({ "email": email, "password": PASSWORD, "email_verified": true }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    id_of(&body)
}

/// Signs `email` in (a single membership signs in to that organization); the whole answer.
async fn sign_in(app: &TestApp, email: &str) -> Value {
    let (s, body) = app
        .request_with_key(
            Method::POST,
            "/user_management/authenticate",
            Some(json!({
                "grant_type": "password",
                "client_id": app.client_id(),
                "client_secret": app.key,
                "email": email,
                "password": PASSWORD,
            })),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "sign in {email}: {body}");
    body
}

async fn access_token(app: &TestApp, email: &str) -> String {
    sign_in(app, email).await["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

async fn audit_event(app: &TestApp, org: &str, action: &str) {
    let (s, b) = app
        .post(
            "/audit_logs/events",
            json!({
                "organization_id": org,
                "event": {
                    "action": action,
                    "occurred_at": "2026-01-01T00:00:00.000Z",
                    "actor": { "id": "user_x", "type": "user" },
                    "targets": [{ "id": "doc_1", "type": "document" }],
                    "context": { "location": "203.0.113.7" },
                }
            }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "audit event: {b}");
}

async fn world() -> World {
    let app = TestApp::spawn().await;
    let a_org = app
        .create_organization("Alpha", json!([{ "domain": "alpha.example", "state": "pending" }]))
        .await;
    let b_org = app
        .create_organization("Beta", json!([{ "domain": "beta.example", "state": "pending" }]))
        .await;
    let (a, b) = (id_of(&a_org), id_of(&b_org));
    let a_domain = a_org["domains"][0]["id"].as_str().expect("domain").to_string();
    let b_domain = b_org["domains"][0]["id"].as_str().expect("domain").to_string();
    let ann = user(&app, "ann@example.com").await;
    let bob = user(&app, "bob@example.com").await;
    let cid = user(&app, "cid@example.com").await;
    let ann_membership = id_of(&app.create_membership(&ann, &a, Some("admin")).await);
    app.create_membership(&bob, &a, Some("member")).await;
    let cid_membership = id_of(&app.create_membership(&cid, &b, Some("admin")).await);
    audit_event(&app, &a, "alpha.thing").await;
    audit_event(&app, &b, "beta.thing").await;
    wait_caught_up(&app.pool).await;
    let token = access_token(&app, "ann@example.com").await;
    World {
        app,
        a,
        b,
        a_domain,
        b_domain,
        ann,
        bob,
        cid,
        ann_membership,
        cid_membership,
        token,
    }
}

async fn with_token(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    app.request_with_key(method, path, body, Some(token)).await
}

async fn get(w: &World, path: &str) -> (StatusCode, Value) {
    with_token(&w.app, &w.token, Method::GET, path, None).await
}

fn assert_code(got: (StatusCode, Value), status: StatusCode, code: &str, ctx: &str) {
    assert_eq!(got.0, status, "{ctx}: {}", got.1);
    assert_eq!(got.1["code"], code, "{ctx}: {}", got.1);
}

#[tokio::test]
async fn an_admins_token_reads_its_organization_domains_members_audit_trail_and_events() {
    let w = world().await;
    let (s, org) = get(&w, &format!("/organizations/{}", w.a)).await;
    assert_eq!((s, org["id"].as_str()), (StatusCode::OK, Some(w.a.as_str())), "{org}");
    assert_eq!(org["name"], "Alpha");

    let (s, d) = get(&w, &format!("/organization_domains/{}", w.a_domain)).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(
        (d["domain"].as_str(), d["organization_id"].as_str()),
        (Some("alpha.example"), Some(w.a.as_str()))
    );

    // The membership list, with or without the token's own organization_id: A's, with users.
    for query in [String::new(), format!("&organization_id={}", w.a)] {
        let (s, list) = get(
            &w,
            &format!("/user_management/organization_memberships?limit=100{query}"),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{list}");
        let mut users: Vec<String> = list["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|m| {
                assert_eq!(m["organization_id"], w.a.as_str(), "{m}");
                assert_eq!(m["user"]["id"], m["user_id"], "{m}");
                m["user_id"].as_str().expect("user_id").to_string()
            })
            .collect();
        users.sort();
        let mut want = vec![w.ann.clone(), w.bob.clone()];
        want.sort();
        assert_eq!(users, want, "{query}");
    }
    // Filtering by a user of another organization finds nothing (never B's rows).
    let (s, list) = get(
        &w,
        &format!("/user_management/organization_memberships?user_id={}", w.cid),
    )
    .await;
    assert_eq!(
        (s, list["data"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0)),
        "{list}"
    );

    let (s, m) = get(
        &w,
        &format!("/user_management/organization_memberships/{}", w.ann_membership),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{m}");
    assert_eq!(
        (m["user"]["email"].as_str(), m["role"]["slug"].as_str()),
        (Some("ann@example.com"), Some("admin"))
    );

    // The audit trail: A's own events and A's change events, never B's.
    let (s, trail) = get(&w, "/audit_logs/events?limit=100").await;
    assert_eq!(s, StatusCode::OK, "{trail}");
    let actions: Vec<&str> = trail["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.contains(&"alpha.thing"), "{actions:?}");
    assert!(!actions.contains(&"beta.thing"), "{actions:?}");
    let (s, by_key) = w
        .app
        .get(&format!("/audit_logs/events?limit=100&organization_id={}", w.a))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ids(&trail), ids(&by_key), "the token sees exactly A's trail");

    // The event feed: exactly A's slice.
    let (s, events) = get(&w, "/events?limit=100").await;
    assert_eq!(s, StatusCode::OK, "{events}");
    let mine = ids(&events);
    assert!(!mine.is_empty());
    let (_, a_slice) = w.app.get(&format!("/events?limit=100&organization_id={}", w.a)).await;
    assert_eq!(mine, ids(&a_slice));
    let (_, b_slice) = w.app.get(&format!("/events?limit=100&organization_id={}", w.b)).await;
    assert!(ids(&b_slice).iter().all(|id| !mine.contains(id)), "B's events leaked");
    w.app.stop().await;
}

#[tokio::test]
async fn the_token_gets_404_for_another_organizations_ids_and_403_for_its_lists_writes_and_the_environment() {
    let w = world().await;
    // Another organization's objects are 404, exactly as ids that do not exist.
    for (path, code) in [
        (format!("/organizations/{}", w.b), "entity_not_found"),
        (
            "/organizations/org_01HXYZ123456789ABCDEFGHJK".to_string(),
            "entity_not_found",
        ),
        (format!("/organization_domains/{}", w.b_domain), "entity_not_found"),
        (
            format!("/user_management/organization_memberships/{}", w.cid_membership),
            "entity_not_found",
        ),
    ] {
        let got = get(&w, &path).await;
        assert_eq!(got.0, StatusCode::NOT_FOUND, "{path}: {}", got.1);
        assert_eq!(got.1["code"], code, "{path}");
    }
    let (_, unknown) = get(&w, "/organizations/org_01HXYZ123456789ABCDEFGHJK").await;
    let (_, other) = get(&w, &format!("/organizations/{}", w.b)).await;
    assert_eq!(unknown, other, "another organization looks exactly like none");

    // Lists of another organization: 403, whether or not it exists.
    for path in [
        format!("/user_management/organization_memberships?organization_id={}", w.b),
        format!("/audit_logs/events?organization_id={}", w.b),
        format!("/events?organization_id={}", w.b),
        "/events?organization_id=org_01HXYZ123456789ABCDEFGHJK".to_string(),
    ] {
        assert_code(get(&w, &path).await, StatusCode::FORBIDDEN, "forbidden", &path);
    }
    // The event log outside the wall: as_of is refused.
    for path in [
        format!("/organizations/{}?as_of=2030-01-01T00:00:00Z", w.a),
        format!(
            "/user_management/organization_memberships?as_of=2030-01-01T00:00:00Z&organization_id={}",
            w.a
        ),
    ] {
        assert_code(get(&w, &path).await, StatusCode::FORBIDDEN, "forbidden", &path);
    }
    // Environment-wide reads.
    for path in [
        "/user_management/users".to_string(),
        format!("/user_management/users/{}", w.ann),
        "/organizations".to_string(),
        "/organizations/external_id/x".to_string(),
        format!("/user_management/users/{}/sessions", w.ann),
        "/webhook_endpoints".to_string(),
        "/audit_logs/actions".to_string(),
    ] {
        assert_code(get(&w, &path).await, StatusCode::FORBIDDEN, "forbidden", &path);
    }
    // Writes, even on its own organization, change nothing.
    let before = w.app.log_len().await;
    for (method, path, body) in [
        (
            Method::PUT,
            format!("/organizations/{}", w.a),
            Some(json!({ "name": "Hijacked" })),
        ),
        (Method::DELETE, format!("/organizations/{}", w.a), None),
        (
            Method::POST,
            "/organizations".to_string(),
            Some(json!({ "name": "New" })),
        ),
        (
            Method::POST,
            "/organization_domains".to_string(),
            Some(json!({ "domain": "x.example", "organization_id": w.a })),
        ),
        (
            Method::POST,
            "/user_management/organization_memberships".to_string(),
            Some(json!({ "user_id": w.cid, "organization_id": w.a })),
        ),
        (
            Method::PUT,
            format!("/user_management/organization_memberships/{}", w.ann_membership),
            Some(json!({ "role_slug": "member" })),
        ),
        (Method::DELETE, format!("/organization_domains/{}", w.a_domain), None),
        (
            Method::POST,
            "/audit_logs/events".to_string(),
            Some(json!({ "organization_id": w.a, "event": {} })),
        ),
        (
            Method::POST,
            "/user_management/sessions/revoke".to_string(),
            Some(json!({ "session_id": "session_01HXYZ123456789ABCDEFGHJK" })),
        ),
    ] {
        let got = with_token(&w.app, &w.token, method.clone(), &path, body).await;
        assert_code(got, StatusCode::FORBIDDEN, "forbidden", &format!("{method} {path}"));
    }
    assert_eq!(w.app.log_len().await, before, "a refused write appended events");
    let (_, org) = w.app.get(&format!("/organizations/{}", w.a)).await;
    assert_eq!(org["name"], "Alpha");
    w.app.stop().await;
}

#[tokio::test]
async fn tokens_without_the_admin_role_or_an_organization_are_403_and_the_role_is_configurable() {
    let w = world().await;
    let bob = access_token(&w.app, "bob@example.com").await;
    let got = with_token(&w.app, &bob, Method::GET, &format!("/organizations/{}", w.a), None).await;
    assert_code(got, StatusCode::FORBIDDEN, "forbidden", "a member's token");
    // A user of no organization signs in without one.
    user(&w.app, "dan@example.com").await;
    let dan = access_token(&w.app, "dan@example.com").await;
    let got = with_token(&w.app, &dan, Method::GET, "/events", None).await;
    assert_code(
        got,
        StatusCode::FORBIDDEN,
        "forbidden",
        "a token without an organization",
    );

    // The admin demoted: the token (still saying admin) is refused at once.
    let (s, body) = w
        .app
        .put(
            &format!("/user_management/organization_memberships/{}", w.ann_membership),
            json!({ "role_slug": "member" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let got = get(&w, &format!("/organizations/{}", w.a)).await;
    assert_code(got, StatusCode::FORBIDDEN, "forbidden", "a demoted admin's token");
    let db = w.app.db_url.clone();
    w.app.stop().await;

    // Another reader role: members read, admins do not.
    let app = TestApp::spawn_on_with(db, |c| c.auth.tenant_reader_role = "member".into()).await;
    let a = w.a.clone();
    let bob = access_token(&app, "bob@example.com").await;
    let (s, body) = with_token(&app, &bob, Method::GET, &format!("/organizations/{a}"), None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn a_revoked_sessions_token_is_refused_as_soon_as_the_revocation_is_committed() {
    let w = world().await;
    let path = format!("/organizations/{}", w.a);
    let (s, _) = get(&w, &path).await;
    assert_eq!(s, StatusCode::OK);
    let sid = w.app.verify_access_token(&w.token).await.expect("claims")["sid"].clone();
    let (s, body) = w
        .app
        .post("/user_management/sessions/revoke", json!({ "session_id": sid }))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_code(
        get(&w, &path).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "revoked session",
    );
    // Another session of the same admin is unaffected.
    let other = access_token(&w.app, "ann@example.com").await;
    let (s, body) = with_token(&w.app, &other, Method::GET, &path, None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    w.app.stop().await;
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

fn part(token: &str, i: usize) -> Value {
    let p = token.split('.').nth(i).expect("part");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).expect("b64")).expect("json")
}

fn claims_of(token: &str) -> AccessClaims {
    let c = part(token, 1);
    let s = |k: &str| c[k].as_str().map(str::to_string);
    AccessClaims {
        iss: s("iss").expect("iss"),
        sub: s("sub").expect("sub"),
        sid: s("sid").expect("sid"),
        org_id: s("org_id"),
        role: s("role"),
        roles: vec!["admin".into()],
        permissions: vec![],
        iat: c["iat"].as_i64().expect("iat"),
        exp: c["exp"].as_i64().expect("exp"),
        jti: s("jti").expect("jti"),
    }
}

#[tokio::test]
async fn expired_tampered_unsigned_hs256_and_foreign_tokens_are_401() {
    let w = world().await;
    let path = format!("/organizations/{}", w.a);
    let tokens = w.app.tokens();
    let header = part(&w.token, 0);
    let payload = part(&w.token, 1);
    let signature = w.token.split('.').nth(2).expect("sig").to_string();

    let now = chrono::Utc::now().timestamp();
    let mut expired = claims_of(&w.token);
    (expired.iat, expired.exp) = (now - 600, now - 60);
    let expired = tokens.sign_claims(&expired).await.expect("sign");

    // The genuine signature over B's organization id.
    let mut evil = payload.clone();
    evil["org_id"] = json!(w.b);
    let tampered = format!("{}.{}.{signature}", b64(&header), b64(&evil));

    let mut none = header.clone();
    none["alg"] = json!("none");
    let unsigned = format!("{}.{}.", b64(&none), b64(&payload));

    let (_, jwks) = w
        .app
        .request_with_key(Method::GET, &format!("/sso/jwks/{}", w.app.client_id()), None, None)
        .await;
    let n = URL_SAFE_NO_PAD
        .decode(jwks["keys"][0]["n"].as_str().expect("n"))
        .expect("n");
    let mut h = Header::new(Algorithm::HS256);
    h.kid = header["kid"].as_str().map(str::to_string);
    let hs256 = jsonwebtoken::encode(&h, &payload, &EncodingKey::from_secret(&n)).expect("hs256");

    // Another environment (its own keys), with our issuer and every claim of the genuine token.
    let other = TestApp::spawn_with(|c| c.master_key = Some(MasterKey::from_bytes([0x22; 32]))).await;
    let foreign = other.tokens().sign_claims(&claims_of(&w.token)).await.expect("sign");
    other.stop().await;

    for (name, token) in [
        ("expired", expired),
        ("tampered", tampered),
        ("alg none", unsigned),
        ("HS256 with the public key", hs256),
        ("another environment's", foreign),
    ] {
        let got = with_token(&w.app, &token, Method::GET, &path, None).await;
        assert_eq!(got.0, StatusCode::UNAUTHORIZED, "{name}: {}", got.1);
        assert!(got.1["code"].is_string(), "{name}: {}", got.1);
    }
    for garbage in ["abc", "a.b.c", "eyJhbGciOiJSUzI1NiJ9.e30.x"] {
        let got = with_token(&w.app, garbage, Method::GET, &path, None).await;
        assert_eq!(got.0, StatusCode::UNAUTHORIZED, "{garbage}: {}", got.1);
    }
    // The genuine token still reads.
    let (s, _) = get(&w, &path).await;
    assert_eq!(s, StatusCode::OK);
    w.app.stop().await;
}

#[tokio::test]
async fn an_api_key_still_reads_and_writes_everywhere() {
    let w = world().await;
    for path in [
        format!("/organizations/{}", w.b),
        format!("/organizations/{}?as_of=2030-01-01T00:00:00Z", w.b),
        format!("/organization_domains/{}", w.b_domain),
        format!("/user_management/organization_memberships/{}", w.cid_membership),
        format!("/user_management/organization_memberships?organization_id={}", w.b),
        format!("/audit_logs/events?organization_id={}", w.b),
        "/events".to_string(),
        "/organizations".to_string(),
        "/user_management/users".to_string(),
    ] {
        let (s, body) = w.app.get(&path).await;
        assert_eq!(s, StatusCode::OK, "{path}: {body}");
    }
    let (s, body) = w
        .app
        .put(&format!("/organizations/{}", w.b), json!({ "name": "Beta 2" }))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    w.app.stop().await;
}

/// Rows of `table`'s `column` visible inside a transaction scoped to `org` — the query has no
/// filter of its own, as a query that forgot it.
async fn visible(pool: &sqlx::PgPool, org: &str, table: &str, column: &str) -> Vec<Option<String>> {
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query(keyledger_projections::queries::SCOPE)
        .bind(org)
        .execute(&mut *tx)
        .await
        .expect("scope");
    let rows: Vec<(Option<String>,)> = sqlx::query_as(&format!("select {column} from {table}"))
        .fetch_all(&mut *tx)
        .await
        .expect("select");
    tx.rollback().await.expect("rollback");
    rows.into_iter().map(|r| r.0).collect()
}

#[tokio::test]
async fn row_level_security_confines_a_query_that_forgot_its_filter_to_the_scoped_organization() {
    let w = world().await;
    let pool = &w.app.pool;
    let a = Some(w.a.clone());
    // Unscoped (the superuser these tests connect as): B's rows are there to be hidden.
    let (all_orgs,): (i64,) = sqlx::query_as("select count(*) from organization_view")
        .fetch_one(pool)
        .await
        .expect("count");
    assert_eq!(all_orgs, 2);

    assert_eq!(visible(pool, &w.a, "organization_view", "id").await, vec![a.clone()]);
    let mut users = visible(pool, &w.a, "user_view", "id").await;
    users.sort();
    let mut members = vec![Some(w.ann.clone()), Some(w.bob.clone())];
    members.sort();
    assert_eq!(users, members, "only A's members are visible");
    for (table, column) in [
        ("organization_domain_view", "organization_id"),
        ("organization_membership_view", "organization_id"),
        ("event_feed", "organization_id"),
        ("audit_log_event", "organization_id"),
        ("audit_log_export", "organization_id"),
    ] {
        let rows = visible(pool, &w.a, table, column).await;
        assert!(rows.iter().all(|r| r == &a), "{table}: {rows:?}");
        if table != "audit_log_export" {
            assert!(!rows.is_empty(), "{table}: A's rows are visible");
        }
        let theirs = visible(pool, &w.b, table, column).await;
        assert!(
            theirs.iter().all(|r| r.as_deref() == Some(w.b.as_str())),
            "{table}: {theirs:?}"
        );
    }
    assert_eq!(
        visible(pool, &w.b, "user_view", "id").await,
        vec![Some(w.cid.clone())],
        "only B's member for B"
    );
    w.app.stop().await;
}

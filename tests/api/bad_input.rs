//! Tests: what the server does with bad requests — malformed or mistyped bodies, oversized
//! bodies, missing or wrong API keys, unknown routes and methods — plus the public endpoints.
//! None of these may answer 5xx or change the log.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;
use crate::openapi::{fetch_document, operations};

fn method(m: &str) -> Method {
    Method::from_bytes(m.as_bytes()).unwrap_or_else(|e| panic!("method {m}: {e}"))
}

/// A body that would succeed if the request were let through (so a missing check shows in the log).
fn plausible_body(m: &str, path: &str) -> Option<Value> {
    match (m, path) {
        ("POST", "/user_management/users") => Some(json!({ "email": "intruder@example.com" })),
        ("POST", "/organizations") => Some(json!({ "name": "Intruders" })),
        ("POST", "/organization_domains") => Some(json!({ "organization_id": "org_x", "domain": "x.com" })),
        ("POST", "/webhook_endpoints") => {
            Some(json!({ "endpoint_url": "http://127.0.0.1:9/x", "events": ["user.created"] }))
        }
        ("PATCH", _) => Some(json!({ "status": "disabled" })),
        ("POST", _) | ("PUT", _) => Some(json!({})),
        _ => None,
    }
}

fn assert_not_5xx(status: StatusCode, body: &Value, ctx: &str) {
    assert!(!status.is_server_error(), "{ctx}: {status} {body}");
}

#[tokio::test]
async fn malformed_json_returns_400_invalid_json_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let before = app.log_len().await;
    let cases: [(&str, &str, &[u8]); 6] = [
        ("truncated", "/user_management/users", br#"{"email":"#),
        ("not json", "/user_management/users", b"email=ann@example.com"),
        (
            "trailing comma",
            "/user_management/users",
            br#"{"email":"ann@example.com",}"#,
        ),
        ("empty body", "/user_management/users", b""),
        ("organization truncated", "/organizations", br#"{"name":"Acme""#),
        (
            "membership garbage",
            "/user_management/organization_memberships",
            b"\xff\xfe{",
        ),
    ];
    for (case, path, body) in cases {
        let (s, resp) = app.raw(Method::POST, path, "application/json", body.to_vec()).await;
        assert_error(s, &resp, StatusCode::BAD_REQUEST, "invalid_json", case);
        assert_eq!(app.log_len().await, before, "{case}: log unchanged");
    }
    let (s, resp) = app
        .raw(
            Method::POST,
            "/user_management/users",
            "text/plain",
            br#"{"email":"ann@example.com"}"#.to_vec(),
        )
        .await;
    assert_error(
        s,
        &resp,
        StatusCode::BAD_REQUEST,
        "invalid_content_type",
        "text/plain body",
    );
    assert_eq!(app.log_len().await, before, "text/plain: log unchanged");
    app.stop().await;
}

#[tokio::test]
async fn bodies_of_the_wrong_shape_return_422_naming_the_field_and_change_nothing() {
    let app = TestApp::spawn().await;
    let before = app.log_len().await;
    // (case, path, body, field, field code, message in plain words)
    let cases = [
        (
            "email is a number",
            "/user_management/users",
            json!({ "email": 5 }),
            "email",
            "invalid_type",
            "email must be a string",
        ),
        (
            "first_name is an object",
            "/user_management/users",
            json!({ "email": "ann@example.com", "first_name": {} }),
            "first_name",
            "invalid_type",
            "first_name must be a string",
        ),
        (
            "email_verified is a string",
            "/user_management/users",
            json!({ "email": "ann@example.com", "email_verified": "yes" }),
            "email_verified",
            "invalid_type",
            "email_verified must be a boolean",
        ),
        (
            "metadata is a string",
            "/user_management/users",
            json!({ "email": "ann@example.com", "metadata": "x" }),
            "metadata",
            "invalid_type",
            "metadata must be an object",
        ),
        (
            "a metadata value is a number",
            "/user_management/users",
            json!({ "email": "ann@example.com", "metadata": { "k": 1 } }),
            "metadata.k",
            "invalid_type",
            "metadata.k must be a string",
        ),
        (
            "name is a bool",
            "/organizations",
            json!({ "name": true }),
            "name",
            "invalid_type",
            "name must be a string",
        ),
        (
            "domain_data is an object",
            "/organizations",
            json!({ "name": "Acme", "domain_data": {} }),
            "domain_data",
            "invalid_type",
            "domain_data must be an array",
        ),
        (
            "a domain_data entry lacks its state",
            "/organizations",
            json!({ "name": "Acme", "domain_data": [{ "domain": "acme.com" }] }),
            "domain_data[0].state",
            "required",
            "domain_data[0].state is required",
        ),
        (
            "user_id is a number",
            "/user_management/organization_memberships",
            json!({ "user_id": 1, "organization_id": "org_x" }),
            "user_id",
            "invalid_type",
            "user_id must be a string",
        ),
        (
            "role_slugs holds a number",
            "/user_management/organization_memberships",
            json!({ "user_id": "user_x", "organization_id": "org_x", "role_slugs": [1] }),
            "role_slugs[0]",
            "invalid_type",
            "role_slugs[0] must be a string",
        ),
        (
            "unknown field on create user",
            "/user_management/users",
            json!({ "email": "ann@example.com", "nickname": "annie" }),
            "nickname",
            "unknown_field",
            "nickname is not a known field",
        ),
        (
            "missing email",
            "/user_management/users",
            json!({ "first_name": "Ann" }),
            "email",
            "required",
            "email is required",
        ),
        (
            "missing name",
            "/organizations",
            json!({}),
            "name",
            "required",
            "name is required",
        ),
        (
            "missing organization_id",
            "/user_management/organization_memberships",
            json!({ "user_id": "user_x" }),
            "organization_id",
            "required",
            "organization_id is required",
        ),
        (
            "body is an array",
            "/user_management/users",
            json!([]),
            "body",
            "invalid_type",
            "the request body must be a JSON object",
        ),
        (
            "body is a string",
            "/organizations",
            json!("Acme"),
            "body",
            "invalid_type",
            "the request body must be a JSON object",
        ),
    ];
    let mut wrong = Vec::new();
    for (case, path, body, field, code, message) in cases {
        let (s, resp) = app.post(path, body).await;
        let want = format!("invalid_request_parameters/{code}");
        assert_error(s, &resp, StatusCode::UNPROCESSABLE_ENTITY, &want, case);
        let e = &resp["errors"][0];
        if e["field"] != field || e["message"] != message || resp["message"] != message {
            wrong.push(format!(
                "{case}: want field {field} and message {message:?}, got {resp}"
            ));
        }
        assert_eq!(app.log_len().await, before, "{case}: log unchanged");
    }
    assert!(wrong.is_empty(), "field errors in plain words:\n{}", wrong.join("\n"));
    app.stop().await;
}

#[tokio::test]
async fn a_body_over_one_mebibyte_returns_413_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let before = app.log_len().await;
    let big = "x".repeat(1024 * 1024 + 1);
    let cases = [
        (
            "create user",
            Method::POST,
            "/user_management/users",
            json!({ "email": "ann@example.com", "first_name": big }),
        ),
        (
            "create organization",
            Method::POST,
            "/organizations",
            json!({ "name": big }),
        ),
        (
            "update user",
            Method::PUT,
            "/user_management/users/user_x",
            json!({ "first_name": big }),
        ),
    ];
    for (case, m, path, body) in cases {
        let (s, resp) = app.request(m, path, Some(body)).await;
        assert_error(s, &resp, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", case);
        assert_eq!(app.log_len().await, before, "{case}: log unchanged");
    }
    // Just under the limit is parsed (and then judged on its merits, not its size).
    let under = "x".repeat(1024 * 1024 - 100);
    let (s, resp) = app.post("/organizations", json!({ "name": under })).await;
    assert_ne!(s, StatusCode::PAYLOAD_TOO_LARGE, "{resp}");
    assert_not_5xx(s, &resp, "just under the limit");
    app.stop().await;
}

#[tokio::test]
async fn every_management_route_rejects_a_missing_or_wrong_key_with_401() {
    let app = TestApp::spawn().await;
    let before = app.log_len().await;
    // The operations come from the document, which is built from the router's own lists.
    let ops = operations(&fetch_document(&app).await);
    let public: Vec<String> = ops
        .iter()
        .filter(|o| !o.needs_key)
        .map(|o| format!("{} {}", o.method, o.template))
        .collect();
    assert_eq!(
        public,
        [
            "GET /audit_logs/exports/{auditLogExportId}/download",
            "GET /health",
            "GET /openapi.json",
            // The Admin Portal: the IT admin's browser (a one-time link's session cookie,
            // CSRF-checked forms, no key; `POST /portal/generate_link` needs the key).
            "GET /portal/audit_logs",
            "GET /portal/domains",
            "POST /portal/domains",
            "POST /portal/domains/verify",
            "GET /portal/launch",
            "GET /portal/sso",
            "GET /portal/sso/connections/{id}",
            "POST /portal/sso/connections/{id}/saml",
            "POST /portal/sso/connections/{id}/state",
            "POST /portal/sso/oidc",
            "POST /portal/sso/saml",
            "GET /portal/sso/test_result",
            "GET /sso/authorize",
            "GET /sso/jwks/{clientId}",
            "GET /sso/oidc/callback",
            "GET /sso/profile",
            "POST /sso/saml/acs/{connection_id}",
            "GET /sso/saml/metadata/{connection_id}",
            "POST /sso/token",
            "POST /user_management/authenticate",
            // The hosted sign-in: the end user's browser (CSRF-checked forms, no key).
            "GET /user_management/authorize",
            "POST /user_management/authorize/email_verification",
            "GET /user_management/authorize/hosted.css",
            "POST /user_management/authorize/magic_auth",
            "POST /user_management/authorize/magic_auth/code",
            "POST /user_management/authorize/organization",
            "POST /user_management/authorize/password",
            "GET /user_management/authorize/sign_in",
            "GET /user_management/authorize/sign_up",
            "POST /user_management/authorize/sign_up",
            "GET /user_management/sessions/logout"
        ],
        "only these operations are public"
    );
    let keys = [
        ("missing key", None),
        (
            "unknown sk key",
            Some("sk_000000000000000000000000000000000000000000000000"),
        ),
        ("non-sk key", Some("pk_test_123")),
        ("empty bearer", Some("")),
    ];
    for op in ops.iter().filter(|o| o.needs_key) {
        let (m, path) = (op.method.as_str(), op.path());
        for (case, key) in keys {
            let ctx = format!("{m} {path} with {case}");
            let (s, resp) = app
                .request_with_key(method(m), &path, plausible_body(m, &path), key)
                .await;
            assert_error(s, &resp, StatusCode::UNAUTHORIZED, "unauthorized", &ctx);
        }
        // The right secret under another scheme is not accepted either.
        let mut req = app.http.request(method(m), format!("{}{path}", app.base));
        req = req.header("authorization", format!("Basic {}", app.key));
        if let Some(b) = plausible_body(m, &path) {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("send");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{m} {path} with Basic scheme");
    }
    for op in ops.iter().filter(|o| !o.needs_key) {
        let (s, resp) = app.request_with_key(method(&op.method), &op.path(), None, None).await;
        // `/sso/profile` takes its own bearer token (not an API key): `401 invalid_token`.
        assert!(
            s != StatusCode::UNAUTHORIZED || resp["code"] == "invalid_token",
            "{} {} needs no key: {resp}",
            op.method,
            op.template
        );
    }
    assert_eq!(
        app.log_len().await,
        before,
        "no unauthenticated request changed the log"
    );
    app.stop().await;
}

#[tokio::test]
async fn health_answers_ok_without_a_key() {
    let app = TestApp::spawn().await;
    let (s, body) = app.request_with_key(Method::GET, "/health", None, None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ok", "{body}");
    for p in ["users", "organizations", "memberships", "events"] {
        assert_eq!(body["projections"][p]["behind"], 0, "projection {p}: {body}");
    }
    assert_eq!(
        body["subscribers"],
        json!({}),
        "no subscriber has a checkpoint yet: {body}"
    );
    let keys: Vec<&String> = body.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["projections", "status", "subscribers"], "{body}");
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_return_404_json_and_wrong_methods_405_json() {
    let app = TestApp::spawn().await;
    let before = app.log_len().await;
    let cases = [
        (
            "unknown path",
            Method::GET,
            "/nothing/here",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "unknown nested path",
            Method::POST,
            "/user_management/nothing",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "too deep",
            Method::GET,
            "/organizations/org_x/extra/parts",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "PATCH a user",
            Method::PATCH,
            "/user_management/users/user_x",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "DELETE the user list",
            Method::DELETE,
            "/user_management/users",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "POST events",
            Method::POST,
            "/events",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "POST health",
            Method::POST,
            "/health",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "GET deactivate",
            Method::GET,
            "/user_management/organization_memberships/om_x/deactivate",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (case, m, path, want, code) in cases {
        let (s, resp) = app.request(m, path, None).await;
        assert_error(s, &resp, want, code, case);
    }
    let (s, resp) = app.request_with_key(Method::GET, "/nothing/here", None, None).await;
    assert_error(
        s,
        &resp,
        StatusCode::NOT_FOUND,
        "not_found",
        "unknown path without a key",
    );
    assert_eq!(app.log_len().await, before, "log unchanged");
    app.stop().await;
}

#[tokio::test]
async fn bad_query_strings_and_ids_never_yield_a_5xx() {
    let app = TestApp::spawn().await;
    let before = app.log_len().await;
    let paths = [
        "/user_management/users?limit=1000",
        "/user_management/users?order=sideways",
        "/user_management/users?after=%00",
        "/user_management/users/%00",
        "/organizations?domains=not%20a%20domain",
        "/organizations/%F0%9F%A6%80",
        "/user_management/organization_memberships?organization_id=%00",
        "/events?after=%00",
        "/events?range_start=%00",
        "/events?organization_id=%00",
        "/user_management/users?email=%00",
        "/user_management/users/external_id/%00",
        "/organizations?search=%00",
        "/organizations/external_id/%00",
        "/organization_domains/%00",
    ];
    let mut failures = Vec::new();
    for path in paths {
        let (s, resp) = app.get(path).await;
        if s.is_server_error() || !(resp["code"].is_string() || s.is_success()) {
            failures.push(format!("GET {path}: {s} {resp}"));
        }
    }
    assert!(failures.is_empty(), "bad input answered 5xx:\n{}", failures.join("\n"));
    assert_eq!(app.log_len().await, before, "log unchanged");
    app.stop().await;
}

#[tokio::test]
async fn strings_with_nul_characters_in_bodies_never_yield_a_5xx_or_change_the_log() {
    let app = TestApp::spawn().await;
    let user = app.create_user("ann@example.com").await;
    let uid = user["id"].as_str().unwrap_or_default().to_string();
    let before = app.log_len().await;
    let cases = [
        (
            "user first_name",
            Method::POST,
            "/user_management/users".to_string(),
            json!({ "email": "bob@example.com", "first_name": "B\u{0}ob" }),
        ),
        (
            "user metadata",
            Method::POST,
            "/user_management/users".to_string(),
            json!({ "email": "bob@example.com", "metadata": { "k": "v\u{0}" } }),
        ),
        (
            "user update",
            Method::PUT,
            format!("/user_management/users/{uid}"),
            json!({ "last_name": "L\u{0}" }),
        ),
        (
            "user external_id",
            Method::POST,
            "/user_management/users".to_string(),
            json!({ "email": "bob@example.com", "external_id": "ext\u{0}" }),
        ),
        (
            "organization external_id",
            Method::POST,
            "/organizations".to_string(),
            json!({ "name": "Acme", "external_id": "ext\u{0}" }),
        ),
        (
            "organization metadata key",
            Method::POST,
            "/organizations".to_string(),
            json!({ "name": "Acme", "metadata": { "k\u{0}": "v" } }),
        ),
        (
            "organization name",
            Method::POST,
            "/organizations".to_string(),
            json!({ "name": "Ac\u{0}me" }),
        ),
        (
            "membership user_id",
            Method::POST,
            "/user_management/organization_memberships".to_string(),
            json!({ "user_id": "user_\u{0}", "organization_id": "org_x" }),
        ),
    ];
    let mut failures = Vec::new();
    for (case, m, path, body) in cases {
        let (s, resp) = app.request(m, &path, Some(body)).await;
        if s.is_server_error() || s.is_success() {
            failures.push(format!("{case}: {s} {resp}"));
        }
    }
    assert!(
        failures.is_empty(),
        "NUL characters must be a 4xx:\n{}",
        failures.join("\n")
    );
    assert_eq!(app.log_len().await, before, "log unchanged");
    app.stop().await;
}

#[tokio::test]
async fn ids_that_are_not_utf8_after_decoding_get_a_json_400() {
    let app = TestApp::spawn().await;
    for path in [
        "/user_management/users/%FF",
        "/organizations/%C3%28",
        "/organization_domains/%FE/verify",
    ] {
        let method = if path.ends_with("/verify") {
            reqwest::Method::POST
        } else {
            reqwest::Method::GET
        };
        let (status, body) = app.request(method, path, None).await;
        assert_error(status, &body, reqwest::StatusCode::BAD_REQUEST, "invalid_path", path);
    }
    let (status, body) = app.post("/organizations", serde_json::json!([])).await;
    assert_error(
        status,
        &body,
        reqwest::StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request_parameters/invalid_type",
        "array body",
    );
    assert_eq!(body["message"], "the request body must be a JSON object", "{body}");
    app.stop().await;
}

#[tokio::test]
async fn a_json_array_is_never_read_as_an_object_body() {
    let app = TestApp::spawn().await;
    let (s, org) = app.post("/organizations", json!({ "name": "Acme" })).await;
    assert_eq!(s, StatusCode::CREATED, "{org}");
    let before = app.log_len().await;
    let org_path = format!("/organizations/{}", org["id"].as_str().expect("id"));
    // serde would read these as {email} and {name, allow_profiles_outside_organization}.
    let cases = [
        (
            Method::POST,
            "/user_management/users".to_string(),
            json!(["array@example.com"]),
        ),
        (Method::PUT, org_path.clone(), json!(["Renamed", true])),
        (Method::PUT, org_path.clone(), json!([null, null])),
    ];
    for (m, path, body) in cases {
        let ctx = format!("{m} {path} {body}");
        let (s, resp) = app.request(m, &path, Some(body)).await;
        assert_error(
            s,
            &resp,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters/invalid_type",
            &ctx,
        );
        assert_eq!(
            resp["errors"][0]["message"], "the request body must be a JSON object",
            "{ctx}: {resp}"
        );
    }
    assert_eq!(app.log_len().await, before, "nothing was written");
    let (_, users) = app.get("/user_management/users?email=array@example.com").await;
    assert_eq!(users["data"], json!([]), "no user was created: {users}");
    let (_, after) = app.get(&org_path).await;
    assert_eq!(after["name"], "Acme", "the organization is unchanged: {after}");
    app.stop().await;
}

//! The Admin Portal over HTTP, as a browser without JavaScript drives it: `POST
//! /portal/generate_link` with the API key, then the link opened (once) into a session cookie,
//! forms posted with their CSRF token, redirects read, not followed. Attacks: a replayed or
//! expired link, a session of one organization aimed at another's ids, forms without or with a
//! wrong CSRF token.

use reqwest::header::SET_COOKIE;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{id_of, TestApp};
use crate::pages::{Browser, Page};

const LINK: &str = "/portal/generate_link";
const IDP_METADATA: &str = include_str!("../../api/src/saml/fixtures/idp-metadata.xml");

async fn link(app: &TestApp, org: &str, intent: &str) -> String {
    let (s, b) = app
        .post(LINK, json!({"organization": org, "intent": intent, "return_url": "https://app.example/settings", "success_url": "https://app.example/done"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    b["link"].as_str().unwrap().to_string()
}

/// A browser with an open portal session of `org` for `intent`, on the intent's page.
async fn open(app: &TestApp, org: &str, intent: &str) -> (Browser, Page) {
    let mut b = Browser::scoped(app, "/portal");
    let launched = b.get(&link(app, org, intent).await).await;
    assert_eq!(launched.status, StatusCode::SEE_OTHER, "{}", launched.body);
    launched.assert_secured("launch");
    assert!(b.cookie.is_some(), "the launch sets the session cookie");
    let page = b.get(&launched.redirect()).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.assert_secured(intent);
    (b, page)
}

async fn new_org(app: &TestApp, name: &str) -> String {
    id_of(&app.create_organization(name, json!([])).await)
}

#[tokio::test]
async fn generating_a_link_checks_the_organization_the_intent_the_urls_and_the_key() {
    let app = TestApp::spawn().await;
    let org = new_org(&app, "Acme").await;
    let cases = [
        (
            json!({"organization": "org_01NOPE", "intent": "sso"}),
            StatusCode::NOT_FOUND,
            "unknown organization",
        ),
        (
            json!({"intent": "sso"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no organization",
        ),
        (
            json!({"organization": org, "intent": "dsync"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "dsync",
        ),
        (
            json!({"organization": org, "intent": "log_streams"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "log_streams",
        ),
        (
            json!({"organization": org, "intent": "nonsense"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown intent",
        ),
        (
            json!({"organization": org, "intent": "sso", "return_url": "javascript:alert(1)"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "script return_url",
        ),
        (
            json!({"organization": org, "intent": "sso", "success_url": "not a url"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad success_url",
        ),
        (
            json!({"organization": org, "intent": "sso", "extra": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field",
        ),
    ];
    for (body, status, what) in cases {
        let (s, b) = app.post(LINK, body).await;
        assert_eq!(s, status, "{what}: {b}");
        assert!(b["code"].is_string() && b["message"].is_string(), "{what}: {b}");
    }
    let (s, b) = app
        .post(LINK, json!({"organization": org, "intent": "log_streams"}))
        .await;
    assert_eq!(b["errors"][0]["field"], "intent", "{s} {b}");
    let rows: (i64,) = sqlx::query_as("select count(*) from portal_link")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows.0, 0, "refused requests store no link");

    let (s, _) = app
        .request_with_key(
            Method::POST,
            LINK,
            Some(json!({"organization": org, "intent": "sso"})),
            Some("sk_wrong"),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    for intent in ["sso", "domain_verification", "audit_logs"] {
        let l = link(&app, &org, intent).await;
        assert!(l.starts_with(&format!("{}/portal/launch?secret=", app.base)), "{l}");
    }
    // No intent: the SSO portal.
    let (s, b) = app.post(LINK, json!({"organization": org})).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let stored: Vec<(String,)> = sqlx::query_as("select intent from portal_link order by created_at")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored.last().unwrap().0, "sso");
    let secret = b["link"].as_str().unwrap().rsplit('=').next().unwrap().to_string();
    let hashed: (i64, i64) = sqlx::query_as(
        "select count(*) filter (where secret_hash = sha256(convert_to($1, 'UTF8'))), \
         count(*) filter (where position(convert_to($1, 'UTF8') in secret_hash) > 0) from portal_link",
    )
    .bind(&secret)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(hashed, (1, 0), "only the secret's SHA-256 is stored");
}

#[tokio::test]
async fn a_link_opens_once_and_a_replayed_unknown_or_expired_link_gets_an_error_page_and_no_cookie() {
    let app = TestApp::spawn().await;
    let org = new_org(&app, "Acme").await;
    let l = link(&app, &org, "domain_verification").await;
    let mut first = Browser::scoped(&app, "/portal");
    let opened = first.get(&l).await;
    assert_eq!(opened.status, StatusCode::SEE_OTHER, "{}", opened.body);
    assert_eq!(opened.redirect(), "/portal/domains");
    let cookie = opened.headers.get(SET_COOKIE).unwrap().to_str().unwrap().to_string();
    assert!(cookie.contains("Max-Age=1800"), "{cookie}");
    assert!(!cookie.contains("Secure"), "plain http public URL: {cookie}");

    let mut replay = Browser::scoped(&app, "/portal");
    let again = replay.get(&l).await;
    assert_eq!(again.status, StatusCode::GONE, "{}", again.body);
    again.assert_secured("replayed link");
    assert!(replay.cookie.is_none());

    let unknown = replay.get("/portal/launch?secret=nope").await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    let missing = replay.get("/portal/launch").await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert!(replay.cookie.is_none());

    let expired = link(&app, &org, "sso").await;
    sqlx::query("update portal_link set expires_at = now() - interval '1 second' where used_at is null")
        .execute(&app.pool)
        .await
        .unwrap();
    let late = replay.get(&expired).await;
    assert_eq!(late.status, StatusCode::GONE, "{}", late.body);
    assert!(replay.cookie.is_none());
    // Without a session, the pages refuse.
    let page = replay.get("/portal/sso").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    page.assert_secured("no session");
}

#[tokio::test]
async fn two_browsers_racing_on_one_link_open_exactly_one_session() {
    let app = TestApp::spawn().await;
    let org = new_org(&app, "Acme").await;
    let l = link(&app, &org, "sso").await;
    let mut handles = Vec::new();
    for _ in 0..6 {
        let mut b = Browser::scoped(&app, "/portal");
        let l = l.clone();
        handles.push(tokio::spawn(async move { b.get(&l).await.status }));
    }
    let mut won = 0;
    for h in handles {
        match h.await.unwrap() {
            StatusCode::SEE_OTHER => won += 1,
            StatusCode::GONE => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(won, 1);
}

#[tokio::test]
async fn a_domain_is_added_and_verified_through_the_portal_pages() {
    let app = TestApp::spawn().await;
    let org = new_org(&app, "Acme").await;
    let (mut b, page) = open(&app, &org, "domain_verification").await;
    assert!(page.body.contains("Acme"), "the organization's name: {}", page.body);
    assert!(page.body.contains("https://app.example/done") && page.body.contains("https://app.example/settings"));
    let token = page.csrf();

    // CSRF: missing, then wrong.
    let none = b.post("/portal/domains", &[("domain", "acme.com")]).await;
    assert_eq!(none.status, StatusCode::FORBIDDEN);
    let wrong = b
        .post("/portal/domains", &[("csrf_token", "forged"), ("domain", "acme.com")])
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    wrong.assert_secured("csrf refused");
    let (_, o) = app.get(&format!("/organizations/{org}")).await;
    assert_eq!(o["domains"], json!([]), "refused forms change nothing");

    let bad = b
        .post("/portal/domains", &[("csrf_token", &token), ("domain", "not a domain")])
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    assert!(bad.body.contains(r#"aria-describedby="domain-error""#), "{}", bad.body);

    let added = b
        .post("/portal/domains", &[("csrf_token", &token), ("domain", "acme.com")])
        .await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.body);
    added.assert_secured("domain added");
    let (_, o) = app.get(&format!("/organizations/{org}")).await;
    let d = &o["domains"][0];
    let verification = d["verification_token"].as_str().unwrap();
    assert!(added.body.contains("_keyledger-challenge.acme.com"), "{}", added.body);
    assert!(added.body.contains(verification), "{}", added.body);

    // Not published yet: the check fails and says so.
    let failed = b
        .post(
            "/portal/domains/verify",
            &[("csrf_token", &token), ("domain_id", d["id"].as_str().unwrap())],
        )
        .await;
    assert_eq!(failed.status, StatusCode::OK, "{}", failed.body);
    assert!(failed.body.contains("could not be verified"), "{}", failed.body);

    app.dns
        .set_txt("_keyledger-challenge.acme.com", vec![verification.to_string()]);
    let ok = b
        .post(
            "/portal/domains/verify",
            &[("csrf_token", &token), ("domain_id", d["id"].as_str().unwrap())],
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert!(ok.body.contains("acme.com is verified"), "{}", ok.body);
    let (_, dv) = app
        .get(&format!("/organization_domains/{}", d["id"].as_str().unwrap()))
        .await;
    assert_eq!(dv["state"], "verified");

    // The domain session opens neither the SSO nor the audit pages.
    assert_eq!(b.get("/portal/sso").await.status, StatusCode::FORBIDDEN);
    assert_eq!(b.get("/portal/audit_logs").await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_session_of_one_organization_cannot_read_or_change_another_organizations_domains_or_connections() {
    let app = TestApp::spawn().await;
    let a = new_org(&app, "Acme").await;
    let b_org = new_org(&app, "Bravo").await;
    let (s, bd) = app
        .post(
            "/organization_domains",
            json!({"organization_id": b_org, "domain": "bravo.com"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{bd}");
    let (s, bc) = app
        .post(
            "/connections",
            json!({"organization_id": b_org, "connection_type": "GenericSAML", "name": "Bravo SAML"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{bc}");
    let bc_id = id_of(&bc);
    let log_before = app.log_len().await;

    let (mut dom, page) = open(&app, &a, "domain_verification").await;
    assert!(!page.body.contains("bravo.com"));
    let t = page.csrf();
    app.dns.set_txt(
        "_keyledger-challenge.bravo.com",
        vec![bd["verification_token"].as_str().unwrap().to_string()],
    );
    let r = dom
        .post(
            "/portal/domains/verify",
            &[("csrf_token", &t), ("domain_id", &id_of(&bd))],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    // A form field naming the other organization is ignored: the domain lands in the session's.
    let r = dom
        .post(
            "/portal/domains",
            &[("csrf_token", &t), ("domain", "acme.org"), ("organization_id", &b_org)],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let (_, bo) = app.get(&format!("/organizations/{b_org}")).await;
    assert_eq!(bo["domains"].as_array().unwrap().len(), 1, "{bo}");
    assert_eq!(bo["domains"][0]["state"], "pending");

    let (mut sso, page) = open(&app, &a, "sso").await;
    assert!(!page.body.contains("Bravo SAML"));
    let t = page.csrf();
    let path = format!("/portal/sso/connections/{bc_id}");
    assert_eq!(sso.get(&path).await.status, StatusCode::NOT_FOUND);
    let r = sso
        .post(
            &format!("{path}/saml"),
            &[("csrf_token", &t), ("metadata_xml", IDP_METADATA)],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = sso
        .post(&format!("{path}/state"), &[("csrf_token", &t), ("state", "active")])
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let (_, still) = app.get(&format!("/connections/{bc_id}")).await;
    assert_eq!(still["state"], "draft", "{still}");
    // Only the one domain of org A was added meanwhile.
    assert_eq!(app.log_len().await, log_before + 1);
    assert_eq!(sso.get("/portal/domains").await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn an_oidc_connection_is_created_through_the_portal_and_read_back_through_the_api() {
    let app = TestApp::spawn().await;
    let org = new_org(&app, "Acme").await;
    let (mut b, page) = open(&app, &org, "sso").await;
    assert!(
        page.body.contains(&format!("{}/sso/oidc/callback", app.base)),
        "{}",
        page.body
    );
    let t = page.csrf();

    let bad = b
        .post(
            "/portal/sso/oidc",
            &[
                ("csrf_token", &t),
                ("discovery_endpoint", "ftp://idp.example"),
                ("client_id", "c"),
                ("client_secret", "s"),
            ],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    assert!(bad.body.contains(r#"id="discovery-endpoint-error""#), "{}", bad.body);
    let csrf = b
        .post(
            "/portal/sso/oidc",
            &[
                (
                    "discovery_endpoint",
                    "http://127.0.0.1:9/.well-known/openid-configuration",
                ),
                ("client_id", "c"),
                ("client_secret", "s"),
            ],
        )
        .await;
    assert_eq!(csrf.status, StatusCode::FORBIDDEN);

    let made = b
        .post(
            "/portal/sso/oidc",
            &[
                ("csrf_token", &t),
                ("name", "Acme Okta"),
                (
                    "discovery_endpoint",
                    "http://127.0.0.1:9/.well-known/openid-configuration",
                ),
                ("client_id", "client-123"),
                ("client_secret", "very-secret"),
            ],
        )
        .await;
    assert_eq!(made.status, StatusCode::SEE_OTHER, "{}", made.body);
    let shown = b.get(&made.redirect()).await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.body);
    assert!(!shown.body.contains("very-secret"));
    let list = app.all_pages(&format!("/connections?organization_id={org}")).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["connection_type"], "GenericOIDC");
    assert_eq!(list[0]["name"], "Acme Okta");
    assert_eq!(list[0]["state"], "active");
    assert!(!list[0].to_string().contains("very-secret"));
}

#[tokio::test]
async fn a_saml_connection_starts_as_a_draft_shows_its_sp_details_and_activates_with_pasted_idp_metadata() {
    let app = TestApp::spawn().await;
    let org = new_org(&app, "Acme").await;
    let (mut b, page) = open(&app, &org, "sso").await;
    let t = page.csrf();
    let made = b
        .post("/portal/sso/saml", &[("csrf_token", &t), ("saml_name", "Acme SAML")])
        .await;
    assert_eq!(made.status, StatusCode::SEE_OTHER, "{}", made.body);
    let path = made.redirect();
    let id = path.rsplit('/').next().unwrap().to_string();
    let shown = b.get(&path).await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.body);
    shown.assert_secured("connection page");
    assert!(
        shown.body.contains(&format!("{}/sso/saml/acs/{id}", app.base)),
        "{}",
        shown.body
    );
    assert!(shown.body.contains(&format!("{}/sso/saml/metadata/{id}", app.base)));
    let (_, c) = app.get(&format!("/connections/{id}")).await;
    assert_eq!(c["state"], "draft", "{c}");

    let bad = b
        .post(
            &format!("{path}/saml"),
            &[("csrf_token", &t), ("metadata_xml", "<nope/>")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    assert!(bad.body.contains(r#"id="metadata-xml-error""#), "{}", bad.body);
    let partial = b
        .post(
            &format!("{path}/saml"),
            &[("csrf_token", &t), ("idp_entity_id", "urn:x")],
        )
        .await;
    assert_eq!(partial.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", partial.body);
    let (_, c) = app.get(&format!("/connections/{id}")).await;
    assert_eq!(c["state"], "draft", "refused forms change nothing: {c}");

    let saved = b
        .post(
            &format!("{path}/saml"),
            &[("csrf_token", &t), ("metadata_xml", IDP_METADATA)],
        )
        .await;
    assert_eq!(saved.status, StatusCode::OK, "{}", saved.body);
    assert!(saved.body.contains("The connection is active"), "{}", saved.body);
    let list = app.all_pages(&format!("/connections?organization_id={org}")).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["state"], "active", "{}", list[0]);
    assert_eq!(list[0]["connection_type"], "GenericSAML");

    let off = b
        .post(&format!("{path}/state"), &[("csrf_token", &t), ("state", "inactive")])
        .await;
    assert_eq!(off.status, StatusCode::OK, "{}", off.body);
    let (_, c) = app.get(&format!("/connections/{id}")).await;
    assert_eq!(c["state"], "inactive", "{c}");
    let on = b
        .post(&format!("{path}/state"), &[("csrf_token", &t), ("state", "active")])
        .await;
    assert_eq!(on.status, StatusCode::OK, "{}", on.body);
    let (_, c) = app.get(&format!("/connections/{id}")).await;
    assert_eq!(c["state"], "active", "{c}");
    let list_page = b.get("/portal/sso").await;
    assert!(
        list_page.body.contains("Acme SAML") && list_page.body.contains("GenericSAML"),
        "{}",
        list_page.body
    );
}

#[tokio::test]
async fn the_audit_page_shows_the_organizations_trail_and_nothing_of_another() {
    let app = TestApp::spawn().await;
    let org = new_org(&app, "Acme").await;
    let other = new_org(&app, "Bravo").await;
    let (s, _) = app
        .post(
            "/organization_domains",
            json!({"organization_id": org, "domain": "acme.com"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = app
        .post(
            "/organization_domains",
            json!({"organization_id": other, "domain": "bravo.com"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (mut b, page) = open(&app, &org, "audit_logs").await;
    assert!(page.body.contains("organization_domain.created"), "{}", page.body);
    assert!(page.body.contains("<table"), "{}", page.body);
    assert!(
        !page.body.contains("bravo.com") && !page.body.contains("Bravo"),
        "{}",
        page.body
    );
    let unknown = b.get("/portal/audit_logs?after=event_01NOPE").await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(b.get("/portal/domains").await.status, StatusCode::FORBIDDEN);
}

/// Serves `body` at `/metadata` on a loopback port (the IdP), answering 404 elsewhere.
async fn idp_metadata_server(body: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/metadata", axum::routing::get(move || async move { body }));
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_saml_idp_metadata_url_is_fetched_through_the_guard_and_a_refused_or_broken_one_is_said_on_the_form() {
    let app = TestApp::spawn().await;
    let org = new_org(&app, "Acme").await;
    let idp = idp_metadata_server(IDP_METADATA).await;
    let (mut b, page) = open(&app, &org, "sso").await;
    let t = page.csrf();
    let made = b.post("/portal/sso/saml", &[("csrf_token", &t)]).await;
    assert_eq!(made.status, StatusCode::SEE_OTHER, "{}", made.body);
    let path = made.redirect();
    let id = path.rsplit('/').next().unwrap().to_string();

    // Refused before any request leaves: a private address literal; then a page that is not metadata.
    for (url, what) in [
        ("http://10.0.0.1/metadata".to_string(), "private address"),
        (format!("{idp}/missing"), "404"),
        ("ftp://127.0.0.1/metadata".to_string(), "not http"),
    ] {
        let r = b
            .post(&format!("{path}/saml"), &[("csrf_token", &t), ("metadata_url", &url)])
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {}", r.body);
        assert!(r.body.contains(r#"id="metadata-url-error""#), "{what}: {}", r.body);
        if what == "private address" {
            // Refused by the URL check itself (an IP literal never reaches the resolver's guard).
            assert!(
                r.body.contains("names an address keyledger does not connect to"),
                "{}",
                r.body
            );
        }
        let (_, c) = app.get(&format!("/connections/{id}")).await;
        assert_eq!(c["state"], "draft", "{what}: {c}");
    }

    let ok = b
        .post(
            &format!("{path}/saml"),
            &[("csrf_token", &t), ("metadata_url", &format!("{idp}/metadata"))],
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    let (_, c) = app.get(&format!("/connections/{id}")).await;
    assert_eq!(c["state"], "active", "{c}");

    // Described the other way (pasted metadata), then by URL again: each replaces the other.
    let pasted = b
        .post(
            &format!("{path}/saml"),
            &[("csrf_token", &t), ("metadata_xml", IDP_METADATA)],
        )
        .await;
    assert_eq!(pasted.status, StatusCode::OK, "{}", pasted.body);
    let (_, c) = app.get(&format!("/connections/{id}")).await;
    assert_eq!(c["state"], "active", "{c}");
    let again = b
        .post(
            &format!("{path}/saml"),
            &[("csrf_token", &t), ("metadata_url", &format!("{idp}/metadata"))],
        )
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
}

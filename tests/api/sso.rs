//! The OIDC sign-in against a real OpenID provider (npm `oidc-provider`, tests/idp/oidc, on
//! loopback): authorize → the provider's login form → keyledger's callback → the application's
//! redirect_uri with a code → `POST /sso/token` → `GET /sso/profile`; and the attacks: replayed
//! or unknown state, replayed code, wrong client secret, unregistered redirect_uri.

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_error, NodeIdp, TestApp};

const APP_CALLBACK: &str = "http://127.0.0.1:9/app/callback";
const IDP_SECRET: &str = "idp-client-secret-s3cret";

/// The test IdP, stopped when dropped.
struct Idp {
    issuer: String,
    _node: NodeIdp,
}

async fn start_idp(callback: &str) -> Idp {
    start_idp_on(callback, 0).await
}

/// The test IdP on `port` (0: any free port), with a signing key of its own.
async fn start_idp_on(callback: &str, port: u16) -> Idp {
    let client = json!({ "client_id": "kl", "client_secret": IDP_SECRET, "redirect_uris": [callback] });
    let (port, client) = (port.to_string(), client.to_string());
    let node = NodeIdp::start(
        "oidc",
        "KEYLEDGER_TEST_OIDC_IDP",
        &["--port", &port, "--client", &client],
    )
    .await;
    Idp {
        issuer: node.get("issuer"),
        _node: node,
    }
}

/// A browser: no redirects followed, cookies kept by hand.
pub(crate) struct Browser {
    http: reqwest::Client,
    cookies: Vec<String>,
}

impl Browser {
    pub(crate) fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            cookies: Vec::new(),
        }
    }

    pub(crate) async fn send(&mut self, method: Method, url: &str, form: Option<&[(&str, &str)]>) -> reqwest::Response {
        let mut req = self.http.request(method, url);
        if !self.cookies.is_empty() {
            req = req.header(COOKIE, self.cookies.join("; "));
        }
        if let Some(f) = form {
            req = req.form(f);
        }
        let resp = req.send().await.expect("send");
        for c in resp.headers().get_all(SET_COOKIE) {
            let pair = c
                .to_str()
                .expect("cookie")
                .split(';')
                .next()
                .unwrap_or_default()
                .to_string();
            let name = pair.split('=').next().unwrap_or_default().to_string();
            self.cookies.retain(|k| !k.starts_with(&format!("{name}=")));
            self.cookies.push(pair);
        }
        resp
    }

    pub(crate) fn location(resp: &reqwest::Response, base: &str) -> String {
        let loc = resp
            .headers()
            .get(LOCATION)
            .unwrap_or_else(|| panic!("a redirect, got {}", resp.status()))
            .to_str()
            .expect("location");
        url::Url::parse(base)
            .expect("base")
            .join(loc)
            .expect("join")
            .to_string()
    }
}

pub(crate) fn query(url: &str, key: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// A server with the application's callback registered, an IdP that knows keyledger's callback,
/// an organization and an active OIDC connection to the IdP.
async fn setup() -> (TestApp, Idp, String, String) {
    let app = TestApp::spawn_with(|c| c.auth.redirect_uris = vec![APP_CALLBACK.into()]).await;
    let idp = start_idp(&format!("{}/sso/oidc/callback", app.base)).await;
    let org = app
        .create_organization("Acme", json!([{ "domain": "acme.com", "state": "verified" }]))
        .await;
    let org_id = org["id"].as_str().unwrap().to_string();
    let (s, c) = app
        .post(
            "/connections",
            json!({ "organization_id": org_id, "oidc_options": {
                "discovery_endpoint": format!("{}/.well-known/openid-configuration", idp.issuer),
                "client_id": "kl", "client_secret": IDP_SECRET } }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    assert_eq!(c["state"], "active");
    (app, idp, org_id, c["id"].as_str().unwrap().to_string())
}

fn authorize_url(app: &TestApp, selector: &str, redirect_uri: &str) -> String {
    let mut u = url::Url::parse(&format!("{}/sso/authorize", app.base)).unwrap();
    u.query_pairs_mut()
        .append_pair("client_id", &app.client_id())
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("response_type", "code")
        .append_pair("state", "app-state-42")
        .append_pair("login_hint", "ann.lee@acme.com");
    let (k, v) = selector.split_once('=').unwrap();
    u.query_pairs_mut().append_pair(k, v);
    u.to_string()
}

/// Authorize → the IdP's form login → keyledger's callback URL (not yet visited).
async fn sign_in_at_idp(browser: &mut Browser, app: &TestApp, idp: &Idp, selector: &str) -> String {
    let start = authorize_url(app, selector, APP_CALLBACK);
    sign_in_as(browser, app, idp, &start, "ann.lee@acme.com").await
}

/// `start` (keyledger, redirecting to the IdP) → the IdP's form login as `email` → keyledger's
/// callback URL (not yet visited).
async fn sign_in_as(browser: &mut Browser, app: &TestApp, idp: &Idp, start: &str, email: &str) -> String {
    let r = browser.send(Method::GET, start, None).await;
    assert!(r.status().is_redirection(), "authorize redirects: {}", r.status());
    let to_idp = Browser::location(&r, &app.base);
    assert!(to_idp.starts_with(&idp.issuer), "{to_idp}");
    assert!(query(&to_idp, "code_challenge").is_some(), "PKCE: {to_idp}");
    assert!(query(&to_idp, "nonce").is_some(), "nonce: {to_idp}");
    assert_ne!(
        query(&to_idp, "state").as_deref(),
        Some("app-state-42"),
        "our own state"
    );
    let r = browser.send(Method::GET, &to_idp, None).await;
    let interaction = Browser::location(&r, &idp.issuer);
    assert!(interaction.contains("/interaction/"), "{interaction}");
    let r = browser
        .send(
            Method::POST,
            &format!("{interaction}/login"),
            Some(&[("email", email), ("password", "idp-password")]),
        )
        .await;
    let mut next = Browser::location(&r, &idp.issuer);
    // The provider may take a step or two before sending the browser back.
    for _ in 0..5 {
        if next.starts_with(&app.base) {
            return next;
        }
        let r = browser.send(Method::GET, &next, None).await;
        next = Browser::location(&r, &idp.issuer);
    }
    panic!("the IdP never sent the browser back: {next}");
}

async fn token(app: &TestApp, code: &str, secret: &str) -> (StatusCode, Value) {
    app.request_with_key(
        Method::POST,
        "/sso/token",
        Some(
            json!({ "grant_type": "authorization_code", "client_id": app.client_id(),
            "client_secret": secret, "code": code }),
        ),
        None,
    )
    .await
}

#[tokio::test]
async fn a_user_signs_in_through_the_oidc_provider_and_the_application_gets_the_profile() {
    let (app, idp, org_id, conn_id) = setup().await;
    let mut browser = Browser::new();
    let callback = sign_in_at_idp(&mut browser, &app, &idp, &format!("connection={conn_id}")).await;
    assert!(
        callback.starts_with(&format!("{}/sso/oidc/callback", app.base)),
        "{callback}"
    );
    let r = browser.send(Method::GET, &callback, None).await;
    let back = Browser::location(&r, &app.base);
    assert!(back.starts_with(APP_CALLBACK), "{back}");
    assert_eq!(query(&back, "state").as_deref(), Some("app-state-42"));
    let code = query(&back, "code").expect("a code");

    let (s, t) = token(&app, &code, &app.key).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["token_type"], "Bearer");
    let p = &t["profile"];
    assert!(p["id"].as_str().unwrap().starts_with("prof_"), "{p}");
    assert_eq!(p["object"], "profile");
    assert_eq!(p["email"], "ann.lee@acme.com");
    assert_eq!(p["first_name"], "Ann");
    assert_eq!(p["last_name"], "Lee");
    assert_eq!(p["idp_id"], "ann.lee@acme.com");
    assert_eq!(p["connection_id"], conn_id.as_str());
    assert_eq!(p["connection_type"], "GenericOIDC");
    assert_eq!(p["organization_id"], org_id.as_str());
    assert_eq!(p["raw_attributes"]["email"], "ann.lee@acme.com");

    let access = t["access_token"].as_str().unwrap();
    let r = app
        .http
        .get(format!("{}/sso/profile", app.base))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let got: Value = r.json().await.unwrap();
    assert_eq!(&got, p);

    // The code is single use; a replayed callback (our state) is refused with a page.
    let (s, b) = token(&app, &code, &app.key).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_grant", "replayed code");
    let r = browser.send(Method::GET, &callback, None).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "replayed state");
    assert!(r.headers().get(LOCATION).is_none());
    assert!(r.text().await.unwrap().contains("invalid_state"));
    // An unknown access token.
    let r = app
        .http
        .get(format!("{}/sso/profile", app.base))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// Follows keyledger's callback to the application's redirect URI; answers the code.
async fn back_to_app(browser: &mut Browser, app: &TestApp, callback: &str) -> String {
    let r = browser.send(Method::GET, callback, None).await;
    let back = Browser::location(&r, &app.base);
    assert!(back.starts_with(APP_CALLBACK), "{back}");
    query(&back, "code").expect("a code")
}

#[tokio::test]
async fn discovery_is_kept_between_sign_ins_and_keys_the_provider_rotated_are_fetched_again() {
    let (app, idp, _, conn_id) = setup().await;
    let selector = format!("connection={conn_id}");
    let mut browser = Browser::new();
    let callback = sign_in_at_idp(&mut browser, &app, &idp, &selector).await;
    back_to_app(&mut browser, &app, &callback).await;

    // The provider restarts on its address with a new signing key (same `kid`). While it is
    // down, the kept discovery still sends the browser there.
    let port = url::Url::parse(&idp.issuer).unwrap().port().unwrap();
    drop(idp);
    let r = Browser::new()
        .send(Method::GET, &authorize_url(&app, &selector, APP_CALLBACK), None)
        .await;
    assert!(
        r.status().is_redirection(),
        "{}: {}",
        r.status(),
        r.text().await.unwrap()
    );
    let idp = start_idp_on(&format!("{}/sso/oidc/callback", app.base), port).await;

    // The ID token is signed with the new key: the kept keys fail it, the fetched ones pass.
    let mut browser = Browser::new();
    let callback = sign_in_at_idp(&mut browser, &app, &idp, &selector).await;
    let code = back_to_app(&mut browser, &app, &callback).await;
    let (s, t) = token(&app, &code, &app.key).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["profile"]["email"], "ann.lee@acme.com");
}

#[tokio::test]
async fn two_concurrent_token_requests_for_one_code_get_exactly_one_access_token() {
    let (app, idp, _, conn_id) = setup().await;
    let mut browser = Browser::new();
    let callback = sign_in_at_idp(&mut browser, &app, &idp, &format!("connection={conn_id}")).await;
    let code = back_to_app(&mut browser, &app, &callback).await;
    let (a, b) = tokio::join!(token(&app, &code, &app.key), token(&app, &code, &app.key));
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::BAD_REQUEST], "{} / {}", a.1, b.1);
    let (n,): (i64,) = sqlx::query_as("select count(*) from sso_access_token")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, 1, "one access token");
    // An unknown code issues nothing.
    let (s, body) = token(&app, "not-a-code", &app.key).await;
    assert_error(s, &body, StatusCode::BAD_REQUEST, "invalid_grant", "unknown code");
    let (n,): (i64,) = sqlx::query_as("select count(*) from sso_access_token")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, 1, "still one access token");
}

#[tokio::test]
async fn an_identity_provider_answer_holding_a_nul_gets_an_error_page_and_no_code() {
    let (app, idp, _, conn_id) = setup().await;
    let mut browser = Browser::new();
    let start = authorize_url(&app, &format!("connection={conn_id}"), APP_CALLBACK);
    let callback = sign_in_as(&mut browser, &app, &idp, &start, "nul\u{0}ed@acme.com").await;
    let r = browser.send(Method::GET, &callback, None).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.headers().get(LOCATION).is_none());
    assert!(r.text().await.unwrap().contains("profile_invalid"));
    let (n,): (i64,) = sqlx::query_as("select count(*) from sso_code")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

/// The hosted sign-in's start of an SSO sign-in with `connection_id`.
fn hosted_url(app: &TestApp, conn_id: &str) -> String {
    let mut u = url::Url::parse(&format!("{}/user_management/authorize", app.base)).unwrap();
    u.query_pairs_mut()
        .append_pair("client_id", &app.client_id())
        .append_pair("redirect_uri", APP_CALLBACK)
        .append_pair("response_type", "code")
        .append_pair("connection_id", conn_id);
    u.to_string()
}

#[tokio::test]
async fn hosted_sso_vouches_only_for_emails_at_domains_the_organization_verified() {
    // Acme verified acme.com and runs the IdP: it could assert any address at all.
    let (app, idp, org_id, conn_id) = setup().await;
    let (s, victim) = app
        .post(
            "/user_management/users",
            json!({ "email": "victim@other.example", "password": "correct horse battery staple" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{victim}");
    let victim_id = victim["id"].as_str().unwrap();

    // An existing account at a domain Acme has not verified: refused with a page, nothing changes.
    let mut browser = Browser::new();
    let callback = sign_in_as(
        &mut browser,
        &app,
        &idp,
        &hosted_url(&app, &conn_id),
        "victim@other.example",
    )
    .await;
    let r = browser.send(Method::GET, &callback, None).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers().get(LOCATION).is_none());
    assert!(r.text().await.unwrap().contains("cannot sign in to it"));
    let (_, user) = app.get(&format!("/user_management/users/{victim_id}")).await;
    assert_eq!(user["email_verified"], false, "{user}");
    let (_, members) = app
        .get(&format!(
            "/user_management/organization_memberships?user_id={victim_id}"
        ))
        .await;
    assert_eq!(members["data"].as_array().unwrap().len(), 0, "{members}");

    // A new address at such a domain: signed up unverified, a plain member of Acme.
    let mut browser = Browser::new();
    let callback = sign_in_as(
        &mut browser,
        &app,
        &idp,
        &hosted_url(&app, &conn_id),
        "newbie@other.example",
    )
    .await;
    back_to_app(&mut browser, &app, &callback).await;
    let (_, users) = app.get("/user_management/users?email=newbie%40other.example").await;
    let newbie = &users["data"][0];
    assert_eq!(newbie["email_verified"], false, "{users}");
    let (_, members) = app
        .get(&format!(
            "/user_management/organization_memberships?user_id={}",
            newbie["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(members["data"][0]["organization_id"], org_id.as_str(), "{members}");

    // An address at acme.com: the account is verified by the sign-in.
    let mut browser = Browser::new();
    let callback = sign_in_as(
        &mut browser,
        &app,
        &idp,
        &hosted_url(&app, &conn_id),
        "ann.lee@acme.com",
    )
    .await;
    back_to_app(&mut browser, &app, &callback).await;
    let (_, users) = app.get("/user_management/users?email=ann.lee%40acme.com").await;
    assert_eq!(users["data"][0]["email_verified"], true, "{users}");
}

#[tokio::test]
async fn the_organization_names_its_active_connection_and_a_wrong_client_secret_gets_no_profile() {
    let (app, idp, org_id, _) = setup().await;
    let mut browser = Browser::new();
    let callback = sign_in_at_idp(&mut browser, &app, &idp, &format!("organization={org_id}")).await;
    let r = browser.send(Method::GET, &callback, None).await;
    let back = Browser::location(&r, &app.base);
    let code = query(&back, "code").expect("a code");
    let (s, b) = token(&app, &code, "sk_wrong").await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "invalid_client", "wrong client secret");
    // The refused attempt did not spend the code.
    let (s, t) = token(&app, &code, &app.key).await;
    assert_eq!(s, StatusCode::OK, "{t}");
}

#[tokio::test]
async fn bad_authorize_requests_get_an_error_page_and_never_a_redirect() {
    let (app, _idp, _org_id, conn_id) = setup().await;
    // An organization that only claims a domain (pending) routes nobody there, even with an
    // active connection.
    let pending = app
        .create_organization("Claimer", json!([{ "domain": "claimed.example", "state": "pending" }]))
        .await;
    let (s, c) = app
        .post(
            "/connections",
            json!({ "organization_id": pending["id"], "oidc_options": {
                "discovery_endpoint": "https://idp.claimer.example/.well-known/openid-configuration",
                "client_id": "kl", "client_secret": "s" } }),
        )
        .await;
    assert_eq!((s, c["state"].clone()), (StatusCode::CREATED, json!("active")), "{c}");
    let browser = Browser::new();
    let cases = [
        (
            authorize_url(&app, "domain=claimed.example", APP_CALLBACK),
            "connection_not_found",
        ),
        (
            authorize_url(&app, "domain=not a domain", APP_CALLBACK),
            "connection_not_found",
        ),
        (
            authorize_url(&app, &format!("connection={conn_id}"), "https://evil.example.com/cb"),
            "invalid_redirect_uri",
        ),
        (
            authorize_url(&app, &format!("connection={conn_id}"), "http://127.0.0.1:9/other"),
            "invalid_redirect_uri",
        ),
        (
            authorize_url(&app, "connection=conn_01H00000000000000000000000", APP_CALLBACK),
            "connection_not_found",
        ),
        (
            authorize_url(&app, "organization=org_01H00000000000000000000000", APP_CALLBACK),
            "connection_not_found",
        ),
        (
            authorize_url(&app, "provider=GoogleOAuth", APP_CALLBACK),
            "provider_unsupported",
        ),
        (
            authorize_url(&app, &format!("connection={conn_id}"), APP_CALLBACK)
                .replace("response_type=code", "response_type=token"),
            "invalid_response_type",
        ),
        (
            format!("{}/sso/oidc/callback?state=never-issued&code=x", app.base),
            "invalid_state",
        ),
    ];
    for (url, code) in cases {
        let r = browser.http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{url}");
        assert!(r.headers().get(LOCATION).is_none(), "{url}: no redirect");
        let csp = r
            .headers()
            .get("content-security-policy")
            .map(|v| v.to_str().unwrap().to_string());
        assert!(
            csp.is_some_and(|c| c.contains("default-src 'none'")),
            "{url}: the hosted pages' headers"
        );
        let body = r.text().await.unwrap();
        assert!(body.contains(code), "{url}: {body}");
        assert!(body.contains(r#"<html lang="en">"#), "{url}: {body}");
    }
    // A deactivated connection signs nobody in.
    let (s, _) = app
        .patch(&format!("/connections/{conn_id}"), json!({ "state": "inactive" }))
        .await;
    assert_eq!(s, StatusCode::OK);
    let r = browser
        .http
        .get(authorize_url(&app, &format!("connection={conn_id}"), APP_CALLBACK))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("connection_inactive"));
}

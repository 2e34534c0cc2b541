//! The SAML sign-in against a real SAML IdP (npm `samlify`, tests/idp/saml, on loopback), with
//! signatures checked by Debian's `xmlsec1`: authorize → the IdP's login form → its posted response
//! at keyledger's ACS → the application's redirect_uri with a code → `POST /sso/token`; our SP
//! metadata; and the attacks: unsigned, re-signed, tampered, wrapped, expired, wrong audience,
//! recipient or issuer, a replayed response, another connection's ACS, an IdP-initiated post.
//! The same door from the hosted sign-in: a user signed up by SSO, a member of the connection's
//! organization, and an authorization code the application exchanges.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{NodeIdp, TestApp};
use crate::sso::{query, Browser};

const APP_CALLBACK: &str = "http://127.0.0.1:9/app/callback";

type Idp = NodeIdp;

async fn start_idp() -> Idp {
    NodeIdp::start("saml", "KEYLEDGER_TEST_SAML_IDP", &["--port", "0"]).await
}

/// A server with the application's callback registered, the IdP, an organization (domain
/// acme.com, verified) and an active SAML connection to the IdP.
async fn setup() -> (TestApp, Idp, String, String) {
    let app = TestApp::spawn_with(|c| c.auth.redirect_uris = vec![APP_CALLBACK.into()]).await;
    let idp = start_idp().await;
    let org = app
        .create_organization("Acme", json!([{ "domain": "acme.com", "state": "verified" }]))
        .await;
    let org_id = org["id"].as_str().unwrap().to_string();
    let (s, c) = app
        .post(
            "/connections",
            json!({ "organization_id": org_id, "saml_options": {
                "idp_entity_id": idp.get("entity_id"), "idp_sso_url": idp.get("sso_url"),
                "idp_signing_certs": [idp.get("certificate")] } }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    assert_eq!(c["state"], "active", "{c}");
    (app, idp, org_id, c["id"].as_str().unwrap().to_string())
}

fn sso_authorize(app: &TestApp, connection: &str) -> String {
    let mut u = url::Url::parse(&format!("{}/sso/authorize", app.base)).unwrap();
    u.query_pairs_mut()
        .append_pair("connection", connection)
        .append_pair("client_id", &app.client_id())
        .append_pair("redirect_uri", APP_CALLBACK)
        .append_pair("response_type", "code")
        .append_pair("state", "app-state-1");
    u.to_string()
}

/// The hidden and visible fields of the first form of an HTML page, and its action.
fn form_of(html: &str) -> (String, Vec<(String, String)>) {
    let action = html
        .split("action=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a form action")
        .replace("&amp;", "&");
    let mut fields = Vec::new();
    for input in html.split("<input").skip(1) {
        let attr = |name: &str| {
            input
                .split(&format!("{name}=\""))
                .nth(1)
                .and_then(|s| s.split('"').next())
                .map(unescape)
        };
        if let (Some(n), Some(v)) = (attr("name"), attr("value")) {
            fields.push((n, v));
        }
    }
    (action, fields)
}

fn unescape(s: &str) -> String {
    let mut out = s.to_string();
    for (from, to) in [
        ("&quot;", "\""),
        ("&#34;", "\""),
        ("&#39;", "'"),
        ("&lt;", "<"),
        ("&gt;", ">"),
        ("&#38;", "&"),
        ("&amp;", "&"),
    ] {
        out = out.replace(from, to);
    }
    out
}

/// From keyledger's redirect to the IdP to the IdP's page that posts to the ACS: (ACS URL, fields).
async fn idp_answer(b: &mut Browser, idp_url: &str, email: &str, variant: &str) -> (String, Vec<(String, String)>) {
    let login = b.send(Method::GET, idp_url, None).await;
    assert_eq!(login.status(), StatusCode::OK);
    let page = login.text().await.unwrap();
    let (_, mut fields) = form_of(&page);
    let base = url::Url::parse(idp_url).unwrap();
    for (k, v) in fields.iter_mut() {
        if k == "variant" {
            *v = variant.to_string();
        }
    }
    fields.push(("email".into(), email.into()));
    fields.push(("password".into(), "idp-password".into()));
    let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let posted = b
        .send(Method::POST, base.join("/sso/login").unwrap().as_str(), Some(&pairs))
        .await;
    assert_eq!(posted.status(), StatusCode::OK);
    form_of(&posted.text().await.unwrap())
}

async fn post_acs(b: &mut Browser, acs: &str, fields: &[(String, String)]) -> reqwest::Response {
    let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    b.send(Method::POST, acs, Some(&pairs)).await
}

/// Authorize → the IdP's answer for `variant`, ready to post.
async fn signed_in_at_idp(
    app: &TestApp,
    conn: &str,
    email: &str,
    variant: &str,
) -> (Browser, String, Vec<(String, String)>) {
    let mut b = Browser::new();
    let r = b.send(Method::GET, &sso_authorize(app, conn), None).await;
    assert!(r.status().is_redirection(), "{:?}", r.text().await);
    let to_idp = Browser::location(&r, &app.base);
    assert!(query(&to_idp, "SAMLRequest").is_some() && query(&to_idp, "RelayState").is_some());
    let (acs, fields) = idp_answer(&mut b, &to_idp, email, variant).await;
    (b, acs, fields)
}

async fn token(app: &TestApp, code: &str) -> (StatusCode, Value) {
    app.request_with_key(
        Method::POST,
        "/sso/token",
        Some(json!({ "client_id": app.client_id(), "client_secret": app.key,
                     "grant_type": "authorization_code", "code": code })),
        None,
    )
    .await
}

#[tokio::test]
async fn a_saml_sign_in_goes_through_the_idp_and_ends_in_a_profile_for_the_application() {
    let (app, _idp, org, conn) = setup().await;
    let (mut b, acs, fields) = signed_in_at_idp(&app, &conn, "jane.doe@acme.com", "normal").await;
    assert_eq!(
        acs,
        format!("{}/sso/saml/acs/{conn}", app.base),
        "the ACS of the connection"
    );
    let r = post_acs(&mut b, &acs, &fields).await;
    assert!(r.status().is_redirection(), "{:?}", r.text().await);
    let back = Browser::location(&r, &app.base);
    assert!(back.starts_with(APP_CALLBACK), "{back}");
    assert_eq!(query(&back, "state").as_deref(), Some("app-state-1"));
    let code = query(&back, "code").expect("a code");
    let (s, body) = token(&app, &code).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let p = &body["profile"];
    assert_eq!(
        (&p["email"], &p["first_name"], &p["last_name"]),
        (&json!("jane.doe@acme.com"), &json!("Jane"), &json!("Doe"))
    );
    assert_eq!(
        (&p["connection_id"], &p["organization_id"]),
        (&json!(conn), &json!(org))
    );
    assert_eq!(p["connection_type"], "GenericSAML");
    assert_eq!(p["raw_attributes"]["email"], "jane.doe@acme.com");
    // The code is single use; the posted response too (its RelayState is spent).
    assert_eq!(token(&app, &code).await.0, StatusCode::BAD_REQUEST);
    let again = post_acs(&mut b, &acs, &fields).await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    assert!(
        again.headers().get("location").is_none(),
        "never a redirect on a refusal"
    );
}

#[tokio::test]
async fn forged_or_misaddressed_responses_are_refused_at_the_acs_with_their_reason() {
    let (app, _idp, _org, conn) = setup().await;
    for (variant, code) in [
        ("unsigned", "saml_unsigned"),
        ("resigned", "saml_bad_signature"),
        ("tampered", "saml_bad_signature"),
        ("wrapped", "saml_assertion_count"),
        ("expired", "saml_expired"),
        ("not_yet_valid", "saml_not_yet_valid"),
        ("wrong_audience", "saml_audience"),
        ("wrong_recipient", "saml_recipient"),
        ("wrong_issuer", "saml_issuer"),
    ] {
        let (mut b, acs, fields) = signed_in_at_idp(&app, &conn, "jane.doe@acme.com", variant).await;
        let r = post_acs(&mut b, &acs, &fields).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{variant}");
        assert!(r.headers().get("location").is_none(), "{variant}: no redirect");
        let page = r.text().await.unwrap();
        assert!(page.contains(code), "{variant}: {page}");
    }
    // Nothing reached the application: no code was issued.
    let (n,): (i64,) = sqlx::query_as("select count(*) from sso_code")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn a_response_posted_to_another_connections_acs_or_without_our_state_is_refused() {
    let (app, idp, org, conn) = setup().await;
    let (s, other) = app
        .post(
            "/connections",
            json!({ "organization_id": org, "name": "Second", "saml_options": {
                "idp_entity_id": idp.get("entity_id"), "idp_sso_url": idp.get("sso_url"),
                "idp_signing_certs": [idp.get("certificate")] } }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{other}");
    let other_acs = format!("{}/sso/saml/acs/{}", app.base, other["id"].as_str().unwrap());
    let (mut b, _, fields) = signed_in_at_idp(&app, &conn, "jane.doe@acme.com", "normal").await;
    let r = post_acs(&mut b, &other_acs, &fields).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("invalid_state"));
    // An IdP-initiated (unsolicited) post: no RelayState of ours.
    let acs = format!("{}/sso/saml/acs/{conn}", app.base);
    let mut b = Browser::new();
    let mut u = url::Url::parse(&format!(
        "{}/idp-initiated",
        idp.get("sso_url").trim_end_matches("/sso")
    ))
    .unwrap();
    u.query_pairs_mut()
        .append_pair("acs", &acs)
        .append_pair("audience", &format!("{}/sso/saml/metadata/{conn}", app.base))
        .append_pair("email", "jane.doe@acme.com");
    let page = b.send(Method::GET, u.as_str(), None).await.text().await.unwrap();
    let (action, fields) = form_of(&page);
    assert_eq!(action, acs);
    let r = post_acs(&mut b, &action, &fields).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Garbage and an empty post.
    let r = post_acs(
        &mut b,
        &acs,
        &[("SAMLResponse".into(), "%%%".into()), ("RelayState".into(), "x".into())],
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = b.send(Method::POST, &acs, Some(&[])).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn our_sp_metadata_names_the_connections_entity_id_and_acs() {
    let (app, _idp, _org, conn) = setup().await;
    let r = reqwest::get(format!("{}/sso/saml/metadata/{conn}", app.base))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let xml = r.text().await.unwrap();
    assert!(
        xml.contains(&format!("entityID=\"{}/sso/saml/metadata/{conn}\"", app.base)),
        "{xml}"
    );
    assert!(
        xml.contains(&format!("Location=\"{}/sso/saml/acs/{conn}\"", app.base)),
        "{xml}"
    );
    let r = reqwest::get(format!("{}/sso/saml/metadata/conn_01UNKNOWN", app.base))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_hosted_sign_in_sends_an_sso_only_domain_to_its_idp_and_signs_the_user_up_as_a_member() {
    let (app, _idp, org, _conn) = setup().await;
    let (s, b) = app
        .put(
            &format!("/organizations/{org}/policy"),
            json!({ "authentication": "sso_required", "default_role": "member" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let mut browser = Browser::new();
    let mut u = url::Url::parse(&format!("{}/user_management/authorize", app.base)).unwrap();
    u.query_pairs_mut()
        .append_pair("client_id", &app.client_id())
        .append_pair("redirect_uri", APP_CALLBACK)
        .append_pair("response_type", "code")
        .append_pair("state", "hosted-1");
    let page = browser.send(Method::GET, u.as_str(), None).await.text().await.unwrap();
    let (action, mut fields) = form_of(&page);
    fields.retain(|(k, _)| k == "csrf_token");
    fields.push(("email".into(), "new.person@acme.com".into()));
    fields.push(("password".into(), "irrelevant-password-1".into()));
    let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = browser
        .send(Method::POST, &format!("{}{}", app.base, action), Some(&pairs))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.unwrap();
    // The page that moves on to the IdP (a form's redirect could not leave the form-action).
    let to_idp = unescape(
        page.split("href=\"")
            .filter_map(|s| s.split('"').next())
            .find(|h| h.contains("SAMLRequest"))
            .expect("a link to the IdP"),
    );
    assert!(page.contains("http-equiv=\"refresh\""), "{page}");
    let (acs, fields) = idp_answer(&mut browser, &to_idp, "new.person@acme.com", "normal").await;
    let r = post_acs(&mut browser, &acs, &fields).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{:?}", r.text().await);
    let back = Browser::location(&r, &app.base);
    assert_eq!(query(&back, "state").as_deref(), Some("hosted-1"));
    let code = query(&back, "code").expect("a code");
    let (s, auth) = app
        .request_with_key(
            Method::POST,
            "/user_management/authenticate",
            Some(
                json!({ "grant_type": "authorization_code", "client_id": app.client_id(),
                         "client_secret": app.key, "code": code }),
            ),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{auth}");
    assert_eq!(auth["user"]["email"], "new.person@acme.com");
    assert_eq!(auth["user"]["email_verified"], true, "SSO proves the email");
    assert_eq!(auth["organization_id"], json!(org));
    assert_eq!(auth["authentication_method"], "SSO");
    let user_id = auth["user"]["id"].as_str().unwrap();
    let signed_up: Vec<(Value,)> =
        sqlx::query_as("select payload from event where aggregate_id = $1 and event_type = 'UserSignedUp'")
            .bind(user_id)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(signed_up.len(), 1, "stored as signed up");
    assert_eq!(signed_up[0].0["UserSignedUp"]["method"], "sso", "{:?}", signed_up[0].0);
    let (s, list) = app
        .get(&format!(
            "/user_management/organization_memberships?user_id={user_id}&organization_id={org}"
        ))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list["data"][0]["role"]["slug"], "member");
}

#[tokio::test]
async fn the_admin_portal_tests_a_connection_with_a_real_sign_in_and_shows_what_came_back() {
    let (app, _idp, org, conn) = setup().await;
    let (s, link) = app
        .post("/portal/generate_link", json!({ "organization": org, "intent": "sso" }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{link}");
    let mut b = Browser::new();
    let launched = b.send(Method::GET, link["link"].as_str().unwrap(), None).await;
    assert_eq!(launched.status(), StatusCode::SEE_OTHER);
    let page = b
        .send(
            Method::GET,
            &format!("{}/portal/sso/connections/{conn}", app.base),
            None,
        )
        .await
        .text()
        .await
        .unwrap();
    let test_link = unescape(
        page.split("href=\"")
            .filter_map(|s| s.split('"').next())
            .find(|h| h.contains("/sso/authorize"))
            .unwrap_or_else(|| panic!("a test link on {page}")),
    );
    let r = b.send(Method::GET, &test_link, None).await;
    assert!(r.status().is_redirection(), "{:?}", r.text().await);
    let to_idp = Browser::location(&r, &app.base);
    let (acs, fields) = idp_answer(&mut b, &to_idp, "it.admin@acme.com", "normal").await;
    let r = post_acs(&mut b, &acs, &fields).await;
    let back = Browser::location(&r, &app.base);
    assert!(
        back.starts_with(&format!("{}/portal/sso/test_result", app.base)),
        "{back}"
    );
    let result = b.send(Method::GET, &back, None).await;
    assert_eq!(result.status(), StatusCode::OK);
    let html = result.text().await.unwrap();
    assert!(html.contains("it.admin@acme.com") && html.contains(&conn), "{html}");
    // Shown once: the code is spent.
    let again = b.send(Method::GET, &back, None).await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    // Without the portal session, no profile.
    let r = Browser::new().send(Method::GET, &back, None).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

//! Hosted sign-in (AuthKit pages) over HTTP, as a browser without JavaScript drives it: a
//! cookie jar of one cookie, forms posted with their CSRF token, redirects read, not followed.
//! Then the code is exchanged on `POST /user_management/authenticate` (`authorization_code`).

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::TestApp;
use crate::pages::{Browser, Page};

const PASSWORD: &str = "correct horse battery staple";
const CALLBACK: &str = "http://127.0.0.1:9/callback";
/// RFC 7636, appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// The hosted pages' last step: a redirect to the application's callback.
trait Callback {
    /// The `code` and `state` of a page redirecting to the callback.
    fn code(&self) -> (String, Option<String>);
}

impl Callback for Page {
    fn code(&self) -> (String, Option<String>) {
        assert_eq!(self.status, StatusCode::SEE_OTHER, "{}", self.body);
        let to = url::Url::parse(&self.redirect()).unwrap();
        assert!(to.as_str().starts_with(CALLBACK), "{to}");
        let get = |k: &str| to.query_pairs().find(|(n, _)| n == k).map(|(_, v)| v.to_string());
        (get("code").expect("a code"), get("state"))
    }
}

fn authorize_url(app: &TestApp, extra: &[(&str, &str)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("client_id", &app.client_id())
        .append_pair("redirect_uri", CALLBACK)
        .append_pair("response_type", "code")
        .append_pair("state", "st-42");
    for (k, v) in extra {
        q.append_pair(k, v);
    }
    format!("/user_management/authorize?{}", q.finish())
}

async fn register(app: &TestApp, uri: &str) -> (StatusCode, Value) {
    app.post("/user_management/redirect_uris", json!({ "uri": uri })).await
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

async fn exchange(app: &TestApp, body: Value) -> (StatusCode, Value) {
    app.request_with_key(Method::POST, "/user_management/authenticate", Some(body), None)
        .await
}

fn code_grant(app: &TestApp, code: &str) -> Value {
    json!({
        "grant_type": "authorization_code",
        "client_id": app.client_id(),
        "client_secret": app.key,
        "code": code,
        "ip_address": "203.0.113.9",
        "user_agent": "tests/1.0",
    })
}

async fn sessions_of(app: &TestApp, user_id: &str) -> Vec<Value> {
    app.all_pages(&format!("/user_management/users/{user_id}/sessions"))
        .await
}

#[tokio::test]
async fn a_password_sign_in_through_the_pages_ends_in_a_code_that_authenticate_exchanges_exactly_once() {
    let app = TestApp::spawn().await;
    register(&app, CALLBACK).await;
    let user = user_with_password(&app, "ann@example.com", true).await;
    let user_id = user["id"].as_str().unwrap();
    let mut browser = Browser::new(&app);

    let sign_in = browser
        .get(&authorize_url(&app, &[("login_hint", "ann@example.com")]))
        .await;
    assert_eq!(sign_in.status, StatusCode::OK, "{}", sign_in.body);
    assert!(
        sign_in.body.contains(r#"value="ann@example.com""#),
        "login_hint prefills the email"
    );
    assert!(sign_in.body.contains(r#"<label for="password">"#));

    // A wrong password: the page again, the error tied to the password field, no code.
    let wrong = browser
        .post(
            "/user_management/authorize/password",
            &[
                ("csrf_token", &sign_in.csrf()),
                ("email", "ann@example.com"),
                ("password", "nope"),
            ],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    assert!(wrong.location().is_none());
    assert!(
        wrong.body.contains(r#"aria-describedby="password-error""#),
        "{}",
        wrong.body
    );
    assert!(wrong.body.contains("Incorrect email or password."));

    let done = browser
        .post(
            "/user_management/authorize/password",
            &[
                ("csrf_token", &wrong.csrf()),
                ("email", "ann@example.com"),
                ("password", PASSWORD),
            ],
        )
        .await;
    let (code, state) = done.code();
    assert_eq!(state.as_deref(), Some("st-42"));
    assert!(browser.cookie.is_none(), "the flow's cookie is cleared once it is done");
    assert!(
        sessions_of(&app, user_id).await.is_empty(),
        "no session before the exchange"
    );

    let (s, body) = exchange(&app, code_grant(&app, &code)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["id"], user_id);
    assert_eq!(body["authentication_method"], "Password");
    assert!(body["refresh_token"].is_string() && body["access_token"].is_string());
    let claims = app
        .verify_access_token(body["access_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(claims["sub"], user_id);
    let sessions = sessions_of(&app, user_id).await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["ip_address"], "203.0.113.9");
    assert_eq!(sessions[0]["auth_method"], "password");
    let succeeded = app.all_events("&events=authentication.password_succeeded").await;
    assert_eq!(succeeded.len(), 1, "{succeeded:?}");

    // Replayed: refused, and no second session.
    let (s, body) = exchange(&app, code_grant(&app, &code)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], "invalid_grant");
    assert_eq!(sessions_of(&app, user_id).await.len(), 1);

    // An unknown code, a wrong client id or secret.
    let (s, body) = exchange(&app, code_grant(&app, "not-a-code")).await;
    assert_eq!(
        (s, body["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_grant"))
    );
    let mut wrong_client = code_grant(&app, "whatever");
    wrong_client["client_id"] = json!("client_01HXYZ123456789ABCDEFGHJK");
    let (s, _) = exchange(&app, wrong_client).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let mut wrong_secret = code_grant(&app, "whatever");
    wrong_secret["client_secret"] = json!("sk_not_a_key");
    let (s, _) = exchange(&app, wrong_secret).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_expired_code_is_refused_and_starts_no_session() {
    let app = TestApp::spawn().await;
    register(&app, CALLBACK).await;
    let user = user_with_password(&app, "exp@example.com", true).await;
    let mut browser = Browser::new(&app);
    let page = browser.get(&authorize_url(&app, &[])).await;
    let done = browser
        .post(
            "/user_management/authorize/password",
            &[
                ("csrf_token", &page.csrf()),
                ("email", "exp@example.com"),
                ("password", PASSWORD),
            ],
        )
        .await;
    let (code, _) = done.code();
    sqlx::query("update authorization_code set expires_at = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .unwrap();
    let (s, body) = exchange(&app, code_grant(&app, &code)).await;
    assert_eq!(
        (s, body["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_grant"))
    );
    assert!(sessions_of(&app, user["id"].as_str().unwrap()).await.is_empty());
}

#[tokio::test]
async fn a_pkce_code_is_exchanged_with_its_verifier_by_a_public_client_and_refused_with_a_wrong_one() {
    let app = TestApp::spawn().await;
    register(&app, CALLBACK).await;
    let user = user_with_password(&app, "pk@example.com", true).await;
    let user_id = user["id"].as_str().unwrap();
    let pkce = [("code_challenge", CHALLENGE), ("code_challenge_method", "S256")];

    let sign_in = |app: &TestApp| {
        let url = authorize_url(app, &pkce);
        let mut browser = Browser::new(app);
        async move {
            let page = browser.get(&url).await;
            assert_eq!(page.status, StatusCode::OK, "{}", page.body);
            browser
                .post(
                    "/user_management/authorize/password",
                    &[
                        ("csrf_token", &page.csrf()),
                        ("email", "pk@example.com"),
                        ("password", PASSWORD),
                    ],
                )
                .await
                .code()
                .0
        }
    };
    let public = |code: &str, verifier: Option<&str>| {
        let mut b = json!({ "grant_type": "authorization_code", "client_id": app.client_id(), "code": code });
        if let Some(v) = verifier {
            b["code_verifier"] = json!(v);
        }
        b
    };

    // A wrong verifier, and no verifier at all: refused, and each spends its code.
    let code = sign_in(&app).await;
    let (s, body) = exchange(&app, public(&code, Some(&"x".repeat(43)))).await;
    assert_eq!(
        (s, body["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_grant")),
        "{body}"
    );
    let (s, _) = exchange(&app, public(&code, Some(VERIFIER))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "a refused exchange leaves the code spent");
    let code = sign_in(&app).await;
    let (s, body) = exchange(&app, code_grant(&app, &code)).await;
    assert_eq!(
        (s, body["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_grant")),
        "no verifier"
    );
    assert!(sessions_of(&app, user_id).await.is_empty());

    // The right verifier, without a client secret.
    let code = sign_in(&app).await;
    let (s, body) = exchange(&app, public(&code, Some(VERIFIER))).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["id"], user_id);
    assert_eq!(sessions_of(&app, user_id).await.len(), 1);

    // A code issued without PKCE cannot be exchanged by a public client.
    let mut browser = Browser::new(&app);
    let page = browser.get(&authorize_url(&app, &[])).await;
    let (code, _) = browser
        .post(
            "/user_management/authorize/password",
            &[
                ("csrf_token", &page.csrf()),
                ("email", "pk@example.com"),
                ("password", PASSWORD),
            ],
        )
        .await
        .code();
    let (s, _) = exchange(&app, public(&code, None)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(sessions_of(&app, user_id).await.len(), 1);
}

#[tokio::test]
async fn bad_authorize_requests_get_an_error_page_and_never_a_redirect() {
    let app = TestApp::spawn().await;
    register(&app, CALLBACK).await;
    let mut browser = Browser::new(&app);
    let client = app.client_id();
    let cases: Vec<(String, &str)> = vec![
        (
            "/user_management/authorize?response_type=code&redirect_uri=https%3A%2F%2Fevil.example.com%2Fcb".to_string()
                + "&client_id="
                + &client,
            "unregistered redirect_uri",
        ),
        (
            format!("/user_management/authorize?response_type=code&client_id={client}&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcallback%2Fmore"),
            "a path below a registered URI",
        ),
        (format!("/user_management/authorize?response_type=code&client_id={client}"), "no redirect_uri"),
        (
            authorize_url(&app, &[]).replace(&client, "client_01HXYZ123456789ABCDEFGHJK"),
            "another client_id",
        ),
        (authorize_url(&app, &[]).replace("response_type=code", "response_type=token"), "response_type token"),
        (
            authorize_url(&app, &[("code_challenge", VERIFIER), ("code_challenge_method", "plain")]),
            "plain PKCE",
        ),
        (authorize_url(&app, &[("code_challenge", CHALLENGE)]), "a challenge without its method"),
        (authorize_url(&app, &[("screen_hint", "nonsense")]), "unknown screen_hint"),
        (authorize_url(&app, &[("provider", "GoogleOAuth")]), "SSO provider not wired"),
        (authorize_url(&app, &[("connection_id", "conn_01HXYZ123456789ABCDEFGHJK")]), "SSO connection"),
        (authorize_url(&app, &[("state", "a")]) + "&state=b", "a repeated parameter"),
        // PostgreSQL cannot hold NUL: a NUL anywhere is bad input, never a 500 from the lookup.
        (
            format!("/user_management/authorize?response_type=code&client_id={client}&redirect_uri=%F4%8B%AB%9F%00"),
            "a NUL in an unregistered redirect_uri",
        ),
        (authorize_url(&app, &[]).replace("st-42", "a%00b"), "a NUL in state"),
        (authorize_url(&app, &[]) + "&x%00=1", "a NUL in a parameter's name"),
    ];
    for (url, what) in cases {
        let page = browser.get(&url).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{what}: {}", page.body);
        assert!(page.location().is_none(), "{what}: never a redirect");
        assert!(
            page.headers["content-type"].to_str().unwrap().starts_with("text/html"),
            "{what}"
        );
        assert!(page.body.contains(r#"role="alert""#), "{what}");
        assert!(browser.cookie.is_none(), "{what}: no flow started");
        page.assert_secured(what);
    }
}

#[tokio::test]
async fn forms_without_this_browsers_csrf_token_are_refused_with_403_and_sign_nobody_in() {
    let app = TestApp::spawn().await;
    register(&app, CALLBACK).await;
    user_with_password(&app, "csrf@example.com", true).await;
    let mut browser = Browser::new(&app);
    let page = browser.get(&authorize_url(&app, &[])).await;
    let token = page.csrf();
    let path = "/user_management/authorize/password";
    let creds = |t: &str| {
        [
            ("csrf_token", t.to_string()),
            ("email", "csrf@example.com".into()),
            ("password", PASSWORD.into()),
        ]
    };
    // No token, a wrong token, another flow's token.
    let mut other = Browser::new(&app);
    let other_token = other.get(&authorize_url(&app, &[])).await.csrf();
    for (t, what) in [
        ("", "no token"),
        ("AAAA", "a wrong token"),
        (other_token.as_str(), "another flow's token"),
        (token.as_str(), "the right token in a form holding a NUL"),
    ] {
        let mut fields = creds(t).to_vec();
        if what.contains("NUL") {
            fields[1].1 = "csrf@example.com\0".into();
        }
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = browser.post(path, &fields).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{what}");
        assert!(r.location().is_none(), "{what}");
        r.assert_secured(what);
    }
    // The right token without the cookie (a cross-site post).
    let fields = creds(&token);
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = Browser::new(&app).post(path, &fields).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let (n,): (i64,) = sqlx::query_as("select count(*) from authorization_code")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, 0, "nothing was issued");
    // The same browser with its token still signs in.
    browser.post(path, &fields).await.code();
}

#[tokio::test]
async fn sign_up_through_the_pages_verifies_the_email_on_a_code_page_then_redirects_with_a_code() {
    let app = TestApp::spawn().await;
    register(&app, CALLBACK).await;
    let mut browser = Browser::new(&app);
    let page = browser
        .get(&authorize_url(
            &app,
            &[("screen_hint", "sign-up"), ("login_hint", "new@example.com")],
        ))
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("Create your account"));
    for label in ["email", "password", "first-name", "last-name"] {
        assert!(page.body.contains(&format!(r#"<label for="{label}">"#)), "{label}");
    }
    // A password that is too short: the form again, with what was typed (but the password).
    let short = browser
        .post(
            "/user_management/authorize/sign_up",
            &[
                ("csrf_token", &page.csrf()),
                ("email", "new@example.com"),
                ("password", "short"),
                ("first_name", "Nia"),
            ],
        )
        .await;
    assert_eq!(short.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", short.body);
    assert!(short.body.contains(r#"value="Nia""#));
    assert!(short.body.contains(r#"aria-invalid="true""#), "{}", short.body);

    let verify = browser
        .post(
            "/user_management/authorize/sign_up",
            &[
                ("csrf_token", &short.csrf()),
                ("email", "new@example.com"),
                ("password", PASSWORD),
                ("first_name", "Nia"),
                ("last_name", "Okafor"),
            ],
        )
        .await;
    assert_eq!(verify.status, StatusCode::OK, "{}", verify.body);
    assert!(verify.body.contains("Verify your email"), "{}", verify.body);
    // A wrong code: the page again with the error on the code field.
    let wrong = browser
        .post(
            "/user_management/authorize/email_verification",
            &[("csrf_token", &verify.csrf()), ("code", "000000")],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST, "{}", wrong.body);
    assert!(wrong.body.contains(r#"aria-describedby="code-error""#));
    let code = app.sent_code("email_verification", "new@example.com").await;
    let done = browser
        .post(
            "/user_management/authorize/email_verification",
            &[("csrf_token", &wrong.csrf()), ("code", &code)],
        )
        .await;
    let (auth_code, _) = done.code();
    let (s, body) = exchange(&app, code_grant(&app, &auth_code)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["email"], "new@example.com");
    assert_eq!(body["user"]["first_name"], "Nia");
    assert_eq!(body["user"]["email_verified"], true);

    // Signing up again with the same email: the form with the error on the email.
    let mut again = Browser::new(&app);
    let page = again.get(&authorize_url(&app, &[("screen_hint", "sign-up")])).await;
    let taken = again
        .post(
            "/user_management/authorize/sign_up",
            &[
                ("csrf_token", &page.csrf()),
                ("email", "new@example.com"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(taken.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        taken.body.contains(r#"aria-describedby="email-error""#),
        "{}",
        taken.body
    );
}

#[tokio::test]
async fn magic_auth_through_the_pages_signs_in_with_the_emailed_code() {
    let app = TestApp::spawn().await;
    register(&app, CALLBACK).await;
    let user = user_with_password(&app, "magic@example.com", false).await;
    let mut browser = Browser::new(&app);
    let page = browser.get(&authorize_url(&app, &[])).await;
    let sent = browser
        .post(
            "/user_management/authorize/magic_auth",
            &[("csrf_token", &page.csrf()), ("magic_email", "magic@example.com")],
        )
        .await;
    assert_eq!(sent.status, StatusCode::OK, "{}", sent.body);
    assert!(sent.body.contains("Check your email") && sent.body.contains("magic@example.com"));
    let bad = browser
        .post(
            "/user_management/authorize/magic_auth/code",
            &[("csrf_token", &sent.csrf()), ("code", "000000")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let code = app.sent_code("magic_auth", "magic@example.com").await;
    let done = browser
        .post(
            "/user_management/authorize/magic_auth/code",
            &[("csrf_token", &bad.csrf()), ("code", &code)],
        )
        .await;
    let (auth_code, _) = done.code();
    let (s, body) = exchange(&app, code_grant(&app, &auth_code)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["id"], user["id"]);
    assert_eq!(body["authentication_method"], "MagicAuth");
    // An invalid email for a code: the sign-in page with the error on that field.
    let mut other = Browser::new(&app);
    let page = other.get(&authorize_url(&app, &[])).await;
    let invalid = other
        .post(
            "/user_management/authorize/magic_auth",
            &[("csrf_token", &page.csrf()), ("magic_email", "not an email")],
        )
        .await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        invalid.body.contains(r#"aria-describedby="magic-email-error""#),
        "{}",
        invalid.body
    );
}

#[tokio::test]
async fn a_member_of_several_organizations_picks_one_on_a_page_and_the_session_lands_in_it() {
    let app = TestApp::spawn().await;
    register(&app, CALLBACK).await;
    let user = user_with_password(&app, "multi@example.com", true).await;
    let user_id = user["id"].as_str().unwrap();
    let one = app.create_organization("One", json!([])).await;
    let two = app.create_organization("Two", json!([])).await;
    app.create_membership(user_id, one["id"].as_str().unwrap(), None).await;
    app.create_membership(user_id, two["id"].as_str().unwrap(), None).await;
    let mut browser = Browser::new(&app);
    let page = browser.get(&authorize_url(&app, &[])).await;
    let pick = browser
        .post(
            "/user_management/authorize/password",
            &[
                ("csrf_token", &page.csrf()),
                ("email", "multi@example.com"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(pick.status, StatusCode::OK, "{}", pick.body);
    assert!(pick.body.contains("Choose an organization"));
    assert!(pick.body.contains("<legend>") && pick.body.contains(">Two</label>"));
    // Not one of the choices: the page again.
    let refused = browser
        .post(
            "/user_management/authorize/organization",
            &[
                ("csrf_token", &pick.csrf()),
                ("organization_id", "org_01HXYZ123456789ABCDEFGHJK"),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.location().is_none());
    let two_id = two["id"].as_str().unwrap();
    let done = browser
        .post(
            "/user_management/authorize/organization",
            &[("csrf_token", &refused.csrf()), ("organization_id", two_id)],
        )
        .await;
    let (code, _) = done.code();
    let (s, body) = exchange(&app, code_grant(&app, &code)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["organization_id"], two_id);
    let claims = app
        .verify_access_token(body["access_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(claims["org_id"], two_id);
}

#[tokio::test]
async fn every_hosted_answer_carries_the_security_headers() {
    let app = TestApp::spawn().await;
    register(&app, CALLBACK).await;
    user_with_password(&app, "hdr@example.com", true).await;
    let mut browser = Browser::new(&app);
    let sign_in = browser.get(&authorize_url(&app, &[])).await;
    sign_in.assert_secured("sign-in page");
    let csp = sign_in.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("form-action 'self' http://127.0.0.1:9"), "{csp}");
    assert!(sign_in.body.contains(r#"href="/user_management/authorize/hosted.css""#));
    let css = browser.get("/user_management/authorize/hosted.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(css.headers["content-type"].to_str().unwrap().starts_with("text/css"));
    css.assert_secured("css");
    let sign_up = browser.get("/user_management/authorize/sign_up").await;
    assert_eq!(sign_up.status, StatusCode::OK);
    sign_up.assert_secured("sign-up page");
    browser
        .get("/user_management/authorize/sign_in")
        .await
        .assert_secured("sign-in link");
    let done = browser
        .post(
            "/user_management/authorize/password",
            &[
                ("csrf_token", &sign_in.csrf()),
                ("email", "hdr@example.com"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    done.assert_secured("the redirect");
    // With the flow over, its pages say so.
    let gone = browser.get("/user_management/authorize/sign_in").await;
    assert_eq!(gone.status, StatusCode::FORBIDDEN);
    gone.assert_secured("expired page");
}

#[tokio::test]
async fn redirect_uris_are_registered_once_validated_listed_and_need_the_api_key() {
    let app = TestApp::spawn().await;
    let (s, first) = register(&app, "https://app.example.com/callback").await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    assert_eq!(first["object"], "redirect_uri");
    assert_eq!(first["default"], true);
    assert!(first["id"].as_str().unwrap().starts_with("redirect_uri_"));
    let (s, second) = register(&app, CALLBACK).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(second["default"], false);

    let (s, body) = register(&app, "https://app.example.com/callback").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body["message"],
        "Redirect URI 'https://app.example.com/callback' already exists."
    );
    for bad in [
        "http://app.example.com/callback",
        "not a url",
        "https://app.example.com/cb#x",
        "javascript:alert(1)",
    ] {
        let (s, body) = register(&app, bad).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert_eq!(body["errors"][0]["field"], "uri", "{bad}");
    }
    let (s, body) = app.post("/user_management/redirect_uris", json!({})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    let (s, list) = app.get("/user_management/redirect_uris").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["object"], "list");
    let uris: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["uri"].as_str().unwrap())
        .collect();
    assert_eq!(uris, vec![CALLBACK, "https://app.example.com/callback"], "newest first");
    let (_, page) = app.get("/user_management/redirect_uris?limit=1&order=asc").await;
    assert_eq!(page["data"][0]["uri"], "https://app.example.com/callback");
    let after = page["list_metadata"]["after"].as_str().unwrap();
    let (_, next) = app
        .get(&format!(
            "/user_management/redirect_uris?limit=1&order=asc&after={after}"
        ))
        .await;
    assert_eq!(next["data"][0]["uri"], CALLBACK);
    assert_eq!(next["list_metadata"]["after"], Value::Null);
    let (s, _) = app.get("/user_management/redirect_uris?after=user_x").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);

    for key in [None, Some("sk_wrong")] {
        let (s, _) = app
            .request_with_key(Method::GET, "/user_management/redirect_uris", None, key)
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let (s, _) = app
            .request_with_key(
                Method::POST,
                "/user_management/redirect_uris",
                Some(json!({ "uri": "https://x.example.com/cb" })),
                key,
            )
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let (_, list) = app.get("/user_management/redirect_uris").await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        2,
        "refused requests registered nothing"
    );
}

#[tokio::test]
async fn a_uri_from_keyledger_redirect_uris_is_allowed_without_registration() {
    let app = TestApp::spawn_with(|c| c.auth.redirect_uris = vec![CALLBACK.into()]).await;
    let mut browser = Browser::new(&app);
    let page = browser.get(&authorize_url(&app, &[])).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
}

#[tokio::test]
async fn an_invitation_token_of_the_authorize_request_is_accepted_with_the_sign_in() {
    let app = TestApp::spawn().await;
    register(&app, CALLBACK).await;
    user_with_password(&app, "inv@example.com", true).await;
    let org = app.create_organization("Inviting", json!([])).await;
    let org_id = org["id"].as_str().unwrap();
    let (s, inv) = app
        .post(
            "/user_management/invitations",
            json!({ "email": "inv@example.com", "organization_id": org_id }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{inv}");
    let token = inv["token"].as_str().unwrap();

    // An unknown invitation: the sign-in page again, with the error, and no code.
    let mut browser = Browser::new(&app);
    let page = browser.get(&authorize_url(&app, &[("invitation_token", "nope")])).await;
    let refused = browser
        .post(
            "/user_management/authorize/password",
            &[
                ("csrf_token", &page.csrf()),
                ("email", "inv@example.com"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert!(refused.status.is_client_error(), "{}", refused.body);
    assert!(refused.location().is_none());
    assert!(
        refused.body.contains(r#"id="form-error" role="alert""#),
        "{}",
        refused.body
    );

    let mut browser = Browser::new(&app);
    let page = browser.get(&authorize_url(&app, &[("invitation_token", token)])).await;
    let (code, _) = browser
        .post(
            "/user_management/authorize/password",
            &[
                ("csrf_token", &page.csrf()),
                ("email", "inv@example.com"),
                ("password", PASSWORD),
            ],
        )
        .await
        .code();
    let (s, body) = exchange(&app, code_grant(&app, &code)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["organization_id"], org_id);
    let (_, inv) = app
        .get(&format!("/user_management/invitations/{}", inv["id"].as_str().unwrap()))
        .await;
    assert_eq!(inv["state"], "accepted", "{inv}");
}

#[tokio::test]
async fn two_concurrent_exchanges_of_one_code_start_exactly_one_session() {
    let app = TestApp::spawn().await;
    register(&app, CALLBACK).await;
    let user = user_with_password(&app, "race@example.com", true).await;
    let mut browser = Browser::new(&app);
    let page = browser.get(&authorize_url(&app, &[])).await;
    let (code, _) = browser
        .post(
            "/user_management/authorize/password",
            &[
                ("csrf_token", &page.csrf()),
                ("email", "race@example.com"),
                ("password", PASSWORD),
            ],
        )
        .await
        .code();
    let grant = code_grant(&app, &code);
    let (one, two) = tokio::join!(exchange(&app, grant.clone()), exchange(&app, grant));
    let mut statuses = [one.0, two.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::BAD_REQUEST], "{one:?} {two:?}");
    assert_eq!(sessions_of(&app, user["id"].as_str().unwrap()).await.len(), 1);
}

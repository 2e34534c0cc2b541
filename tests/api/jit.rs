//! Just-in-time memberships and `sso_required` (organization policy, docs/API.md): who joins by
//! a verified domain and when, what leaving the domain undoes, concurrent sign-ins, and the
//! sign-in refusal of an SSO-only domain.

use reqwest::Method;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

const PASSWORD: &str = "correct horse battery staple";

/// An organization with `domain` in `state`, and its policy set to `policy`.
async fn org_with_policy(app: &TestApp, domain: &str, state: &str, policy: Value) -> String {
    let org = id_of(
        &app.create_organization(
            &format!("Org of {domain}"),
            json!([{ "domain": domain, "state": state }]),
        )
        .await,
    );
    let (s, b) = app.put(&format!("/organizations/{org}/policy"), policy).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    org
}

async fn user(app: &TestApp, email: &str, verified: bool) -> String {
    let (s, b) = app
        .post(
            "/user_management/users",
            json!({ "email": email, "password": PASSWORD, "email_verified": verified }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    id_of(&b)
}

/// The user's memberships (every status).
async fn memberships(app: &TestApp, user_id: &str) -> Vec<Value> {
    app.all_pages(&format!(
        "/user_management/organization_memberships?user_id={user_id}&statuses=active,inactive,pending&limit=100"
    ))
    .await
}

async fn authenticate(app: &TestApp, body: Value) -> (StatusCode, Value) {
    app.request_with_key(Method::POST, "/user_management/authenticate", Some(body), None)
        .await
}

fn password_grant(app: &TestApp, email: &str) -> Value {
    json!({ "grant_type": "password", "client_id": app.client_id(), "client_secret": app.key,
            "email": email, "password": PASSWORD })
}

fn magic_grant(app: &TestApp, email: &str, code: &str) -> Value {
    json!({ "grant_type": "urn:workos:oauth:grant-type:magic-auth:code", "client_id": app.client_id(),
            "client_secret": app.key, "email": email, "code": code })
}

fn roles(list: &[Value]) -> Vec<(String, String, String)> {
    list.iter()
        .map(|m| {
            (
                m["organization_id"].as_str().unwrap().to_string(),
                m["role"]["slug"].as_str().unwrap().to_string(),
                m["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn auto(role: &str) -> Value {
    json!({ "membership": "auto", "default_role": role })
}

#[tokio::test]
async fn a_user_created_with_a_verified_email_at_an_auto_domain_joins_with_the_default_role() {
    let app = TestApp::spawn().await;
    let org = org_with_policy(&app, "acme.example", "verified", auto("admin")).await;
    let ann = user(&app, "Ann@ACME.example", true).await;
    assert_eq!(
        roles(&memberships(&app, &ann).await),
        vec![(org.clone(), "admin".into(), "active".into())]
    );
    // Recorded as joined by the domain.
    let (payload,): (Value,) = sqlx::query_as(
        "select payload from event where event_type = 'MembershipCreated' and payload -> 'MembershipCreated' ->> 'user_id' = $1",
    )
    .bind(&ann)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(payload["MembershipCreated"]["joined_by_domain"], "acme.example");
    let created = app.all_events("&events=organization_membership.created").await;
    assert_eq!(created.len(), 1, "{created:?}");
}

#[tokio::test]
async fn nobody_joins_by_an_invite_only_or_unverified_domain_or_with_an_unverified_email() {
    let app = TestApp::spawn().await;
    org_with_policy(
        &app,
        "invite.example",
        "verified",
        json!({ "membership": "invite_only" }),
    )
    .await;
    org_with_policy(&app, "pending.example", "pending", auto("member")).await;
    org_with_policy(&app, "auto.example", "verified", auto("member")).await;
    let cases = [
        ("ann@invite.example", true, "invite_only"),
        ("bob@pending.example", true, "a pending domain"),
        ("cid@auto.example", false, "an unverified email"),
        ("dan@other.example", true, "no organization's domain"),
        ("eve@sub.auto.example", true, "a subdomain"),
    ];
    for (email, verified, why) in cases {
        let u = user(&app, email, verified).await;
        assert!(memberships(&app, &u).await.is_empty(), "{why}: {email}");
    }
}

#[tokio::test]
async fn an_update_that_verifies_the_email_joins_and_one_that_changes_nothing_else_does_not() {
    let app = TestApp::spawn().await;
    let org = org_with_policy(&app, "acme.example", "verified", auto("member")).await;
    let ann = user(&app, "ann@acme.example", false).await;
    let (s, _) = app
        .put(&format!("/user_management/users/{ann}"), json!({ "first_name": "Ann" }))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(memberships(&app, &ann).await.is_empty());
    let (s, b) = app
        .put(
            &format!("/user_management/users/{ann}"),
            json!({ "email_verified": true }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        roles(&memberships(&app, &ann).await),
        vec![(org, "member".into(), "active".into())]
    );
    let txs: Vec<(String,)> = sqlx::query_as(
        "select distinct transaction_id::text from event where event_type in ('UserUpdated', 'MembershipCreated') \
         and (aggregate_id = $1 or payload -> 'MembershipCreated' ->> 'user_id' = $1) \
         and (event_type = 'MembershipCreated' or payload -> 'UserUpdated' -> 'changes' ? 'email_verified')",
    )
    .bind(&ann)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        txs.len(),
        1,
        "the verification and the membership in one append: {txs:?}"
    );
}

#[tokio::test]
async fn a_password_sign_in_of_a_verified_user_joins_and_lands_in_the_organization() {
    let app = TestApp::spawn().await;
    let ann = user(&app, "ann@acme.example", true).await;
    // The policy comes after the user: the sign-in makes the membership.
    let org = org_with_policy(&app, "acme.example", "verified", auto("member")).await;
    assert!(memberships(&app, &ann).await.is_empty());
    let (s, signed) = authenticate(&app, password_grant(&app, "ann@acme.example")).await;
    assert_eq!(s, StatusCode::OK, "{signed}");
    assert_eq!(signed["organization_id"], json!(org));
    assert_eq!(
        roles(&memberships(&app, &ann).await),
        vec![(org, "member".into(), "active".into())]
    );
}

#[tokio::test]
async fn a_magic_auth_sign_up_at_an_auto_domain_joins() {
    let app = TestApp::spawn().await;
    let org = org_with_policy(&app, "acme.example", "verified", auto("member")).await;
    let (s, code) = app
        .post("/user_management/magic_auth", json!({ "email": "new@acme.example" }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{code}");
    let (s, signed) = authenticate(
        &app,
        magic_grant(&app, "new@acme.example", code["code"].as_str().unwrap()),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{signed}");
    let id = signed["user"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        roles(&memberships(&app, &id).await),
        vec![(org.clone(), "member".into(), "active".into())]
    );
    assert_eq!(signed["organization_id"], json!(org));
}

#[tokio::test]
async fn concurrent_sign_ins_make_one_membership_and_every_one_succeeds() {
    let app = TestApp::spawn().await;
    let ann = user(&app, "ann@acme.example", true).await;
    let org = org_with_policy(&app, "acme.example", "verified", auto("member")).await;
    let results =
        futures::future::join_all((0..6).map(|_| authenticate(&app, password_grant(&app, "ann@acme.example")))).await;
    for (s, b) in &results {
        assert_eq!(*s, StatusCode::OK, "{b}");
    }
    assert_eq!(
        roles(&memberships(&app, &ann).await),
        vec![(org, "member".into(), "active".into())]
    );
    let (n,): (i64,) = sqlx::query_as("select count(*) from event where event_type = 'MembershipCreated'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn an_email_leaving_the_domain_deactivates_only_what_the_domain_alone_gave_in_the_same_append() {
    let app = TestApp::spawn().await;
    let acme = org_with_policy(&app, "acme.example", "verified", auto("member")).await;
    let beta = org_with_policy(&app, "beta.example", "verified", auto("member")).await;
    let other = id_of(&app.create_organization("Other", json!([])).await);
    let ann = user(&app, "ann@acme.example", true).await;
    app.create_membership(&ann, &other, Some("admin")).await;
    let bob = user(&app, "bob@acme.example", true).await;
    // Bob's JIT membership was changed by the API since: the API's now.
    let bobs = id_of(&memberships(&app, &bob).await[0]);
    let (s, b) = app
        .put(
            &format!("/user_management/organization_memberships/{bobs}"),
            json!({ "role_slug": "admin" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");

    let (s, b) = app
        .put(
            &format!("/user_management/users/{ann}"),
            json!({ "email": "ann@beta.example", "email_verified": true }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let mut got = roles(&memberships(&app, &ann).await);
    got.sort();
    let mut want = vec![
        (acme.clone(), "member".to_string(), "inactive".to_string()),
        (other, "admin".into(), "active".into()),
        (beta, "member".into(), "active".into()),
    ];
    want.sort();
    assert_eq!(
        got, want,
        "left acme, kept the API's membership, joined beta (verified by the administrator)"
    );
    let txs: Vec<(String, String)> = sqlx::query_as(
        "select event_type, transaction_id::text from event where event_type in ('UserUpdated', 'MembershipDeactivated') \
         and (aggregate_id = $1 or organization_id = $2) order by position",
    )
    .bind(&ann)
    .bind(&acme)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(txs.len(), 2, "{txs:?}");
    assert_eq!(txs[0].1, txs[1].1, "one append: {txs:?}");

    let (s, b) = app
        .put(
            &format!("/user_management/users/{bob}"),
            json!({ "email": "bob@elsewhere.example" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        roles(&memberships(&app, &bob).await),
        vec![(acme.clone(), "admin".into(), "active".into())]
    );
    // Back at the domain: the inactive membership stays inactive (only an admin reactivates).
    let (s, _) = app
        .put(
            &format!("/user_management/users/{ann}"),
            json!({ "email": "ann@acme.example", "email_verified": true }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let acme_status: Vec<String> = memberships(&app, &ann)
        .await
        .iter()
        .filter(|m| m["organization_id"] == json!(acme))
        .map(|m| m["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(acme_status, vec!["inactive".to_string()]);
}

#[tokio::test]
async fn moving_to_another_verified_domain_of_the_same_organization_keeps_the_membership() {
    let app = TestApp::spawn().await;
    let org = id_of(
        &app.create_organization(
            "Acme",
            json!([{ "domain": "acme.example", "state": "verified" }, { "domain": "acme.io", "state": "verified" }]),
        )
        .await,
    );
    let (s, _) = app.put(&format!("/organizations/{org}/policy"), auto("member")).await;
    assert_eq!(s, StatusCode::OK);
    let ann = user(&app, "ann@acme.example", true).await;
    let (s, b) = app
        .put(
            &format!("/user_management/users/{ann}"),
            json!({ "email": "ann@acme.io" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        roles(&memberships(&app, &ann).await),
        vec![(org, "member".into(), "active".into())]
    );
}

#[tokio::test]
async fn a_refused_email_change_deactivates_nothing() {
    let app = TestApp::spawn().await;
    org_with_policy(&app, "acme.example", "verified", auto("member")).await;
    let ann = user(&app, "ann@acme.example", true).await;
    user(&app, "taken@beta.example", false).await;
    let before = state_snapshot(&app.pool).await;
    let (s, b) = app
        .put(
            &format!("/user_management/users/{ann}"),
            json!({ "email": "taken@beta.example" }),
        )
        .await;
    assert!(s.is_client_error(), "{s} {b}");
    assert_eq!(state_snapshot(&app.pool).await, before);
}

fn assert_sso_required(s: StatusCode, b: &Value, email: &str, org: &str) {
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert_eq!(b["code"], "sso_required", "{b}");
    assert_eq!(b["error"], "sso_required", "{b}");
    assert!(b["error_description"].as_str().is_some_and(|d| !d.is_empty()), "{b}");
    assert!(b["message"].as_str().is_some_and(|d| !d.is_empty()), "{b}");
    assert_eq!(b["email"], email, "{b}");
    assert_eq!(b["connection_ids"], json!([]), "{b}");
    assert_eq!(b["organization_id"], json!(org), "{b}");
}

#[tokio::test]
async fn a_password_sign_in_at_an_sso_required_domain_answers_sso_required_and_starts_no_session() {
    let app = TestApp::spawn().await;
    let ann = user(&app, "ann@acme.example", true).await;
    let org = org_with_policy(
        &app,
        "acme.example",
        "verified",
        json!({ "authentication": "sso_required" }),
    )
    .await;
    let (s, b) = authenticate(&app, password_grant(&app, "ann@acme.example")).await;
    assert_sso_required(s, &b, "ann@acme.example", &org);
    let token = b["pending_authentication_token"]
        .as_str()
        .expect("a pending token")
        .to_string();
    let (n,): (i64,) = sqlx::query_as("select count(*) from event where aggregate_type = 'Session'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, 0, "no session");
    // The pending authentication does not continue by organization selection either.
    app.create_membership(&ann, &org, None).await;
    let (s, b) = authenticate(
        &app,
        json!({ "grant_type": "urn:workos:oauth:grant-type:organization-selection", "client_id": app.client_id(),
                "client_secret": app.key, "pending_authentication_token": token, "organization_id": org }),
    )
    .await;
    assert_eq!(
        (s, b["code"].clone()),
        (StatusCode::FORBIDDEN, json!("sso_required")),
        "{b}"
    );
    // A wrong password is still just invalid credentials (no policy is told to a guesser).
    let mut wrong = password_grant(&app, "ann@acme.example");
    wrong["password"] = json!("not the password at all");
    let (s, b) = authenticate(&app, wrong).await;
    assert_eq!(
        (s, b["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_credentials"))
    );
    // Another domain, or the policy set back to any: signs in.
    user(&app, "bob@other.example", true).await;
    let (s, b) = authenticate(&app, password_grant(&app, "bob@other.example")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, _) = app
        .put(
            &format!("/organizations/{org}/policy"),
            json!({ "authentication": "any" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = authenticate(&app, password_grant(&app, "ann@acme.example")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

#[tokio::test]
async fn magic_auth_at_an_sso_required_domain_is_refused_when_sending_and_when_signing_in() {
    let app = TestApp::spawn().await;
    let (s, code) = app
        .post("/user_management/magic_auth", json!({ "email": "new@acme.example" }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{code}");
    let org = org_with_policy(
        &app,
        "acme.example",
        "verified",
        json!({ "authentication": "sso_required" }),
    )
    .await;
    let (s, b) = app
        .post("/user_management/magic_auth", json!({ "email": "other@acme.example" }))
        .await;
    assert_sso_required(s, &b, "other@acme.example", &org);
    // A code sent before the policy does not sign in, nor sign the new email up.
    let users_before = app.all_pages("/user_management/users?limit=100").await.len();
    let (s, b) = authenticate(
        &app,
        magic_grant(&app, "new@acme.example", code["code"].as_str().unwrap()),
    )
    .await;
    assert_sso_required(s, &b, "new@acme.example", &org);
    assert_eq!(
        app.all_pages("/user_management/users?limit=100").await.len(),
        users_before
    );
}

#[tokio::test]
async fn the_policy_check_for_the_hosted_pages_names_the_organization_only_for_sso_required_domains() {
    let app = TestApp::spawn().await;
    let org = org_with_policy(
        &app,
        "acme.example",
        "verified",
        json!({ "authentication": "sso_required" }),
    )
    .await;
    org_with_policy(
        &app,
        "pending.example",
        "pending",
        json!({ "authentication": "sso_required" }),
    )
    .await;
    org_with_policy(&app, "any.example", "verified", json!({ "membership": "auto" })).await;
    let state = app.state();
    let check = |e: &str| keyledger_domain::values::Email::parse("email", e).unwrap();
    assert_eq!(
        keyledger_api::policy::sso_required_for(&state, &check("X@Acme.Example"))
            .await
            .unwrap(),
        Some((org, vec![]))
    );
    for e in ["x@pending.example", "x@any.example", "x@nowhere.example"] {
        assert_eq!(
            keyledger_api::policy::sso_required_for(&state, &check(e))
                .await
                .unwrap(),
            None,
            "{e}"
        );
    }
}

#[tokio::test]
async fn confirming_the_email_verification_code_joins() {
    let app = TestApp::spawn().await;
    let org = org_with_policy(&app, "acme.example", "verified", auto("member")).await;
    let ann = user(&app, "ann@acme.example", false).await;
    let (s, sent) = app
        .post(
            &format!("/user_management/users/{ann}/email_verification/send"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{sent}");
    let (code_id,): (String,) = sqlx::query_as("select id from one_time_code where user_id = $1")
        .bind(&ann)
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
    assert!(memberships(&app, &ann).await.is_empty());
    let (s, b) = app
        .post(
            &format!("/user_management/users/{ann}/email_verification/confirm"),
            json!({ "code": code }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        roles(&memberships(&app, &ann).await),
        vec![(org, "member".into(), "active".into())]
    );
}

#[tokio::test]
async fn a_confirmed_email_change_to_another_domain_deactivates_the_domains_membership() {
    let app = TestApp::spawn().await;
    let org = org_with_policy(&app, "acme.example", "verified", auto("member")).await;
    let ann = user(&app, "ann@acme.example", true).await;
    let (s, b) = app
        .post(
            &format!("/user_management/users/{ann}/email_change/send"),
            json!({ "new_email": "ann@elsewhere.example" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (code_id, sealed): (String, Vec<u8>) =
        sqlx::query_as("select id, sealed from one_time_code where purpose = 'email_change'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let code = String::from_utf8(test_master_key().open(code_id.as_bytes(), &sealed).unwrap()).unwrap();
    let (s, b) = app
        .post(
            &format!("/user_management/users/{ann}/email_change/confirm"),
            json!({ "code": code }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        roles(&memberships(&app, &ann).await),
        vec![(org, "member".into(), "inactive".into())]
    );
}

#[tokio::test]
async fn the_sso_required_answer_names_the_organizations_active_connections_only() {
    let app = TestApp::spawn().await;
    user(&app, "ann@acme.example", true).await;
    let org = org_with_policy(
        &app,
        "acme.example",
        "verified",
        json!({ "authentication": "sso_required" }),
    )
    .await;
    let connection = |secret: Option<&str>| {
        let mut options = json!({ "discovery_endpoint": "https://idp.acme.example/.well-known/openid-configuration",
                                  "client_id": "kl" });
        if let Some(s) = secret {
            options["client_secret"] = json!(s);
        }
        json!({ "organization_id": org, "name": "Acme", "oidc_options": options })
    };
    let (s, active) = app.post("/connections", connection(Some("secret"))).await;
    assert_eq!(s, StatusCode::CREATED, "{active}");
    let (s, draft) = app.post("/connections", connection(None)).await;
    assert_eq!(
        (s, draft["state"].clone()),
        (StatusCode::CREATED, json!("draft")),
        "{draft}"
    );
    let (s, b) = authenticate(&app, password_grant(&app, "ann@acme.example")).await;
    assert_eq!(
        (s, b["code"].clone()),
        (StatusCode::FORBIDDEN, json!("sso_required")),
        "{b}"
    );
    assert_eq!(b["connection_ids"], json!([active["id"]]), "{b}");
}

#[tokio::test]
async fn a_new_address_is_unproved_until_a_code_sent_to_it_proves_it() {
    let app = TestApp::spawn().await;
    let corp = org_with_policy(&app, "corp.example", "verified", auto("member")).await;

    // A verified user moves to an address at the auto domain: unverified there, no membership.
    let mallory = user(&app, "mallory@gmail.example", true).await;
    let (s, b) = app
        .put(
            &format!("/user_management/users/{mallory}"),
            json!({ "email": "ceo@corp.example" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["email_verified"], false, "{b}");
    assert!(memberships(&app, &mallory).await.is_empty());
    // Nor does a password sign-in there let the membership in.
    let (s, b) = authenticate(&app, password_grant(&app, "ceo@corp.example")).await;
    assert_ne!(s, StatusCode::OK, "{b}");
    assert!(memberships(&app, &mallory).await.is_empty());

    // A verification code sent to the old address proves nothing about the new one.
    let eve = user(&app, "eve@gmail.example", false).await;
    let (s, b) = app
        .post(
            &format!("/user_management/users/{eve}/email_verification/send"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let old_code = app.sent_code("email_verification", "eve@gmail.example").await;
    let (s, b) = app
        .put(
            &format!("/user_management/users/{eve}"),
            json!({ "email": "cfo@corp.example", "email_verified": false }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = app
        .post(
            &format!("/user_management/users/{eve}/email_verification/confirm"),
            json!({ "code": old_code }),
        )
        .await;
    assert_error(
        s,
        &b,
        StatusCode::BAD_REQUEST,
        "email_verification_code_incorrect",
        "old address's code",
    );
    let (_, u) = app.get(&format!("/user_management/users/{eve}")).await;
    assert_eq!(u["email_verified"], false, "{u}");
    assert!(memberships(&app, &eve).await.is_empty());

    // A code sent to the new address proves it: verified, and the domain's membership follows.
    let (s, b) = app
        .post(
            &format!("/user_management/users/{eve}/email_verification/send"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let code = app.sent_code("email_verification", "cfo@corp.example").await;
    let (s, b) = app
        .post(
            &format!("/user_management/users/{eve}/email_verification/confirm"),
            json!({ "code": code }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let joined = memberships(&app, &eve).await;
    assert_eq!(joined.len(), 1);
    assert_eq!(joined[0]["organization_id"], corp.as_str());
}

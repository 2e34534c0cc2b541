//! Tests: `/organization_domains` through the real HTTP API — create, read, DNS TXT verification
//! against the test DNS server (success, failure, retry, and two organizations racing for one
//! domain), delete — and that refused requests change nothing.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

const DOMAINS: &str = "/organization_domains";
const PREFIX: &str = "_keyledger-challenge";

fn domain_path(id: &str) -> String {
    format!("{DOMAINS}/{id}")
}

fn verify_path(id: &str) -> String {
    format!("{DOMAINS}/{id}/verify")
}

/// Runs a verification check. Its success status is pinned by its own test, so other tests accept
/// any 2xx there and check the state instead.
async fn verify(app: &TestApp, id: &str) -> (StatusCode, Value) {
    app.post(&verify_path(id), json!({})).await
}

fn token_of(d: &Value) -> String {
    d["verification_token"]
        .as_str()
        .expect("verification_token")
        .to_string()
}

fn txt_name(domain: &str) -> String {
    format!("{PREFIX}.{domain}")
}

/// Adds `domain` to `org_id` and returns the created domain object.
async fn add_domain(app: &TestApp, org_id: &str, domain: &str) -> Value {
    let (s, d) = app
        .post(DOMAINS, json!({ "domain": domain, "organization_id": org_id }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "add {domain}: {d}");
    d
}

/// Public events named `name` whose domain object (at `data` or `data.organization_domain`) is `id`.
async fn domain_events(app: &TestApp, name: &str, id: &str) -> Vec<Value> {
    app.all_events(&format!("&events={name}"))
        .await
        .into_iter()
        .filter(|e| e["data"]["id"] == id || e["data"]["organization_domain"]["id"] == id)
        .collect()
}

/// A change to the test DNS server: TXT values to publish at a name, or `None` to remove it.
type DnsChange<'a> = (&'a str, Option<Vec<String>>);

#[tokio::test]
async fn creating_a_domain_returns_it_pending_with_a_verification_token() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme", json!([])).await;
    let d = add_domain(&app, &id_of(&org), "Example.COM").await;
    assert_eq!(d["object"], "organization_domain");
    assert!(id_of(&d).starts_with("org_domain_"), "{d}");
    assert_eq!(d["organization_id"], org["id"]);
    assert_eq!(d["domain"], "example.com", "stored lower-cased");
    assert_eq!(d["state"], "pending");
    assert_eq!(d["verification_prefix"], PREFIX);
    assert!(token_of(&d).len() >= 16, "a real token: {d}");

    let (s, got) = app.get(&domain_path(&id_of(&d))).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(got, d, "GET returns what create returned");
    let (_, org) = app.get(&format!("/organizations/{}", id_of(&org))).await;
    assert_eq!(org["domains"], json!([d.clone()]), "the organization lists it");
    assert_eq!(
        domain_events(&app, "organization_domain.created", &id_of(&d))
            .await
            .len(),
        1
    );

    let other = add_domain(&app, &id_of(&org), "example.org").await;
    assert_ne!(token_of(&other), token_of(&d), "each domain has its own token");
}

#[tokio::test]
async fn a_txt_record_with_the_token_verifies_the_domain() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme", json!([])).await;
    let d = add_domain(&app, &id_of(&org), "verify-me.com").await;
    let id = id_of(&d);
    app.dns.set_txt(
        &txt_name("verify-me.com"),
        vec!["unrelated=1".into(), format!("  {}  ", token_of(&d))],
    );

    let (s, verified) = verify(&app, &id).await;
    assert!(s.is_success(), "{s}: {verified}");
    assert_eq!(verified["state"], "verified");
    assert_eq!(verified["id"], id.as_str());
    let (_, got) = app.get(&domain_path(&id)).await;
    assert_eq!(got, verified);
    let (_, org) = app.get(&format!("/organizations/{}", id_of(&org))).await;
    assert_eq!(org["domains"][0]["state"], "verified", "{org}");

    let events = domain_events(&app, "organization_domain.verified", &id).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["data"]["state"], "verified");
    assert_eq!(events[0]["data"]["domain"], "verify-me.com");

    // Verifying again is refused and records nothing.
    let before = app.log_len().await;
    let (s, body) = verify(&app, &id).await;
    assert_error(
        s,
        &body,
        StatusCode::BAD_REQUEST,
        "domain_already_verified",
        "re-verifying",
    );
    assert_eq!(app.log_len().await, before);
}

#[tokio::test]
async fn verifying_a_domain_answers_201_created_as_the_workos_spec_says() {
    // WorkOS `POST /organization_domains/{id}/verify` answers 201 with the domain, whatever the
    // outcome of the check (spec: OrganizationDomainsController_verify).
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme", json!([])).await;
    let ok = add_domain(&app, &id_of(&org), "ok.com").await;
    let bad = add_domain(&app, &id_of(&org), "bad.com").await;
    app.dns.set_txt(&txt_name("ok.com"), vec![token_of(&ok)]);
    for (d, state) in [(&ok, "verified"), (&bad, "failed")] {
        let (s, body) = verify(&app, &id_of(d)).await;
        assert_eq!(s, StatusCode::CREATED, "a {state} check: {body}");
        assert_eq!(body["state"], state, "{body}");
    }
}

#[tokio::test]
async fn a_failed_check_marks_the_domain_failed_and_records_why() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme", json!([])).await;
    let d = add_domain(&app, &id_of(&org), "fails.com").await;
    let id = id_of(&d);
    let name = txt_name("fails.com");
    let token = token_of(&d);

    // Each case: the DNS changes to make (None clears the name), then a check that must fail.
    let cases: [(&str, Vec<DnsChange>); 4] = [
        ("no record at all (NXDOMAIN)", vec![(name.as_str(), None)]),
        (
            "the name exists without TXT values",
            vec![(name.as_str(), Some(vec![]))],
        ),
        ("a wrong token", vec![(name.as_str(), Some(vec!["wrong-token".into()]))]),
        (
            "the token at the bare domain, not under the prefix",
            vec![(name.as_str(), None), ("fails.com", Some(vec![token.clone()]))],
        ),
    ];
    for (i, (what, changes)) in cases.into_iter().enumerate() {
        for (record, values) in changes {
            match values {
                Some(v) => app.dns.set_txt(record, v),
                None => app.dns.clear(record),
            }
        }
        let (s, failed) = verify(&app, &id).await;
        assert!(s.is_success(), "{what}: {s}: {failed}");
        assert_eq!(failed["state"], "failed", "{what}: {failed}");
        let (_, got) = app.get(&domain_path(&id)).await;
        assert_eq!(got["state"], "failed", "{what}: {got}");
        let events = domain_events(&app, "organization_domain.verification_failed", &id).await;
        assert_eq!(events.len(), i + 1, "{what}: one event per failed check: {events:?}");
        let data = &events[i]["data"];
        assert!(
            data["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{what}: a reason: {data}"
        );
        assert_eq!(data["organization_domain"]["id"], id.as_str(), "{what}: {data}");
        assert_eq!(data["organization_domain"]["state"], "failed", "{what}: {data}");
        assert_eq!(data["organization_domain"]["domain"], "fails.com", "{what}: {data}");
    }
    assert!(domain_events(&app, "organization_domain.verified", &id)
        .await
        .is_empty());

    // Fixing the record and checking again verifies it.
    app.dns.set_txt(&name, vec![token]);
    let (s, verified) = verify(&app, &id).await;
    assert!(s.is_success(), "{s}: {verified}");
    assert_eq!(verified["state"], "verified");
    assert_eq!(domain_events(&app, "organization_domain.verified", &id).await.len(), 1);
}

#[tokio::test]
async fn two_organizations_racing_to_verify_one_domain_leave_exactly_one_owner() {
    let app = TestApp::spawn().await;
    for round in 0..3 {
        let domain = format!("race{round}.com");
        let a = app.create_organization(&format!("A{round}"), json!([])).await;
        let b = app.create_organization(&format!("B{round}"), json!([])).await;
        let da = add_domain(&app, &id_of(&a), &domain).await;
        let db = add_domain(&app, &id_of(&b), &domain).await;
        app.dns.set_txt(&txt_name(&domain), vec![token_of(&da), token_of(&db)]);

        let (ida, idb) = (id_of(&da), id_of(&db));
        let (ra, rb) = tokio::join!(verify(&app, &ida), verify(&app, &idb));
        let (winner, loser, lost) = match (ra.0.is_success(), rb.0.is_success()) {
            (true, false) => (&da, &db, rb),
            (false, true) => (&db, &da, ra),
            _ => panic!("round {round}: exactly one verification must win: {ra:?} {rb:?}"),
        };
        assert_error(
            lost.0,
            &lost.1,
            StatusCode::CONFLICT,
            "domain_verified_by_another_organization",
            &format!("round {round}: the loser"),
        );
        let (_, w) = app.get(&domain_path(&id_of(winner))).await;
        assert_eq!(w["state"], "verified", "round {round}: {w}");
        let (_, l) = app.get(&domain_path(&id_of(loser))).await;
        assert_eq!(l, *loser, "round {round}: the loser's domain is unchanged");
        let verified: Vec<Value> = app
            .all_events("&events=organization_domain.verified")
            .await
            .into_iter()
            .filter(|e| e["data"]["domain"] == domain.as_str())
            .collect();
        assert_eq!(verified.len(), 1, "round {round}: one verified event: {verified:?}");

        // Once the winner lets go, the loser can verify.
        let (s, _) = app.delete(&domain_path(&id_of(winner))).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let (s, body) = verify(&app, &id_of(loser)).await;
        assert!(s.is_success(), "round {round}: released domain: {s}: {body}");
        assert_eq!(body["state"], "verified");
    }
}

#[tokio::test]
async fn deleting_a_domain_returns_204_and_then_404() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme", json!([])).await;
    let d = add_domain(&app, &id_of(&org), "bye.com").await;
    let keep = add_domain(&app, &id_of(&org), "stay.com").await;
    let id = id_of(&d);

    let (s, body) = app.delete(&domain_path(&id)).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    let (_, org) = app.get(&format!("/organizations/{}", id_of(&org))).await;
    assert_eq!(org["domains"], json!([keep]), "the organization no longer lists it");
    assert_eq!(domain_events(&app, "organization_domain.deleted", &id).await.len(), 1);

    for (method, path, what) in [
        (Method::GET, domain_path(&id), "get"),
        (Method::DELETE, domain_path(&id), "delete again"),
        (Method::POST, verify_path(&id), "verify"),
    ] {
        let body = (method == Method::POST).then(|| json!({}));
        assert_rejected(
            &app,
            method,
            &path,
            body,
            (StatusCode::NOT_FOUND, "entity_not_found"),
            &format!("{what} a deleted domain"),
        )
        .await;
    }
    // The name can be added again, as a new domain.
    let again = add_domain(&app, &id_of(&org), "bye.com").await;
    assert_ne!(id_of(&again), id);
}

#[tokio::test]
async fn creating_a_domain_for_an_unknown_organization_returns_404() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Doomed", json!([])).await;
    let (s, _) = app.delete(&format!("/organizations/{}", id_of(&org))).await;
    assert_eq!(s, StatusCode::OK);
    for (org_id, what) in [
        ("org_01HZZZZZZZZZZZZZZZZZZZZZZZ", "an unknown id"),
        ("nonsense", "a malformed id"),
        (id_of(&org).as_str(), "a deleted organization"),
    ] {
        assert_rejected(
            &app,
            Method::POST,
            DOMAINS,
            Some(json!({ "domain": "x.com", "organization_id": org_id })),
            (StatusCode::NOT_FOUND, "entity_not_found"),
            &format!("create for {what}"),
        )
        .await;
    }
}

#[tokio::test]
async fn creating_an_invalid_domain_returns_422_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme", json!([])).await;
    let cases = [
        ("", "empty"),
        ("localhost", "one label"),
        ("exa mple.com", "a space"),
        ("exa_mple.com", "an underscore"),
        ("-bad.com", "a leading hyphen"),
        ("a..com", "an empty label"),
        ("1.2.3.4", "an IP address"),
        ("http://example.com", "a URL"),
    ];
    for (domain, what) in cases {
        assert_rejected(
            &app,
            Method::POST,
            DOMAINS,
            Some(json!({ "domain": domain, "organization_id": id_of(&org) })),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_parameters/invalid_domain",
            ),
            &format!("{what} ({domain:?})"),
        )
        .await;
    }
    let (s, body) = app.post(DOMAINS, json!({ "domain": "ok.com" })).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "missing organization_id: {body}");
    let (_, got) = app.get(&format!("/organizations/{}", id_of(&org))).await;
    assert_eq!(got, org, "no domain was added");
}

#[tokio::test]
async fn adding_a_domain_the_organization_already_has_returns_409() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme", json!([])).await;
    let d = add_domain(&app, &id_of(&org), "twice.com").await;
    for domain in ["twice.com", "TWICE.com", "twice.com."] {
        assert_rejected(
            &app,
            Method::POST,
            DOMAINS,
            Some(json!({ "domain": domain, "organization_id": id_of(&org) })),
            (StatusCode::CONFLICT, "domain_already_exists"),
            &format!("adding {domain:?} again"),
        )
        .await;
    }
    let (_, got) = app.get(&format!("/organizations/{}", id_of(&org))).await;
    assert_eq!(got["domains"], json!([d]), "still one domain");

    // Another organization may add the same name (pending): only verification is exclusive.
    let other = app.create_organization("Other", json!([])).await;
    add_domain(&app, &id_of(&other), "twice.com").await;
}

#[tokio::test]
async fn unknown_domain_ids_return_404_on_get_verify_and_delete() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Acme", json!([])).await;
    add_domain(&app, &id_of(&org), "real.com").await;
    for id in ["org_domain_01HZZZZZZZZZZZZZZZZZZZZZZZ", "nonsense"] {
        for (method, path, body) in [
            (Method::GET, domain_path(id), None),
            (Method::POST, verify_path(id), Some(json!({}))),
            (Method::DELETE, domain_path(id), None),
        ] {
            let ctx = format!("{method} {path}");
            assert_rejected(
                &app,
                method,
                &path,
                body,
                (StatusCode::NOT_FOUND, "entity_not_found"),
                &ctx,
            )
            .await;
        }
    }
}

//! Tests: `/organizations` through the real HTTP API — create with domains, read, list filters,
//! pagination, update with domain-set reconciliation, delete with its cascade — and that every
//! rejected request (including a lost claim on a verified domain) changes nothing.

use std::collections::HashSet;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

const ORGS: &str = "/organizations";

fn org_path(id: &str) -> String {
    format!("{ORGS}/{id}")
}

fn id_set(list: &Value) -> HashSet<String> {
    ids(list).into_iter().collect()
}

/// The organization's embedded domain named `name`.
fn domain<'a>(org: &'a Value, name: &str) -> &'a Value {
    org["domains"]
        .as_array()
        .expect("domains array")
        .iter()
        .find(|d| d["domain"] == name)
        .unwrap_or_else(|| panic!("{name} among the domains of {org}"))
}

fn domain_names(org: &Value) -> HashSet<String> {
    org["domains"]
        .as_array()
        .expect("domains array")
        .iter()
        .map(|d| d["domain"].as_str().expect("domain name").to_string())
        .collect()
}

#[tokio::test]
async fn creating_an_organization_with_domain_data_returns_its_domains_in_their_states() {
    let app = TestApp::spawn().await;
    let (s, org) = app
        .post(
            ORGS,
            json!({
                "name": "Acme",
                "external_id": "acme-ext",
                "metadata": { "tier": "gold" },
                "domain_data": [
                    { "domain": "acme.com", "state": "pending" },
                    { "domain": "Acme.IO", "state": "verified" },
                ],
            }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{org}");
    assert_eq!(org["object"], "organization");
    let id = id_of(&org);
    assert!(id.starts_with("org_"), "{org}");
    assert_eq!(org["name"], "Acme");
    assert_eq!(org["external_id"], "acme-ext");
    assert_eq!(org["metadata"], json!({ "tier": "gold" }));
    assert_eq!(domain_names(&org), HashSet::from(["acme.com".into(), "acme.io".into()]));
    for (name, state) in [("acme.com", "pending"), ("acme.io", "verified")] {
        let d = domain(&org, name);
        assert_eq!(d["object"], "organization_domain", "{d}");
        assert!(id_of(d).starts_with("org_domain_"), "{d}");
        assert_eq!(d["organization_id"], id.as_str(), "{d}");
        assert_eq!(d["state"], state, "{d}");
        assert!(d["verification_token"].as_str().is_some_and(|t| !t.is_empty()), "{d}");
        let (s, got) = app.get(&format!("/organization_domains/{}", id_of(d))).await;
        assert_eq!(s, StatusCode::OK, "{got}");
        assert_eq!(&got, d, "the domain object is the embedded one");
    }
    let (s, got) = app.get(&org_path(&id)).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(got, org, "GET returns what create returned");
}

#[tokio::test]
async fn creating_an_organization_with_the_deprecated_domains_list_makes_them_pending() {
    let app = TestApp::spawn().await;
    let (s, org) = app
        .post(
            ORGS,
            json!({ "name": "Legacy", "domains": ["legacy.com", "Legacy.Net"] }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{org}");
    assert_eq!(
        domain_names(&org),
        HashSet::from(["legacy.com".into(), "legacy.net".into()])
    );
    for name in ["legacy.com", "legacy.net"] {
        assert_eq!(domain(&org, name)["state"], "pending");
    }
}

#[tokio::test]
async fn getting_an_organization_by_external_id_returns_it() {
    let app = TestApp::spawn().await;
    let (s, org) = app.post(ORGS, json!({ "name": "Acme", "external_id": "crm-1" })).await;
    assert_eq!(s, StatusCode::CREATED, "{org}");
    app.create_organization("Other", json!([])).await;

    let (s, got) = app.get(&format!("{ORGS}/external_id/crm-1")).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(got, org);
    let (s, body) = app.get(&format!("{ORGS}/external_id/crm-2")).await;
    assert_error(
        s,
        &body,
        StatusCode::NOT_FOUND,
        "entity_not_found",
        "unknown external_id",
    );
}

#[tokio::test]
async fn listing_organizations_by_domains_accepts_every_list_form() {
    let app = TestApp::spawn().await;
    let a = app
        .create_organization("A", json!([{ "domain": "a.com", "state": "pending" }]))
        .await;
    let b = app
        .create_organization("B", json!([{ "domain": "b.com", "state": "verified" }]))
        .await;
    app.create_organization("C", json!([{ "domain": "c.com", "state": "pending" }]))
        .await;
    app.create_organization("None", json!([])).await;
    let both = HashSet::from([id_of(&a), id_of(&b)]);

    let cases = [
        ("domains=a.com,b.com", both.clone(), "comma-joined"),
        ("domains=a.com&domains=b.com", both.clone(), "repeated"),
        ("domains[]=a.com&domains[]=b.com", both.clone(), "bracketed"),
        (
            "domains%5B%5D=a.com&domains%5B%5D=b.com",
            both.clone(),
            "bracketed, percent-encoded",
        ),
        ("domains=a.com%2Cb.com", both.clone(), "comma percent-encoded"),
        ("domains=A.COM", HashSet::from([id_of(&a)]), "upper case"),
        ("domains=unknown.com", HashSet::new(), "no match"),
    ];
    for (query, want, what) in cases {
        let (s, list) = app.get(&format!("{ORGS}?{query}")).await;
        assert_eq!(s, StatusCode::OK, "{what}: {list}");
        assert_eq!(id_set(&list), want, "{what} ({query})");
    }
    let (s, body) = app.get(&format!("{ORGS}?domains=not_a_domain")).await;
    assert_error(
        s,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request_parameters/invalid_domain",
        "invalid domain filter",
    );
}

#[tokio::test]
async fn searching_organizations_matches_a_name_substring_in_any_case() {
    let app = TestApp::spawn().await;
    let corp = app.create_organization("Acme Corp", json!([])).await;
    let labs = app.create_organization("ACME Labs", json!([])).await;
    let globex = app.create_organization("Globex 100%", json!([])).await;

    let cases = [
        (
            "acme",
            HashSet::from([id_of(&corp), id_of(&labs)]),
            "two matches in mixed case",
        ),
        ("CORP", HashSet::from([id_of(&corp)]), "upper-case query"),
        ("me la", HashSet::from([id_of(&labs)]), "across a space"),
        ("100%25", HashSet::from([id_of(&globex)]), "a literal %"),
        ("%25", HashSet::from([id_of(&globex)]), "% is not a wildcard"),
        ("_", HashSet::new(), "_ is not a wildcard"),
        ("initech", HashSet::new(), "no match"),
    ];
    for (query, want, what) in cases {
        let (s, list) = app.get(&format!("{ORGS}?search={query}")).await;
        assert_eq!(s, StatusCode::OK, "{what}: {list}");
        assert_eq!(id_set(&list), want, "{what} (search={query})");
    }
}

/// Follows `list_metadata[cursor]` from a first page to the end, collecting ids.
async fn walk(app: &TestApp, first: &str, cursor: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut path = first.to_string();
    for _ in 0..20 {
        let (s, page) = app.get(&path).await;
        assert_eq!(s, StatusCode::OK, "{path}: {page}");
        out.extend(ids(&page));
        match page["list_metadata"][cursor].as_str() {
            Some(c) => path = format!("{first}&{cursor}={c}"),
            None => return out,
        }
    }
    panic!("pagination from {first} did not end");
}

#[tokio::test]
async fn paging_through_organizations_visits_each_exactly_once_in_either_order() {
    let app = TestApp::spawn().await;
    let mut ascending = Vec::new();
    for i in 0..5 {
        ascending.push(id_of(&app.create_organization(&format!("Org {i}"), json!([])).await));
    }
    ascending.sort();
    let mut descending = ascending.clone();
    descending.reverse();

    let cases = [
        (
            format!("{ORGS}?limit=2&order=asc"),
            "after",
            ascending.clone(),
            "asc forwards",
        ),
        (
            format!("{ORGS}?limit=2&order=desc"),
            "after",
            descending.clone(),
            "desc forwards",
        ),
        (
            format!("{ORGS}?limit=2"),
            "after",
            descending.clone(),
            "default is desc",
        ),
        (
            format!("{ORGS}?limit=2&order=normal"),
            "before",
            descending.clone(),
            "normal: before is older",
        ),
        (
            format!("{ORGS}?limit=100&order=asc"),
            "after",
            ascending.clone(),
            "one page",
        ),
    ];
    for (first, cursor, want, what) in cases {
        assert_eq!(walk(&app, &first, cursor).await, want, "{what}");
    }
    let (s, page) = app
        .get(&format!("{ORGS}?limit=2&order=asc&before={}", ascending[2]))
        .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_eq!(
        ids(&page),
        ascending[..2].to_vec(),
        "before returns the page just before the cursor"
    );
    assert!(
        page["list_metadata"]["before"].is_null(),
        "nothing before the start: {page}"
    );
    assert_eq!(page["list_metadata"]["after"], ascending[1].as_str(), "{page}");

    for bad in ["limit=0", "limit=101", "limit=x", "order=sideways"] {
        let (s, body) = app.get(&format!("{ORGS}?{bad}")).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
    }
}

#[tokio::test]
async fn updating_an_organization_changes_name_metadata_and_external_id() {
    let app = TestApp::spawn().await;
    let (_, org) = app
        .post(
            ORGS,
            json!({ "name": "Acme", "external_id": "old", "metadata": { "a": "1" } }),
        )
        .await;
    let id = id_of(&org);
    let (s, updated) = app
        .put(
            &org_path(&id),
            json!({ "name": "  Acme Inc  ", "metadata": { "b": "2" }, "external_id": "new" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{updated}");
    assert_eq!(updated["name"], "Acme Inc", "name trimmed");
    assert_eq!(updated["metadata"], json!({ "b": "2" }));
    assert_eq!(updated["external_id"], "new");
    assert_eq!(updated["created_at"], org["created_at"]);
    let (_, got) = app.get(&org_path(&id)).await;
    assert_eq!(got, updated);
    let before = app.log_len().await;
    let (s, same) = app
        .put(&org_path(&id), json!({ "name": "Acme Inc", "metadata": { "b": "2" } }))
        .await;
    assert_eq!(s, StatusCode::OK, "{same}");
    assert_eq!(same, updated);
    assert_eq!(app.log_len().await, before, "a no-op update appends nothing");

    let (s, body) = app.get(&format!("{ORGS}/external_id/old")).await;
    assert_error(
        s,
        &body,
        StatusCode::NOT_FOUND,
        "entity_not_found",
        "old external_id released",
    );
    let (s, body) = app.post(ORGS, json!({ "name": "Reuser", "external_id": "old" })).await;
    assert_eq!(s, StatusCode::CREATED, "the old external_id is free: {body}");

    let (s, cleared) = app
        .put(&org_path(&id), json!({ "metadata": null, "external_id": null }))
        .await;
    assert_eq!(s, StatusCode::OK, "{cleared}");
    assert_eq!(cleared["metadata"], json!({}));
    assert!(cleared["external_id"].is_null(), "{cleared}");
    assert_eq!(cleared["name"], "Acme Inc", "absent fields kept");
}

#[tokio::test]
async fn updating_the_domain_set_adds_removes_and_keeps_domains() {
    let app = TestApp::spawn().await;
    let org = app
        .create_organization(
            "Acme",
            json!([
                { "domain": "a.com", "state": "pending" },
                { "domain": "b.com", "state": "verified" },
                { "domain": "d.com", "state": "pending" },
            ]),
        )
        .await;
    let id = id_of(&org);
    let (s, updated) = app
        .put(
            &org_path(&id),
            json!({ "domain_data": [
                { "domain": "b.com", "state": "pending" },
                { "domain": "c.com", "state": "verified" },
                { "domain": "d.com", "state": "verified" },
            ] }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{updated}");
    assert_eq!(
        domain_names(&updated),
        HashSet::from(["b.com".into(), "c.com".into(), "d.com".into()])
    );
    let kept = domain(&updated, "b.com");
    assert_eq!(kept["id"], domain(&org, "b.com")["id"], "a kept domain keeps its id");
    assert_eq!(
        kept["state"], "verified",
        "listing a verified domain as pending does not unverify it"
    );
    assert_eq!(domain(&updated, "c.com")["state"], "verified", "added verified");
    assert_eq!(domain(&updated, "d.com")["id"], domain(&org, "d.com")["id"]);
    assert_eq!(
        domain(&updated, "d.com")["state"],
        "verified",
        "pending upgraded to verified"
    );

    let removed = id_of(domain(&org, "a.com"));
    let (s, body) = app.get(&format!("/organization_domains/{removed}")).await;
    assert_error(s, &body, StatusCode::NOT_FOUND, "entity_not_found", "removed domain");
    let (_, got) = app.get(&org_path(&id)).await;
    assert_eq!(got, updated);

    // The deprecated `domains` list reconciles too; dropping a verified domain releases it.
    let (s, updated) = app.put(&org_path(&id), json!({ "domains": ["c.com"] })).await;
    assert_eq!(s, StatusCode::OK, "{updated}");
    assert_eq!(domain_names(&updated), HashSet::from(["c.com".into()]));
    let (s, other) = app
        .post(
            ORGS,
            json!({ "name": "Other", "domain_data": [{ "domain": "b.com", "state": "verified" }] }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "b.com was released: {other}");

    // An empty list removes every domain.
    let (s, updated) = app.put(&org_path(&id), json!({ "domain_data": [] })).await;
    assert_eq!(s, StatusCode::OK, "{updated}");
    assert_eq!(updated["domains"], json!([]));
}

#[tokio::test]
async fn deleting_an_organization_removes_it_its_domains_and_its_memberships() {
    let app = TestApp::spawn().await;
    let (s, org) = app
        .post(
            ORGS,
            json!({ "name": "Doomed", "external_id": "doomed-ext", "domain_data": [
                { "domain": "doomed.com", "state": "verified" },
                { "domain": "p.com", "state": "pending" },
            ] }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{org}");
    let id = id_of(&org);
    let user = app.create_user("member@example.com").await;
    let m = app.create_membership(&id_of(&user), &id, None).await;
    let survivor = app.create_organization("Survivor", json!([])).await;
    let kept = app.create_membership(&id_of(&user), &id_of(&survivor), None).await;

    let (s, body) = app.delete(&org_path(&id)).await;
    assert_eq!(s, StatusCode::OK, "{body}");

    let (s, body) = app.get(&org_path(&id)).await;
    assert_error(
        s,
        &body,
        StatusCode::NOT_FOUND,
        "entity_not_found",
        "deleted organization",
    );
    for d in org["domains"].as_array().expect("domains") {
        let (s, body) = app.get(&format!("/organization_domains/{}", id_of(d))).await;
        assert_error(
            s,
            &body,
            StatusCode::NOT_FOUND,
            "entity_not_found",
            "domain of a deleted organization",
        );
    }
    let (s, body) = app
        .get(&format!("/user_management/organization_memberships/{}", id_of(&m)))
        .await;
    assert_error(
        s,
        &body,
        StatusCode::NOT_FOUND,
        "entity_not_found",
        "membership of a deleted organization",
    );
    let (s, list) = app
        .get(&format!(
            "/user_management/organization_memberships?user_id={}",
            id_of(&user)
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(ids(&list), vec![id_of(&kept)], "only the other membership is left");
    let (s, _) = app.get(&format!("/user_management/users/{}", id_of(&user))).await;
    assert_eq!(s, StatusCode::OK, "the user stays");
    let (_, list) = app.get(ORGS).await;
    assert_eq!(ids(&list), vec![id_of(&survivor)]);
    let (_, list) = app.get(&format!("{ORGS}?domains=doomed.com")).await;
    assert!(ids(&list).is_empty(), "{list}");

    assert_rejected(
        &app,
        Method::DELETE,
        &org_path(&id),
        None,
        (StatusCode::NOT_FOUND, "entity_not_found"),
        "deleting twice",
    )
    .await;
    let (s, body) = app.get(&format!("{ORGS}/external_id/doomed-ext")).await;
    assert_error(
        s,
        &body,
        StatusCode::NOT_FOUND,
        "entity_not_found",
        "deleted organization by external_id",
    );
    let (s, again) = app
        .post(
            ORGS,
            json!({ "name": "New owner", "external_id": "doomed-ext",
                    "domain_data": [{ "domain": "doomed.com", "state": "verified" }] }),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::CREATED,
        "the external_id and verified domain are free again: {again}"
    );
}

#[tokio::test]
async fn invalid_organization_bodies_return_422_and_change_nothing() {
    let app = TestApp::spawn().await;
    let existing = app.create_organization("Existing", json!([])).await;
    let dd = |domain: &str, state: &str| json!([{ "domain": domain, "state": state }]);
    let cases = [
        (json!({ "name": "" }), "invalid_name", "empty name"),
        (json!({ "name": "   " }), "invalid_name", "blank name"),
        (
            json!({ "name": "X", "domain_data": dd("not a domain", "pending") }),
            "invalid_domain",
            "a domain with a space",
        ),
        (
            json!({ "name": "X", "domain_data": dd("localhost", "pending") }),
            "invalid_domain",
            "a single label",
        ),
        (
            json!({ "name": "X", "domain_data": dd("-bad.com", "pending") }),
            "invalid_domain",
            "a leading hyphen",
        ),
        (
            json!({ "name": "X", "domains": ["bad_domain.com"] }),
            "invalid_domain",
            "an invalid deprecated domain",
        ),
        (
            json!({ "name": "X", "domain_data": dd("x.com", "failed") }),
            "invalid_domain_state",
            "state failed",
        ),
        (
            json!({ "name": "X", "domain_data": dd("x.com", "bogus") }),
            "invalid_domain_state",
            "state bogus",
        ),
        (
            json!({ "name": "X", "domain_data": [{ "domain": "x.com", "state": "pending" }, { "domain": "X.com", "state": "verified" }] }),
            "duplicate_domain",
            "the same domain twice in domain_data",
        ),
        (
            json!({ "name": "X", "domains": ["x.com", "x.com."] }),
            "duplicate_domain",
            "the same domain twice in domains",
        ),
        (
            json!({ "name": "X", "domains": ["x.com"], "domain_data": dd("y.com", "pending") }),
            "invalid_domain_data",
            "domains and domain_data together",
        ),
        (
            json!({ "name": "X", "metadata": { "k": "v".repeat(601) } }),
            "invalid_metadata",
            "metadata value too long",
        ),
        (
            json!({ "name": "X", "external_id": "" }),
            "invalid_external_id",
            "empty external_id",
        ),
    ];
    for (body, code, what) in cases {
        let code = format!("invalid_request_parameters/{code}");
        let code = code.as_str();
        let create = format!("create with {what}");
        assert_rejected(
            &app,
            Method::POST,
            ORGS,
            Some(body.clone()),
            (StatusCode::UNPROCESSABLE_ENTITY, code),
            &create,
        )
        .await;
        let mut update = body;
        if update["name"] == "X" {
            update.as_object_mut().expect("object").remove("name");
        }
        let ctx = format!("update with {what}");
        let path = org_path(&id_of(&existing));
        assert_rejected(
            &app,
            Method::PUT,
            &path,
            Some(update),
            (StatusCode::UNPROCESSABLE_ENTITY, code),
            &ctx,
        )
        .await;
    }
    let (_, list) = app.get(ORGS).await;
    assert_eq!(ids(&list), vec![id_of(&existing)], "no organization was created");
    let (_, got) = app.get(&org_path(&id_of(&existing))).await;
    assert_eq!(got, existing, "no update landed");
}

#[tokio::test]
async fn a_domain_verified_by_another_organization_returns_409_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let owner = app
        .create_organization("Owner", json!([{ "domain": "owned.com", "state": "verified" }]))
        .await;
    assert_rejected(
        &app,
        Method::POST,
        ORGS,
        Some(json!({ "name": "Thief", "domain_data": [
            { "domain": "fine.com", "state": "verified" },
            { "domain": "OWNED.com", "state": "verified" },
        ] })),
        (StatusCode::CONFLICT, "domain_verified_by_another_organization"),
        "create claiming a verified domain",
    )
    .await;
    let (_, list) = app.get(ORGS).await;
    assert_eq!(
        ids(&list),
        vec![id_of(&owner)],
        "the refused create left no organization"
    );
    let (_, list) = app.get(&format!("{ORGS}?domains=fine.com")).await;
    assert!(ids(&list).is_empty(), "nor any of its domains: {list}");

    // Pending is allowed; upgrading it to verified through an update is not, and the whole update
    // (name included) is refused.
    let other = app
        .create_organization("Other", json!([{ "domain": "owned.com", "state": "pending" }]))
        .await;
    assert_eq!(domain(&other, "owned.com")["state"], "pending");
    assert_rejected(
        &app,
        Method::PUT,
        &org_path(&id_of(&other)),
        Some(json!({ "name": "Renamed", "domain_data": [{ "domain": "owned.com", "state": "verified" }] })),
        (StatusCode::CONFLICT, "domain_verified_by_another_organization"),
        "update claiming a verified domain",
    )
    .await;
    let (_, got) = app.get(&org_path(&id_of(&other))).await;
    assert_eq!(got, other, "the refused update changed nothing");
    let (_, got) = app.get(&org_path(&id_of(&owner))).await;
    assert_eq!(got, owner, "the owner keeps its domain");

    let fresh = app.create_organization("Fresh", json!([])).await;
    assert_rejected(
        &app,
        Method::PUT,
        &org_path(&id_of(&fresh)),
        Some(json!({ "domain_data": [{ "domain": "owned.com", "state": "verified" }] })),
        (StatusCode::CONFLICT, "domain_verified_by_another_organization"),
        "update adding a verified domain",
    )
    .await;
    let (_, got) = app.get(&org_path(&id_of(&fresh))).await;
    assert_eq!(got["domains"], json!([]), "{got}");
}

#[tokio::test]
async fn a_taken_organization_external_id_returns_409_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let (s, owner) = app.post(ORGS, json!({ "name": "Owner", "external_id": "ext" })).await;
    assert_eq!(s, StatusCode::CREATED, "{owner}");
    assert_rejected(
        &app,
        Method::POST,
        ORGS,
        Some(json!({ "name": "Copy", "external_id": "ext" })),
        (StatusCode::CONFLICT, "external_id_not_available"),
        "create with a taken external_id",
    )
    .await;
    let other = app.create_organization("Other", json!([])).await;
    assert_rejected(
        &app,
        Method::PUT,
        &org_path(&id_of(&other)),
        Some(json!({ "name": "Renamed", "external_id": "ext" })),
        (StatusCode::CONFLICT, "external_id_not_available"),
        "update to a taken external_id",
    )
    .await;
    let (_, got) = app.get(&org_path(&id_of(&other))).await;
    assert_eq!(got, other);
    let (_, got) = app.get(&format!("{ORGS}/external_id/ext")).await;
    assert_eq!(got, owner);
}

#[tokio::test]
async fn unknown_organization_ids_return_404_on_get_put_and_delete() {
    let app = TestApp::spawn().await;
    app.create_organization("Someone", json!([])).await;
    let cases = [
        (Method::GET, None, "get"),
        (Method::PUT, Some(json!({ "name": "X" })), "put"),
        (
            Method::PUT,
            Some(json!({ "domain_data": [{ "domain": "x.com", "state": "pending" }] })),
            "put domains",
        ),
        (Method::DELETE, None, "delete"),
    ];
    for (method, body, what) in cases {
        for id in ["org_01HZZZZZZZZZZZZZZZZZZZZZZZ", "nonsense"] {
            assert_rejected(
                &app,
                method.clone(),
                &org_path(id),
                body.clone(),
                (StatusCode::NOT_FOUND, "entity_not_found"),
                &format!("{what} {id}"),
            )
            .await;
        }
    }
}

//! `/connections`: SSO connections created, listed, read, changed, (de)activated and deleted
//! through the HTTP API; their public events; secrets that never leave; refusals that change
//! nothing; concurrency; the organization cascade; the SSRF guard on IdP URLs.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_error, assert_rejected, wait_caught_up, TestApp};

const SECRET: &str = "oidc-client-secret-do-not-leak-4f1c";
const PRIVATE_KEY: &str =
    "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDleakme\n-----END PRIVATE KEY-----\n";
const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUXzpublic\n-----END CERTIFICATE-----\n";
const DISCOVERY: &str = "https://idp.example.com/.well-known/openid-configuration";

async fn org(app: &TestApp, name: &str, domain: &str) -> String {
    let body = app
        .create_organization(name, json!([{ "domain": domain, "state": "verified" }]))
        .await;
    body["id"].as_str().unwrap().to_string()
}

fn oidc_body(org_id: &str, secret: Option<&str>) -> Value {
    let mut o = json!({ "discovery_endpoint": DISCOVERY, "client_id": "kl-client" });
    if let Some(s) = secret {
        o["client_secret"] = json!(s);
    }
    json!({ "organization_id": org_id, "name": "Acme OIDC", "oidc_options": o })
}

async fn create(app: &TestApp, body: Value) -> Value {
    let (s, c) = app.post("/connections", body).await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    c
}

async fn events_named(app: &TestApp, name: &str) -> Vec<Value> {
    wait_caught_up(&app.pool).await;
    app.all_events(&format!("&events={name}")).await
}

/// Every text the server keeps where a secret must never be: the log, the read models, the
/// public event feed.
async fn stored_text(app: &TestApp) -> String {
    wait_caught_up(&app.pool).await;
    let mut all = String::new();
    for sql in [
        "select coalesce(string_agg(payload::text || metadata::text, ' '), '') from event",
        "select coalesce(string_agg(body::text, ' '), '') from connection_view",
        "select coalesce(string_agg(t::text, ' '), '') from event_feed t",
        "select coalesce(string_agg(t::text, ' '), '') from feed_object t",
    ] {
        let (s,): (String,) = sqlx::query_as(sql).fetch_one(&app.pool).await.unwrap();
        all.push_str(&s);
    }
    all
}

async fn secret_rows(app: &TestApp, connection_id: &str) -> Vec<(String, String, Vec<u8>)> {
    sqlx::query_as("select id, purpose, sealed from connection_secret where connection_id = $1 order by id")
        .bind(connection_id)
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_oidc_connection_with_complete_options_is_active_at_once_and_publishes_connection_activated() {
    let app = TestApp::spawn().await;
    let org_id = org(&app, "Acme", "acme.com").await;
    let c = create(&app, oidc_body(&org_id, Some(SECRET))).await;
    let id = c["id"].as_str().unwrap();
    assert!(id.starts_with("conn_"), "{c}");
    assert_eq!(c["object"], "connection");
    assert_eq!(c["state"], "active", "{c}");
    assert_eq!(c["status"], "linked", "{c}");
    assert_eq!(c["connection_type"], "GenericOIDC");
    assert_eq!(c["organization_id"], org_id.as_str());
    assert_eq!(c["name"], "Acme OIDC");
    assert_eq!(c["oidc_options"]["client_id"], "kl-client");
    assert_eq!(c["oidc_options"]["has_client_secret"], true);
    assert_eq!(c["domains"][0]["object"], "connection_domain", "{c}");
    assert_eq!(c["domains"][0]["domain"], "acme.com", "{c}");
    assert!(!c.to_string().contains(SECRET), "the secret is never answered: {c}");

    let (s, got) = app.get(&format!("/connections/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(got, c);

    let activated = events_named(&app, "connection.activated").await;
    assert_eq!(activated.len(), 1, "{activated:?}");
    assert_eq!(activated[0]["data"]["id"], id);
    assert_eq!(activated[0]["data"]["state"], "active");

    // The secret is stored once, sealed: neither in the log, nor in any read model.
    assert!(!stored_text(&app).await.contains(SECRET));
    let rows = secret_rows(&app, id).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].1, "client_secret");
    assert!(
        !String::from_utf8_lossy(&rows[0].2).contains(SECRET),
        "sealed, not stored as is"
    );
    let (stored,): (Value,) =
        sqlx::query_as("select payload from event where aggregate_id = $1 and event_type = 'ConnectionCreated'")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        stored["ConnectionCreated"]["secrets"]["client_secret"], rows[0].0,
        "the event names the sealed row only"
    );
}

#[tokio::test]
async fn a_saml_connection_is_created_from_manual_idp_fields_or_from_a_metadata_url() {
    let app = TestApp::spawn().await;
    let org_id = org(&app, "Acme", "acme.com").await;
    let manual = create(
        &app,
        json!({
            "organization_id": org_id,
            "connection_type": "OktaSAML",
            "saml_options": {
                "idp_entity_id": "http://www.okta.com/exk1",
                "idp_sso_url": "https://acme.okta.com/app/sso/saml",
                "idp_signing_certs": [CERT],
                "sp_signing_key_pair": { "key": PRIVATE_KEY, "cert": CERT },
            },
        }),
    )
    .await;
    assert_eq!(manual["connection_type"], "OktaSAML");
    assert_eq!(manual["state"], "active", "{manual}");
    assert_eq!(manual["name"], "Acme", "the organization's name by default");
    assert_eq!(manual["saml_options"]["idp_signing_certs"][0], CERT);
    assert_eq!(manual["saml_options"]["sp_signing_cert"], CERT);
    assert_eq!(manual["options"]["signing_cert"], CERT);
    assert!(!manual.to_string().contains("PRIVATE KEY"), "{manual}");
    let id = manual["id"].as_str().unwrap();
    assert_eq!(secret_rows(&app, id).await.len(), 1);
    assert!(!stored_text(&app).await.contains("PRIVATE KEY"));

    let by_metadata = create(
        &app,
        json!({
            "organization_id": org_id,
            "saml_options": { "idp_metadata_url": "https://idp.example.com/saml/metadata" },
        }),
    )
    .await;
    assert_eq!(by_metadata["connection_type"], "GenericSAML");
    assert_eq!(by_metadata["state"], "active");

    let draft = create(
        &app,
        json!({ "organization_id": org_id, "saml_options": { "idp_entity_id": "urn:acme" } }),
    )
    .await;
    assert_eq!(draft["state"], "draft", "no SSO URL nor certificate: {draft}");
    assert_eq!(draft["status"], "unlinked");
}

#[tokio::test]
async fn a_connection_without_its_client_secret_is_a_draft_until_a_patch_completes_it() {
    let app = TestApp::spawn().await;
    let org_id = org(&app, "Acme", "acme.com").await;
    let c = create(&app, oidc_body(&org_id, None)).await;
    let id = c["id"].as_str().unwrap();
    assert_eq!(c["state"], "draft", "{c}");
    assert!(events_named(&app, "connection.activated").await.is_empty());

    // A draft cannot be activated nor deactivated while incomplete.
    assert_rejected(
        &app,
        Method::PATCH,
        &format!("/connections/{id}"),
        Some(json!({ "state": "active" })),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters/connection_options_incomplete",
        ),
        "activate an incomplete draft",
    )
    .await;
    assert_rejected(
        &app,
        Method::PATCH,
        &format!("/connections/{id}"),
        Some(json!({ "state": "inactive" })),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters/connection_not_active",
        ),
        "deactivate a draft",
    )
    .await;

    let (s, p) = app
        .patch(
            &format!("/connections/{id}"),
            json!({ "oidc_options": { "client_secret": SECRET } }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["state"], "active", "{p}");
    assert_eq!(
        p["oidc_options"]["discovery_endpoint"], DISCOVERY,
        "merged, not replaced"
    );
    assert_eq!(events_named(&app, "connection.activated").await.len(), 1);
    assert!(!stored_text(&app).await.contains(SECRET));
}

#[tokio::test]
async fn deactivating_and_reactivating_publish_connection_deactivated_and_connection_activated() {
    let app = TestApp::spawn().await;
    let org_id = org(&app, "Acme", "acme.com").await;
    let id = create(&app, oidc_body(&org_id, Some(SECRET))).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, off) = app
        .patch(&format!("/connections/{id}"), json!({ "state": "inactive" }))
        .await;
    assert_eq!(s, StatusCode::OK, "{off}");
    assert_eq!(off["state"], "inactive");
    assert_eq!(off["status"], "unlinked");
    let deactivated = events_named(&app, "connection.deactivated").await;
    assert_eq!(deactivated.len(), 1);
    assert_eq!(deactivated[0]["data"]["state"], "inactive");

    let (s, on) = app
        .patch(&format!("/connections/{id}"), json!({ "state": "active" }))
        .await;
    assert_eq!(s, StatusCode::OK, "{on}");
    assert_eq!(on["state"], "active");
    assert_eq!(events_named(&app, "connection.activated").await.len(), 2);

    // The organization's audit trail shows them, with the connection as a target.
    let (s, audit) = app
        .get(&format!(
            "/audit_logs/events?organization_id={org_id}&actions=connection.deactivated&targets=connection"
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{audit}");
    let entries = audit["data"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{audit}");
    assert!(entries[0].to_string().contains(&id), "{audit}");
}

#[tokio::test]
async fn patching_options_merges_them_field_by_field_and_replaces_the_sealed_secret() {
    let app = TestApp::spawn().await;
    let org_id = org(&app, "Acme", "acme.com").await;
    let id = create(&app, oidc_body(&org_id, Some(SECRET))).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let before = secret_rows(&app, &id).await;
    let (s, p) = app
        .patch(
            &format!("/connections/{id}"),
            json!({
                "name": "Renamed",
                "external_id": "ext-1",
                "connection_type": "GenericOIDC",
                "attribute_maps": { "standard_attributes": { "email": "mail" } },
                "oidc_options": { "client_id": "kl-client-2", "pkce": true, "client_secret": "second-secret-xyz" },
            }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["name"], "Renamed");
    assert_eq!(p["external_id"], "ext-1");
    assert_eq!(p["oidc_options"]["client_id"], "kl-client-2");
    assert_eq!(p["oidc_options"]["pkce"], true);
    assert_eq!(p["oidc_options"]["discovery_endpoint"], DISCOVERY);
    assert_eq!(p["oidc_options"]["has_client_secret"], true);
    assert_eq!(p["attribute_maps"]["standard_attributes"]["email"], "mail");
    assert_eq!(p["state"], "active");
    let after = secret_rows(&app, &id).await;
    assert_eq!(after.len(), 1, "the replaced secret is erased: {after:?}");
    assert_ne!(after[0].0, before[0].0);
    assert!(!stored_text(&app).await.contains("second-secret-xyz"));

    // external_id null stops tracking one.
    let (s, p) = app
        .patch(&format!("/connections/{id}"), json!({ "external_id": null }))
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["external_id"], Value::Null);
}

#[tokio::test]
async fn connections_are_listed_and_filtered_by_organization_type_domain_and_name() {
    let app = TestApp::spawn().await;
    let acme = org(&app, "Acme", "acme.com").await;
    let globex = org(&app, "Globex", "globex.com").await;
    let a = create(&app, oidc_body(&acme, Some(SECRET))).await;
    let b = create(
        &app,
        json!({ "organization_id": acme, "name": "Acme SAML",
            "saml_options": { "idp_metadata_url": "https://idp.example.com/m" } }),
    )
    .await;
    let g = create(
        &app,
        json!({ "organization_id": globex, "name": "Globex Okta", "connection_type": "OktaSAML",
            "saml_options": { "idp_metadata_url": "https://idp.example.com/g" } }),
    )
    .await;
    let ids = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect()
    };
    let id = |v: &Value| v["id"].as_str().unwrap().to_string();
    let cases: Vec<(String, Vec<String>)> = vec![
        ("/connections".into(), vec![id(&g), id(&b), id(&a)]),
        ("/connections?order=asc".into(), vec![id(&a), id(&b), id(&g)]),
        (format!("/connections?organization_id={acme}"), vec![id(&b), id(&a)]),
        ("/connections?connection_type=GenericSAML".into(), vec![id(&b)]),
        (
            "/connections?connection_type=GenericSAML,OktaSAML".into(),
            vec![id(&g), id(&b)],
        ),
        ("/connections?domain=globex.com".into(), vec![id(&g)]),
        ("/connections?search=saml".into(), vec![id(&b)]),
        ("/connections?search=nothing-like-this".into(), vec![]),
    ];
    for (path, want) in cases {
        let (s, list) = app.get(&path).await;
        assert_eq!(s, StatusCode::OK, "{path}: {list}");
        assert_eq!(list["object"], "list");
        assert_eq!(ids(&list), want, "{path}");
    }
    // Paging: one per page, following `after`.
    let (s, first) = app.get("/connections?limit=1").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ids(&first), vec![id(&g)]);
    let after = first["list_metadata"]["after"].as_str().unwrap();
    let (_, second) = app.get(&format!("/connections?limit=1&after={after}")).await;
    assert_eq!(ids(&second), vec![id(&b)]);
    for (path, code) in [
        ("/connections?limit=0", "invalid_request_parameters/invalid_limit"),
        (
            "/connections?after=org_01H0000000000000000000000",
            "invalid_request_parameters/invalid_cursor",
        ),
        (
            "/connections?connection_type=Generic%20SAML",
            "invalid_request_parameters/invalid_connection_type",
        ),
    ] {
        let (s, b) = app.get(path).await;
        assert_error(s, &b, StatusCode::UNPROCESSABLE_ENTITY, code, path);
    }
}

#[tokio::test]
async fn deleting_a_connection_publishes_connection_deleted_erases_its_secrets_and_then_it_is_gone() {
    let app = TestApp::spawn().await;
    let org_id = org(&app, "Acme", "acme.com").await;
    let id = create(&app, oidc_body(&org_id, Some(SECRET))).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _) = app.delete(&format!("/connections/{id}")).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let deleted = events_named(&app, "connection.deleted").await;
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["data"]["id"], id.as_str());
    assert_eq!(deleted[0]["data"]["object"], "connection");
    assert!(secret_rows(&app, &id).await.is_empty());
    for (m, body) in [
        (Method::GET, None),
        (Method::DELETE, None),
        (Method::PATCH, Some(json!({ "name": "x" }))),
    ] {
        let (s, b) = app.request(m.clone(), &format!("/connections/{id}"), body).await;
        assert_error(
            s,
            &b,
            StatusCode::NOT_FOUND,
            "entity_not_found",
            &format!("{m} deleted"),
        );
    }
    let (_, list) = app.get("/connections").await;
    assert_eq!(list["data"], json!([]));
}

#[tokio::test]
async fn unknown_ids_are_404_and_a_wrong_key_is_401() {
    let app = TestApp::spawn().await;
    let org_id = org(&app, "Acme", "acme.com").await;
    let unknown = "conn_01H00000000000000000000000";
    for (m, body) in [
        (Method::GET, None),
        (Method::DELETE, None),
        (Method::PATCH, Some(json!({ "name": "x" }))),
    ] {
        assert_rejected(
            &app,
            m.clone(),
            &format!("/connections/{unknown}"),
            body,
            (StatusCode::NOT_FOUND, "entity_not_found"),
            &format!("{m} unknown"),
        )
        .await;
    }
    assert_rejected(
        &app,
        Method::POST,
        "/connections",
        Some(oidc_body("org_01H00000000000000000000000", Some(SECRET))),
        (StatusCode::NOT_FOUND, "entity_not_found"),
        "unknown organization",
    )
    .await;
    for key in [None, Some("sk_wrong")] {
        for (m, path, body) in [
            (Method::GET, "/connections".to_string(), None),
            (
                Method::POST,
                "/connections".to_string(),
                Some(oidc_body(&org_id, Some(SECRET))),
            ),
            (Method::GET, format!("/connections/{unknown}"), None),
            (Method::PATCH, format!("/connections/{unknown}"), Some(json!({}))),
            (Method::DELETE, format!("/connections/{unknown}"), None),
        ] {
            let (s, b) = app.request_with_key(m.clone(), &path, body, key).await;
            assert_error(
                s,
                &b,
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                &format!("{m} {path} {key:?}"),
            );
        }
    }
    let (_, list) = app.get("/connections").await;
    assert_eq!(list["data"], json!([]), "nothing was created without a key");
}

#[tokio::test]
async fn invalid_input_is_refused_with_422_field_errors_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let org_id = org(&app, "Acme", "acme.com").await;
    let existing = create(&app, oidc_body(&org_id, Some(SECRET))).await;
    let existing_id = existing["id"].as_str().unwrap();
    let o = |opts: Value| json!({ "organization_id": org_id, "oidc_options": opts });
    let s = |opts: Value| json!({ "organization_id": org_id, "saml_options": opts });
    let creates = [
        (json!({ "organization_id": org_id }), "connection_type_required"),
        (
            json!({ "organization_id": org_id, "oidc_options": { "discovery_endpoint": DISCOVERY, "client_id": "c" },
                "saml_options": { "idp_metadata_url": "https://i.example.com/m" } }),
            "mutually_exclusive",
        ),
        (o(json!({ "client_id": "c" })), "required"),
        (o(json!({ "discovery_endpoint": DISCOVERY })), "required"),
        (
            o(json!({ "discovery_endpoint": "not a url", "client_id": "c" })),
            "invalid_url",
        ),
        (
            o(json!({ "discovery_endpoint": "ftp://idp.example.com/x", "client_id": "c" })),
            "invalid_url",
        ),
        (
            o(json!({ "discovery_endpoint": DISCOVERY, "client_id": "" })),
            "invalid_value",
        ),
        (
            o(json!({ "discovery_endpoint": DISCOVERY, "client_id": "c", "token_authentication_method": "magic" })),
            "invalid_value",
        ),
        (
            o(json!({ "discovery_endpoint": DISCOVERY, "client_id": "c", "id_token_signature_algorithm": "none" })),
            "invalid_value",
        ),
        (
            o(
                json!({ "discovery_endpoint": DISCOVERY, "client_id": "c", "client_secret": "s",
                "token_authentication_method": "private_key_jwt" }),
            ),
            "client_secret_not_allowed",
        ),
        (
            o(json!({ "discovery_endpoint": DISCOVERY, "client_id": "c",
                "jwt_signing_key_pair": { "key": PRIVATE_KEY, "cert": CERT } })),
            "key_pair_not_allowed",
        ),
        (s(json!({ "idp_signing_certs": ["not a certificate"] })), "invalid_pem"),
        (
            s(json!({ "sp_signing_key_pair": { "key": "nope", "cert": CERT } })),
            "invalid_pem",
        ),
        (
            s(json!({ "idp_metadata_url": "https://i.example.com/m", "idp_sso_url": "https://i.example.com/sso" })),
            "mutually_exclusive",
        ),
        (
            json!({ "organization_id": org_id, "connection_type": "GoogleOAuth",
                "oidc_options": { "discovery_endpoint": DISCOVERY, "client_id": "c" } }),
            "invalid_connection_type",
        ),
        (
            json!({ "organization_id": org_id, "connection_type": "OktaSAML",
                "oidc_options": { "discovery_endpoint": DISCOVERY, "client_id": "c" } }),
            "connection_type_mismatch",
        ),
        (
            json!({ "organization_id": org_id, "attribute_maps": { "standard_attributes": { "email": 1 } },
                "oidc_options": { "discovery_endpoint": DISCOVERY, "client_id": "c" } }),
            "invalid_attribute_maps",
        ),
        (
            json!({ "organization_id": org_id, "name": "x".repeat(300),
                "oidc_options": { "discovery_endpoint": DISCOVERY, "client_id": "c" } }),
            "invalid_value",
        ),
    ];
    for (body, code) in creates {
        assert_rejected(
            &app,
            Method::POST,
            "/connections",
            Some(body.clone()),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("invalid_request_parameters/{code}"),
            ),
            &format!("create {body}"),
        )
        .await;
    }
    // Unknown fields and wrong types are refused by the body's shape.
    for body in [
        json!({ "organization_id": org_id, "oidc_options": { "discovery_endpoint": DISCOVERY, "client_id": "c", "scopes": 1 } }),
        json!({ "organization_id": org_id, "oidc_options": { "discovery_endpoint": DISCOVERY, "client_id": 5 } }),
    ] {
        let before = crate::helpers::state_snapshot(&app.pool).await;
        let (st, b) = app.post("/connections", body.clone()).await;
        assert!(st.is_client_error(), "{body}: {st} {b}");
        assert_eq!(before, crate::helpers::state_snapshot(&app.pool).await, "{body}");
    }
    let patches = [
        (json!({ "state": "deleting" }), "invalid_state"),
        (json!({ "connection_type": "GenericSAML" }), "connection_type_immutable"),
        (
            json!({ "saml_options": { "idp_metadata_url": "https://i.example.com/m" } }),
            "protocol_mismatch",
        ),
        (
            json!({ "oidc_options": { "discovery_endpoint": "nope" } }),
            "invalid_url",
        ),
        (json!({ "name": "" }), "invalid_value"),
    ];
    for (body, code) in patches {
        assert_rejected(
            &app,
            Method::PATCH,
            &format!("/connections/{existing_id}"),
            Some(body.clone()),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("invalid_request_parameters/{code}"),
            ),
            &format!("patch {body}"),
        )
        .await;
    }
}

#[tokio::test]
async fn idp_urls_on_non_public_addresses_are_refused_at_creation_without_a_request() {
    // The default guard: no loopback allowed either.
    let app = TestApp::spawn_with(|c| c.webhook_allow = keyledger_api::ssrf::WebhookAllow::default()).await;
    let org_id = org(&app, "Acme", "acme.com").await;
    for url in [
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/.well-known/openid-configuration",
        "http://127.0.0.1:9/.well-known/openid-configuration",
        "http://[::1]/.well-known/openid-configuration",
        "http://localhost/.well-known/openid-configuration",
    ] {
        assert_rejected(
            &app,
            Method::POST,
            "/connections",
            Some(json!({ "organization_id": org_id,
                "oidc_options": { "discovery_endpoint": url, "client_id": "c", "client_secret": "s" } })),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_parameters/url_not_allowed",
            ),
            url,
        )
        .await;
        assert_rejected(
            &app,
            Method::POST,
            "/connections",
            Some(json!({ "organization_id": org_id, "saml_options": { "idp_metadata_url": url } })),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_parameters/url_not_allowed",
            ),
            url,
        )
        .await;
    }
}

#[tokio::test]
async fn an_external_id_already_used_in_the_organization_answers_that_connection() {
    let app = TestApp::spawn().await;
    let org_id = org(&app, "Acme", "acme.com").await;
    let mut body = oidc_body(&org_id, Some(SECRET));
    body["external_id"] = json!("acme-sso");
    let first = create(&app, body.clone()).await;
    let (s, again) = app.post("/connections", body).await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_eq!(again["id"], first["id"]);
    let (_, list) = app.get("/connections").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn concurrent_patches_of_one_connection_all_apply_or_conflict_never_fail() {
    let app = TestApp::spawn().await;
    let org_id = org(&app, "Acme", "acme.com").await;
    let id = create(&app, oidc_body(&org_id, Some(SECRET))).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let http = app.http.clone();
        let url = format!("{}/connections/{id}", app.base);
        let key = app.key.clone();
        let body = if i % 2 == 0 {
            json!({ "name": format!("name-{i}") })
        } else {
            json!({ "oidc_options": { "client_id": format!("client-{i}"), "client_secret": format!("secret-{i}") } })
        };
        tasks.push(tokio::spawn(async move {
            let r = http.patch(url).bearer_auth(key).json(&body).send().await.unwrap();
            r.status()
        }));
    }
    for t in tasks {
        let s = t.await.unwrap();
        assert!(s == StatusCode::OK || s == StatusCode::CONFLICT, "{s}");
    }
    let (s, c) = app.get(&format!("/connections/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(c["state"], "active");
    assert_eq!(
        c["oidc_options"]["discovery_endpoint"], DISCOVERY,
        "no patch lost the other fields"
    );
    assert_eq!(
        secret_rows(&app, &id).await.len(),
        1,
        "one client secret named, the rest erased"
    );
}

#[tokio::test]
async fn deleting_an_organization_deletes_its_connections() {
    let app = TestApp::spawn().await;
    let org_id = org(&app, "Acme", "acme.com").await;
    let other = org(&app, "Globex", "globex.com").await;
    let a = create(&app, oidc_body(&org_id, Some(SECRET))).await;
    let b = create(
        &app,
        json!({ "organization_id": org_id, "saml_options": { "idp_metadata_url": "https://idp.example.com/m" } }),
    )
    .await;
    let kept = create(&app, oidc_body(&other, Some(SECRET))).await;
    let (s, _) = app.delete(&format!("/organizations/{org_id}")).await;
    assert!(s.is_success(), "{s}");
    for c in [&a, &b] {
        let (s, _) = app.get(&format!("/connections/{}", c["id"].as_str().unwrap())).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
    let (s, _) = app.get(&format!("/connections/{}", kept["id"].as_str().unwrap())).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(events_named(&app, "connection.deleted").await.len(), 2);
    assert_rejected(
        &app,
        Method::POST,
        "/connections",
        Some(oidc_body(&org_id, Some(SECRET))),
        (StatusCode::NOT_FOUND, "entity_not_found"),
        "a connection of the deleted organization",
    )
    .await;
}

//! Tests: `/openapi.json` against the router and the running server. The operation list is
//! never written down here: it comes from the document and from the router itself, and the two
//! are compared both ways with what the server answers.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::*;

/// The methods an operation can have here.
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// One operation of the document.
#[derive(Debug, Clone)]
pub struct DocumentedOperation {
    /// Upper case, e.g. `GET`.
    pub method: String,
    /// The path as in the document, e.g. `/organizations/{id}`.
    pub template: String,
    /// True when the operation declares the bearer security requirement.
    pub needs_key: bool,
    pub operation: Value,
}

impl DocumentedOperation {
    /// The template with every `{param}` replaced by a placeholder value.
    pub fn path(&self) -> String {
        concrete(&self.template)
    }
}

/// A concrete path for a template: `{id}` becomes `x_id`.
pub fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) => format!("x_{name}"),
            None => seg.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

pub async fn fetch_document(app: &TestApp) -> Value {
    let (s, doc) = app.request_with_key(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK, "the document is served without a key: {doc}");
    doc
}

/// Every operation of the document, in path order.
pub fn operations(doc: &Value) -> Vec<DocumentedOperation> {
    let paths = doc["paths"].as_object().expect("paths is an object");
    let mut out = Vec::new();
    for (template, item) in paths {
        for m in METHODS {
            if let Some(op) = item.get(m.to_lowercase()) {
                out.push(DocumentedOperation {
                    method: m.to_string(),
                    template: template.clone(),
                    needs_key: op["security"]
                        .as_array()
                        .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some())),
                    operation: op.clone(),
                });
            }
        }
    }
    assert!(out.len() >= 40, "the document lists every operation: {}", out.len());
    out
}

/// The path templates an axum router holds, read from its `Debug` output (axum has no other
/// way to list them). Fails loudly rather than finding nothing if that output ever changes.
fn routed_paths(router: &axum::Router<keyledger_api::state::AppState>) -> BTreeSet<String> {
    let debug = format!("{router:?}");
    // `Router { path_router: ..., fallback_router: ... }`: the fallback's own paths are not routes.
    let routes = debug.split("fallback_router").next().unwrap_or_default();
    let paths: BTreeSet<String> = routes
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with('/') && !s.contains("__private__"))
        .map(str::to_string)
        .collect();
    assert!(
        !paths.is_empty(),
        "no paths found in the router's Debug output: {debug}"
    );
    paths
}

/// Every path template the server routes: the public list and the list behind the key, exactly
/// as `keyledger_api::router` builds them.
fn served_paths() -> BTreeSet<String> {
    let (public, _) = keyledger_api::routes::public().split_for_parts();
    let (protected, _) = keyledger_api::routes::protected().split_for_parts();
    let mut all = routed_paths(&public);
    all.extend(routed_paths(&protected));
    all
}

/// Sends `method path` with the key and no body; reads the body only when it is JSON (a live
/// event stream never ends).
async fn probe(app: &TestApp, method: &str, path: &str) -> (StatusCode, Value) {
    let resp = app
        .http
        .request(
            Method::from_bytes(method.as_bytes()).expect("method"),
            format!("{}{path}", app.base),
        )
        .bearer_auth(&app.key)
        .send()
        .await
        .expect("send");
    let status = resp.status();
    let json = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let body = if json {
        resp.json().await.unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    (status, body)
}

/// Not the router's fallbacks: an unknown path is `404 not_found` and a method the path does
/// not have is `405 method_not_allowed` (a handler's own 404 is `entity_not_found` or similar).
fn routed(status: StatusCode, body: &Value) -> bool {
    let code = body["code"].as_str();
    let fallback = (status == StatusCode::NOT_FOUND && code == Some("not_found"))
        || (status == StatusCode::METHOD_NOT_ALLOWED && code == Some("method_not_allowed"));
    !fallback
}

#[tokio::test]
async fn every_documented_operation_is_served_and_every_served_route_is_documented() {
    let app = TestApp::spawn().await;
    let before = app.log_len().await;
    let doc = fetch_document(&app).await;
    let documented: BTreeSet<(String, String)> = operations(&doc).into_iter().map(|o| (o.method, o.template)).collect();
    let documented_paths: BTreeSet<String> = documented.iter().map(|(_, t)| t.clone()).collect();
    let served = served_paths();
    assert_eq!(
        served, documented_paths,
        "the router's paths (left) and the document's (right)"
    );
    // The probe can tell a fallback from a handler.
    let (s, body) = probe(&app, "GET", "/no/such/path").await;
    assert!(!routed(s, &body), "an unknown path reaches the fallback: {s} {body}");
    for template in &served {
        let path = concrete(template);
        for m in METHODS {
            let (s, body) = probe(&app, m, &path).await;
            let is_documented = documented.contains(&(m.to_string(), template.clone()));
            assert_eq!(
                routed(s, &body),
                is_documented,
                "{m} {template} ({path}): answered {s} {body}; documented: {is_documented}"
            );
        }
    }
    assert_eq!(app.log_len().await, before, "probes without bodies changed nothing");
    app.stop().await;
}

#[tokio::test]
async fn the_served_document_is_the_generated_one_and_is_self_consistent() {
    let app = TestApp::spawn().await;
    let doc = fetch_document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0", "OpenAPI 3.1");
    let generated = keyledger_api::openapi::spec().expect("build the document");
    assert_eq!(
        doc, generated,
        "the served document is the one built from the route lists"
    );
    let mut ids = BTreeMap::new();
    for op in operations(&doc) {
        let ctx = format!("{} {}", op.method, op.template);
        let id = op.operation["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{ctx}: operationId"));
        if let Some(other) = ids.insert(id.to_string(), ctx.clone()) {
            panic!("operationId {id} is used by {other} and {ctx}");
        }
        let responses = op.operation["responses"].as_object().expect("responses");
        assert!(
            // Browser endpoints that only ever redirect (`/sso/authorize`) document their 302.
            responses.keys().any(|k| k.starts_with('2') || k == "302"),
            "{ctx}: a success status is documented: {responses:?}"
        );
        assert!(responses.contains_key("default"), "{ctx}: the error body is documented");
        if op.needs_key {
            assert!(responses.contains_key("401"), "{ctx}: 401 is documented");
        }
        // Every path parameter is declared, required, and nothing else is declared in the path.
        let declared: BTreeSet<&str> = op.operation["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["in"] == "path")
                    .inspect(|p| assert_eq!(p["required"], true, "{ctx}: {p}"))
                    .filter_map(|p| p["name"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        let in_template: BTreeSet<&str> = op
            .template
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        assert_eq!(declared, in_template, "{ctx}: path parameters");
        let body_methods = ["POST", "PUT", "PATCH"];
        if op.operation.get("requestBody").is_some() {
            assert!(
                body_methods.contains(&op.method.as_str()),
                "{ctx}: a body on {}",
                op.method
            );
        }
    }
    // Every reference resolves.
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty(), "the document uses references");
    for r in refs {
        let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("local reference: {r}"));
        assert!(doc.pointer(pointer).is_some(), "{r} resolves");
    }
    app.stop().await;
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn operations_document_their_real_success_statuses_and_bodies() {
    let app = TestApp::spawn().await;
    let doc = fetch_document(&app).await;
    let success = |m: &str, t: &str| -> BTreeMap<String, Value> {
        let op = &doc["paths"][t][m];
        assert!(op.is_object(), "{m} {t} is documented");
        op["responses"]
            .as_object()
            .expect("responses")
            .iter()
            .filter(|(k, _)| k.starts_with('2'))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let cases = [
        ("post", "/user_management/users", "201", Some("User")),
        ("get", "/user_management/users", "200", Some("UserList")),
        ("post", "/organizations", "201", Some("Organization")),
        ("delete", "/organization_domains/{id}", "204", None),
        ("delete", "/user_management/users/{id}", "200", None),
        (
            "post",
            "/organization_domains/{id}/verify",
            "201",
            Some("OrganizationDomain"),
        ),
        ("post", "/webhook_endpoints/{id}/replay", "202", Some("WebhookReplay")),
        ("delete", "/webhook_endpoints/{id}", "204", None),
        ("post", "/audit_logs/events", "200", Some("Success")),
        ("get", "/events", "200", Some("EventList")),
    ];
    for (m, t, status, schema) in cases {
        let got = success(m, t);
        assert_eq!(got.keys().collect::<Vec<_>>(), [status], "{m} {t}: success statuses");
        let content = &got[status]["content"];
        match schema {
            Some(name) => assert_eq!(
                content["application/json"]["schema"]["$ref"],
                format!("#/components/schemas/{name}"),
                "{m} {t}: body"
            ),
            None => assert!(content.is_null(), "{m} {t}: no body: {content}"),
        }
    }
    // Parameters and request bodies are described, not just named.
    let list = &doc["paths"]["/user_management/organization_memberships"]["get"]["parameters"];
    let names: Vec<&str> = list
        .as_array()
        .expect("parameters")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for p in [
        "limit",
        "before",
        "after",
        "order",
        "organization_id",
        "user_id",
        "statuses",
    ] {
        assert!(names.contains(&p), "membership list parameter {p}: {names:?}");
    }
    let create = &doc["components"]["schemas"]["CreateUser"];
    assert_eq!(create["required"], serde_json::json!(["email"]), "{create}");
    assert_eq!(
        create["additionalProperties"], false,
        "unknown fields are refused: {create}"
    );
    let user = &doc["components"]["schemas"]["User"];
    assert_eq!(
        user["properties"]["first_name"]["type"],
        serde_json::json!(["string", "null"]),
        "nullable fields are nullable: {user}"
    );
    app.stop().await;
}

/// Checks `value` against the document's `schema`: for objects, no field beyond `properties`
/// (where `additionalProperties` is false) and every `required` field present; arrays item by
/// item; `$ref`s followed; `type` lists (nullability) and `enum`s honoured. Returns the
/// mismatches, with their JSON paths.
pub(crate) fn mismatches(doc: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    if let Some(r) = schema["$ref"].as_str() {
        let target = doc.pointer(r.trim_start_matches('#')).expect("reference resolves");
        return mismatches(doc, target, value, at);
    }
    let mut out = Vec::new();
    let type_name = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let type_ok =
        types.is_empty() || types.contains(&type_name) || (type_name == "integer" && types.contains(&"number"));
    if !type_ok {
        out.push(format!("{at}: {type_name} where the schema says {types:?}"));
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !value.is_null() && !allowed.contains(value) {
            out.push(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    match value {
        Value::Object(fields) => {
            let properties = schema["properties"].as_object();
            for (k, v) in fields {
                match properties.and_then(|p| p.get(k)) {
                    Some(s) => out.extend(mismatches(doc, s, v, &format!("{at}.{k}"))),
                    None if schema["additionalProperties"] == false => out.push(format!("{at}.{k}: not in the schema")),
                    None => {
                        if let Some(s) = schema.get("additionalProperties").filter(|s| s.is_object()) {
                            out.extend(mismatches(doc, s, v, &format!("{at}.{k}")));
                        }
                    }
                }
            }
            for r in schema["required"].as_array().into_iter().flatten() {
                let r = r.as_str().expect("field name");
                if !fields.contains_key(r) {
                    out.push(format!("{at}.{r}: required but absent"));
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                out.extend(mismatches(doc, &schema["items"], v, &format!("{at}[{i}]")));
            }
        }
        _ => {}
    }
    out
}

#[tokio::test]
async fn real_response_bodies_match_their_documented_schemas_field_for_field() {
    let app = TestApp::spawn().await;
    let doc = fetch_document(&app).await;
    let org = app
        .create_organization(
            "Shapes",
            serde_json::json!([{ "domain": "shapes.example.com", "state": "pending" }]),
        )
        .await;
    let org_id = org["id"].as_str().expect("id").to_string();
    let user = app.create_user("shape@example.com").await;
    let user_id = user["id"].as_str().expect("id").to_string();
    let membership = app.create_membership(&user_id, &org_id, None).await;
    let (s, _) = app
        .post(
            "/audit_logs/events",
            serde_json::json!({ "organization_id": org_id, "event": {
                "action": "shape.checked", "occurred_at": "2026-01-01T00:00:00Z",
                "actor": { "id": "u_1", "type": "user" }, "targets": [{ "id": "t_1", "type": "thing" }],
                "context": { "location": "203.0.113.7" } } }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .post(
            "/audit_logs/actions/shape.checked/schemas",
            serde_json::json!({ "targets": [{ "type": "thing" }] }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, export) = app
        .post(
            "/audit_logs/exports",
            serde_json::json!({ "organization_id": org_id, "range_start": "2025-01-01T00:00:00Z",
                "range_end": "2027-01-01T00:00:00Z" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{export}");
    let (_, health) = app.request_with_key(Method::GET, "/health", None, None).await;
    // (operation, path, the body it answered)
    let mut answers = vec![
        ("post", "/organizations", org.clone()),
        ("post", "/user_management/users", user.clone()),
        ("post", "/user_management/organization_memberships", membership.clone()),
        ("get", "/health", health),
        ("post", "/audit_logs/exports", export),
    ];
    let reads = [
        ("/user_management/users", "/user_management/users".to_string()),
        ("/organizations", "/organizations".to_string()),
        (
            "/user_management/organization_memberships",
            format!("/user_management/organization_memberships?organization_id={org_id}"),
        ),
        ("/events", "/events".to_string()),
        (
            "/audit_logs/events",
            format!("/audit_logs/events?organization_id={org_id}"),
        ),
        ("/audit_logs/actions", "/audit_logs/actions".to_string()),
        (
            "/audit_logs/actions/{actionName}/schemas",
            "/audit_logs/actions/shape.checked/schemas".to_string(),
        ),
        (
            "/organization_domains/{id}",
            format!(
                "/organization_domains/{}",
                org["domains"][0]["id"].as_str().expect("domain")
            ),
        ),
    ];
    for (template, path) in reads {
        let (s, body) = app.get(&path).await;
        assert_eq!(s, StatusCode::OK, "{path}: {body}");
        answers.push(("get", template, body));
    }
    for (m, template, body) in answers {
        let op = &doc["paths"][template][m];
        let (status, response) = op["responses"]
            .as_object()
            .and_then(|r| r.iter().find(|(k, _)| k.starts_with('2')))
            .unwrap_or_else(|| panic!("{m} {template}: a success response"));
        let schema = &response["content"]["application/json"]["schema"];
        assert!(schema.is_object(), "{m} {template} {status}: a body schema");
        let found = mismatches(&doc, schema, &body, "$");
        assert!(found.is_empty(), "{m} {template}: {found:#?}\nbody: {body}");
    }
    // The checker can fail: an extra field and a missing one are both reported.
    let mut wrong = user;
    wrong["surprise"] = Value::Bool(true);
    wrong.as_object_mut().expect("object").remove("email");
    let found = mismatches(
        &doc,
        &serde_json::json!({ "$ref": "#/components/schemas/User" }),
        &wrong,
        "$",
    );
    assert_eq!(found.len(), 2, "{found:?}");
    app.stop().await;
}

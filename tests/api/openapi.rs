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
            responses.keys().any(|k| k.starts_with('2')),
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

//! `GET /openapi.json`: this server's OpenAPI 3.1 document, generated from the route table
//! below (which a test checks against the router, so the two cannot drift apart).

use axum::Json;
use serde_json::{json, Map, Value};

/// (method, path, summary, tag) of every endpoint.
pub const ROUTES: &[(&str, &str, &str, &str)] = &[
    ("get", "/health", "Liveness and migration state", "operations"),
    ("get", "/openapi.json", "This document", "operations"),
    ("get", "/user_management/users", "List users", "users"),
    ("post", "/user_management/users", "Create a user", "users"),
    ("get", "/user_management/users/{id}", "Get a user", "users"),
    ("put", "/user_management/users/{id}", "Update a user", "users"),
    ("delete", "/user_management/users/{id}", "Delete a user", "users"),
    (
        "get",
        "/user_management/users/external_id/{external_id}",
        "Get a user by external id",
        "users",
    ),
    ("get", "/organizations", "List organizations", "organizations"),
    ("post", "/organizations", "Create an organization", "organizations"),
    ("get", "/organizations/{id}", "Get an organization", "organizations"),
    ("put", "/organizations/{id}", "Update an organization", "organizations"),
    (
        "delete",
        "/organizations/{id}",
        "Delete an organization",
        "organizations",
    ),
    (
        "get",
        "/organizations/external_id/{external_id}",
        "Get an organization by external id",
        "organizations",
    ),
    (
        "post",
        "/organization_domains",
        "Create an organization domain",
        "organization_domains",
    ),
    (
        "get",
        "/organization_domains/{id}",
        "Get an organization domain",
        "organization_domains",
    ),
    (
        "delete",
        "/organization_domains/{id}",
        "Delete an organization domain",
        "organization_domains",
    ),
    (
        "post",
        "/organization_domains/{id}/verify",
        "Verify a domain by DNS TXT lookup",
        "organization_domains",
    ),
    (
        "get",
        "/user_management/organization_memberships",
        "List organization memberships",
        "organization_memberships",
    ),
    (
        "post",
        "/user_management/organization_memberships",
        "Create an organization membership",
        "organization_memberships",
    ),
    (
        "get",
        "/user_management/organization_memberships/{id}",
        "Get an organization membership",
        "organization_memberships",
    ),
    (
        "put",
        "/user_management/organization_memberships/{id}",
        "Update a membership's role",
        "organization_memberships",
    ),
    (
        "delete",
        "/user_management/organization_memberships/{id}",
        "Delete an organization membership",
        "organization_memberships",
    ),
    (
        "put",
        "/user_management/organization_memberships/{id}/deactivate",
        "Deactivate a membership",
        "organization_memberships",
    ),
    (
        "put",
        "/user_management/organization_memberships/{id}/reactivate",
        "Reactivate a membership",
        "organization_memberships",
    ),
    ("get", "/events", "List events from the log", "events"),
];

fn error_schema() -> Value {
    json!({
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": { "type": "string" },
            "message": { "type": "string" },
            "errors": { "type": "array", "items": { "type": "object", "properties": {
                "field": { "type": "string" }, "code": { "type": "string" }, "message": { "type": "string" } } } }
        }
    })
}

/// Builds the document.
pub fn spec() -> Value {
    let mut paths = Map::new();
    let modules = [
        crate::routes::audit_logs::ROUTES,
        crate::routes::webhooks::ROUTES,
        crate::routes::stream::ROUTES,
    ];
    for (method, path, summary, tag) in ROUTES.iter().chain(modules.into_iter().flatten()) {
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        let public = matches!(*path, "/health" | "/openapi.json") || crate::routes::audit_logs::PUBLIC.contains(path);
        let mut op = json!({
            "summary": summary,
            "tags": [tag],
            "parameters": params,
            "responses": {
                "200": { "description": "OK" },
                "default": { "description": "Error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }
            }
        });
        if !public {
            op["security"] = json!([{ "bearer": [] }]);
        }
        let entry = paths.entry((*path).to_string()).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "keyledger", "version": env!("CARGO_PKG_VERSION"),
                  "description": "Event-sourced identity backend with a WorkOS-compatible API" },
        "paths": paths,
        "components": {
            "schemas": { "Error": error_schema() },
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } }
        }
    })
}

pub async fn document() -> Json<Value> {
    Json(spec())
}

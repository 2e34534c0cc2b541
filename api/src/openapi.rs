//! `GET /openapi.json`: this server's OpenAPI 3.1 document, generated from the handlers'
//! `#[utoipa::path]` annotations and the request-body structs (`ToSchema`), collected from the
//! very route lists the router is built from (`routes::protected`, `routes::public`): the router
//! and the document cannot drift apart. What applies to every operation (the API key on the
//! protected ones, the error body) is added here, once. Built once per process.

use std::sync::LazyLock;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use keyledger_projections::objects::PUBLIC_EVENT_NAMES;
use serde_json::{json, Map, Value};
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::openapi::{ObjectBuilder, Required, Type};
use utoipa::OpenApi;

use crate::error::ApiError;
use crate::{routes, schemas};

/// The security scheme's name in the document.
const BEARER: &str = "bearer";
/// The shared error response's name in `components.responses`.
const ERROR_RESPONSE: &str = "Error";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "keyledger",
        description = "Event-sourced identity backend with a WorkOS-compatible API (docs/API.md)."
    ),
    components(schemas(schemas::ErrorBody)),
    tags(
        (name = "users"), (name = "organizations"), (name = "organization_domains"),
        (name = "organization_memberships"), (name = "events"), (name = "audit_logs"),
        (name = "webhooks"), (name = "operations")
    )
)]
struct ApiDoc;

/// Every operation of a path item.
fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// Links each create (a `201` answer of a `POST` on a collection `P`) to the operations that
/// take the new object's `id`: those on `P/{param}...` (as the parameter) and those whose body
/// has a field named after the object (`organization_id` for an `Organization`). Generated clients
/// and schemathesis's stateful phase follow them from a new object to its reads and changes.
/// Written as JSON: utoipa 5 serializes `Link.operation_id` under the wrong name.
fn link_creates(doc: &mut Value) {
    let schemas = doc.pointer("/components/schemas").cloned().unwrap_or_default();
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    // (path, operation id, the fields of its request body)
    let mut targets: Vec<(String, String, Vec<String>)> = Vec::new();
    for (path, item) in paths.iter() {
        for op in item.as_object().into_iter().flat_map(|m| m.values()) {
            let Some(id) = op.get("operationId").and_then(Value::as_str) else {
                continue;
            };
            let body = op
                .pointer("/requestBody/content/application~1json/schema/$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
                .and_then(|name| schemas.get(name))
                .and_then(|s| s.get("properties"))
                .and_then(Value::as_object);
            let fields = body.map(|p| p.keys().cloned().collect()).unwrap_or_default();
            targets.push((path.clone(), id.to_string(), fields));
        }
    }
    for (path, item) in paths.iter_mut() {
        let Some(created) = item.pointer_mut("/post/responses/201").and_then(Value::as_object_mut) else {
            continue;
        };
        let field = created
            .get("content")
            .and_then(|c| c.pointer("/application~1json/schema/$ref"))
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix("#/components/schemas/"))
            .map(|name| format!("{}_id", snake_case(name)));
        let mut links = Map::new();
        for (target, operation_id, fields) in &targets {
            let param = target
                .strip_prefix(path.as_str())
                .and_then(|r| r.strip_prefix("/{"))
                .and_then(|r| r.split_once('}'))
                .map(|(param, _)| param);
            let link = match (param, &field) {
                (Some(param), _) => json!({ "parameters": { param: "$response.body#/id" } }),
                (None, Some(f)) if target != path && fields.contains(f) => {
                    json!({ "requestBody": { f.as_str(): "$response.body#/id" } })
                }
                _ => continue,
            };
            let mut link = link;
            link["operationId"] = json!(operation_id);
            links.insert(operation_id.clone(), link);
        }
        if !links.is_empty() {
            created.insert("links".into(), Value::Object(links));
        }
    }
}

/// `OrganizationDomain` → `organization_domain`.
fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// The `Idempotency-Key` header of every `POST`/`PUT`/`PATCH` behind the key.
fn idempotency_key_header() -> Parameter {
    ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "1 to 255 printable ASCII characters: a repeat of the same request within 24 h replays \
             the first response (docs/API.md, \"Idempotency-Key\")",
        ))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(255))
                .pattern(Some("^[\\x20-\\x7e]+$")),
        ))
        .build()
}

fn error_ref() -> RefOr<utoipa::openapi::Response> {
    RefOr::Ref(Ref::from_response_name(ERROR_RESPONSE))
}

/// Builds the document (the served one is built once: [`document`]).
pub fn spec() -> Result<Value, serde_json::Error> {
    let mut doc = serde_json::to_value(generated())?;
    link_creates(&mut doc);
    if let Some(name) = doc.pointer_mut("/components/schemas/EventName") {
        name["enum"] = json!(PUBLIC_EVENT_NAMES);
    }
    Ok(doc)
}

/// The document as utoipa generates it from the route lists, with what applies to every
/// operation added.
fn generated() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let (_, mut protected) = routes::protected().split_for_parts();
    for item in protected.paths.paths.values_mut() {
        for op in operations(item) {
            op.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
            op.responses.responses.entry("401".into()).or_insert_with(error_ref);
        }
        // Every write behind the key takes an Idempotency-Key (`crate::idempotency`).
        for op in [&mut item.post, &mut item.put, &mut item.patch].into_iter().flatten() {
            op.parameters
                .get_or_insert_with(Vec::new)
                .push(idempotency_key_header());
        }
    }
    let (_, public) = routes::public().split_for_parts();
    doc.merge(protected);
    doc.merge(public);
    // Any other status (400 bad JSON, 404, 405, 413, 422, 500, 503, ...) carries the error body.
    for item in doc.paths.paths.values_mut() {
        for op in operations(item) {
            op.responses.responses.entry("default".into()).or_insert_with(error_ref);
        }
    }
    let components = doc.components.get_or_insert_with(Default::default);
    components.security_schemes.insert(
        BEARER.into(),
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("An API key: `Authorization: Bearer sk_...`"))
                .build(),
        ),
    );
    components.responses.insert(
        ERROR_RESPONSE.into(),
        RefOr::T(
            ResponseBuilder::new()
                .description("An error: a stable `code`, a `message` and, for validation, per-field `errors`")
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Error")))
                        .build(),
                )
                .build(),
        ),
    );
    doc
}

/// The document as served, rendered once.
static DOCUMENT: LazyLock<Option<String>> = LazyLock::new(|| match spec().and_then(|d| serde_json::to_string(&d)) {
    Ok(s) => Some(s),
    Err(e) => {
        tracing::error!(error = %e, "rendering the OpenAPI document failed");
        None
    }
});

#[utoipa::path(get, path = "/openapi.json", tag = "operations", operation_id = "openapi",
    summary = "This document (OpenAPI 3.1)",
    responses((status = 200, description = "The document", content_type = "application/json", body = Object)))]
pub async fn document() -> Response {
    match DOCUMENT.as_deref() {
        Some(doc) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], doc).into_response(),
        None => ApiError::internal().into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_become_the_fields_that_name_them() {
        assert_eq!(snake_case("Organization"), "organization");
        assert_eq!(snake_case("OrganizationDomain"), "organization_domain");
    }

    #[test]
    fn a_create_links_to_its_object_and_to_the_creates_that_name_it() {
        let doc = spec().unwrap();
        let links = &doc["paths"]["/organizations"]["post"]["responses"]["201"]["links"];
        assert_eq!(links["get_organization"]["parameters"]["id"], "$response.body#/id");
        assert_eq!(
            links["create_organization_domain"]["requestBody"]["organization_id"],
            "$response.body#/id"
        );
        assert!(links.get("list_organizations").is_none(), "{links}");
        let events = &doc["components"]["schemas"]["EventName"]["enum"];
        assert_eq!(events, &json!(PUBLIC_EVENT_NAMES), "the event catalog is the enum");
    }
}

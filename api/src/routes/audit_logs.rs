//! Audit Logs (WorkOS `/audit_logs/...`) and the reading-back extension: ingesting audit events
//! (`Idempotency-Key`: `crate::idempotency`), action schemas, the organization's trail, and CSV exports behind
//! short-lived download links served by keyledger itself. Handlers never touch the log directly.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use keyledger_domain::audit_log::validate::{check_metadata_schema, validate_event};
use keyledger_domain::audit_log::{
    AuditActor, AuditContext, AuditLogAction, AuditLogActionCommand, AuditLogEntry, AuditLogEntryCommand,
    AuditLogError, AuditLogExport, AuditLogExportCommand, AuditLogSchema, AuditMetadata, AuditTarget, ExportFilter,
    NewAuditEvent,
};
use keyledger_domain::ids::new_id;
use keyledger_projections::audit::{self, SchemasOutcome, TrailFilter, TrailOutcome};
use keyledger_projections::objects::ts;
use keyledger_projections::queries;
use keyledger_store::append::SideRows;
use keyledger_store::commands::Mode;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{cursor_field, invalid_cursor, list_response, now, object, page, time_range, ListParams};
use crate::error::{command_error, ApiError};
use crate::extract::{AppJson, PathParam, QueryPairs};
use crate::schemas;
use crate::state::{AppState, RequestContext};
use crate::tenant::Tenant;

/// How long a download link works.
const LINK_TTL: chrono::Duration = chrono::Duration::minutes(10);

/// This module's operations behind the API key (see `routes::protected` for how to add one).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_event, list_events))
        .routes(routes!(list_actions))
        .routes(routes!(create_schema, list_schemas))
        .routes(routes!(create_export))
        .routes(routes!(get_export))
        .routes(routes!(super::audit_log_retention::configuration))
        .routes(routes!(
            super::audit_log_retention::get,
            super::audit_log_retention::set
        ))
}

/// Operations without an API key: the token in the URL is the credential.
pub fn public_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(download))
}

fn audit_error(e: AuditLogError) -> ApiError {
    match e {
        AuditLogError::AlreadyExists => ApiError::conflict("the object already exists"),
    }
}

// --- validation -----------------------------------------------------------------------------

fn text(field: &str, s: &str, max: usize, required: bool) -> Result<(), ApiError> {
    if required && s.trim().is_empty() {
        return Err(ApiError::invalid(
            field,
            "invalid_value",
            format!("{field} must not be empty"),
        ));
    }
    if s.chars().count() > max || s.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            field,
            "invalid_value",
            format!("{field} must be at most {max} printable characters"),
        ));
    }
    Ok(())
}

/// WorkOS audit metadata: at most 50 keys matching `[a-zA-Z0-9_-]{1,40}`; values are strings of
/// at most 500 characters, numbers or booleans.
fn audit_metadata(field: &str, m: &AuditMetadata) -> Result<(), ApiError> {
    let bad = |msg: String| ApiError::invalid(field, "invalid_metadata", msg);
    if m.len() > 50 {
        return Err(bad("metadata may hold at most 50 keys".into()));
    }
    for (k, v) in m {
        let key_ok =
            (1..=40).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !key_ok {
            return Err(bad(format!("metadata key '{k}' must be 1 to 40 of a-z A-Z 0-9 _ -")));
        }
        match v {
            Value::String(s) if s.chars().count() <= 500 => {}
            Value::String(_) => return Err(bad(format!("metadata value of '{k}' is longer than 500 characters"))),
            Value::Number(_) | Value::Bool(_) => {}
            _ => {
                return Err(bad(format!(
                    "metadata value of '{k}' must be a string, number or boolean"
                )))
            }
        }
    }
    Ok(())
}

fn action_name(field: &str, a: &str) -> Result<(), ApiError> {
    text(field, a, 128, true)?;
    if a.contains(char::is_whitespace) || a.contains('/') {
        return Err(ApiError::invalid(
            field,
            "invalid_value",
            format!("{field} must not contain spaces or '/'"),
        ));
    }
    if a == audit::RETENTION_ACTION || a == audit::POLICY_ACTION {
        return Err(ApiError::invalid(
            field,
            "reserved_action",
            format!("{field} {a} is reserved for keyledger's own configuration changes"),
        ));
    }
    Ok(())
}

fn party(field: &str, id: &str, kind: &str, name: Option<&str>, meta: Option<&AuditMetadata>) -> Result<(), ApiError> {
    text(&format!("{field}.id"), id, 256, true)?;
    text(&format!("{field}.type"), kind, 128, true)?;
    if let Some(n) = name {
        text(&format!("{field}.name"), n, 256, false)?;
    }
    if let Some(m) = meta {
        audit_metadata(&format!("{field}.metadata"), m)?;
    }
    Ok(())
}

fn timestamp(field: &str, code: &'static str, s: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ApiError::invalid(field, code, format!("{field} must be an RFC 3339 timestamp")))
}

// --- POST /audit_logs/events ------------------------------------------------------------------

#[derive(Debug, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AuditLogEventInput)]
pub struct EventBody {
    action: String,
    /// RFC 3339.
    #[schema(format = DateTime)]
    occurred_at: String,
    #[schema(value_type = schemas::AuditLogPartyInput)]
    actor: AuditActor,
    /// At most 50.
    #[schema(value_type = Vec<schemas::AuditLogPartyInput>)]
    targets: Vec<AuditTarget>,
    #[schema(value_type = schemas::AuditLogContextInput)]
    context: AuditContext,
    #[serde(default)]
    #[schema(value_type = Option<BTreeMap<String, Value>>)]
    metadata: Option<AuditMetadata>,
    /// The action's schema version to check against (default: the latest).
    #[serde(default)]
    version: Option<u32>,
}

#[derive(Debug, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateAuditLogEvent)]
pub struct IngestBody {
    organization_id: String,
    event: EventBody,
}

/// WorkOS's 400 for an event that does not match its action's schema.
fn invalid_event(errors: Vec<(String, String)>) -> Response {
    let errors: Vec<Value> = errors
        .into_iter()
        .map(|(path, message)| json!({ "instancePath": path, "message": message }))
        .collect();
    (
        StatusCode::BAD_REQUEST,
        Json(json!({
            "code": "invalid_audit_log_event",
            "message": "Invalid Audit Log event.",
            "errors": errors,
        })),
    )
        .into_response()
}

fn success() -> Response {
    object(StatusCode::OK, json!({ "success": true }))
}

#[utoipa::path(post, path = "/audit_logs/events", tag = "audit_logs", operation_id = "create_audit_log_event",
    summary = "Create an audit log event",
    request_body = IngestBody,
    responses((status = 200, description = "Recorded (or a repeat of a recorded request)", body = schemas::Success),
        (status = 400, description = "The event does not match its action's schema", body = schemas::ErrorBody),
        (status = 404, description = "No such organization", body = schemas::ErrorBody),
        (status = 422, description = "Invalid field, or the key reused with another body",
            body = schemas::ErrorBody)))]
#[tracing::instrument(skip_all, fields(organization_id = %b.organization_id))]
pub async fn create_event(
    State(state): State<AppState>,
    ctx: RequestContext,
    AppJson(b): AppJson<IngestBody>,
) -> Result<Response, ApiError> {
    text("organization_id", &b.organization_id, 128, true)?;
    let e = &b.event;
    action_name("event.action", &e.action)?;
    let occurred_at = timestamp("event.occurred_at", "invalid_timestamp", &e.occurred_at)?;
    party(
        "event.actor",
        &e.actor.id,
        &e.actor.kind,
        e.actor.name.as_deref(),
        e.actor.metadata.as_ref(),
    )?;
    if e.targets.len() > 50 {
        return Err(ApiError::invalid(
            "event.targets",
            "invalid_value",
            "at most 50 targets",
        ));
    }
    for (i, t) in e.targets.iter().enumerate() {
        party(
            &format!("event.targets.{i}"),
            &t.id,
            &t.kind,
            t.name.as_deref(),
            t.metadata.as_ref(),
        )?;
    }
    text("event.context.location", &e.context.location, 256, true)?;
    if let Some(ua) = &e.context.user_agent {
        text("event.context.user_agent", ua, 1024, false)?;
    }
    if let Some(m) = &e.metadata {
        audit_metadata("event.metadata", m)?;
    }
    if queries::organization(&state.pool, &b.organization_id).await?.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "entity_not_found",
            format!("Organization not found: '{}'.", b.organization_id),
        ));
    }
    let mut event = NewAuditEvent {
        organization_id: b.organization_id.clone(),
        action: e.action.clone(),
        occurred_at,
        actor: e.actor.clone(),
        targets: e.targets.clone(),
        context: e.context.clone(),
        metadata: e.metadata.clone(),
        version: e.version,
    };
    // The action's schema (the event's version, else the latest), if it has any.
    if let Some((_, latest)) = audit::schema(&state.pool, &e.action, None).await? {
        let (version, body) = match e.version {
            None => (latest_version(&latest), latest),
            Some(v) => match audit::schema(&state.pool, &e.action, Some(v)).await? {
                Some((v, body)) => (v, body),
                None => {
                    return Ok(invalid_event(vec![(
                        "/version".into(),
                        format!("the action has no schema version {v}"),
                    )]))
                }
            },
        };
        let schema = audit::schema_of(&body).ok_or_else(ApiError::internal)?;
        let errors = validate_event(&schema, &event);
        if !errors.is_empty() {
            return Ok(invalid_event(errors));
        }
        event.version = Some(version);
    }
    let id = new_id("audit_log_event");
    // `Idempotency-Key` is honoured for every write by `crate::idempotency`; events keep the
    // field for those recorded before (migration 0011).
    let cmd = AuditLogEntryCommand::Create {
        event,
        idempotency: None,
        at: now(),
    };
    state
        .execute::<AuditLogEntry>(&ctx, &id, cmd, SideRows::default(), Mode::New)
        .await
        .map_err(|e| command_error(e, audit_error))?;
    Ok(success())
}

fn latest_version(body: &Value) -> u32 {
    body.get("version")
        .and_then(Value::as_u64)
        .and_then(|v| u32::try_from(v).ok())
        .unwrap_or(1)
}

// --- GET /audit_logs/events (extension) --------------------------------------------------------

/// The audit trail's filters (besides [`ListParams`]; cursors are event ids).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TrailFilters {
    pub organization_id: String,
    pub actions: Option<Vec<String>>,
    pub actor_ids: Option<Vec<String>>,
    pub actor_names: Option<Vec<String>>,
    /// Target types.
    pub targets: Option<Vec<String>>,
    /// Inclusive (RFC 3339).
    #[param(format = DateTime)]
    pub range_start: Option<String>,
    /// Exclusive (RFC 3339).
    #[param(format = DateTime)]
    pub range_end: Option<String>,
}

#[utoipa::path(get, path = "/audit_logs/events", tag = "audit_logs", operation_id = "list_audit_log_events",
    summary = "List an organization's audit trail (extension)", params(ListParams, TrailFilters),
    responses((status = 200, description = "A page of the trail", body = schemas::AuditLogEventList),
        (status = 400, description = "organization_id missing", body = schemas::ErrorBody),
        (status = 422, description = "Invalid filter or cursor", body = schemas::ErrorBody)))]
pub async fn list_events(State(state): State<AppState>, tenant: Tenant, q: QueryPairs) -> Result<Response, ApiError> {
    let page = page(&q)?;
    let organization_id = tenant
        .list_filter(q.one("organization_id")?)?
        .ok_or_else(|| ApiError::bad_request("missing_filter", "organization_id is required"))?;
    let (range_start, range_end) = time_range(&q)?;
    let filter = TrailFilter {
        organization_id,
        actions: q.many("actions"),
        actor_ids: q.many("actor_ids"),
        actor_names: q.many("actor_names"),
        targets: q.many("targets"),
        range_start,
        range_end,
        upto: None,
    };
    match audit::trail(&state.pool, &filter, &page).await? {
        TrailOutcome::UnknownCursor => Err(invalid_cursor(
            cursor_field(&page),
            "the cursor is not the id of an event of this organization's trail",
        )),
        TrailOutcome::Page(r) => Ok(list_response(r)),
    }
}

// --- schemas and actions ------------------------------------------------------------------------

const ACTION: &str = "The action's name, e.g. `user.signed_in`.";

#[utoipa::path(post, path = "/audit_logs/actions/{actionName}/schemas", tag = "audit_logs",
    operation_id = "create_audit_log_schema", summary = "Add the next schema version of an action",
    params(("actionName" = String, Path, description = ACTION)),
    request_body = schemas::CreateAuditLogSchema,
    responses((status = 201, description = "The new schema version", body = schemas::AuditLogSchema),
        (status = 422, description = "Invalid schema", body = schemas::ErrorBody)))]
pub async fn create_schema(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParam(action): PathParam,
    AppJson(schema): AppJson<AuditLogSchema>,
) -> Result<Response, ApiError> {
    action_name("actionName", &action)?;
    if schema.targets.is_empty() || schema.targets.len() > 50 {
        return Err(ApiError::invalid(
            "targets",
            "invalid_schema",
            "targets must list 1 to 50 target types",
        ));
    }
    for (i, t) in schema.targets.iter().enumerate() {
        let field = format!("targets.{i}.type");
        text(&field, &t.kind, 128, true)?;
        if schema.targets[..i].iter().any(|o| o.kind == t.kind) {
            return Err(ApiError::invalid(
                &field,
                "invalid_schema",
                format!("target type '{}' is listed twice", t.kind),
            ));
        }
        if let Some(m) = &t.metadata {
            check_metadata_schema(m)
                .map_err(|msg| ApiError::invalid(&format!("targets.{i}.metadata"), "invalid_schema", msg))?;
        }
    }
    if let Some(a) = &schema.actor {
        check_metadata_schema(&a.metadata).map_err(|msg| ApiError::invalid("actor.metadata", "invalid_schema", msg))?;
    }
    if let Some(m) = &schema.metadata {
        check_metadata_schema(m).map_err(|msg| ApiError::invalid("metadata", "invalid_schema", msg))?;
    }
    let at = now();
    let cmd = AuditLogActionCommand::AddSchema {
        schema: schema.clone(),
        at,
    };
    let done = state
        .execute::<AuditLogAction>(&ctx, &action, cmd, SideRows::default(), Mode::Retry)
        .await
        .map_err(|e| command_error(e, audit_error))?;
    let version = done.state.versions;
    let body = match audit::schema(&state.pool, &action, Some(version)).await? {
        Some((_, body)) => body,
        None => audit::schema_body(version, &schema, &at),
    };
    Ok(object(StatusCode::CREATED, body))
}

#[utoipa::path(get, path = "/audit_logs/actions/{actionName}/schemas", tag = "audit_logs",
    operation_id = "list_audit_log_schemas", summary = "List an action's schemas",
    params(("actionName" = String, Path, description = ACTION), ListParams),
    responses((status = 200, description = "A page of schema versions (cursors are version numbers)",
            body = schemas::AuditLogSchemaList),
        (status = 404, description = "No such action", body = schemas::ErrorBody),
        (status = 422, description = "Invalid cursor", body = schemas::ErrorBody)))]
pub async fn list_schemas(
    State(state): State<AppState>,
    PathParam(action): PathParam,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let page = page(&q)?;
    match audit::schemas(&state.pool, &action, &page).await? {
        SchemasOutcome::Page(r) => Ok(list_response(r)),
        SchemasOutcome::UnknownAction => Err(ApiError::not_found("audit log action")),
        SchemasOutcome::UnknownCursor => Err(invalid_cursor(
            cursor_field(&page),
            "the cursor must be a schema version number",
        )),
    }
}

#[utoipa::path(get, path = "/audit_logs/actions", tag = "audit_logs", operation_id = "list_audit_log_actions",
    summary = "List audit log actions (cursors are action names)", params(ListParams),
    responses((status = 200, description = "A page of actions, each with its latest schema",
        body = schemas::AuditLogActionList)))]
pub async fn list_actions(State(state): State<AppState>, q: QueryPairs) -> Result<Response, ApiError> {
    let page = page(&q)?;
    // Cursors are action names; actions are never deleted, so a cursor must name one.
    for (field, cursor) in [("before", &page.before), ("after", &page.after)] {
        if let Some(c) = cursor {
            if audit::schema(&state.pool, c, None).await?.is_none() {
                return Err(invalid_cursor(
                    field,
                    format!("{field} is not the name of an audit log action"),
                ));
            }
        }
    }
    Ok(list_response(audit::actions(&state.pool, &page).await?))
}

// --- exports ------------------------------------------------------------------------------------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateAuditLogExport)]
pub struct ExportBody {
    organization_id: String,
    /// RFC 3339, before `range_end`.
    #[schema(format = DateTime)]
    range_start: String,
    #[schema(format = DateTime)]
    range_end: String,
    #[serde(default)]
    actions: Option<Vec<String>>,
    /// Deprecated in WorkOS: actor names.
    #[serde(default)]
    actors: Option<Vec<String>>,
    #[serde(default)]
    actor_names: Option<Vec<String>>,
    #[serde(default)]
    actor_ids: Option<Vec<String>>,
    #[serde(default)]
    targets: Option<Vec<String>>,
}

fn bad_range(message: &str) -> ApiError {
    ApiError::bad_request("invalid_audit_log_export_range_date", message.to_string())
}

fn list_field(field: &str, v: Option<Vec<String>>) -> Result<Vec<String>, ApiError> {
    let v = v.unwrap_or_default();
    if v.len() > 100 {
        return Err(ApiError::invalid(
            field,
            "invalid_value",
            format!("{field} may list at most 100 values"),
        ));
    }
    for s in &v {
        text(field, s, 256, true)?;
    }
    Ok(v)
}

/// The base of links handed out: `Config::public_url`, else `http://` + the request's Host.
fn base_url(state: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
    if let Some(u) = &state.public_url {
        return Ok(u.trim_end_matches('/').to_string());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c)))
        .ok_or_else(|| {
            ApiError::bad_request("invalid_host", "a valid Host header is needed to build the export URL")
        })?;
    Ok(format!("http://{host}"))
}

/// The export object with a fresh 10-minute download link.
async fn export_object(state: &AppState, headers: &HeaderMap, e: &audit::Export) -> Result<Response, ApiError> {
    let base = base_url(state, headers)?;
    let mut token = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut token);
    let token = hex::encode(token);
    audit::create_link(
        &state.pool,
        &e.id,
        &Sha256::digest(token.as_bytes()),
        Utc::now() + LINK_TTL,
    )
    .await?;
    Ok(object(
        StatusCode::OK,
        json!({
            "object": "audit_log_export",
            "id": e.id,
            "state": "ready",
            "url": format!("{base}/audit_logs/exports/{}/download?token={token}", e.id),
            "created_at": ts(&e.created_at),
            "updated_at": ts(&e.created_at),
        }),
    ))
}

#[utoipa::path(post, path = "/audit_logs/exports", tag = "audit_logs", operation_id = "create_audit_log_export",
    summary = "Create an audit log export", request_body = ExportBody,
    responses((status = 201, description = "The export, ready, with a download link", body = schemas::AuditLogExport),
        (status = 400, description = "Invalid range, or no usable Host for the link", body = schemas::ErrorBody),
        (status = 404, description = "No such organization", body = schemas::ErrorBody),
        (status = 422, description = "Invalid field", body = schemas::ErrorBody)))]
#[tracing::instrument(skip_all, fields(organization_id = %b.organization_id))]
pub async fn create_export(
    State(state): State<AppState>,
    ctx: RequestContext,
    headers: HeaderMap,
    AppJson(b): AppJson<ExportBody>,
) -> Result<Response, ApiError> {
    text("organization_id", &b.organization_id, 128, true)?;
    let start = DateTime::parse_from_rfc3339(&b.range_start)
        .map_err(|_| bad_range("range_start must be an RFC 3339 timestamp"))?
        .with_timezone(&Utc);
    let end = DateTime::parse_from_rfc3339(&b.range_end)
        .map_err(|_| bad_range("range_end must be an RFC 3339 timestamp"))?
        .with_timezone(&Utc);
    if start >= end {
        return Err(bad_range("range_start must be before range_end"));
    }
    let mut actor_names = list_field("actor_names", b.actor_names)?;
    actor_names.extend(list_field("actors", b.actors)?);
    let filter = ExportFilter {
        organization_id: b.organization_id.clone(),
        range_start: start,
        range_end: end,
        actions: list_field("actions", b.actions)?,
        actor_names,
        actor_ids: list_field("actor_ids", b.actor_ids)?,
        targets: list_field("targets", b.targets)?,
    };
    if queries::organization(&state.pool, &b.organization_id).await?.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "entity_not_found",
            format!("Organization not found: '{}'.", b.organization_id),
        ));
    }
    // Check the Host before anything is written (no export without a usable link).
    base_url(&state, &headers)?;
    let id = new_id("audit_log_export");
    let at = now();
    let cmd_filter = filter.clone();
    let cmd = AuditLogExportCommand::Create { filter, at };
    let done = state
        .execute::<AuditLogExport>(&ctx, &id, cmd, SideRows::default(), Mode::New)
        .await
        .map_err(|e| command_error(e, audit_error))?;
    // Rendered from the command itself, so the answer never depends on the projection's lag.
    let upto = done.position.ok_or_else(ApiError::internal)?;
    let export = audit::Export {
        id,
        filter: cmd_filter,
        upto,
        created_at: at,
    };
    let mut resp = export_object(&state, &headers, &export).await?;
    *resp.status_mut() = StatusCode::CREATED;
    Ok(resp)
}

const EXPORT: &str = "The export's id (`audit_log_export_...`).";

#[utoipa::path(get, path = "/audit_logs/exports/{auditLogExportId}", tag = "audit_logs",
    operation_id = "get_audit_log_export", summary = "Get an audit log export (with a new download link)",
    params(("auditLogExportId" = String, Path, description = EXPORT)),
    responses((status = 200, description = "The export", body = schemas::AuditLogExport),
        (status = 400, description = "No usable Host for the link", body = schemas::ErrorBody),
        (status = 404, description = "No such export", body = schemas::ErrorBody)))]
pub async fn get_export(
    State(state): State<AppState>,
    headers: HeaderMap,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    let export = audit::export(&state.pool, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("audit log export"))?;
    export_object(&state, &headers, &export).await
}

/// `GET /audit_logs/exports/{id}/download?token=...`: the CSV, for a valid, unexpired link.
#[utoipa::path(get, path = "/audit_logs/exports/{auditLogExportId}/download", tag = "audit_logs",
    operation_id = "download_audit_log_export", summary = "Download an export as CSV (no API key: the token is the credential)",
    params(("auditLogExportId" = String, Path, description = EXPORT),
        ("token" = String, Query, description = "The token of the export's `url`")),
    responses((status = 200, description = "The CSV", content_type = "text/csv", body = String),
        (status = 403, description = "The link has expired", body = schemas::ErrorBody),
        (status = 404, description = "No such link", body = schemas::ErrorBody)))]
pub async fn download(
    State(state): State<AppState>,
    PathParam(id): PathParam,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "link_not_found", "no such download link");
    let token = q.one("token")?.ok_or_else(not_found)?;
    let (export_id, expires_at) = audit::resolve_link(&state.pool, &Sha256::digest(token.as_bytes()))
        .await?
        .ok_or_else(not_found)?;
    if export_id != id {
        return Err(not_found());
    }
    if expires_at <= Utc::now() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "link_expired",
            "the download link has expired; GET the export again for a new one",
        ));
    }
    let export = audit::export(&state.pool, &id).await?.ok_or_else(not_found)?;
    let filter = TrailFilter::from_export(&export.filter, export.upto);
    // Streamed page by page (500 events each), so a large export never sits in memory whole.
    // The first page is read before answering, so a failure there is still a JSON error.
    let (rows, cursor) = audit::trail_page_after(&state.pool, &filter, None).await?;
    let mut first = audit::csv_header();
    for r in &rows {
        first.push_str(&audit::csv_row(r));
    }
    let rest = futures::stream::unfold(
        (state.pool.clone(), filter, cursor),
        |(pool, filter, cursor)| async move {
            let after = cursor?;
            match audit::trail_page_after(&pool, &filter, Some(after)).await {
                Ok((rows, next)) => {
                    let chunk: String = rows.iter().map(audit::csv_row).collect();
                    Some((Ok(chunk), (pool, filter, next)))
                }
                Err(e) => {
                    tracing::error!(error = %e, "export download failed mid-stream");
                    Some((Err(std::io::Error::other("export failed")), (pool, filter, None)))
                }
            }
        },
    );
    let body = futures::StreamExt::chain(futures::stream::once(async move { Ok(first) }), rest);
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{id}.csv\""),
            ),
        ],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

//! The audit trail: the `audit_logs` projection (the application's audit events, action schemas
//! and exports, fed from the log) and the queries over it. The trail of an organization merges
//! its audit events with keyledger's own change events of that organization from `event_feed`,
//! in log order, each shown as a WorkOS audit-log event. It never writes to the log.

use chrono::{DateTime, Utc};
use keyledger_domain::audit_log::{
    AuditLogActionEvent, AuditLogEntryEvent, AuditLogExportEvent, AuditLogSchema, ExportFilter, NewAuditEvent,
};
use keyledger_domain::organization::OrganizationEvent;
use serde_json::{json, Map, Value};
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};

use crate::objects::ts;
use crate::queries::{finish, scan, ListResult, Order, Page, SCOPE};
use keyledger_store::decode::AnyEvent;
use keyledger_store::log::{LogPosition, StoredEvent};
use keyledger_store::StorageError;

/// The tables of the `audit_logs` projection (rebuilt and swapped together).
pub const TABLES: [&str; 3] = ["audit_log_event", "audit_log_schema", "audit_log_export"];

/// Applies a batch of audit-log events (in log order) to the projection's tables in `schema`.
pub(crate) async fn apply_batch(
    conn: &mut PgConnection,
    schema: &str,
    events: &[(&StoredEvent, AnyEvent)],
) -> Result<(), StorageError> {
    for (e, typed) in events {
        if let Some(row) = row_of(e, typed) {
            insert_row(&mut *conn, schema, e, row).await?;
            continue;
        }
        match typed {
            AnyEvent::AuditLogAction(AuditLogActionEvent::AuditLogSchemaCreated { version, schema: s, at }) => {
                let body = schema_body(*version, s, at);
                sqlx::query(&format!(
                    "insert into {schema}.audit_log_schema (action, version, created_at, body) \
                     values ($1, $2, $3, $4) on conflict do nothing"
                ))
                .bind(&e.aggregate_id)
                .bind(i32::try_from(*version).unwrap_or(i32::MAX))
                .bind(at)
                .bind(body)
                .execute(&mut *conn)
                .await?;
            }
            AnyEvent::AuditLogExport(AuditLogExportEvent::AuditLogExportCreated { filter, at }) => {
                let filter_json = serde_json::to_value(filter).map_err(|err| StorageError::Other(err.to_string()))?;
                sqlx::query(&format!(
                    "insert into {schema}.audit_log_export (id, organization_id, transaction_id, position, filter, created_at) \
                     values ($1, $2, $3::text::xid8, $4, $5, $6) on conflict (id) do nothing"
                ))
                .bind(&e.aggregate_id)
                .bind(&filter.organization_id)
                .bind(e.log_position.transaction_id.to_string())
                .bind(e.log_position.position)
                .bind(filter_json)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// The `audit_log_event` row of a stored event, if it makes one: an application's audit event,
/// or a retention change of an organization.
pub(crate) fn row_of(e: &StoredEvent, typed: &AnyEvent) -> Option<AuditRow> {
    match typed {
        AnyEvent::AuditLog(AuditLogEntryEvent::AuditLogEventCreated { event, .. }) => Some(AuditRow {
            id: e.aggregate_id.clone(),
            organization_id: event.organization_id.clone(),
            action: event.action.clone(),
            actor_id: event.actor.id.clone(),
            actor_name: event.actor.name.clone(),
            target_types: event.targets.iter().map(|t| t.kind.clone()).collect(),
            occurred_at: event.occurred_at,
            body: audit_event_body(&e.aggregate_id, event),
        }),
        AnyEvent::Organization(OrganizationEvent::OrganizationAuditLogsRetentionChanged {
            retention_period_in_days,
            previous_retention_period_in_days: previous,
            ..
        }) => Some(retention_change(e, *retention_period_in_days, *previous)),
        AnyEvent::Organization(OrganizationEvent::OrganizationPolicyChanged {
            membership,
            default_role,
            authentication,
            previous_membership,
            previous_default_role,
            previous_authentication,
            ..
        }) => Some(configuration_change(
            e,
            POLICY_ACTION,
            json!({
                "membership": membership.as_str(),
                "default_role": default_role.as_str(),
                "authentication": authentication.as_str(),
                "previous_membership": previous_membership.map(|m| m.as_str()),
                "previous_default_role": previous_default_role.as_ref().map(|r| r.as_str()),
                "previous_authentication": previous_authentication.map(|a| a.as_str()),
            }),
        )),
        _ => None,
    }
}

/// The action of a retention change in the trail; reserved (ingested events may not use it).
pub const RETENTION_ACTION: &str = "audit_logs_retention.updated";

/// The action of an organization policy change in the trail; reserved like [`RETENTION_ACTION`].
pub const POLICY_ACTION: &str = "organization_policy.updated";

/// A retention change as an event of the organization's trail: its id is the stored event's
/// (`event_...`, which ingested audit events never have), the actor is the API key that made it.
fn retention_change(e: &StoredEvent, days: u32, previous: Option<u32>) -> AuditRow {
    configuration_change(
        e,
        RETENTION_ACTION,
        json!({ "retention_period_in_days": days, "previous_retention_period_in_days": previous }),
    )
}

/// A configuration change of an organization as an event of its trail (see
/// [`retention_change`]), with the new and previous values in `metadata`.
fn configuration_change(e: &StoredEvent, action: &str, mut metadata: Value) -> AuditRow {
    let s = |k: &str| e.metadata.get(k).and_then(Value::as_str).map(str::to_string);
    let actor_id = s("actor_id");
    let actor_name = s("actor_name");
    if let Some(r) = s("request_id") {
        metadata["request_id"] = json!(r);
    }
    let body = json!({
        "object": "audit_log_event",
        "id": e.id,
        "action": action,
        "occurred_at": ts(&e.recorded_at),
        "actor": {
            "id": actor_id.as_deref().unwrap_or("system"),
            "type": if actor_id.is_some() { "api_key" } else { "system" },
            "name": actor_name,
        },
        "targets": [{ "id": e.aggregate_id, "type": "organization", "name": null }],
        "context": { "location": s("ip"), "user_agent": s("user_agent") },
        "metadata": metadata,
        "version": 1,
    });
    AuditRow {
        id: e.id.clone(),
        organization_id: e.aggregate_id.clone(),
        action: action.to_string(),
        actor_id: actor_id.unwrap_or_else(|| "system".to_string()),
        actor_name,
        target_types: vec!["organization".to_string()],
        occurred_at: e.recorded_at,
        body,
    }
}

/// One row of the audit trail, placed in the log at its event's position.
pub(crate) struct AuditRow {
    pub id: String,
    pub organization_id: String,
    pub action: String,
    pub actor_id: String,
    pub actor_name: Option<String>,
    pub target_types: Vec<String>,
    pub occurred_at: chrono::DateTime<chrono::Utc>,
    pub body: Value,
}

async fn insert_row(conn: &mut PgConnection, schema: &str, e: &StoredEvent, row: AuditRow) -> Result<(), StorageError> {
    sqlx::query(&format!(
        "insert into {schema}.audit_log_event (id, organization_id, transaction_id, position, action, \
         actor_id, actor_name, target_types, occurred_at, body) \
         values ($1, $2, $3::text::xid8, $4, $5, $6, $7, $8, $9, $10) on conflict (id) do nothing"
    ))
    .bind(row.id)
    .bind(row.organization_id)
    .bind(e.log_position.transaction_id.to_string())
    .bind(e.log_position.position)
    .bind(row.action)
    .bind(row.actor_id)
    .bind(row.actor_name)
    .bind(&row.target_types)
    .bind(row.occurred_at)
    .bind(row.body)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The organization's audit log retention in days, as last set (None: never set).
pub async fn retention(pool: &PgPool, organization_id: &str) -> Result<Option<u32>, StorageError> {
    let row: Option<(Value,)> = sqlx::query_as(
        "select body -> 'metadata' -> 'retention_period_in_days' from audit_log_event \
         where organization_id = $1 and action = $2 and id like 'event\\_%' \
         order by transaction_id desc, position desc limit 1",
    )
    .bind(organization_id)
    .bind(RETENTION_ACTION)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|r| r.0.as_u64()).and_then(|d| u32::try_from(d).ok()))
}

/// The WorkOS `audit_log_schema` object of one schema version.
pub fn schema_body(version: u32, s: &AuditLogSchema, at: &DateTime<Utc>) -> Value {
    let mut body = json!({
        "object": "audit_log_schema",
        "version": version,
        "targets": s.targets.iter().map(|t| {
            let mut o = json!({ "type": t.kind });
            if let Some(m) = &t.metadata { o["metadata"] = m.clone(); }
            o
        }).collect::<Vec<_>>(),
        "created_at": ts(at),
    });
    if let Some(a) = &s.actor {
        body["actor"] = json!({ "metadata": a.metadata });
    }
    if let Some(m) = &s.metadata {
        body["metadata"] = m.clone();
    }
    body
}

/// The schema part of an `audit_log_schema` object (for validating events against it).
pub fn schema_of(body: &Value) -> Option<AuditLogSchema> {
    let mut o = Map::new();
    for k in ["targets", "actor", "metadata"] {
        if let Some(v) = body.get(k) {
            o.insert(k.to_string(), v.clone());
        }
    }
    serde_json::from_value(Value::Object(o)).ok()
}

/// The CSV columns of an export (and of `keyledger events export --format csv`).
pub const CSV_COLUMNS: [&str; 11] = [
    "id",
    "action",
    "occurred_at",
    "actor_id",
    "actor_type",
    "actor_name",
    "targets",
    "location",
    "user_agent",
    "metadata",
    "version",
];

/// One CSV field: always quoted (quotes doubled); a cell a spreadsheet would run as a formula
/// (starting with `=`, `+`, `-`, `@`, tab or CR) gets a leading `'`.
fn csv_field(s: &str) -> String {
    let guarded = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    format!("\"{}\"", guarded.replace('"', "\"\""))
}

/// The CSV header line (with CRLF, RFC 4180).
pub fn csv_header() -> String {
    let cells: Vec<String> = CSV_COLUMNS.iter().map(|c| csv_field(c)).collect();
    format!("{}\r\n", cells.join(","))
}

/// One audit-log event object as a CSV line: `targets` and `metadata` as JSON.
pub fn csv_row(e: &Value) -> String {
    let text = |v: Option<&Value>| match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let cells = [
        text(e.get("id")),
        text(e.get("action")),
        text(e.get("occurred_at")),
        text(e.pointer("/actor/id")),
        text(e.pointer("/actor/type")),
        text(e.pointer("/actor/name")),
        text(e.get("targets")),
        text(e.pointer("/context/location")),
        text(e.pointer("/context/user_agent")),
        text(e.get("metadata")),
        text(e.get("version")),
    ];
    let cells: Vec<String> = cells.iter().map(|c| csv_field(c)).collect();
    format!("{}\r\n", cells.join(","))
}

fn party(id: &str, kind: &str, name: Option<&str>, metadata: Option<&Map<String, Value>>) -> Value {
    let mut o = json!({ "id": id, "type": kind, "name": name });
    if let Some(m) = metadata {
        o["metadata"] = Value::Object(m.clone());
    }
    o
}

/// The WorkOS audit-log event object of an application's audit event.
pub fn audit_event_body(id: &str, e: &NewAuditEvent) -> Value {
    json!({
        "object": "audit_log_event",
        "id": id,
        "action": e.action,
        "occurred_at": ts(&e.occurred_at),
        "actor": party(&e.actor.id, &e.actor.kind, e.actor.name.as_deref(), e.actor.metadata.as_ref()),
        "targets": e.targets.iter()
            .map(|t| party(&t.id, &t.kind, t.name.as_deref(), t.metadata.as_ref()))
            .collect::<Vec<_>>(),
        "context": { "location": e.context.location, "user_agent": e.context.user_agent },
        "metadata": e.metadata.clone().unwrap_or_default(),
        "version": e.version.unwrap_or(1),
    })
}

/// What a change event of the public feed is done to, by event-name prefix. Keep in step with
/// [`CHANGE_TARGET_TYPES`].
fn change_targets(event: &str, data: &Value) -> Vec<Value> {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let target = |id: Option<String>, kind: &str, name: Option<String>| {
        id.map(|id| json!({ "id": id, "type": kind, "name": name }))
    };
    let out = if event.starts_with("organization_membership.") {
        vec![
            target(s(data, "id"), "organization_membership", None),
            target(s(data, "user_id"), "user", data.get("user").and_then(|u| s(u, "email"))),
            target(s(data, "organization_id"), "organization", s(data, "organization_name")),
        ]
    } else if event.starts_with("session.") {
        vec![
            target(s(data, "id"), "session", None),
            target(s(data, "user_id"), "user", None),
            target(s(data, "organization_id"), "organization", None),
        ]
    } else if event.starts_with("connection.") {
        vec![
            target(s(data, "id"), "connection", s(data, "name")),
            target(s(data, "organization_id"), "organization", None),
        ]
    } else if event.starts_with("invitation.") {
        vec![
            target(s(data, "id"), "invitation", s(data, "email")),
            target(s(data, "organization_id"), "organization", None),
        ]
    } else if event.starts_with("organization_domain.") {
        let d = data.get("organization_domain").unwrap_or(data);
        vec![
            target(s(d, "id"), "organization_domain", s(d, "domain")),
            target(s(d, "organization_id"), "organization", None),
        ]
    } else {
        vec![target(s(data, "id"), "organization", s(data, "name"))]
    };
    out.into_iter().flatten().collect()
}

/// The target types of a change event in SQL (see [`change_targets`]).
const CHANGE_TARGET_TYPES: &str = "case when starts_with(event, 'organization_membership.') \
     then array['organization_membership', 'user', 'organization'] \
     when starts_with(event, 'session.') then array['session', 'user', 'organization'] \
     when starts_with(event, 'invitation.') then array['invitation', 'organization'] \
     when starts_with(event, 'connection.') then array['connection', 'organization'] \
     when starts_with(event, 'organization_domain.') then array['organization_domain', 'organization'] \
     else array['organization'] end";

/// A public change event (an `event_feed` body and its stored event's metadata) as an audit-log
/// event: the API key is the actor; IP and user agent are the context.
fn change_event_body(feed: &Value, metadata: Option<&Value>) -> Value {
    let s = |v: Option<&Value>, k: &str| v.and_then(|v| v.get(k)).and_then(Value::as_str).map(str::to_string);
    let event = feed.get("event").and_then(Value::as_str).unwrap_or_default();
    let data = feed.get("data").cloned().unwrap_or(Value::Null);
    let actor_id = s(metadata, "actor_id");
    let actor_type = if actor_id.is_some() { "api_key" } else { "system" };
    let mut meta = Map::new();
    if let Some(r) = s(metadata, "request_id") {
        meta.insert("request_id".into(), json!(r));
    }
    json!({
        "object": "audit_log_event",
        "id": feed.get("id"),
        "action": event,
        "occurred_at": feed.get("created_at"),
        "actor": {
            "id": actor_id.as_deref().unwrap_or("system"),
            "type": actor_type,
            "name": s(metadata, "actor_name"),
        },
        "targets": change_targets(event, &data),
        "context": { "location": s(metadata, "ip"), "user_agent": s(metadata, "user_agent") },
        "metadata": meta,
        "version": 1,
    })
}

/// Which part of an organization's trail to read.
#[derive(Debug, Clone, Default)]
pub struct TrailFilter {
    pub organization_id: String,
    pub actions: Vec<String>,
    pub actor_ids: Vec<String>,
    pub actor_names: Vec<String>,
    /// Target types: an event matches when one of its targets has one of them.
    pub targets: Vec<String>,
    /// `occurred_at >= range_start` (change events: the time they were recorded).
    pub range_start: Option<DateTime<Utc>>,
    /// `occurred_at < range_end`.
    pub range_end: Option<DateTime<Utc>>,
    /// Only events at or before this place in the log (an export's own place).
    pub upto: Option<LogPosition>,
}

impl TrailFilter {
    pub fn from_export(f: &ExportFilter, upto: LogPosition) -> Self {
        Self {
            organization_id: f.organization_id.clone(),
            actions: f.actions.clone(),
            actor_ids: f.actor_ids.clone(),
            actor_names: f.actor_names.clone(),
            targets: f.targets.clone(),
            range_start: Some(f.range_start),
            range_end: Some(f.range_end),
            upto: Some(upto),
        }
    }
}

pub enum TrailOutcome {
    Page(ListResult),
    UnknownCursor,
}

/// One page of an organization's trail in log order, with event-id cursors.
pub async fn trail(pool: &PgPool, f: &TrailFilter, page: &Page) -> Result<TrailOutcome, StorageError> {
    let scan = scan(page);
    let org = f.organization_id.clone();
    let mut qb: QueryBuilder<'_, Postgres> = QueryBuilder::new(
        "select id, kind, body from (select id, transaction_id, position, 0 as seq, 'audit' as kind, action, \
         actor_id, actor_name, target_types, occurred_at, body from audit_log_event where organization_id = ",
    );
    qb.push_bind(org.clone());
    qb.push(
        " union all select id, transaction_id, position, seq, 'change', event, \
         coalesce(body #>> '{context,actor,id}', 'system'), body #>> '{context,actor,name}', ",
    );
    qb.push(CHANGE_TARGET_TYPES);
    qb.push(", created_at, body from event_feed where organization_id = ");
    qb.push_bind(org.clone());
    qb.push(") t where true");
    if let Some(c) = &scan.cursor {
        qb.push(if scan.descending {
            " and (transaction_id, position, seq) < "
        } else {
            " and (transaction_id, position, seq) > "
        });
        qb.push("(select transaction_id, position, 0 from audit_log_event where id = ")
            .push_bind(c.clone())
            .push(" and organization_id = ")
            .push_bind(org.clone())
            .push(" union all select transaction_id, position, seq from event_feed where id = ")
            .push_bind(c.clone())
            .push(" and organization_id = ")
            .push_bind(org.clone())
            .push(")");
    }
    if !f.actions.is_empty() {
        qb.push(" and action = any(").push_bind(f.actions.clone()).push(")");
    }
    if !f.actor_ids.is_empty() {
        qb.push(" and actor_id = any(").push_bind(f.actor_ids.clone()).push(")");
    }
    if !f.actor_names.is_empty() {
        qb.push(" and actor_name = any(")
            .push_bind(f.actor_names.clone())
            .push(")");
    }
    if !f.targets.is_empty() {
        qb.push(" and target_types && ").push_bind(f.targets.clone());
    }
    if let Some(s) = f.range_start {
        qb.push(" and occurred_at >= ").push_bind(s);
    }
    if let Some(e) = f.range_end {
        qb.push(" and occurred_at < ").push_bind(e);
    }
    if let Some(u) = f.upto {
        qb.push(" and (transaction_id, position) <= (")
            .push_bind(u.transaction_id.to_string())
            .push("::xid8, ")
            .push_bind(u.position)
            .push(")");
    }
    qb.push(if scan.descending {
        " order by transaction_id desc, position desc, seq desc"
    } else {
        " order by transaction_id, position, seq"
    });
    qb.push(" limit ").push_bind(page.limit + 1);

    // The page is read behind the tenant wall (row-level security, migrations 0003 and 0006).
    let mut tx = pool.begin().await?;
    sqlx::query(SCOPE).bind(&org).execute(&mut *tx).await?;
    if let Some(c) = &scan.cursor {
        let found: Option<(i32,)> = sqlx::query_as(
            "select 1 from audit_log_event where id = $1 and organization_id = $2 \
             union all select 1 from event_feed where id = $1 and organization_id = $2",
        )
        .bind(c)
        .bind(&org)
        .fetch_optional(&mut *tx)
        .await?;
        if found.is_none() {
            tx.commit().await?;
            return Ok(TrailOutcome::UnknownCursor);
        }
    }
    let rows: Vec<(String, String, Value)> = qb.build_query_as().fetch_all(&mut *tx).await?;
    tx.commit().await?;

    // Change events show the request that made them: their stored event's metadata.
    let change_ids: Vec<String> = rows.iter().filter(|r| r.1 == "change").map(|r| r.0.clone()).collect();
    let metadata: std::collections::HashMap<String, Value> = if change_ids.is_empty() {
        Default::default()
    } else {
        sqlx::query_as::<_, (String, Value)>(
            "select id, metadata from event where id = any($1) and organization_id = $2",
        )
        .bind(&change_ids)
        .bind(&org)
        .fetch_all(pool)
        .await?
        .into_iter()
        .collect()
    };
    let rendered = rows
        .into_iter()
        .map(|(id, kind, body)| {
            let body = if kind == "change" {
                change_event_body(&body, metadata.get(&id))
            } else {
                body
            };
            (id, body)
        })
        .collect();
    Ok(TrailOutcome::Page(finish(rendered, page, &scan)))
}

/// One page (up to 500 events) of the trail oldest first, after the `after` cursor, and the
/// cursor of the next page (None at the end).
pub async fn trail_page_after(
    pool: &PgPool,
    f: &TrailFilter,
    after: Option<String>,
) -> Result<(Vec<Value>, Option<String>), StorageError> {
    let page = Page {
        limit: 500,
        before: None,
        after,
        order: Order::Asc,
    };
    match trail(pool, f, &page).await? {
        TrailOutcome::Page(r) => Ok((r.data, r.after)),
        TrailOutcome::UnknownCursor => Err(StorageError::Other("the trail cursor vanished".into())),
    }
}

/// The whole (filtered) trail, oldest first, handed to `each` page by page.
pub async fn trail_all(
    pool: &PgPool,
    f: &TrailFilter,
    mut each: impl FnMut(Vec<Value>) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    let mut after = None;
    loop {
        let (rows, next) = trail_page_after(pool, f, after).await?;
        each(rows)?;
        match next {
            Some(a) => after = Some(a),
            None => return Ok(()),
        }
    }
}

/// One schema of an action: the given version, else the latest.
pub async fn schema(pool: &PgPool, action: &str, version: Option<u32>) -> Result<Option<(u32, Value)>, StorageError> {
    let v = version.map(|v| i32::try_from(v).unwrap_or(i32::MAX));
    let row: Option<(i32, Value)> = sqlx::query_as(
        "select version, body from audit_log_schema where action = $1 and ($2::int is null or version = $2) \
         order by version desc limit 1",
    )
    .bind(action)
    .bind(v)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(v, b)| (u32::try_from(v).unwrap_or(0), b)))
}

pub enum SchemasOutcome {
    Page(ListResult),
    UnknownAction,
    UnknownCursor,
}

/// An action's schemas, paged by version (the cursors are version numbers).
pub async fn schemas(pool: &PgPool, action: &str, page: &Page) -> Result<SchemasOutcome, StorageError> {
    let exists: Option<(i32,)> = sqlx::query_as("select 1 from audit_log_schema where action = $1 limit 1")
        .bind(action)
        .fetch_optional(pool)
        .await?;
    if exists.is_none() {
        return Ok(SchemasOutcome::UnknownAction);
    }
    let scan = scan(page);
    let mut qb: QueryBuilder<'_, Postgres> =
        QueryBuilder::new("select version::text, body from audit_log_schema where action = ");
    qb.push_bind(action.to_string());
    if let Some(c) = &scan.cursor {
        let Ok(v) = c.parse::<i32>() else {
            return Ok(SchemasOutcome::UnknownCursor);
        };
        qb.push(if scan.descending {
            " and version < "
        } else {
            " and version > "
        });
        qb.push_bind(v);
    }
    qb.push(if scan.descending {
        " order by version desc"
    } else {
        " order by version"
    });
    qb.push(" limit ").push_bind(page.limit + 1);
    let rows: Vec<(String, Value)> = qb.build_query_as().fetch_all(pool).await?;
    Ok(SchemasOutcome::Page(finish(rows, page, &scan)))
}

/// The actions that have schemas, each with its latest, paged by name (the cursors are names).
pub async fn actions(pool: &PgPool, page: &Page) -> Result<ListResult, StorageError> {
    let scan = scan(page);
    let mut qb: QueryBuilder<'_, Postgres> = QueryBuilder::new(
        "select a.action, jsonb_build_object('object', 'audit_log_action', 'name', a.action, 'schema', s.body, \
         'created_at', to_char(a.created_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
         'updated_at', to_char(a.updated_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')) \
         from (select action, min(created_at) as created_at, max(created_at) as updated_at, max(version) as version \
         from audit_log_schema group by action) a \
         join audit_log_schema s on s.action = a.action and s.version = a.version where true",
    );
    if let Some(c) = &scan.cursor {
        qb.push(if scan.descending {
            " and a.action < "
        } else {
            " and a.action > "
        });
        qb.push_bind(c.clone());
    }
    qb.push(if scan.descending {
        " order by a.action desc"
    } else {
        " order by a.action"
    });
    qb.push(" limit ").push_bind(page.limit + 1);
    let rows: Vec<(String, Value)> = qb.build_query_as().fetch_all(pool).await?;
    Ok(finish(rows, page, &scan))
}

/// An export as the projection recorded it.
#[derive(Debug, Clone)]
pub struct Export {
    pub id: String,
    pub filter: ExportFilter,
    /// The export's own place in the log: it contains the trail up to here.
    pub upto: LogPosition,
    pub created_at: DateTime<Utc>,
}

pub async fn export(pool: &PgPool, id: &str) -> Result<Option<Export>, StorageError> {
    let row: Option<(String, Value, i64, i64, DateTime<Utc>)> = sqlx::query_as(
        "select id, filter, transaction_id::text::bigint, position, created_at from audit_log_export where id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some((id, filter, transaction_id, position, created_at)) = row else {
        return Ok(None);
    };
    let filter = serde_json::from_value(filter).map_err(|e| StorageError::Other(e.to_string()))?;
    Ok(Some(Export {
        id,
        filter,
        upto: LogPosition {
            transaction_id,
            position,
        },
        created_at,
    }))
}

/// Stores a download link (the SHA-256 of its token) and drops links expired a day ago.
pub async fn create_link(
    pool: &PgPool,
    export_id: &str,
    token_hash: &[u8],
    expires_at: DateTime<Utc>,
) -> Result<(), StorageError> {
    sqlx::query("delete from audit_log_export_link where expires_at < now() - interval '1 day'")
        .execute(pool)
        .await?;
    sqlx::query("insert into audit_log_export_link (token_hash, export_id, expires_at) values ($1, $2, $3)")
        .bind(token_hash)
        .bind(export_id)
        .bind(expires_at)
        .execute(pool)
        .await?;
    Ok(())
}

/// The export a link token hash points to, and when the link expires.
pub async fn resolve_link(pool: &PgPool, token_hash: &[u8]) -> Result<Option<(String, DateTime<Utc>)>, StorageError> {
    Ok(
        sqlx::query_as("select export_id, expires_at from audit_log_export_link where token_hash = $1")
            .bind(token_hash)
            .fetch_optional(pool)
            .await?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("a\"b"), "\"a\"\"b\"");
        assert_eq!(csv_field("=1+1"), "\"'=1+1\"");
        let row = csv_row(&json!({"id": "x", "targets": [{"id": "t"}], "version": 1}));
        assert!(row.starts_with("\"x\",\"\",\"\""), "{row}");
        assert!(row.ends_with("\"1\"\r\n"), "{row}");
    }

    #[test]
    fn a_membership_change_targets_the_membership_its_user_and_its_organization() {
        let data = json!({"id": "om_1", "user_id": "user_1", "organization_id": "org_1"});
        let t = change_targets("organization_membership.created", &data);
        let kinds: Vec<&str> = t.iter().filter_map(|t| t["type"].as_str()).collect();
        assert_eq!(kinds, ["organization_membership", "user", "organization"]);
    }

    #[test]
    fn a_failed_domain_verification_targets_the_wrapped_domain() {
        let data = json!({"reason": "x", "organization_domain": {"id": "org_domain_1", "organization_id": "org_1", "domain": "a.com"}});
        let t = change_targets("organization_domain.verification_failed", &data);
        assert_eq!(t[0]["id"], "org_domain_1");
        assert_eq!(t[1]["id"], "org_1");
    }
}

//! HTTP handlers, one module per resource, and helpers they share.

pub mod audit_log_retention;
pub mod audit_logs;
pub mod authenticate;
pub mod codes;
pub mod connections;
pub mod events;
pub mod health;
pub mod invitations;
pub mod jwks;
pub mod memberships;
pub mod organization_domains;
pub mod organization_policy;
pub mod organizations;
pub mod redirect_uris;
pub mod sessions;
pub mod sso;
pub mod stream;
pub mod users;
pub mod webhooks;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use keyledger_projections::objects::{self, Kind};
use keyledger_projections::queries::{ListResult, Order, Page};
use keyledger_store::decode::AnyEvent;
use keyledger_store::StorageError;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::extract::QueryPairs;
use crate::state::AppState;

/// Every operation behind the API key, in one list: `crate::router` serves exactly these (with
/// the key check) and `/openapi.json` documents exactly these, both built from each `routes!`.
///
/// To add an operation: annotate the handler with `#[utoipa::path(...)]` (method, path, tag,
/// `operation_id`, path and query `params`, `request_body` (derive `ToSchema` on the body
/// struct), each success status with its body, from `crate::schemas`), then list it here with
/// `.routes(routes!(handler))`: one `routes!` per path, holding every handler of that path.
/// Never `.route(...)`: it would serve the path undocumented, and the API tests that compare the
/// router with the document fail.
pub fn protected() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(users::list, users::create))
        .routes(routes!(users::get, users::update, users::delete))
        .routes(routes!(users::get_by_external_id))
        .routes(routes!(sessions::list))
        .routes(routes!(codes::create_magic_auth))
        .routes(routes!(codes::get_magic_auth))
        .routes(routes!(codes::get_email_verification))
        .routes(routes!(codes::send_email_verification))
        .routes(routes!(codes::confirm_email_verification))
        .routes(routes!(codes::create_password_reset))
        .routes(routes!(codes::get_password_reset))
        .routes(routes!(codes::confirm_password_reset))
        .routes(routes!(codes::send_email_change))
        .routes(routes!(codes::confirm_email_change))
        .routes(routes!(sessions::revoke))
        .routes(routes!(redirect_uris::list, redirect_uris::create))
        .routes(routes!(organizations::list, organizations::create))
        .routes(routes!(
            organizations::get,
            organizations::update,
            organizations::delete
        ))
        .routes(routes!(organizations::get_by_external_id))
        .routes(routes!(organization_policy::get, organization_policy::set))
        .routes(routes!(organization_domains::create))
        .routes(routes!(organization_domains::get, organization_domains::delete))
        .routes(routes!(organization_domains::verify))
        .routes(routes!(memberships::list, memberships::create))
        .routes(routes!(memberships::get, memberships::update, memberships::delete))
        .routes(routes!(memberships::deactivate))
        .routes(routes!(memberships::reactivate))
        .routes(routes!(events::list))
        .routes(routes!(invitations::list, invitations::create))
        .routes(routes!(invitations::get))
        .routes(routes!(invitations::get_by_token))
        .routes(routes!(invitations::accept))
        .routes(routes!(invitations::revoke))
        .routes(routes!(invitations::resend))
        .routes(routes!(connections::list, connections::create))
        .routes(routes!(connections::get, connections::update, connections::delete))
        .routes(routes!(crate::portal::link::generate_link))
        .merge(audit_logs::router())
        .merge(webhooks::router())
        .merge(stream::router())
}

/// The operations served without an API key (same rules as [`protected`]).
pub fn public() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health::health))
        .routes(routes!(crate::openapi::document))
        .routes(routes!(jwks::jwks))
        .routes(routes!(authenticate::authenticate))
        .routes(routes!(sessions::logout))
        .merge(crate::hosted::router())
        .routes(routes!(sso::authorize))
        .routes(routes!(sso::oidc_callback))
        .routes(routes!(sso::saml_acs))
        .routes(routes!(sso::saml_metadata))
        .routes(routes!(sso::token))
        .routes(routes!(sso::profile))
        .merge(crate::portal::router())
        .merge(audit_logs::public_router())
}

/// Sort order of a list.
#[derive(serde::Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ListOrder {
    Asc,
    Desc,
    /// Descending, with `before` fetching older records and `after` newer ones.
    Normal,
}

/// The paging parameters of every list (parsed by [`page`]).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size, 1 to 100 (default 10).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// Cursor: the id of the first object of the current page.
    pub before: Option<String>,
    /// Cursor: the id of the last object of the current page.
    pub after: Option<String>,
    /// `desc` by default (`asc` on `/events`).
    #[param(inline)]
    pub order: Option<ListOrder>,
}

/// `as_of` of the single-object reads (parsed by [`as_of`]).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AsOfParams {
    /// RFC 3339 instant: the object as it was then, read from the event log.
    #[param(format = DateTime)]
    pub as_of: Option<String>,
}

/// `limit` (1..=100, default 10), `before`, `after`, `order` (asc/desc/normal, default desc).
pub fn page(q: &QueryPairs) -> Result<Page, ApiError> {
    Ok(Page {
        limit: limit(q)?,
        before: q.one("before")?,
        after: q.one("after")?,
        order: order(q)?.unwrap_or_default(),
    })
}

/// [`page`] of a list whose cursors are object ids with `prefix` (`user`, `org`, `om`, ...): a
/// cursor that is not such an id is `422 invalid_cursor`. An id of the right kind is a position
/// even when its object has been deleted since, so paging survives deletions.
pub fn id_page(q: &QueryPairs, prefix: &str) -> Result<Page, ApiError> {
    let page = page(q)?;
    for (field, cursor) in [("before", &page.before), ("after", &page.after)] {
        if let Some(c) = cursor {
            if !keyledger_domain::ids::has_prefix(c, prefix) {
                return Err(invalid_cursor(
                    field,
                    format!("{field} must be the id of an object of this list ({prefix}_...)"),
                ));
            }
        }
    }
    Ok(page)
}

/// The one answer to a cursor that is not a position in its list.
pub fn invalid_cursor(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(field, "invalid_cursor", message)
}

/// The cursor parameter a page was given (`after` when both are).
pub fn cursor_field(page: &Page) -> &'static str {
    if page.after.is_some() {
        "after"
    } else {
        "before"
    }
}

pub fn limit(q: &QueryPairs) -> Result<i64, ApiError> {
    match q.one("limit")? {
        None => Ok(10),
        Some(s) => match s.parse::<i64>() {
            Ok(n) if (1..=100).contains(&n) => Ok(n),
            _ => Err(ApiError::invalid(
                "limit",
                "invalid_limit",
                "limit must be an integer between 1 and 100",
            )),
        },
    }
}

pub fn order(q: &QueryPairs) -> Result<Option<Order>, ApiError> {
    match q.one("order")?.as_deref() {
        None => Ok(None),
        Some("asc") => Ok(Some(Order::Asc)),
        Some("desc") => Ok(Some(Order::Desc)),
        Some("normal") => Ok(Some(Order::Normal)),
        Some(_) => Err(ApiError::invalid(
            "order",
            "invalid_order",
            "order must be one of asc, desc, normal",
        )),
    }
}

/// The WorkOS list envelope.
pub fn list_response(r: ListResult) -> Response {
    Json(json!({
        "object": "list",
        "data": r.data,
        "list_metadata": { "before": r.before, "after": r.after },
    }))
    .into_response()
}

pub fn object(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// Deserializes a field that may be absent (`None`), null (`Some(None)`) or set.
pub fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// The created object from the read model, or, when the projection is still behind after the
/// read-your-writes bound, rendered from the command's own events (the write has landed either way).
/// So is a read that finds the database unavailable: the write landed, and answering 503 would
/// make a client without an Idempotency-Key create the object twice.
/// The document of an object a create has just brought into being (`Mode::New`: its whole
/// history is the command's events), rendered from them exactly as the projection renders it,
/// without reading it back.
pub fn created_new(aggregate_id: &str, events: &[AnyEvent], kind: Kind, id: &str) -> Result<Value, ApiError> {
    objects::render(aggregate_id, events, kind, id).ok_or_else(ApiError::internal)
}

pub fn created(
    found: Result<Option<Value>, StorageError>,
    aggregate_id: &str,
    events: Vec<AnyEvent>,
    kind: Kind,
    id: &str,
) -> Result<Value, ApiError> {
    let found = match found {
        Ok(found) => found,
        Err(e) if e.is_unavailable() => {
            tracing::warn!(error = %e, id, "database unavailable after a create; answering from its events");
            None
        }
        Err(e) => return Err(e.into()),
    };
    match found {
        Some(v) => Ok(v),
        None => objects::render(aggregate_id, &events, kind, id).ok_or_else(ApiError::internal),
    }
}

/// A timestamp query parameter (RFC 3339), `None` when absent.
pub fn time_param(q: &QueryPairs, key: &'static str) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    q.one(key)?
        .map(|s| {
            chrono::DateTime::parse_from_rfc3339(&s)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|_| {
                    ApiError::invalid(
                        key,
                        "invalid_timestamp",
                        format!("{key} must be an RFC 3339 timestamp, e.g. 2026-01-31T12:00:00.000Z"),
                    )
                })
        })
        .transpose()
}

/// `range_start` and `range_end` of a list (start must not be after end).
pub type TimeRange = (
    Option<chrono::DateTime<chrono::Utc>>,
    Option<chrono::DateTime<chrono::Utc>>,
);

pub fn time_range(q: &QueryPairs) -> Result<TimeRange, ApiError> {
    let (start, end) = (time_param(q, "range_start")?, time_param(q, "range_end")?);
    if let (Some(s), Some(e)) = (start, end) {
        if s > e {
            return Err(ApiError::invalid(
                "range_start",
                "invalid_range",
                "range_start must not be after range_end",
            ));
        }
    }
    Ok((start, end))
}

/// `as_of` (RFC 3339): read the object as it was at that instant, from the event log
/// (`keyledger_projections::history`). Absent: the live read model.
pub fn as_of(q: &QueryPairs) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    time_param(q, "as_of")
}

pub fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

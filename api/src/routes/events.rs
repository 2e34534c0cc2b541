//! `GET /events`: the public event feed, in log order, with WorkOS filters.

use axum::extract::State;
use axum::response::Response;
use keyledger_projections::queries::{self, EventFilter, EventsOutcome, Order};

use utoipa::IntoParams;

use super::{cursor_field, id_page, invalid_cursor, list_response, time_range, ListParams};
use crate::error::ApiError;
use crate::extract::QueryPairs;
use crate::schemas;
use crate::state::AppState;
use crate::tenant::Tenant;

/// The feed's filters (besides [`ListParams`]; cursors are event ids).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListFilters {
    /// Event names (docs/EVENTS.md).
    pub events: Option<Vec<String>>,
    pub organization_id: Option<String>,
    /// Inclusive lower bound on `created_at` (RFC 3339).
    #[param(format = DateTime)]
    pub range_start: Option<String>,
    /// Exclusive upper bound on `created_at` (RFC 3339).
    #[param(format = DateTime)]
    pub range_end: Option<String>,
}

/// Without `order` the feed reads oldest first, the way consumers page through it with `after`.
#[utoipa::path(get, path = "/events", tag = "events", operation_id = "list_events",
    summary = "List events from the log", params(ListParams, ListFilters),
    responses((status = 200, description = "A page of events, oldest first by default", body = schemas::EventList),
        (status = 422, description = "Invalid filter, or a cursor that is no event id", body = schemas::ErrorBody)))]
pub async fn list(State(state): State<AppState>, tenant: Tenant, q: QueryPairs) -> Result<Response, ApiError> {
    let mut page = id_page(&q, "event")?;
    if q.one("order")?.is_none() {
        page.order = Order::Asc;
    }
    let (range_start, range_end) = time_range(&q)?;
    let filter = EventFilter {
        events: q.many("events"),
        // With an access token: only the token's organization's events (403 for another).
        organization_id: tenant.list_filter(q.one("organization_id")?)?,
        range_start,
        range_end,
    };
    match queries::events(&state.pool, &filter, &page).await? {
        EventsOutcome::UnknownCursor => Err(invalid_cursor(
            cursor_field(&page),
            "the cursor is not the id of an event",
        )),
        EventsOutcome::Page(r) => Ok(list_response(r)),
    }
}

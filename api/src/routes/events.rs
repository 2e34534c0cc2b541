//! `GET /events`: the public event feed, in log order, with WorkOS filters.

use axum::extract::State;
use axum::response::Response;
use keyledger_projections::queries::{self, EventFilter, EventsOutcome, Order};

use super::{list_response, page, time_range};
use crate::error::ApiError;
use crate::extract::QueryPairs;
use crate::state::AppState;

/// Without `order` the feed reads oldest first, the way consumers page through it with `after`.
pub async fn list(State(state): State<AppState>, q: QueryPairs) -> Result<Response, ApiError> {
    let mut page = page(&q)?;
    if q.one("order")?.is_none() {
        page.order = Order::Asc;
    }
    let (range_start, range_end) = time_range(&q)?;
    let filter = EventFilter {
        events: q.many("events"),
        organization_id: q.one("organization_id")?,
        range_start,
        range_end,
    };
    match queries::events(&state.pool, &filter, &page).await? {
        EventsOutcome::UnknownCursor => Err(ApiError::invalid(
            if page.after.is_some() { "after" } else { "before" },
            "invalid_cursor",
            "the cursor is not the id of an event",
        )),
        EventsOutcome::Page(r) => Ok(list_response(r)),
    }
}

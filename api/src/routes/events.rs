//! `GET /events`: the public event feed, in log order, with WorkOS filters.

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use keyledger_projections::queries::{self, EventFilter, EventsOutcome, Order};

use super::{list_response, page};
use crate::error::ApiError;
use crate::extract::QueryPairs;
use crate::state::AppState;

fn time(q: &QueryPairs, key: &'static str) -> Result<Option<DateTime<Utc>>, ApiError> {
    q.one(key)?
        .map(|s| {
            DateTime::parse_from_rfc3339(&s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    ApiError::invalid(key, "invalid_timestamp", format!("{key} must be an RFC 3339 timestamp"))
                })
        })
        .transpose()
}

/// Without `order` the feed reads oldest first, the way consumers page through it with `after`.
pub async fn list(State(state): State<AppState>, q: QueryPairs) -> Result<Response, ApiError> {
    let mut page = page(&q)?;
    if q.one("order")?.is_none() {
        page.order = Order::Asc;
    }
    let filter = EventFilter {
        events: q.many("events"),
        organization_id: q.one("organization_id")?,
        range_start: time(&q, "range_start")?,
        range_end: time(&q, "range_end")?,
    };
    if let (Some(s), Some(e)) = (filter.range_start, filter.range_end) {
        if s > e {
            return Err(ApiError::invalid(
                "range_start",
                "invalid_range",
                "range_start must not be after range_end",
            ));
        }
    }
    match queries::events(&state.pool, &filter, &page).await? {
        EventsOutcome::UnknownCursor => Err(ApiError::invalid(
            "after",
            "invalid_cursor",
            "the cursor is not the id of an event",
        )),
        EventsOutcome::Page(r) => Ok(list_response(r)),
    }
}

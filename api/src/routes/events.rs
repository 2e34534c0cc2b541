//! `GET /events`: the public event feed, in log order, with WorkOS filters.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use keyledger_projections::queries::{self, EventFilter, EventsOutcome, Order};
use serde_json::json;

use super::{limit, order};
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
    let filter = EventFilter {
        events: q.many("events"),
        organization_id: q.one("organization_id")?,
        range_start: time(&q, "range_start")?,
        range_end: time(&q, "range_end")?,
        after: q.one("after")?,
        limit: limit(&q)?,
        descending: matches!(order(&q)?, Some(Order::Desc) | Some(Order::Normal)),
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
    match queries::events(&state.pool, &filter).await? {
        EventsOutcome::UnknownCursor => Err(ApiError::invalid(
            "after",
            "invalid_cursor",
            "after is not the id of an event",
        )),
        EventsOutcome::Page { data, after } => {
            Ok(Json(json!({ "object": "list", "data": data, "list_metadata": { "after": after } })).into_response())
        }
    }
}

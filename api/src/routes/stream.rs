//! `GET /events/stream`: the public event feed as server-sent events. Each connection reads the
//! feed from its own cursor (no shared broadcast), holds at most one batch in memory and never
//! holds a database connection while its client is slow; it must never write to the feed.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use keyledger_projections::feed::{self, FeedCursor, FeedEvent, FeedFilter};
use keyledger_store::checkpoint::Progress;
use keyledger_store::log::LogPosition;
use sqlx::PgPool;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::extract::QueryPairs;
use crate::state::AppState;

/// This module's operation (behind the API key; see `routes::protected` for how to add one).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stream))
}

/// The stream's filters. `limit`, `before`, `order`, `range_start` and `range_end` are refused.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// Event names (docs/EVENTS.md).
    pub events: Option<Vec<String>>,
    pub organization_id: Option<String>,
    /// Start after this event id (`Last-Event-ID` wins); absent: from now on.
    pub after: Option<String>,
}

/// Rows read per query: also the most a connection buffers.
const BATCH: i64 = 200;

/// How often a connection looks for feed rows written by other processes (this process's own
/// writes wake it at once through `Progress`).
const POLL: Duration = Duration::from_millis(500);

/// `/events` parameters that make no sense on a stream: refused rather than silently ignored.
const UNSUPPORTED: &[&str] = &["limit", "before", "order", "range_start", "range_end"];

/// Settings and shared limits of the live streams.
#[derive(Clone, Debug)]
pub struct Streams {
    /// Interval of the `:` comment lines that keep idle connections open.
    pub heartbeat: Duration,
    /// Open streams; a request that finds none left is answered 429.
    pub slots: Arc<Semaphore>,
    /// Turns true when the HTTP server stops: every stream ends so the server can drain.
    pub stop: watch::Receiver<bool>,
}

impl Streams {
    pub fn new(heartbeat: Duration, max_streams: usize, stop: watch::Receiver<bool>) -> Self {
        Self {
            heartbeat,
            slots: Arc::new(Semaphore::new(max_streams)),
            stop,
        }
    }
}

/// The cursor to resume from: `Last-Event-ID` (what an `EventSource` sends when it reconnects,
/// with the original URL), else `after`; `None` means "from now on".
fn resume_from(headers: &HeaderMap, q: &QueryPairs) -> Result<Option<(&'static str, String)>, ApiError> {
    if let Some(v) = headers.get("last-event-id") {
        let v = v
            .to_str()
            .map_err(|_| ApiError::bad_request("invalid_header", "Last-Event-ID must be a visible ASCII event id"))?;
        let v = v.trim();
        if !v.is_empty() {
            return Ok(Some(("Last-Event-ID", v.to_string())));
        }
    }
    Ok(q.one("after")?.map(|a| ("after", a)))
}

/// Streams events as `id:` event id, `event:` event name, `data:` the WorkOS event JSON.
#[utoipa::path(get, path = "/events/stream", tag = "events", operation_id = "stream_events",
    summary = "Live event stream (server-sent events)",
    params(StreamParams, ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id")),
    responses((status = 200, description = "`id:` event id, `event:` name, `data:` the event JSON, per message",
            content_type = "text/event-stream", body = String),
        (status = 422, description = "Unknown cursor or unsupported parameter", body = crate::schemas::ErrorBody),
        (status = 429, description = "Too many open streams", body = crate::schemas::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn stream(State(state): State<AppState>, headers: HeaderMap, q: QueryPairs) -> Result<Response, ApiError> {
    if let Some(k) = UNSUPPORTED.iter().find(|k| q.0.iter().any(|(key, _)| key == *k)) {
        return Err(ApiError::invalid(
            k,
            "unsupported_parameter",
            format!("{k} is not supported on the event stream; use GET /events to page through the feed"),
        ));
    }
    let events = q.many("events");
    let filter = FeedFilter {
        events: (!events.is_empty()).then_some(events),
        organization_id: q.one("organization_id")?,
    };
    let cursor = match resume_from(&headers, &q)? {
        Some((field, id)) => feed::cursor_of(&state.pool, &id).await?.ok_or_else(|| {
            ApiError::invalid(
                field,
                "invalid_cursor",
                format!("{field} is not the id of an event in the feed"),
            )
        })?,
        None => feed::head(&state.pool).await?,
    };
    let permit = state.streams.slots.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            "too many open event streams; retry later",
        )
    })?;
    let reader = Reader {
        pool: state.pool.clone(),
        cursor,
        filter,
        buffer: VecDeque::new(),
        wake: watch_feed(&state.progress),
        stop: state.streams.stop.clone(),
        failures: 0,
        _permit: permit,
    };
    let events = futures::stream::unfold(reader, Reader::next);
    let mut resp = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(state.streams.heartbeat).text("heartbeat"))
        .into_response();
    // Reverse proxies that honour it (nginx) pass each message on at once.
    resp.headers_mut()
        .insert("x-accel-buffering", axum::http::HeaderValue::from_static("no"));
    Ok(resp)
}

fn watch_feed(progress: &Progress) -> Option<watch::Receiver<LogPosition>> {
    progress.watch(keyledger_projections::engine::EVENTS.name)
}

/// One connection's position in the feed.
struct Reader {
    pool: PgPool,
    cursor: FeedCursor,
    filter: FeedFilter,
    buffer: VecDeque<FeedEvent>,
    wake: Option<watch::Receiver<LogPosition>>,
    stop: watch::Receiver<bool>,
    failures: u32,
    _permit: OwnedSemaphorePermit,
}

/// SSE fields end at a line break; ids and names never hold one, but a broken row must not
/// break the framing (or panic inside axum).
fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

fn to_sse(e: &FeedEvent) -> Event {
    Event::default()
        .id(one_line(&e.id))
        .event(one_line(&e.event))
        // Compact JSON holds no raw line breaks (they are escaped inside strings).
        .data(e.body.to_string())
}

impl Reader {
    /// The next event: from the buffer, else the feed after the cursor, else after a wake-up.
    /// Ends (`None`) when the server stops.
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        loop {
            if let Some(e) = self.buffer.pop_front() {
                return Some((Ok(to_sse(&e)), self));
            }
            if *self.stop.borrow() {
                return None;
            }
            // Seen before reading: a move during the read wakes the next wait at once.
            if let Some(w) = self.wake.as_mut() {
                w.borrow_and_update();
            }
            // Unfiltered read, filtered here: the cursor moves past rows this client does not
            // want, so each query scans at most one batch.
            match feed::read_after(&self.pool, self.cursor, &FeedFilter::default(), BATCH).await {
                Ok(rows) => {
                    self.failures = 0;
                    if let Some(last) = rows.last() {
                        self.cursor = last.cursor;
                        let filter = &self.filter;
                        self.buffer.extend(rows.into_iter().filter(|e| filter.matches(e)));
                        continue;
                    }
                }
                Err(e) => {
                    self.failures = self.failures.saturating_add(1);
                    tracing::warn!(error = %e, failures = self.failures, "event stream read failed; retrying");
                }
            }
            let pause = if self.failures == 0 {
                POLL
            } else {
                Duration::from_millis(200u64 << self.failures.min(5))
            };
            let wake = async {
                match self.wake.as_mut() {
                    Some(w) => {
                        if w.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wake => {}
                _ = tokio::time::sleep(pause) => {}
                r = self.stop.changed() => if r.is_err() { return None },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, org: Option<&str>) -> FeedEvent {
        FeedEvent {
            id: "event_1".into(),
            cursor: FeedCursor::START,
            event: name.into(),
            organization_id: org.map(str::to_string),
            created_at: chrono::Utc::now(),
            body: serde_json::json!({}),
        }
    }

    #[test]
    fn filters_match_like_the_events_list() {
        let all = FeedFilter::default();
        let names = FeedFilter {
            events: Some(vec!["user.created".into()]),
            organization_id: None,
        };
        let org = FeedFilter {
            events: None,
            organization_id: Some("org_1".into()),
        };
        assert!(all.matches(&event("user.updated", None)));
        assert!(names.matches(&event("user.created", None)));
        assert!(!names.matches(&event("user.updated", None)));
        assert!(org.matches(&event("organization.updated", Some("org_1"))));
        assert!(!org.matches(&event("organization.updated", Some("org_2"))));
        assert!(!org.matches(&event("user.created", None)));
    }

    #[test]
    fn line_breaks_never_reach_sse_fields() {
        assert_eq!(one_line("a\r\nb"), "a  b");
    }
}

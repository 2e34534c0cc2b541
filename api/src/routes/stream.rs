//! `GET /events/stream`: the public event feed as server-sent events.

use axum::Router;

use crate::state::AppState;

/// (method, path, summary, tag) of this module's endpoints, for the OpenAPI document.
pub const ROUTES: &[(&str, &str, &str, &str)] = &[];

/// This module's endpoints (all behind the API key).
pub fn router() -> Router<AppState> {
    Router::new()
}

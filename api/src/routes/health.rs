use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::state::AppState;

/// 200 once the database answers and every migration is applied; 503 otherwise.
pub async fn health(State(state): State<AppState>) -> Response {
    let expected = keyledger_projections::MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .count() as i64;
    let applied: Result<(i64,), sqlx::Error> = sqlx::query_as("select count(*) from _sqlx_migrations where success")
        .fetch_one(&state.pool)
        .await;
    match applied {
        Ok((n,)) if n >= expected => Json(json!({ "status": "ok" })).into_response(),
        Ok(_) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "migrating" }))).into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "database_unavailable" })),
        )
            .into_response(),
    }
}

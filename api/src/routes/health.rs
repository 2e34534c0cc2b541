use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use keyledger_projections::{engine, feed};
use serde_json::{json, Map, Value};
use sqlx::PgPool;

use crate::schemas;
use crate::state::AppState;

/// 200 once the database answers and every migration is applied; 503 otherwise. A healthy
/// answer also says how far each projection and subscriber is behind the log (`behind`: events
/// not yet applied or delivered).
#[utoipa::path(get, path = "/health", tag = "operations", operation_id = "health",
    summary = "Liveness, migration state and projection lag",
    responses((status = 200, description = "Healthy", body = schemas::Health),
        (status = 503, description = "`migrating` or `database_unavailable`", body = schemas::Health)))]
pub async fn health(State(state): State<AppState>) -> Response {
    let expected = keyledger_store::MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .count() as i64;
    let applied: Result<(i64,), sqlx::Error> = sqlx::query_as("select count(*) from _sqlx_migrations where success")
        .fetch_one(&state.pool)
        .await;
    match applied {
        Ok((n,)) if n >= expected => {
            let mut body = json!({ "status": "ok" });
            match lag(&state.pool).await {
                Ok((projections, subscribers)) => {
                    body["projections"] = projections;
                    body["subscribers"] = subscribers;
                }
                // Liveness does not depend on the details.
                Err(e) => tracing::warn!(error = %e, "reading projection and subscriber lag failed"),
            }
            Json(body).into_response()
        }
        Ok(_) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "migrating" }))).into_response(),
        // Answers within the pool's acquire bound: a load balancer must not wait on a dead database.
        Err(e) => {
            tracing::warn!(error = %e, "health check: database unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(
                    axum::http::header::RETRY_AFTER,
                    crate::error::DATABASE_RETRY_AFTER_SECS.to_string(),
                )],
                Json(json!({
                    "status": "database_unavailable",
                    "code": "database_unavailable",
                    "message": "the database is unavailable; retry later",
                })),
            )
                .into_response()
        }
    }
}

/// `behind` in `/health` is counted up to this many events: a load balancer may ask often, and a
/// disabled webhook endpoint falls behind without bound. `keyledger projections status` counts
/// exactly.
pub const HEALTH_LAG_CAP: i64 = 100_000;

/// `{name: {"behind": n}}` for the projections and for the subscribers with a checkpoint.
async fn lag(pool: &PgPool) -> Result<(Value, Value), keyledger_store::StorageError> {
    let mut projections = Map::new();
    for s in engine::status_at_most(pool, HEALTH_LAG_CAP).await? {
        projections.insert(s.name.to_string(), json!({ "behind": s.behind }));
    }
    let mut subscribers = Map::new();
    for s in feed::subscriber_status_at_most(pool, HEALTH_LAG_CAP).await? {
        subscribers.insert(s.name, json!({ "behind": s.behind }));
    }
    Ok((Value::Object(projections), Value::Object(subscribers)))
}

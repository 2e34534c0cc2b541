//! Single-object reads of one organization's projections for a caller confined to it (an
//! organization admin's access token): each runs behind both walls, its own
//! `organization_id` filter and row-level security scoped to the organization (`SCOPE`,
//! migrations 0003, 0006 and 0020). Never call these to decide anything environment-wide.

use serde_json::Value;
use sqlx::PgPool;

use keyledger_store::StorageError;

use crate::queries::{MEMBERSHIP_COLUMNS, MEMBERSHIP_JOINS, SCOPE};

/// Runs `sql` (binding `$1` = `id`, `$2` = `organization_id`, selecting one `body`) inside a
/// transaction scoped to `organization_id`.
async fn one_scoped(pool: &PgPool, sql: &str, organization_id: &str, id: &str) -> Result<Option<Value>, StorageError> {
    let mut tx = pool.begin().await?;
    sqlx::query(SCOPE).bind(organization_id).execute(&mut *tx).await?;
    let row: Option<(Value,)> = sqlx::query_as(sql)
        .bind(id)
        .bind(organization_id)
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(row.map(|r| r.0))
}

/// The organization `id` when it is `organization_id`.
pub async fn organization(pool: &PgPool, organization_id: &str, id: &str) -> Result<Option<Value>, StorageError> {
    one_scoped(
        pool,
        "select body from organization_view where id = $1 and id = $2",
        organization_id,
        id,
    )
    .await
}

/// The domain `id` when it belongs to `organization_id`.
pub async fn organization_domain(
    pool: &PgPool,
    organization_id: &str,
    id: &str,
) -> Result<Option<Value>, StorageError> {
    one_scoped(
        pool,
        "select body from organization_domain_view where id = $1 and organization_id = $2",
        organization_id,
        id,
    )
    .await
}

/// The membership `id` (with its user and organization name) when it belongs to `organization_id`.
pub async fn membership(pool: &PgPool, organization_id: &str, id: &str) -> Result<Option<Value>, StorageError> {
    let sql = format!(
        "select body from ({MEMBERSHIP_COLUMNS} from organization_membership_view m {MEMBERSHIP_JOINS} \
         where m.id = $1 and m.organization_id = $2) found"
    );
    one_scoped(pool, &sql, organization_id, id).await
}

/// The policy of organization `id` when it is `organization_id` (None: never set).
pub async fn organization_policy(
    pool: &PgPool,
    organization_id: &str,
    id: &str,
) -> Result<Option<Value>, StorageError> {
    one_scoped(
        pool,
        "select body from organization_policy_view where id = $1 and id = $2",
        organization_id,
        id,
    )
    .await
}

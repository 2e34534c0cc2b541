//! Read-side queries over the read models, with WorkOS list semantics: cursor pagination by
//! object id (ids are ULIDs, so id order is creation order), `limit`, `order` asc/desc/normal.

use serde_json::Value;
use sqlx::{PgPool, Postgres, QueryBuilder};

use keyledger_store::StorageError;

pub use crate::event_list::{events, EventFilter, EventsOutcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    Asc,
    #[default]
    Desc,
    /// Descending, with `before` fetching older records and `after` newer ones.
    Normal,
}

#[derive(Debug, Clone, Default)]
pub struct Page {
    pub limit: i64,
    pub before: Option<String>,
    pub after: Option<String>,
    pub order: Order,
}

#[derive(Debug, Clone)]
pub struct ListResult {
    pub data: Vec<Value>,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// How a page is scanned: which cursor, whether towards the end of the display order, and
/// whether the scan runs in descending key order.
pub(crate) struct Scan {
    pub(crate) cursor: Option<String>,
    pub(crate) towards_end: bool,
    pub(crate) descending: bool,
}

pub(crate) fn scan(page: &Page) -> Scan {
    // Display order is descending unless `asc`.
    let display_desc = page.order != Order::Asc;
    let (cursor, towards_end) = match (&page.after, &page.before, page.order) {
        (Some(a), _, Order::Normal) => (Some(a.clone()), false),
        (_, Some(b), Order::Normal) => (Some(b.clone()), true),
        (Some(a), _, _) => (Some(a.clone()), true),
        (_, Some(b), _) => (Some(b.clone()), false),
        _ => (None, true),
    };
    Scan {
        cursor,
        towards_end,
        descending: display_desc == towards_end,
    }
}

/// Trims the extra row, restores display order and computes the `before`/`after` cursors.
pub(crate) fn finish(mut rows: Vec<(String, Value)>, page: &Page, scan: &Scan) -> ListResult {
    let more = rows.len() as i64 > page.limit;
    rows.truncate(usize::try_from(page.limit).unwrap_or(0));
    if !scan.towards_end {
        rows.reverse();
    }
    let first = rows.first().map(|r| r.0.clone());
    let last = rows.last().map(|r| r.0.clone());
    let (before, after) = if scan.towards_end {
        (scan.cursor.as_ref().and(first), if more { last } else { None })
    } else {
        (if more { first } else { None }, scan.cursor.as_ref().and(last))
    };
    let (before, after) = if page.order == Order::Normal {
        (after, before)
    } else {
        (before, after)
    };
    ListResult {
        data: rows.into_iter().map(|r| r.1).collect(),
        before,
        after,
    }
}

/// Sets the tenant and, where the role exists, becomes the role the policies bind (a superuser
/// would bypass them), for the rest of the transaction.
pub const SCOPE: &str = "select set_config('keyledger.organization_id', $1, true), \
     case when to_regrole('keyledger_tenant_reader') is not null \
     and pg_has_role(current_user, 'keyledger_tenant_reader', 'usage') \
     then set_config('role', 'keyledger_tenant_reader', true) end";

/// Runs `qb` with row-level security scoped to `tenant` (see migration 0003): inside one
/// transaction that sets `keyledger.organization_id`, so only that organization's rows of the
/// per-tenant read models are visible even if a filter in the query were wrong.
pub(crate) async fn fetch_scoped(
    pool: &PgPool,
    qb: &mut QueryBuilder<'_, Postgres>,
    tenant: Option<&str>,
) -> Result<Vec<(String, Value)>, StorageError> {
    match tenant {
        None => Ok(qb.build_query_as().fetch_all(pool).await?),
        Some(org) => {
            let mut tx = pool.begin().await?;
            sqlx::query(SCOPE).bind(org).execute(&mut *tx).await?;
            let rows = qb.build_query_as().fetch_all(&mut *tx).await?;
            tx.commit().await?;
            Ok(rows)
        }
    }
}

/// Runs a list query. `qb` must select `(id text, body jsonb)` rows with a `where` clause
/// already begun (filters appended by the caller); this adds the cursor, order and limit.
async fn list(
    pool: &PgPool,
    mut qb: QueryBuilder<'_, Postgres>,
    page: &Page,
    tenant: Option<&str>,
) -> Result<ListResult, StorageError> {
    let scan = scan(page);
    push_page(&mut qb, page, &scan, "id");
    let rows = fetch_scoped(pool, &mut qb, tenant).await?;
    Ok(finish(rows, page, &scan))
}

/// Appends the cursor condition, the order and the limit (one row more than the page) on the id
/// column `id` to a query whose `where` clause is begun.
fn push_page(qb: &mut QueryBuilder<'_, Postgres>, page: &Page, scan: &Scan, id: &str) {
    if let Some(c) = &scan.cursor {
        qb.push(format!(" and {id} {} ", if scan.descending { "<" } else { ">" }));
        qb.push_bind(c.clone());
    }
    qb.push(format!(
        " order by {id} {}",
        if scan.descending { "desc" } else { "asc" }
    ));
    qb.push(" limit ");
    qb.push_bind(page.limit + 1);
}

/// Pages rows already in memory (`(id, body)`, any order) with the same cursor, order and limit
/// semantics as the SQL lists (point-in-time lists, `history.rs`).
pub fn page_rows(mut rows: Vec<(String, Value)>, page: &Page) -> ListResult {
    let scan = scan(page);
    if let Some(c) = &scan.cursor {
        rows.retain(|(id, _)| if scan.descending { id < c } else { id > c });
    }
    rows.sort_by(|a, b| if scan.descending { b.0.cmp(&a.0) } else { a.0.cmp(&b.0) });
    rows.truncate(usize::try_from(page.limit + 1).unwrap_or(0));
    finish(rows, page, &scan)
}

/// [`list`] for environment-wide read models outside this module (webhook endpoints, deliveries).
pub async fn list_rows(pool: &PgPool, qb: QueryBuilder<'_, Postgres>, page: &Page) -> Result<ListResult, StorageError> {
    list(pool, qb, page, None).await
}

async fn one(pool: &PgPool, sql: &str, key: &str) -> Result<Option<Value>, StorageError> {
    let row: Option<(Value,)> = sqlx::query_as(sql).bind(key).fetch_optional(pool).await?;
    Ok(row.map(|r| r.0))
}

pub async fn user(pool: &PgPool, id: &str) -> Result<Option<Value>, StorageError> {
    one(pool, "select body from user_view where id = $1", id).await
}

pub async fn user_by_external_id(pool: &PgPool, external_id: &str) -> Result<Option<Value>, StorageError> {
    one(pool, "select body from user_view where external_id = $1", external_id).await
}

#[derive(Debug, Default)]
pub struct UserFilter {
    pub email: Option<String>,
    pub organization_id: Option<String>,
}

pub async fn users(pool: &PgPool, f: &UserFilter, page: &Page) -> Result<ListResult, StorageError> {
    let mut qb = QueryBuilder::new("select id, body from user_view where true");
    if let Some(e) = &f.email {
        qb.push(" and email = lower(").push_bind(e.clone()).push(")");
    }
    if let Some(o) = &f.organization_id {
        qb.push(" and id in (select user_id from organization_membership_view where organization_id = ")
            .push_bind(o.clone())
            .push(")");
    }
    list(pool, qb, page, None).await
}

/// The status a session document shows: `expired` once past `expires_at` (no event marks it).
const SESSION_BODY: &str = "case when body ->> 'status' = 'active' and (body ->> 'expires_at')::timestamptz <= now() \
     then jsonb_set(body, '{status}', '\"expired\"') else body end";

/// A user's sessions (every status), newest first by default.
pub async fn sessions(pool: &PgPool, user_id: &str, page: &Page) -> Result<ListResult, StorageError> {
    let mut qb = QueryBuilder::new(format!("select id, {SESSION_BODY} from session_view where user_id = "));
    qb.push_bind(user_id.to_string());
    list(pool, qb, page, None).await
}

pub async fn session(pool: &PgPool, id: &str) -> Result<Option<Value>, StorageError> {
    one(
        pool,
        &format!("select {SESSION_BODY} from session_view where id = $1"),
        id,
    )
    .await
}

/// The state an invitation document shows: `expired` once a pending one is past `expires_at`
/// (no event marks it).
pub const INVITATION_BODY: &str =
    "case when body ->> 'state' = 'pending' and (body ->> 'expires_at')::timestamptz <= now() \
     then jsonb_set(body, '{state}', '\"expired\"') else body end";

#[derive(Debug, Default)]
pub struct InvitationFilter {
    pub organization_id: Option<String>,
    /// Compared case-insensitively (`Email::lookup_key`).
    pub email: Option<String>,
}

/// Invitations (every state), newest first by default.
pub async fn invitations(pool: &PgPool, f: &InvitationFilter, page: &Page) -> Result<ListResult, StorageError> {
    let mut qb = QueryBuilder::new(format!("select id, {INVITATION_BODY} from invitation_view where true"));
    if let Some(o) = &f.organization_id {
        qb.push(" and organization_id = ").push_bind(o.clone());
    }
    if let Some(e) = &f.email {
        qb.push(" and email = ").push_bind(e.clone());
    }
    list(pool, qb, page, None).await
}

pub async fn invitation(pool: &PgPool, id: &str) -> Result<Option<Value>, StorageError> {
    one(
        pool,
        &format!("select {INVITATION_BODY} from invitation_view where id = $1"),
        id,
    )
    .await
}

/// A connection document with its organization's domains (`connection_domain` objects),
/// read from `organization_domain_view` when it is read (they change without the connection).
pub const CONNECTION_BODY: &str = "jsonb_set(c.body, '{domains}', coalesce((select jsonb_agg(jsonb_build_object(\
     'object', 'connection_domain', 'id', d.id, 'domain', d.domain) order by d.id) \
     from organization_domain_view d where d.organization_id = c.organization_id), '[]'::jsonb))";

#[derive(Debug, Default)]
pub struct ConnectionFilter {
    pub organization_id: Option<String>,
    /// Connection types (any of them).
    pub connection_types: Vec<String>,
    /// Connections of the organization that has this domain (case-insensitive).
    pub domain: Option<String>,
    /// Part of the name (case-insensitive).
    pub search: Option<String>,
}

/// SSO connections, newest first by default.
pub async fn connections(pool: &PgPool, f: &ConnectionFilter, page: &Page) -> Result<ListResult, StorageError> {
    let mut qb = QueryBuilder::new(format!(
        "select c.id, {CONNECTION_BODY} from connection_view c where true"
    ));
    if let Some(o) = &f.organization_id {
        qb.push(" and c.organization_id = ").push_bind(o.clone());
    }
    if !f.connection_types.is_empty() {
        qb.push(" and c.connection_type = any(")
            .push_bind(f.connection_types.clone())
            .push(")");
    }
    if let Some(d) = &f.domain {
        qb.push(" and c.organization_id in (select organization_id from organization_domain_view where domain = ")
            .push_bind(d.to_lowercase())
            .push(")");
    }
    if let Some(q) = &f.search {
        let pattern = format!("%{}%", q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        qb.push(" and c.body ->> 'name' ilike ").push_bind(pattern);
    }
    let scan = scan(page);
    push_page(&mut qb, page, &scan, "c.id");
    let rows = fetch_scoped(pool, &mut qb, None).await?;
    Ok(finish(rows, page, &scan))
}

pub async fn connection(pool: &PgPool, id: &str) -> Result<Option<Value>, StorageError> {
    one(
        pool,
        &format!("select {CONNECTION_BODY} from connection_view c where c.id = $1"),
        id,
    )
    .await
}

/// The connection of an organization with this `external_id`, if any.
pub async fn connection_by_external_id(
    pool: &PgPool,
    organization_id: &str,
    external_id: &str,
) -> Result<Option<String>, StorageError> {
    let row: Option<(String,)> = sqlx::query_as(
        "select id from connection_view where organization_id = $1 and body ->> 'external_id' = $2 order by id limit 1",
    )
    .bind(organization_id)
    .bind(external_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| r.0))
}

/// The active connections of an organization, oldest first.
pub async fn active_connection_ids(pool: &PgPool, organization_id: &str) -> Result<Vec<String>, StorageError> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "select id from connection_view where organization_id = $1 and body ->> 'state' = 'active' order by id",
    )
    .bind(organization_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

pub async fn organization(pool: &PgPool, id: &str) -> Result<Option<Value>, StorageError> {
    one(pool, "select body from organization_view where id = $1", id).await
}

/// The organization's policy object as last set (None: never set; the defaults apply, see
/// `objects::default_policy_doc`).
pub async fn organization_policy(pool: &PgPool, organization_id: &str) -> Result<Option<Value>, StorageError> {
    one(
        pool,
        "select body from organization_policy_view where id = $1",
        organization_id,
    )
    .await
}

pub async fn organization_by_external_id(pool: &PgPool, external_id: &str) -> Result<Option<Value>, StorageError> {
    one(
        pool,
        "select body from organization_view where external_id = $1",
        external_id,
    )
    .await
}

#[derive(Debug, Default)]
pub struct OrganizationFilter {
    pub domains: Vec<String>,
    pub search: Option<String>,
}

pub async fn organizations(pool: &PgPool, f: &OrganizationFilter, page: &Page) -> Result<ListResult, StorageError> {
    let mut qb = QueryBuilder::new("select id, body from organization_view where true");
    if !f.domains.is_empty() {
        let domains: Vec<String> = f.domains.iter().map(|d| d.to_lowercase()).collect();
        qb.push(" and id in (select organization_id from organization_domain_view where domain = any(")
            .push_bind(domains)
            .push("))");
    }
    if let Some(s) = &f.search {
        let escaped = s
            .to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        qb.push(" and name_lower like ").push_bind(format!("%{escaped}%"));
    }
    list(pool, qb, page, None).await
}

pub async fn organization_domain(pool: &PgPool, id: &str) -> Result<Option<Value>, StorageError> {
    one(pool, "select body from organization_domain_view where id = $1", id).await
}

/// A membership `m` with the organization's current name and its user (the SDKs expect `user`).
pub(crate) const MEMBERSHIP_COLUMNS: &str = "select m.id, m.body \
     || case when o.id is null then '{}'::jsonb else jsonb_build_object('organization_name', o.body ->> 'name') end \
     || case when u.id is null then '{}'::jsonb else jsonb_build_object('user', u.body) end as body";
pub(crate) const MEMBERSHIP_JOINS: &str = "left join organization_view o on o.id = m.organization_id \
     left join user_view u on u.id = m.user_id";

pub async fn membership(pool: &PgPool, id: &str) -> Result<Option<Value>, StorageError> {
    let row: Option<(String, Value)> = sqlx::query_as(&format!(
        "{MEMBERSHIP_COLUMNS} from organization_membership_view m {MEMBERSHIP_JOINS} where m.id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| r.1))
}

#[derive(Debug, Default)]
pub struct MembershipFilter {
    pub organization_id: Option<String>,
    pub user_id: Option<String>,
    pub statuses: Vec<String>,
}

pub async fn memberships(pool: &PgPool, f: &MembershipFilter, page: &Page) -> Result<ListResult, StorageError> {
    // The page's ids first (filters, cursor, order, limit), from the index alone when filtered
    // by organization (`organization_membership_view_org_idx` includes the status), then a
    // page of rows joined with their organizations and users. Under row-level security the
    // planner expects a handful of rows and would otherwise fetch, or join, every member of the
    // organization before sorting.
    let scan = scan(page);
    let mut qb = QueryBuilder::new(format!(
        "{MEMBERSHIP_COLUMNS} from (select v.* from (select id from organization_membership_view where true"
    ));
    if let Some(o) = &f.organization_id {
        qb.push(" and organization_id = ").push_bind(o.clone());
    }
    if let Some(u) = &f.user_id {
        qb.push(" and user_id = ").push_bind(u.clone());
    }
    if !f.statuses.is_empty() {
        qb.push(" and status = any(").push_bind(f.statuses.clone()).push(")");
    }
    push_page(&mut qb, page, &scan, "id");
    qb.push(format!(
        ") p join organization_membership_view v using (id)) m {MEMBERSHIP_JOINS} order by m.id {}",
        if scan.descending { "desc" } else { "asc" }
    ));
    let rows = fetch_scoped(pool, &mut qb, f.organization_id.as_deref()).await?;
    Ok(finish(rows, page, &scan))
}

/// The aggregate holding a claim (`ClaimKind` string and value), if any: the record of the set-wide
/// rules, written in the append's transaction, so never behind the log.
pub async fn claim_holder(pool: &PgPool, kind: &str, value: &str) -> Result<Option<String>, StorageError> {
    let row: Option<(String,)> = sqlx::query_as("select aggregate_id from claim where kind = $1 and value = $2")
        .bind(kind)
        .bind(value)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|r| r.0))
}

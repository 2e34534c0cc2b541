//! Where a browser may be sent after sign-in or logout: the environment's registered redirect
//! URIs (`POST /user_management/redirect_uris`, table `redirect_uri`) and those configured by
//! `KEYLEDGER_REDIRECT_URIS`. It owns the one check both the hosted pages and logout use,
//! [`redirect_uri_allowed`]: an exact match, never a prefix, wildcard or "same host" rule.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::state::AppState;

/// Longest redirect URI accepted.
pub const MAX_LEN: usize = 2048;

/// True for the hosts a plain-`http` redirect URI may name: loopback only (a native app or a
/// developer's machine); anything else must be `https`.
fn loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Checks a redirect URI to register: absolute, `https` (or `http` on a loopback host), no
/// credentials, no fragment, at most [`MAX_LEN`] bytes. Returns it trimmed, as it will be
/// compared.
pub fn parse(field: &str, uri: &str) -> Result<String, ApiError> {
    let uri = uri.trim();
    let invalid = |why: &str| ApiError::invalid(field, "invalid_redirect_uri", format!("{field} {why}"));
    if uri.is_empty() {
        return Err(invalid("is required"));
    }
    if uri.len() > MAX_LEN {
        return Err(invalid(&format!("must be at most {MAX_LEN} characters")));
    }
    let url = url::Url::parse(uri).map_err(|_| invalid("must be an absolute URL"))?;
    match url.scheme() {
        "https" => {}
        "http" if loopback(&url) => {}
        "http" => return Err(invalid("must use https (http is allowed for loopback hosts only)")),
        _ => return Err(invalid("must be an https URL (or http on a loopback host)")),
    }
    if url.host().is_none() {
        return Err(invalid("must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("must not carry credentials"));
    }
    if url.fragment().is_some() {
        return Err(invalid("must not have a fragment"));
    }
    Ok(uri.to_string())
}

/// Whether a browser may be sent to `uri`: exactly (byte for byte) a registered redirect URI
/// or one of `KEYLEDGER_REDIRECT_URIS`. Used by the hosted sign-in and by logout's `return_to`.
pub async fn redirect_uri_allowed(state: &AppState, uri: &str) -> Result<bool, ApiError> {
    if uri.is_empty() || uri.len() > MAX_LEN {
        return Ok(false);
    }
    if state.auth.redirect_uris.iter().any(|u| u == uri) {
        return Ok(true);
    }
    let found: Option<(i32,)> = sqlx::query_as("select 1 from redirect_uri where uri = $1")
        .bind(uri)
        .fetch_optional(&state.pool)
        .await?;
    Ok(found.is_some())
}

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    uri: String,
    is_default: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Row {
    fn object(&self) -> Value {
        json!({
            "object": "redirect_uri",
            "id": self.id,
            "uri": self.uri,
            "default": self.is_default,
            "created_at": timestamp(self.created_at),
            "updated_at": timestamp(self.updated_at),
        })
    }
}

/// Registers a redirect URI (already [`parse`]d); `None` when it already is. The first one
/// registered becomes the default.
pub async fn create(state: &AppState, uri: &str) -> Result<Option<Value>, ApiError> {
    let id = keyledger_domain::ids::new_id("redirect_uri");
    let row: Option<Row> = sqlx::query_as(
        "insert into redirect_uri (id, uri, is_default) \
         values ($1, $2, not exists (select 1 from redirect_uri where is_default)) \
         on conflict (uri) do nothing \
         returning id, uri, is_default, created_at, updated_at",
    )
    .bind(&id)
    .bind(uri)
    .fetch_optional(&state.pool)
    .await?;
    Ok(row.map(|r| r.object()))
}

/// A page of registered redirect URIs (few per environment: paged in memory). Display order
/// by id, newest first unless `asc`; `normal` is newest first with `before` moving to older
/// and `after` to newer records.
pub async fn list(
    state: &AppState,
    page: &keyledger_projections::queries::Page,
) -> Result<keyledger_projections::queries::ListResult, ApiError> {
    use keyledger_projections::queries::Order;
    let mut rows: Vec<Row> =
        sqlx::query_as("select id, uri, is_default, created_at, updated_at from redirect_uri order by id limit 10000")
            .fetch_all(&state.pool)
            .await?;
    if page.order != Order::Asc {
        rows.reverse();
    }
    // (cursor moving on in display order, cursor moving back)
    let (forward, backward) = match page.order {
        Order::Normal => (&page.before, &page.after),
        _ => (&page.after, &page.before),
    };
    let limit = usize::try_from(page.limit).unwrap_or(10);
    let position = |id: &String| match page.order {
        Order::Asc => rows.partition_point(|r| r.id.as_str() <= id.as_str()),
        _ => rows.partition_point(|r| r.id.as_str() >= id.as_str()),
    };
    let (from, to) = match (forward, backward) {
        (Some(c), _) => {
            let from = position(c);
            (from, (from + limit).min(rows.len()))
        }
        (None, Some(c)) => {
            let to = match page.order {
                Order::Asc => rows.partition_point(|r| r.id.as_str() < c.as_str()),
                _ => rows.partition_point(|r| r.id.as_str() > c.as_str()),
            };
            (to.saturating_sub(limit), to)
        }
        (None, None) => (0, limit.min(rows.len())),
    };
    let shown = &rows[from..to];
    let back = (from > 0).then(|| shown.first().map(|r| r.id.clone())).flatten();
    let on = (to < rows.len()).then(|| shown.last().map(|r| r.id.clone())).flatten();
    let (before, after) = match page.order {
        Order::Normal => (on, back),
        _ => (back, on),
    };
    Ok(keyledger_projections::queries::ListResult {
        data: shown.iter().map(Row::object).collect(),
        before,
        after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http_uris_without_credentials_or_fragments_register() {
        for ok in [
            "https://app.example.com/callback",
            "http://127.0.0.1:3000/callback",
            "http://localhost/cb",
            "http://[::1]:8080/cb",
            "https://app.example.com/cb?tenant=1",
        ] {
            assert!(parse("uri", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "callback",
            "/callback",
            "http://app.example.com/callback",
            "http://10.0.0.1/cb",
            "ftp://app.example.com/cb",
            "javascript:alert(1)",
            "https://user:pw@app.example.com/cb",
            "https://app.example.com/cb#frag",
            "custom-scheme://cb",
        ] {
            assert!(parse("uri", bad).is_err(), "{bad}");
        }
        assert!(parse("uri", &format!("https://a.example.com/{}", "x".repeat(MAX_LEN))).is_err());
    }
}

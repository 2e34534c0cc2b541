//! Organization admins' access tokens on the management API (docs/API.md, "Reading an
//! organization with a user's access token"): which operations accept one, how a token is
//! checked, and the [`Tenant`] a handler confines its read to. This module never lets such a
//! token write, nor read anything outside its organization.

use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};

use crate::error::ApiError;
use crate::state::AppState;

/// The caller of a request made with an organization admin's access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantReader {
    pub organization_id: String,
    pub user_id: String,
    pub session_id: String,
}

/// The operations an access token may call: reads of one organization, each confined by its
/// handler to the token's organization (the `Tenant` parameter). Anything else is 403.
const READS: &[&str] = &[
    "/organizations/{id}",
    "/organizations/{id}/policy",
    "/organization_domains/{id}",
    "/user_management/organization_memberships",
    "/user_management/organization_memberships/{id}",
    "/audit_logs/events",
    "/events",
];

/// Whether an access token may call `method` on the route template `path`.
pub fn allowed(method: &Method, path: &str) -> bool {
    method == Method::GET && READS.contains(&path)
}

/// True when a bearer credential has the shape of a JWT (three base64url parts), as opposed to
/// an API key or garbage.
pub fn looks_like_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && parts[..2].iter().all(|p| !p.is_empty())
        && parts
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

pub fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

fn session_refused() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "the token's session is revoked or has expired",
    )
}

/// Checks an access token for the request `method` on the route template `path`: a valid token
/// of ours (401 otherwise), an organization's token whose role is the configured reader role
/// (403), an allowed operation (403), a live session (401) and, now, an active membership of the
/// organization with that role (403). The last two are one indexed lookup per request, uncached:
/// a revocation or a membership change holds from the moment it is committed (the projection's
/// lag for the membership).
pub async fn authorize(
    state: &AppState,
    token: &str,
    method: &Method,
    path: Option<&str>,
) -> Result<TenantReader, ApiError> {
    let claims = state.tokens.verify(token).await?;
    let role = state.auth.tenant_reader_role.as_str();
    let Some(organization_id) = claims.org_id.clone() else {
        return Err(forbidden(
            "only an organization's access token may read through this API",
        ));
    };
    if claims.role.as_deref() != Some(role) {
        return Err(forbidden(format!(
            "only an access token with the role {role} may read its organization"
        )));
    }
    if !path.is_some_and(|p| allowed(method, p)) {
        return Err(forbidden(
            "an access token may only read its organization; use an API key",
        ));
    }
    let row: Option<(String, bool, Option<String>)> = sqlx::query_as(
        "select t.user_id, \
         t.revoked_at is null and t.expires_at > now() and coalesce(v.body ->> 'status', 'active') = 'active', \
         (select m.body -> 'role' ->> 'slug' from organization_membership_view m \
          where m.user_id = t.user_id and m.organization_id = $2 and m.status = 'active' limit 1) \
         from session_token t left join session_view v on v.id = t.session_id where t.session_id = $1",
    )
    .bind(&claims.sid)
    .bind(&organization_id)
    .fetch_optional(&state.pool)
    .await?;
    let Some((user_id, live, member_role)) = row else {
        return Err(session_refused());
    };
    if !live || user_id != claims.sub {
        return Err(session_refused());
    }
    if member_role.as_deref() != Some(role) {
        return Err(forbidden(format!(
            "the user is no longer an active {role} of the token's organization"
        )));
    }
    Ok(TenantReader {
        organization_id,
        user_id,
        session_id: claims.sid,
    })
}

/// The route template of a request (set by the router before `route_layer` middleware runs).
pub fn route_template(req: &axum::extract::Request) -> Option<String> {
    req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string())
}

/// Who a read is for: `None` with an API key (the whole environment), the reader's
/// organization with an access token.
#[derive(Debug, Clone, Default)]
pub struct Tenant(pub Option<TenantReader>);

impl Tenant {
    /// The token's organization, if any.
    pub fn organization_id(&self) -> Option<&str> {
        self.0.as_ref().map(|t| t.organization_id.as_str())
    }

    /// The `organization_id` filter of a list: with an access token the token's organization,
    /// and 403 when the query names another one (whether or not it exists).
    pub fn list_filter(&self, given: Option<String>) -> Result<Option<String>, ApiError> {
        match (self.organization_id(), given) {
            (None, given) => Ok(given),
            (Some(own), Some(other)) if own != other => Err(forbidden(
                "an access token may only list its own organization's records",
            )),
            (Some(own), _) => Ok(Some(own.to_string())),
        }
    }

    /// `as_of` reads the event log, which is outside the tenant wall: refused with a token.
    pub fn refuse_as_of(&self) -> Result<(), ApiError> {
        match self.0 {
            Some(_) => Err(forbidden("as_of is not available with an access token")),
            None => Ok(()),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.extensions.get::<TenantReader>().cloned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reads_of_one_organization_are_allowed() {
        assert!(allowed(&Method::GET, "/organizations/{id}"));
        assert!(allowed(&Method::GET, "/events"));
        assert!(!allowed(&Method::PUT, "/organizations/{id}"));
        assert!(!allowed(&Method::DELETE, "/organizations/{id}"));
        assert!(!allowed(&Method::POST, "/user_management/organization_memberships"));
        assert!(!allowed(&Method::GET, "/organizations"));
        assert!(!allowed(&Method::GET, "/user_management/users"));
        assert!(!allowed(&Method::GET, "/organizations/external_id/{external_id}"));
    }

    #[test]
    fn jwts_are_told_from_keys_and_garbage() {
        assert!(looks_like_jwt("eyJh.eyJz.c2ln"));
        assert!(looks_like_jwt("eyJh.eyJz."));
        for bad in ["sk_abc", "a.b", "a.b.c.d", ".b.c", "a b.c.d", "a.b+.c"] {
            assert!(!looks_like_jwt(bad), "{bad}");
        }
    }

    #[test]
    fn a_token_forces_the_list_filter_to_its_organization() {
        let any = Tenant(None);
        assert_eq!(any.list_filter(None).unwrap(), None);
        assert_eq!(any.list_filter(Some("org_b".into())).unwrap(), Some("org_b".into()));
        let a = Tenant(Some(TenantReader {
            organization_id: "org_a".into(),
            user_id: "user_1".into(),
            session_id: "session_1".into(),
        }));
        assert_eq!(a.list_filter(None).unwrap(), Some("org_a".into()));
        assert_eq!(a.list_filter(Some("org_a".into())).unwrap(), Some("org_a".into()));
        assert_eq!(a.list_filter(Some("org_b".into())).unwrap_err().code(), "forbidden");
    }
}

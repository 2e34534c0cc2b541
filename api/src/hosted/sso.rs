//! The hosted sign-in's doors to SSO: an explicit target of the authorize request
//! (`connection_id`, `organization_id`, a `provider` other than `authkit`) and an email whose
//! verified domain belongs to an organization that requires SSO. SSO connections and domain
//! policies are another part of keyledger; these answer "no identity provider" until they are
//! wired in, and the pages then say so instead of signing in some other way.

use crate::error::ApiError;
use crate::state::AppState;

/// What an authorize request asked to sign in with, other than AuthKit's own pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SsoTarget {
    Connection(String),
    Organization(String),
    Provider(String),
}

/// The identity provider URL to send the browser to for `target`, if one is configured.
#[allow(
    clippy::unused_async,
    reason = "wired at merge to the SSO connections, which query the database"
)]
pub async fn sso_redirect(_state: &AppState, _target: &SsoTarget) -> Result<Option<String>, ApiError> {
    // wired at merge
    Ok(None)
}

/// The identity provider URL for an email whose verified domain's organization requires SSO.
#[allow(
    clippy::unused_async,
    reason = "wired at merge to the domain policies, which query the database"
)]
pub async fn policy_sso_redirect_for_email(_state: &AppState, _email: &str) -> Result<Option<String>, ApiError> {
    // wired at merge
    Ok(None)
}

//! Organization policies at work: which organization owns an email's domain as a verified
//! domain, its current policy, and whether that policy requires SSO for the email
//! ([`sso_required_for`], called by the sign-in grants and the hosted sign-in pages). Reads only:
//! it never appends, and it never looks beyond verified domains (a pending or failed domain
//! proves nothing about who owns an address).

use keyledger_domain::organization::{AuthenticationPolicy, MembershipPolicy, OrganizationPolicy};
use keyledger_domain::values::{DomainName, Email, RoleSlug};
use keyledger_domain::ClaimKind;
use keyledger_projections::queries;

use crate::error::ApiError;
use crate::state::AppState;

/// The domain part of an email, as the verified-domain claim spells it (lower case); None when
/// it is not a domain a verification could have claimed.
pub fn email_domain(email: &Email) -> Option<DomainName> {
    let key = email.key();
    let (_, domain) = key.rsplit_once('@')?;
    DomainName::parse("email", domain).ok()
}

/// The organization holding `domain` as a verified domain (the `verified_domain` claim), if any.
pub async fn domain_owner(state: &AppState, domain: &DomainName) -> Result<Option<String>, ApiError> {
    Ok(queries::claim_holder(&state.pool, ClaimKind::VerifiedDomain.as_str(), domain.as_str()).await?)
}

/// The organization's current policy (the defaults while never set).
pub async fn current(state: &AppState, organization_id: &str) -> Result<OrganizationPolicy, ApiError> {
    let Some(doc) = queries::organization_policy(&state.pool, organization_id).await? else {
        return Ok(OrganizationPolicy::default());
    };
    let field = |k: &str| doc.get(k).and_then(serde_json::Value::as_str).unwrap_or_default();
    let defaults = OrganizationPolicy::default();
    // The read model holds what the events said; a value that no longer parses (a role removed
    // since) falls back to the default rather than failing every sign-in.
    Ok(OrganizationPolicy {
        membership: MembershipPolicy::parse("membership", field("membership")).unwrap_or(defaults.membership),
        default_role: RoleSlug::parse("default_role", field("default_role")).unwrap_or(defaults.default_role),
        authentication: AuthenticationPolicy::parse("authentication", field("authentication"))
            .unwrap_or(defaults.authentication),
    })
}

/// The organization (and its policy) owning the email's domain as a verified domain.
pub async fn for_email(state: &AppState, email: &Email) -> Result<Option<(String, OrganizationPolicy)>, ApiError> {
    let Some(domain) = email_domain(email) else {
        return Ok(None);
    };
    let Some(org) = domain_owner(state, &domain).await? else {
        return Ok(None);
    };
    let policy = current(state, &org).await?;
    Ok(Some((org, policy)))
}

/// The ids of the organization's active SSO connections, the ones an `sso_required` answer
/// names.
pub async fn sso_connection_ids(state: &AppState, organization_id: &str) -> Result<Vec<String>, ApiError> {
    crate::connections::active_ids_for_organization(state, organization_id).await
}

/// When the email's domain is a verified domain of an organization whose policy is
/// `authentication: sso_required`: that organization and its connections to sign in with.
/// Password and Magic Auth sign-in of such an email answer `sso_required`.
pub async fn sso_required_for(state: &AppState, email: &Email) -> Result<Option<(String, Vec<String>)>, ApiError> {
    match for_email(state, email).await? {
        Some((org, policy)) if policy.authentication == AuthenticationPolicy::SsoRequired => {
            let connections = sso_connection_ids(state, &org).await?;
            Ok(Some((org, connections)))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_domain_of_an_email_is_its_lower_cased_part_after_the_last_at() {
        let e = Email::parse("email", "Ann@Sub.Example.COM").unwrap();
        assert_eq!(email_domain(&e).unwrap().as_str(), "sub.example.com");
    }
}

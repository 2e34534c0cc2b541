use chrono::{DateTime, Utc};

use super::policy::{AuthenticationPolicy, MembershipPolicy};
use super::DomainState;
use crate::values::{DomainName, Metadata, RoleSlug};

/// A domain to attach, with the id and verification token chosen by the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDomain {
    pub id: String,
    pub domain: DomainName,
    pub state: DomainState,
    pub verification_token: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum OrganizationCommand {
    Create {
        name: String,
        external_id: Option<String>,
        metadata: Metadata,
        allow_profiles_outside_organization: bool,
        domains: Vec<NewDomain>,
        at: DateTime<Utc>,
    },
    Update(UpdateOrganization),
    Delete {
        at: DateTime<Utc>,
    },
    AddDomain {
        domain: NewDomain,
        at: DateTime<Utc>,
    },
    /// Records the outcome of a DNS check done by the caller.
    RecordVerification {
        domain_id: String,
        verified: bool,
        reason: Option<String>,
        at: DateTime<Utc>,
    },
    RemoveDomain {
        domain_id: String,
        at: DateTime<Utc>,
    },
    /// Sets the audit log retention (the caller has checked the value is one the spec allows).
    SetAuditLogsRetention {
        retention_period_in_days: u32,
        at: DateTime<Utc>,
    },
    /// Sets the policy for the users of the organization's verified domains; each `None` keeps
    /// the current value (the default while never set).
    SetPolicy {
        membership: Option<MembershipPolicy>,
        default_role: Option<RoleSlug>,
        authentication: Option<AuthenticationPolicy>,
        at: DateTime<Utc>,
    },
}

/// Each `Some` is a requested change. `domains`, when given, is the new full set: domains not in
/// it are removed, new ones added; a listed domain already present keeps its state unless the
/// new entry says `verified`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UpdateOrganization {
    pub name: Option<String>,
    pub external_id: Option<Option<String>>,
    pub metadata: Option<Metadata>,
    pub allow_profiles_outside_organization: Option<bool>,
    pub stripe_customer_id: Option<Option<String>>,
    pub domains: Option<Vec<NewDomain>>,
    pub at: DateTime<Utc>,
}

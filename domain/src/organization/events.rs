use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::policy::{AuthenticationPolicy, MembershipPolicy};
use super::DomainState;
use crate::claims::{Claim, ClaimKind, Claims, KeyPart};
use crate::values::{DomainName, Metadata, RoleSlug};

/// Events of the [`super::Organization`] aggregate. Each variant is stored under the name
/// in its `#[serde(rename)]`, which `event_type` returns too, so renaming a Rust variant
/// changes nothing stored; a stored name never changes (docs/EVENTS.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OrganizationEvent {
    #[serde(rename = "OrganizationCreated")]
    OrganizationCreated {
        name: String,
        external_id: Option<String>,
        metadata: Metadata,
        allow_profiles_outside_organization: bool,
        at: DateTime<Utc>,
    },
    #[serde(rename = "OrganizationUpdated")]
    OrganizationUpdated {
        changes: OrganizationChanges,
        at: DateTime<Utc>,
    },
    /// Releases every verified domain of the organization.
    #[serde(rename = "OrganizationDeleted")]
    OrganizationDeleted { at: DateTime<Utc> },
    #[serde(rename = "OrganizationDomainCreated")]
    OrganizationDomainCreated {
        domain_id: String,
        domain: DomainName,
        state: DomainState,
        verification_token: String,
        at: DateTime<Utc>,
    },
    #[serde(rename = "OrganizationDomainVerified")]
    OrganizationDomainVerified {
        domain_id: String,
        domain: DomainName,
        at: DateTime<Utc>,
    },
    #[serde(rename = "OrganizationDomainVerificationFailed")]
    OrganizationDomainVerificationFailed {
        domain_id: String,
        domain: DomainName,
        reason: String,
        at: DateTime<Utc>,
    },
    #[serde(rename = "OrganizationDomainDeleted")]
    OrganizationDomainDeleted {
        domain_id: String,
        domain: DomainName,
        was_verified: bool,
        at: DateTime<Utc>,
    },
    /// How many days the organization's audit log events are to be kept (WorkOS
    /// `audit_logs_retention`). Configuration: no public event; shown in the audit trail.
    /// Version 2: version 1 stored the value before as `previous`.
    #[serde(rename = "OrganizationAuditLogsRetentionChanged")]
    OrganizationAuditLogsRetentionChanged {
        retention_period_in_days: u32,
        /// The value before (None: never set).
        previous_retention_period_in_days: Option<u32>,
        at: DateTime<Utc>,
    },
    /// The organization's policy for the users of its verified domains (keyledger's extension),
    /// whole, with the values before (None: never set). Public event
    /// `organization.policy_updated`; shown in the audit trail.
    #[serde(rename = "OrganizationPolicyChanged")]
    OrganizationPolicyChanged {
        membership: MembershipPolicy,
        default_role: RoleSlug,
        authentication: AuthenticationPolicy,
        previous_membership: Option<MembershipPolicy>,
        previous_default_role: Option<RoleSlug>,
        previous_authentication: Option<AuthenticationPolicy>,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct OrganizationChanges {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::double_option")]
    pub external_id: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_profiles_outside_organization: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::double_option")]
    pub stripe_customer_id: Option<Option<String>>,
}

impl OrganizationChanges {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl DomainEvent for OrganizationEvent {
    fn event_type(&self) -> String {
        match self {
            Self::OrganizationCreated { .. } => "OrganizationCreated",
            Self::OrganizationUpdated { .. } => "OrganizationUpdated",
            Self::OrganizationDeleted { .. } => "OrganizationDeleted",
            Self::OrganizationDomainCreated { .. } => "OrganizationDomainCreated",
            Self::OrganizationDomainVerified { .. } => "OrganizationDomainVerified",
            Self::OrganizationDomainVerificationFailed { .. } => "OrganizationDomainVerificationFailed",
            Self::OrganizationDomainDeleted { .. } => "OrganizationDomainDeleted",
            Self::OrganizationAuditLogsRetentionChanged { .. } => "OrganizationAuditLogsRetentionChanged",
            Self::OrganizationPolicyChanged { .. } => "OrganizationPolicyChanged",
        }
        .to_string()
    }

    /// The version of the stored shape; an older stored version is upcast to it when read
    /// (`keyledger_store::decode::upcast`).
    fn event_version(&self) -> String {
        match self {
            Self::OrganizationAuditLogsRetentionChanged { .. } => "2",
            _ => "1",
        }
        .to_string()
    }
}

impl Claims for OrganizationEvent {
    fn claims(&self) -> Vec<Claim> {
        let acquire = |kind, value: &str| Claim::Acquire {
            kind,
            value: value.to_string(),
        };
        match self {
            Self::OrganizationCreated { external_id, .. } => std::iter::once(Claim::AcquireOwn {
                kind: ClaimKind::LiveOrganization,
            })
            .chain(
                external_id
                    .iter()
                    .map(|x| acquire(ClaimKind::OrganizationExternalId, x)),
            )
            .collect(),
            Self::OrganizationUpdated { changes, .. } => match &changes.external_id {
                Some(ext) => {
                    let mut c = vec![Claim::Release {
                        kind: ClaimKind::OrganizationExternalId,
                        value: None,
                    }];
                    c.extend(ext.iter().map(|x| acquire(ClaimKind::OrganizationExternalId, x)));
                    c
                }
                None => Vec::new(),
            },
            Self::OrganizationDeleted { .. } => vec![
                Claim::RetireOwn {
                    kind: ClaimKind::LiveOrganization,
                },
                // Memberships are `<organization_id>:<user_id>`: none may outlive the organization.
                Claim::NoDependents {
                    kind: ClaimKind::Membership,
                    part: KeyPart::First,
                },
                Claim::Release {
                    kind: ClaimKind::OrganizationExternalId,
                    value: None,
                },
                Claim::Release {
                    kind: ClaimKind::VerifiedDomain,
                    value: None,
                },
            ],
            Self::OrganizationDomainCreated { domain, state, .. } => match state {
                DomainState::Verified => vec![acquire(ClaimKind::VerifiedDomain, domain.as_str())],
                _ => Vec::new(),
            },
            Self::OrganizationDomainVerified { domain, .. } => {
                vec![acquire(ClaimKind::VerifiedDomain, domain.as_str())]
            }
            Self::OrganizationDomainVerificationFailed { .. }
            | Self::OrganizationAuditLogsRetentionChanged { .. }
            | Self::OrganizationPolicyChanged { .. } => Vec::new(),
            Self::OrganizationDomainDeleted {
                domain, was_verified, ..
            } => {
                if *was_verified {
                    vec![Claim::Release {
                        kind: ClaimKind::VerifiedDomain,
                        value: Some(domain.as_str().to_string()),
                    }]
                } else {
                    Vec::new()
                }
            }
        }
    }
}

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::claims::{Claim, ClaimKind, Claims};
use crate::values::{DomainName, RoleSlug};

/// Events of the [`super::OrganizationMembership`] aggregate. Each variant is stored under the name
/// in its `#[serde(rename)]`, which `event_type` returns too, so renaming a Rust variant
/// changes nothing stored; a stored name never changes (docs/EVENTS.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MembershipEvent {
    #[serde(rename = "MembershipCreated")]
    MembershipCreated {
        user_id: String,
        organization_id: String,
        /// The organization's name when the membership was made (read models show the current one).
        organization_name: String,
        role: RoleSlug,
        /// The verified domain whose `auto` policy made it (JIT, docs/API.md), None otherwise.
        /// Added after the first release: absent in older payloads and left out when unset,
        /// so version 1 still describes it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        joined_by_domain: Option<DomainName>,
        at: DateTime<Utc>,
    },
    #[serde(rename = "MembershipRoleChanged")]
    MembershipRoleChanged { role: RoleSlug, at: DateTime<Utc> },
    #[serde(rename = "MembershipDeactivated")]
    MembershipDeactivated { at: DateTime<Utc> },
    #[serde(rename = "MembershipReactivated")]
    MembershipReactivated { at: DateTime<Utc> },
    #[serde(rename = "MembershipDeleted")]
    MembershipDeleted { at: DateTime<Utc> },
}

impl MembershipEvent {
    /// The claim key of a membership: one per (organization, user).
    pub fn claim_value(organization_id: &str, user_id: &str) -> String {
        format!("{organization_id}:{user_id}")
    }
}

impl DomainEvent for MembershipEvent {
    fn event_type(&self) -> String {
        match self {
            Self::MembershipCreated { .. } => "MembershipCreated",
            Self::MembershipRoleChanged { .. } => "MembershipRoleChanged",
            Self::MembershipDeactivated { .. } => "MembershipDeactivated",
            Self::MembershipReactivated { .. } => "MembershipReactivated",
            Self::MembershipDeleted { .. } => "MembershipDeleted",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

impl Claims for MembershipEvent {
    fn claims(&self) -> Vec<Claim> {
        match self {
            Self::MembershipCreated {
                user_id,
                organization_id,
                ..
            } => vec![
                // The user before the organization: the order every append locks parents in.
                Claim::Require {
                    kind: ClaimKind::LiveUser,
                    value: user_id.clone(),
                },
                Claim::Require {
                    kind: ClaimKind::LiveOrganization,
                    value: organization_id.clone(),
                },
                Claim::Acquire {
                    kind: ClaimKind::Membership,
                    value: Self::claim_value(organization_id, user_id),
                },
            ],
            Self::MembershipDeleted { .. } => vec![Claim::Release {
                kind: ClaimKind::Membership,
                value: None,
            }],
            _ => Vec::new(),
        }
    }
}

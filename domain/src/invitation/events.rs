use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::claims::{Claim, ClaimKind, Claims};
use crate::values::{Email, RoleSlug};

/// Events of the [`super::Invitation`] aggregate, stored under the names in `#[serde(rename)]`
/// (docs/EVENTS.md). None carries the invitation's token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InvitationEvent {
    #[serde(rename = "InvitationCreated")]
    InvitationCreated {
        email: Email,
        /// The organization the recipient joins on acceptance (`None`: the application only).
        organization_id: Option<String>,
        /// The role of that membership (`None` without an organization).
        role: Option<RoleSlug>,
        inviter_user_id: Option<String>,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    /// Accepted by (or on behalf of) `user_id`; the membership, if any, is created in the same
    /// append (`MembershipCreated`).
    #[serde(rename = "InvitationAccepted")]
    InvitationAccepted { user_id: String, at: DateTime<Utc> },
    #[serde(rename = "InvitationRevoked")]
    InvitationRevoked { at: DateTime<Utc> },
    /// The invitation email was sent again.
    #[serde(rename = "InvitationResent")]
    InvitationResent { at: DateTime<Utc> },
    /// A pending invitation past its expiry, closed when a new invitation of the same email and
    /// organization replaces it (it gives the pending-invitation claim back). Expiry itself is
    /// not an event: reads show `expired` once `expires_at` has passed.
    #[serde(rename = "InvitationExpired")]
    InvitationExpired { at: DateTime<Utc> },
}

impl InvitationEvent {
    /// The claim key of a pending invitation: one per (organization or none, email).
    pub fn claim_value(organization_id: Option<&str>, email: &Email) -> String {
        format!("{}:{}", organization_id.unwrap_or(""), email.key())
    }
}

impl DomainEvent for InvitationEvent {
    fn event_type(&self) -> String {
        match self {
            Self::InvitationCreated { .. } => "InvitationCreated",
            Self::InvitationAccepted { .. } => "InvitationAccepted",
            Self::InvitationRevoked { .. } => "InvitationRevoked",
            Self::InvitationResent { .. } => "InvitationResent",
            Self::InvitationExpired { .. } => "InvitationExpired",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

impl Claims for InvitationEvent {
    fn claims(&self) -> Vec<Claim> {
        let release = || {
            vec![Claim::Release {
                kind: ClaimKind::PendingInvitation,
                value: None,
            }]
        };
        match self {
            Self::InvitationCreated {
                email, organization_id, ..
            } => vec![Claim::Acquire {
                kind: ClaimKind::PendingInvitation,
                value: Self::claim_value(organization_id.as_deref(), email),
            }],
            Self::InvitationAccepted { .. } | Self::InvitationRevoked { .. } | Self::InvitationExpired { .. } => {
                release()
            }
            Self::InvitationResent { .. } => Vec::new(),
        }
    }
}

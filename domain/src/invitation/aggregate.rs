use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::events::InvitationEvent;
use crate::values::{Email, RoleSlug};
use crate::{NoServices, Tenanted};

/// Why an invitation command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvitationError {
    #[error("the invitation already exists")]
    AlreadyExists,
    #[error("the invitation does not exist")]
    NotFound,
    #[error("the invitation has already been accepted")]
    Accepted,
    #[error("the invitation has been revoked")]
    Revoked,
    #[error("the invitation has expired")]
    Expired,
    /// `Expire` of an invitation that is still valid (or already ended otherwise).
    #[error("the invitation is still pending")]
    StillPending,
}

/// The state WorkOS shows; `Expired` is derived from the time for a pending invitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvitationState {
    Pending,
    Accepted,
    Expired,
    Revoked,
}

impl InvitationState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Accepted => "accepted",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }
}

/// What a new invitation says; values arrive parsed and checked (the organization exists, the
/// email is not already a member's).
#[derive(Debug, Clone, PartialEq)]
pub struct CreateInvitation {
    pub email: Email,
    pub organization_id: Option<String>,
    pub role: Option<RoleSlug>,
    pub inviter_user_id: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum InvitationCommand {
    Create(CreateInvitation),
    /// `user_id` accepts it; refused unless pending at `at`.
    Accept {
        user_id: String,
        at: DateTime<Utc>,
    },
    Revoke {
        at: DateTime<Utc>,
    },
    Resend {
        at: DateTime<Utc>,
    },
    /// Closes a pending invitation past its expiry (a new one replaces it).
    Expire {
        at: DateTime<Utc>,
    },
}

/// An invitation's state, folded from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Invitation {
    pub email: Option<Email>,
    pub organization_id: Option<String>,
    pub role: Option<RoleSlug>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
    pub accepted_user_id: Option<String>,
    pub accepted: bool,
    pub revoked: bool,
    pub expired: bool,
}

impl Invitation {
    pub fn exists(&self) -> bool {
        self.created_at.is_some()
    }

    /// The state at `now`.
    pub fn state(&self, now: DateTime<Utc>) -> InvitationState {
        if self.accepted {
            InvitationState::Accepted
        } else if self.revoked {
            InvitationState::Revoked
        } else if self.expired || self.expires_at.is_some_and(|e| e <= now) {
            InvitationState::Expired
        } else {
            InvitationState::Pending
        }
    }

    /// Refuses anything but a pending invitation, by its state.
    fn pending(&self, now: DateTime<Utc>) -> Result<(), InvitationError> {
        if !self.exists() {
            return Err(InvitationError::NotFound);
        }
        match self.state(now) {
            InvitationState::Pending => Ok(()),
            InvitationState::Accepted => Err(InvitationError::Accepted),
            InvitationState::Revoked => Err(InvitationError::Revoked),
            InvitationState::Expired => Err(InvitationError::Expired),
        }
    }
}

impl Tenanted for Invitation {
    fn organization_id<'a>(&'a self, _aggregate_id: &'a str) -> Option<&'a str> {
        self.organization_id.as_deref()
    }
}

impl Aggregate for Invitation {
    const TYPE: &'static str = "Invitation";
    type Command = InvitationCommand;
    type Event = InvitationEvent;
    type Error = InvitationError;
    type Services = NoServices;

    async fn handle(
        &mut self,
        command: InvitationCommand,
        _: &NoServices,
        sink: &EventSink<Self>,
    ) -> Result<(), InvitationError> {
        let event = match command {
            InvitationCommand::Create(c) => {
                if self.exists() {
                    return Err(InvitationError::AlreadyExists);
                }
                InvitationEvent::InvitationCreated {
                    email: c.email,
                    organization_id: c.organization_id,
                    role: c.role,
                    inviter_user_id: c.inviter_user_id,
                    expires_at: c.expires_at,
                    at: c.at,
                }
            }
            InvitationCommand::Accept { user_id, at } => {
                self.pending(at)?;
                InvitationEvent::InvitationAccepted { user_id, at }
            }
            InvitationCommand::Revoke { at } => {
                self.pending(at)?;
                InvitationEvent::InvitationRevoked { at }
            }
            InvitationCommand::Resend { at } => {
                self.pending(at)?;
                InvitationEvent::InvitationResent { at }
            }
            InvitationCommand::Expire { at } => match self.pending(at) {
                Err(InvitationError::Expired) if !self.expired => InvitationEvent::InvitationExpired { at },
                Err(e) => return Err(e),
                Ok(()) => return Err(InvitationError::StillPending),
            },
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: InvitationEvent) {
        match event {
            InvitationEvent::InvitationCreated {
                email,
                organization_id,
                role,
                expires_at,
                at,
                ..
            } => {
                *self = Invitation {
                    email: Some(email),
                    organization_id,
                    role,
                    expires_at: Some(expires_at),
                    created_at: Some(at),
                    ..Default::default()
                };
            }
            InvitationEvent::InvitationAccepted { user_id, .. } => {
                self.accepted = true;
                self.accepted_user_id = Some(user_id);
            }
            InvitationEvent::InvitationRevoked { .. } => self.revoked = true,
            InvitationEvent::InvitationResent { .. } => {}
            InvitationEvent::InvitationExpired { .. } => self.expired = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap_or_default()
    }

    fn created() -> InvitationEvent {
        InvitationEvent::InvitationCreated {
            email: Email::parse("email", "ann@example.com").unwrap(),
            organization_id: Some("org_1".into()),
            role: Some(RoleSlug::member()),
            inviter_user_id: None,
            expires_at: at(100),
            at: at(0),
        }
    }

    fn accepted() -> InvitationEvent {
        InvitationEvent::InvitationAccepted {
            user_id: "user_1".into(),
            at: at(10),
        }
    }

    #[test]
    fn a_pending_invitation_is_accepted_once() {
        TestFramework::<Invitation>::with(NoServices)
            .given(vec![created()])
            .when(InvitationCommand::Accept {
                user_id: "user_1".into(),
                at: at(10),
            })
            .then_expect_events(vec![accepted()]);
        TestFramework::<Invitation>::with(NoServices)
            .given(vec![created(), accepted()])
            .when(InvitationCommand::Accept {
                user_id: "user_2".into(),
                at: at(11),
            })
            .then_expect_error(InvitationError::Accepted);
    }

    #[test]
    fn an_invitation_past_its_expiry_cannot_be_accepted_revoked_or_resent() {
        for cmd in [
            InvitationCommand::Accept {
                user_id: "user_1".into(),
                at: at(100),
            },
            InvitationCommand::Revoke { at: at(100) },
            InvitationCommand::Resend { at: at(200) },
        ] {
            TestFramework::<Invitation>::with(NoServices)
                .given(vec![created()])
                .when(cmd)
                .then_expect_error(InvitationError::Expired);
        }
    }

    #[test]
    fn a_revoked_invitation_cannot_be_accepted_or_revoked_again() {
        let revoked = InvitationEvent::InvitationRevoked { at: at(5) };
        TestFramework::<Invitation>::with(NoServices)
            .given(vec![created(), revoked.clone()])
            .when(InvitationCommand::Accept {
                user_id: "user_1".into(),
                at: at(10),
            })
            .then_expect_error(InvitationError::Revoked);
        TestFramework::<Invitation>::with(NoServices)
            .given(vec![created(), revoked])
            .when(InvitationCommand::Revoke { at: at(10) })
            .then_expect_error(InvitationError::Revoked);
    }

    #[test]
    fn only_an_expired_pending_invitation_is_closed_as_expired_once() {
        TestFramework::<Invitation>::with(NoServices)
            .given(vec![created()])
            .when(InvitationCommand::Expire { at: at(50) })
            .then_expect_error(InvitationError::StillPending);
        TestFramework::<Invitation>::with(NoServices)
            .given(vec![created()])
            .when(InvitationCommand::Expire { at: at(150) })
            .then_expect_events(vec![InvitationEvent::InvitationExpired { at: at(150) }]);
        TestFramework::<Invitation>::with(NoServices)
            .given(vec![created(), InvitationEvent::InvitationExpired { at: at(150) }])
            .when(InvitationCommand::Expire { at: at(160) })
            .then_expect_error(InvitationError::Expired);
        TestFramework::<Invitation>::with(NoServices)
            .given(vec![created(), accepted()])
            .when(InvitationCommand::Expire { at: at(150) })
            .then_expect_error(InvitationError::Accepted);
    }

    #[test]
    fn commands_on_an_unknown_invitation_are_not_found() {
        TestFramework::<Invitation>::with(NoServices)
            .given_no_previous_events()
            .when(InvitationCommand::Resend { at: at(1) })
            .then_expect_error(InvitationError::NotFound);
    }

    #[test]
    fn the_pending_claim_is_taken_at_creation_and_given_back_when_it_ends() {
        use crate::claims::{Claim, ClaimKind, Claims};
        assert_eq!(
            created().claims(),
            vec![Claim::Acquire {
                kind: ClaimKind::PendingInvitation,
                value: "org_1:ann@example.com".into()
            }]
        );
        for e in [
            accepted(),
            InvitationEvent::InvitationRevoked { at: at(1) },
            InvitationEvent::InvitationExpired { at: at(1) },
        ] {
            assert_eq!(
                e.claims(),
                vec![Claim::Release {
                    kind: ClaimKind::PendingInvitation,
                    value: None
                }]
            );
        }
        assert!(InvitationEvent::InvitationResent { at: at(1) }.claims().is_empty());
    }
}

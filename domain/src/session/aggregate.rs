use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::events::{AuthMethod, Grant, RevokeReason, SessionEvent};
use crate::{NoServices, Tenanted};

/// Why a session command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("the session already exists")]
    AlreadyExists,
    #[error("the session does not exist")]
    NotFound,
    #[error("the session has ended")]
    Ended,
}

/// What a sign-in knows when it starts a session.
#[derive(Debug, Clone, PartialEq)]
pub struct StartSession {
    pub user_id: String,
    pub email: String,
    pub organization_id: Option<String>,
    pub auth_method: AuthMethod,
    pub grant: Grant,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub device_id: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SessionCommand {
    Start(StartSession),
    SwitchOrganization {
        organization_id: String,
        at: DateTime<Utc>,
    },
    /// Ends the session; a session already ended stays as it is (no event).
    Revoke {
        reason: RevokeReason,
        at: DateTime<Utc>,
    },
}

/// A session's state, folded from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub user_id: String,
    pub organization_id: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked: Option<RevokeReason>,
}

impl Session {
    pub fn exists(&self) -> bool {
        self.created_at.is_some()
    }
}

impl Tenanted for Session {
    fn organization_id<'a>(&'a self, _aggregate_id: &'a str) -> Option<&'a str> {
        self.organization_id.as_deref()
    }
}

impl Aggregate for Session {
    const TYPE: &'static str = "Session";
    type Command = SessionCommand;
    type Event = SessionEvent;
    type Error = SessionError;
    type Services = NoServices;

    async fn handle(
        &mut self,
        command: SessionCommand,
        _: &NoServices,
        sink: &EventSink<Self>,
    ) -> Result<(), SessionError> {
        match command {
            SessionCommand::Start(s) => {
                if self.exists() {
                    return Err(SessionError::AlreadyExists);
                }
                let event = SessionEvent::SessionCreated {
                    user_id: s.user_id,
                    email: s.email,
                    organization_id: s.organization_id,
                    auth_method: s.auth_method,
                    grant: s.grant,
                    ip_address: s.ip_address,
                    user_agent: s.user_agent,
                    device_id: s.device_id,
                    expires_at: s.expires_at,
                    at: s.at,
                };
                sink.write(event, self).await;
            }
            SessionCommand::SwitchOrganization { organization_id, at } => {
                if !self.exists() {
                    return Err(SessionError::NotFound);
                }
                if self.revoked.is_some() {
                    return Err(SessionError::Ended);
                }
                if self.organization_id.as_deref() != Some(organization_id.as_str()) {
                    let previous_organization_id = self.organization_id.clone();
                    sink.write(
                        SessionEvent::SessionOrganizationSwitched {
                            organization_id,
                            previous_organization_id,
                            at,
                        },
                        self,
                    )
                    .await;
                }
            }
            SessionCommand::Revoke { reason, at } => {
                if !self.exists() {
                    return Err(SessionError::NotFound);
                }
                if self.revoked.is_none() {
                    sink.write(SessionEvent::SessionRevoked { reason, at }, self).await;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: SessionEvent) {
        match event {
            SessionEvent::SessionCreated {
                user_id,
                organization_id,
                expires_at,
                at,
                ..
            } => {
                *self = Session {
                    user_id,
                    organization_id,
                    created_at: Some(at),
                    expires_at: Some(expires_at),
                    revoked: None,
                };
            }
            SessionEvent::SessionOrganizationSwitched { organization_id, .. } => {
                self.organization_id = Some(organization_id);
            }
            SessionEvent::SessionRevoked { reason, .. } => self.revoked = Some(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default()
    }

    fn created(org: Option<&str>) -> SessionEvent {
        SessionEvent::SessionCreated {
            user_id: "user_1".into(),
            email: "ann@example.com".into(),
            organization_id: org.map(str::to_string),
            auth_method: AuthMethod::Password,
            grant: Grant::Password,
            ip_address: Some("127.0.0.1".into()),
            user_agent: None,
            device_id: None,
            expires_at: at(),
            at: at(),
        }
    }

    #[test]
    fn revoking_twice_records_one_revocation() {
        TestFramework::<Session>::with(NoServices)
            .given(vec![
                created(None),
                SessionEvent::SessionRevoked {
                    reason: RevokeReason::Revoked,
                    at: at(),
                },
            ])
            .when(SessionCommand::Revoke {
                reason: RevokeReason::LoggedOut,
                at: at(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_revoked_session_cannot_switch_organization() {
        TestFramework::<Session>::with(NoServices)
            .given(vec![
                created(Some("org_1")),
                SessionEvent::SessionRevoked {
                    reason: RevokeReason::RefreshTokenReused,
                    at: at(),
                },
            ])
            .when(SessionCommand::SwitchOrganization {
                organization_id: "org_2".into(),
                at: at(),
            })
            .then_expect_error(SessionError::Ended);
    }

    #[test]
    fn switching_to_the_same_organization_records_nothing() {
        TestFramework::<Session>::with(NoServices)
            .given(vec![created(Some("org_1"))])
            .when(SessionCommand::SwitchOrganization {
                organization_id: "org_1".into(),
                at: at(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn revoking_an_unknown_session_is_not_found() {
        TestFramework::<Session>::with(NoServices)
            .given_no_previous_events()
            .when(SessionCommand::Revoke {
                reason: RevokeReason::Revoked,
                at: at(),
            })
            .then_expect_error(SessionError::NotFound);
    }
}

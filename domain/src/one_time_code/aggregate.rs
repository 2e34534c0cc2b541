use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::events::{OneTimeCodeEvent, Purpose};
use crate::values::Email;
use crate::{NoServices, Tenanted};

/// Why a code command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OneTimeCodeError {
    #[error("the code already exists")]
    AlreadyExists,
    #[error("the code does not exist")]
    NotFound,
    #[error("an email change needs the new email")]
    MissingNewEmail,
    #[error("the code is not a password reset")]
    NotAPasswordReset,
    #[error("the password reset already succeeded")]
    AlreadySucceeded,
}

/// What issuing a code records (the code itself is stored beside the log, sealed).
#[derive(Debug, Clone, PartialEq)]
pub struct IssueCode {
    pub purpose: Purpose,
    pub user_id: String,
    pub email: Email,
    /// Magic Auth: the email has no user yet; `user_id` is reserved for the one it signs up.
    pub new_user: bool,
    /// Email change: where the email moves.
    pub new_email: Option<Email>,
    pub expires_at: DateTime<Utc>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum OneTimeCodeCommand {
    Issue(IssueCode),
    /// The reset token set a new password.
    SucceedPasswordReset {
        at: DateTime<Utc>,
    },
}

/// A code's state, folded from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OneTimeCode {
    pub purpose: Option<Purpose>,
    pub user_id: String,
    pub email: Option<Email>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
    pub succeeded: bool,
}

impl Tenanted for OneTimeCode {
    fn organization_id<'a>(&'a self, _aggregate_id: &'a str) -> Option<&'a str> {
        None
    }
}

impl Aggregate for OneTimeCode {
    const TYPE: &'static str = "OneTimeCode";
    type Command = OneTimeCodeCommand;
    type Event = OneTimeCodeEvent;
    type Error = OneTimeCodeError;
    type Services = NoServices;

    async fn handle(
        &mut self,
        command: OneTimeCodeCommand,
        _: &NoServices,
        sink: &EventSink<Self>,
    ) -> Result<(), OneTimeCodeError> {
        match command {
            OneTimeCodeCommand::Issue(c) => {
                if self.purpose.is_some() {
                    return Err(OneTimeCodeError::AlreadyExists);
                }
                let (user_id, email, expires_at, at) = (c.user_id, c.email, c.expires_at, c.at);
                let event = match c.purpose {
                    Purpose::MagicAuth => OneTimeCodeEvent::MagicAuthCreated {
                        user_id,
                        email,
                        new_user: c.new_user,
                        expires_at,
                        at,
                    },
                    Purpose::EmailVerification => OneTimeCodeEvent::EmailVerificationCreated {
                        user_id,
                        email,
                        expires_at,
                        at,
                    },
                    Purpose::PasswordReset => OneTimeCodeEvent::PasswordResetCreated {
                        user_id,
                        email,
                        expires_at,
                        at,
                    },
                    Purpose::EmailChange => OneTimeCodeEvent::EmailChangeCreated {
                        user_id,
                        email,
                        new_email: c.new_email.ok_or(OneTimeCodeError::MissingNewEmail)?,
                        expires_at,
                        at,
                    },
                };
                sink.write(event, self).await;
            }
            OneTimeCodeCommand::SucceedPasswordReset { at } => {
                let (Some(purpose), Some(email), Some(expires_at), Some(created_at)) =
                    (self.purpose, self.email.clone(), self.expires_at, self.created_at)
                else {
                    return Err(OneTimeCodeError::NotFound);
                };
                if purpose != Purpose::PasswordReset {
                    return Err(OneTimeCodeError::NotAPasswordReset);
                }
                if self.succeeded {
                    return Err(OneTimeCodeError::AlreadySucceeded);
                }
                let event = OneTimeCodeEvent::PasswordResetSucceeded {
                    user_id: self.user_id.clone(),
                    email,
                    expires_at,
                    created_at,
                    at,
                };
                sink.write(event, self).await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: OneTimeCodeEvent) {
        let purpose = event.purpose();
        match event {
            OneTimeCodeEvent::MagicAuthCreated {
                user_id,
                email,
                expires_at,
                at,
                ..
            }
            | OneTimeCodeEvent::EmailVerificationCreated {
                user_id,
                email,
                expires_at,
                at,
            }
            | OneTimeCodeEvent::PasswordResetCreated {
                user_id,
                email,
                expires_at,
                at,
            }
            | OneTimeCodeEvent::EmailChangeCreated {
                user_id,
                email,
                expires_at,
                at,
                ..
            } => {
                *self = OneTimeCode {
                    purpose: Some(purpose),
                    user_id,
                    email: Some(email),
                    expires_at: Some(expires_at),
                    created_at: Some(at),
                    succeeded: false,
                };
            }
            OneTimeCodeEvent::PasswordResetSucceeded { .. } => self.succeeded = true,
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

    fn email(s: &str) -> Email {
        Email::parse("email", s).unwrap()
    }

    fn issue(purpose: Purpose, new_email: Option<&str>) -> OneTimeCodeCommand {
        OneTimeCodeCommand::Issue(IssueCode {
            purpose,
            user_id: "user_1".into(),
            email: email("ann@example.com"),
            new_user: false,
            new_email: new_email.map(email),
            expires_at: at(),
            at: at(),
        })
    }

    fn reset_created() -> OneTimeCodeEvent {
        OneTimeCodeEvent::PasswordResetCreated {
            user_id: "user_1".into(),
            email: email("ann@example.com"),
            expires_at: at(),
            at: at(),
        }
    }

    #[test]
    fn issuing_a_password_reset_records_its_creation() {
        TestFramework::<OneTimeCode>::with(NoServices)
            .given_no_previous_events()
            .when(issue(Purpose::PasswordReset, None))
            .then_expect_events(vec![reset_created()]);
    }

    #[test]
    fn issuing_twice_is_refused() {
        TestFramework::<OneTimeCode>::with(NoServices)
            .given(vec![reset_created()])
            .when(issue(Purpose::PasswordReset, None))
            .then_expect_error(OneTimeCodeError::AlreadyExists);
    }

    #[test]
    fn an_email_change_without_the_new_email_is_refused() {
        TestFramework::<OneTimeCode>::with(NoServices)
            .given_no_previous_events()
            .when(issue(Purpose::EmailChange, None))
            .then_expect_error(OneTimeCodeError::MissingNewEmail);
    }

    #[test]
    fn a_password_reset_succeeds_once_with_the_facts_of_its_creation() {
        let succeeded = OneTimeCodeEvent::PasswordResetSucceeded {
            user_id: "user_1".into(),
            email: email("ann@example.com"),
            expires_at: at(),
            created_at: at(),
            at: at(),
        };
        TestFramework::<OneTimeCode>::with(NoServices)
            .given(vec![reset_created()])
            .when(OneTimeCodeCommand::SucceedPasswordReset { at: at() })
            .then_expect_events(vec![succeeded.clone()]);
        TestFramework::<OneTimeCode>::with(NoServices)
            .given(vec![reset_created(), succeeded])
            .when(OneTimeCodeCommand::SucceedPasswordReset { at: at() })
            .then_expect_error(OneTimeCodeError::AlreadySucceeded);
    }

    #[test]
    fn only_a_password_reset_can_succeed_as_one() {
        let verification = OneTimeCodeEvent::EmailVerificationCreated {
            user_id: "user_1".into(),
            email: email("ann@example.com"),
            expires_at: at(),
            at: at(),
        };
        TestFramework::<OneTimeCode>::with(NoServices)
            .given(vec![verification])
            .when(OneTimeCodeCommand::SucceedPasswordReset { at: at() })
            .then_expect_error(OneTimeCodeError::NotAPasswordReset);
        TestFramework::<OneTimeCode>::with(NoServices)
            .given_no_previous_events()
            .when(OneTimeCodeCommand::SucceedPasswordReset { at: at() })
            .then_expect_error(OneTimeCodeError::NotFound);
    }
}

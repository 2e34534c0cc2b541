use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::commands::UserCommand;
use super::events::{UserChanges, UserEvent};
use crate::values::{Email, Metadata};
use crate::{NoServices, Tenanted};

/// Why a user command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("the user already exists")]
    AlreadyExists,
    #[error("the user does not exist")]
    NotFound,
}

/// A user's state, folded from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub email: Option<Email>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub name: Option<String>,
    pub email_verified: bool,
    pub external_id: Option<String>,
    pub metadata: Metadata,
    pub locale: Option<String>,
    pub has_password: bool,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub deleted: bool,
}

impl User {
    pub fn exists(&self) -> bool {
        self.created_at.is_some() && !self.deleted
    }

    /// Keeps only the changes that differ from the current state.
    fn effective_changes(&self, u: &super::UpdateUser) -> UserChanges {
        fn diff<T: PartialEq + Clone>(new: &Option<T>, old: &T) -> Option<T> {
            new.as_ref().filter(|n| *n != old).cloned()
        }
        let email = u.email.clone().filter(|e| Some(e) != self.email.as_ref());
        // A new address is unproved (WorkOS: a changed email becomes unverified), unless the
        // change itself says it is verified (a confirmed email change, an administrator).
        let moved = email
            .as_ref()
            .is_some_and(|e| self.email.as_ref().map(Email::key) != Some(e.key()));
        let email_verified = match u.email_verified {
            None if moved && self.email_verified => Some(false),
            _ => diff(&u.email_verified, &self.email_verified),
        };
        UserChanges {
            email,
            first_name: diff(&u.first_name, &self.first_name),
            last_name: diff(&u.last_name, &self.last_name),
            name: diff(&u.name, &self.name),
            email_verified,
            external_id: diff(&u.external_id, &self.external_id),
            metadata: diff(&u.metadata, &self.metadata),
            locale: diff(&u.locale, &self.locale),
        }
    }
}

impl Tenanted for User {
    fn organization_id<'a>(&'a self, _aggregate_id: &'a str) -> Option<&'a str> {
        None
    }
}

impl Aggregate for User {
    const TYPE: &'static str = "User";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    type Services = NoServices;

    async fn handle(&mut self, command: UserCommand, _: &NoServices, sink: &EventSink<Self>) -> Result<(), UserError> {
        match command {
            UserCommand::Create(c) => {
                if self.created_at.is_some() {
                    return Err(UserError::AlreadyExists);
                }
                let event = UserEvent::UserCreated {
                    email: c.email,
                    first_name: c.first_name,
                    last_name: c.last_name,
                    name: c.name,
                    email_verified: c.email_verified,
                    external_id: c.external_id,
                    metadata: c.metadata,
                    has_password: c.with_password,
                    at: c.at,
                };
                sink.write(event, self).await;
            }
            UserCommand::SignUp(c) => {
                if self.created_at.is_some() {
                    return Err(UserError::AlreadyExists);
                }
                let event = UserEvent::UserSignedUp {
                    email: c.email,
                    first_name: c.first_name,
                    last_name: c.last_name,
                    email_verified: c.email_verified,
                    method: c.method,
                    at: c.at,
                };
                sink.write(event, self).await;
            }
            UserCommand::Update(u) => {
                if !self.exists() {
                    return Err(UserError::NotFound);
                }
                let changes = self.effective_changes(&u);
                // Account pre-hijacking: anyone can sign up an address with a password and stop
                // before proving it; when its owner proves it another way, that password goes.
                let drop_password = u.drop_unproved_password && !self.email_verified && self.has_password;
                if !changes.is_empty() {
                    sink.write(UserEvent::UserUpdated { changes, at: u.at }, self).await;
                }
                if u.password_changed {
                    sink.write(UserEvent::UserPasswordChanged { at: u.at }, self).await;
                } else if drop_password {
                    sink.write(UserEvent::UserPasswordRemoved { at: u.at }, self).await;
                }
            }
            UserCommand::Delete { at } => {
                if !self.exists() {
                    return Err(UserError::NotFound);
                }
                sink.write(UserEvent::UserDeleted { at }, self).await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: UserEvent) {
        match event {
            UserEvent::UserCreated {
                email,
                first_name,
                last_name,
                name,
                email_verified,
                external_id,
                metadata,
                has_password,
                at,
            } => {
                *self = User {
                    email: Some(email),
                    first_name,
                    last_name,
                    name,
                    email_verified,
                    external_id,
                    metadata,
                    locale: None,
                    has_password,
                    created_at: Some(at),
                    updated_at: Some(at),
                    deleted: false,
                };
            }
            UserEvent::UserSignedUp {
                email,
                first_name,
                last_name,
                email_verified,
                at,
                ..
            } => {
                *self = User {
                    email: Some(email),
                    first_name,
                    last_name,
                    email_verified,
                    created_at: Some(at),
                    updated_at: Some(at),
                    ..User::default()
                };
            }
            UserEvent::UserUpdated { changes, at } => {
                if let Some(v) = changes.email {
                    self.email = Some(v);
                }
                if let Some(v) = changes.first_name {
                    self.first_name = v;
                }
                if let Some(v) = changes.last_name {
                    self.last_name = v;
                }
                if let Some(v) = changes.name {
                    self.name = v;
                }
                if let Some(v) = changes.email_verified {
                    self.email_verified = v;
                }
                if let Some(v) = changes.external_id {
                    self.external_id = v;
                }
                if let Some(v) = changes.metadata {
                    self.metadata = v;
                }
                if let Some(v) = changes.locale {
                    self.locale = v;
                }
                self.updated_at = Some(at);
            }
            UserEvent::UserPasswordChanged { at } => {
                self.has_password = true;
                self.updated_at = Some(at);
            }
            UserEvent::UserPasswordRemoved { at } => {
                self.has_password = false;
                self.updated_at = Some(at);
            }
            UserEvent::UserDeleted { at } => {
                self.deleted = true;
                self.updated_at = Some(at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::{Claim, ClaimKind, Claims};
    use crate::user::{CreateUser, UpdateUser};
    use cqrs_es::test::TestFramework;

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default()
    }

    fn created() -> UserEvent {
        UserEvent::UserCreated {
            email: Email::parse("email", "ann@example.com").unwrap(),
            first_name: Some("Ann".into()),
            last_name: None,
            name: None,
            email_verified: false,
            external_id: None,
            metadata: Metadata::new(),
            has_password: false,
            at: at(),
        }
    }

    fn create_cmd() -> UserCommand {
        UserCommand::Create(CreateUser {
            email: Email::parse("email", "ann@example.com").unwrap(),
            first_name: Some("Ann".into()),
            last_name: None,
            name: None,
            email_verified: false,
            external_id: None,
            metadata: Metadata::new(),
            with_password: false,
            at: at(),
        })
    }

    #[test]
    fn creating_a_new_user_emits_user_created() {
        TestFramework::<User>::with(NoServices)
            .given_no_previous_events()
            .when(create_cmd())
            .then_expect_events(vec![created()]);
    }

    #[test]
    fn creating_an_existing_user_is_refused() {
        TestFramework::<User>::with(NoServices)
            .given(vec![created()])
            .when(create_cmd())
            .then_expect_error(UserError::AlreadyExists);
    }

    #[test]
    fn an_update_records_only_what_changed() {
        let update = UpdateUser {
            first_name: Some(Some("Ann".into())),
            last_name: Some(Some("Lee".into())),
            at: at(),
            ..Default::default()
        };
        let changes = UserChanges {
            last_name: Some(Some("Lee".into())),
            ..Default::default()
        };
        TestFramework::<User>::with(NoServices)
            .given(vec![created()])
            .when(UserCommand::Update(update))
            .then_expect_events(vec![UserEvent::UserUpdated { changes, at: at() }]);
    }

    #[test]
    fn a_verified_user_moving_to_another_address_is_unverified_unless_the_change_says_otherwise() {
        let verified = UserEvent::UserUpdated {
            changes: UserChanges {
                email_verified: Some(true),
                ..Default::default()
            },
            at: at(),
        };
        let to = |email: &str, email_verified: Option<bool>| {
            UserCommand::Update(UpdateUser {
                email: Some(Email::parse("email", email).unwrap()),
                email_verified,
                at: at(),
                ..Default::default()
            })
        };
        let moved = |email: &str, email_verified: Option<bool>| UserEvent::UserUpdated {
            changes: UserChanges {
                email: Some(Email::parse("email", email).unwrap()),
                email_verified,
                ..Default::default()
            },
            at: at(),
        };
        TestFramework::<User>::with(NoServices)
            .given(vec![created(), verified.clone()])
            .when(to("ann@elsewhere.com", None))
            .then_expect_events(vec![moved("ann@elsewhere.com", Some(false))]);
        TestFramework::<User>::with(NoServices)
            .given(vec![created(), verified.clone()])
            .when(to("ann@elsewhere.com", Some(true)))
            .then_expect_events(vec![moved("ann@elsewhere.com", None)]);
        // Only the case of the same address: still the same mailbox.
        TestFramework::<User>::with(NoServices)
            .given(vec![created(), verified])
            .when(to("Ann@Example.com", None))
            .then_expect_events(vec![moved("Ann@Example.com", None)]);
    }

    #[test]
    fn proving_an_unverified_email_without_the_password_removes_the_password() {
        let password = UserEvent::UserPasswordChanged { at: at() };
        let proved = UserCommand::Update(UpdateUser {
            email_verified: Some(true),
            drop_unproved_password: true,
            at: at(),
            ..Default::default()
        });
        let verified = UserEvent::UserUpdated {
            changes: UserChanges {
                email_verified: Some(true),
                ..Default::default()
            },
            at: at(),
        };
        TestFramework::<User>::with(NoServices)
            .given(vec![created(), password.clone()])
            .when(proved.clone())
            .then_expect_events(vec![verified.clone(), UserEvent::UserPasswordRemoved { at: at() }]);
        // Already verified: the password was the owner's.
        TestFramework::<User>::with(NoServices)
            .given(vec![created(), password, verified])
            .when(proved.clone())
            .then_expect_events(vec![]);
        // No password: nothing to remove.
        TestFramework::<User>::with(NoServices)
            .given(vec![created()])
            .when(proved)
            .then_expect_events(vec![UserEvent::UserUpdated {
                changes: UserChanges {
                    email_verified: Some(true),
                    ..Default::default()
                },
                at: at(),
            }]);
    }

    #[test]
    fn an_update_that_changes_nothing_emits_nothing() {
        let update = UpdateUser {
            first_name: Some(Some("Ann".into())),
            at: at(),
            ..Default::default()
        };
        TestFramework::<User>::with(NoServices)
            .given(vec![created()])
            .when(UserCommand::Update(update))
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_password_change_is_an_event_without_the_secret() {
        let update = UpdateUser {
            password_changed: true,
            at: at(),
            ..Default::default()
        };
        TestFramework::<User>::with(NoServices)
            .given(vec![created()])
            .when(UserCommand::Update(update))
            .then_expect_events(vec![UserEvent::UserPasswordChanged { at: at() }]);
    }

    #[test]
    fn updating_or_deleting_a_deleted_user_is_not_found() {
        TestFramework::<User>::with(NoServices)
            .given(vec![created(), UserEvent::UserDeleted { at: at() }])
            .when(UserCommand::Delete { at: at() })
            .then_expect_error(UserError::NotFound);
        TestFramework::<User>::with(NoServices)
            .given_no_previous_events()
            .when(UserCommand::Update(UpdateUser::default()))
            .then_expect_error(UserError::NotFound);
    }

    #[test]
    fn email_changes_release_and_reacquire_the_email_claim() {
        let changes = UserChanges {
            email: Some(Email::parse("e", "New@Example.com").unwrap()),
            ..Default::default()
        };
        let claims = UserEvent::UserUpdated { changes, at: at() }.claims();
        assert_eq!(
            claims,
            vec![
                Claim::Release {
                    kind: ClaimKind::UserEmail,
                    value: None
                },
                Claim::Acquire {
                    kind: ClaimKind::UserEmail,
                    value: "new@example.com".into()
                },
            ]
        );
    }
}

use chrono::{DateTime, Utc};

use crate::values::{Email, Metadata};

/// Commands of the [`super::User`] aggregate. Values arrive parsed; the aggregate checks state.
#[derive(Debug, Clone, PartialEq)]
pub enum UserCommand {
    Create(CreateUser),
    /// A sign-in flow creates the user it signs in (`UserSignedUp`).
    SignUp(SignUpUser),
    Update(UpdateUser),
    Delete {
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct CreateUser {
    pub email: Email,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub name: Option<String>,
    pub email_verified: bool,
    pub external_id: Option<String>,
    pub metadata: Metadata,
    /// True when a password hash is stored with this append (the hash itself never enters an event).
    pub with_password: bool,
    pub at: DateTime<Utc>,
}

/// Each `Some` is a requested change; `Some(None)` clears a nullable field.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UpdateUser {
    pub email: Option<Email>,
    pub first_name: Option<Option<String>>,
    pub last_name: Option<Option<String>>,
    pub name: Option<Option<String>>,
    pub email_verified: Option<bool>,
    pub external_id: Option<Option<String>>,
    pub metadata: Option<Metadata>,
    pub locale: Option<Option<String>>,
    pub password_changed: bool,
    /// The email is being proved by a method other than the password (Magic Auth, SSO): a
    /// password set while the email was unverified is removed (`UserPasswordRemoved`).
    pub drop_unproved_password: bool,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SignUpUser {
    pub email: Email,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email_verified: bool,
    pub method: super::SignUpMethod,
    pub at: DateTime<Utc>,
}

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::claims::{Claim, Claims};
use crate::values::Email;

/// What a code is for; it names the id prefix, the public object and the stored event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    MagicAuth,
    EmailVerification,
    PasswordReset,
    EmailChange,
}

impl Purpose {
    /// The id prefix and WorkOS `object` name (`magic_auth_…`, `object: magic_auth`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MagicAuth => "magic_auth",
            Self::EmailVerification => "email_verification",
            Self::PasswordReset => "password_reset",
            Self::EmailChange => "email_change",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::MagicAuth,
            Self::EmailVerification,
            Self::PasswordReset,
            Self::EmailChange,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

/// Events of the [`super::OneTimeCode`] aggregate, stored under the names in `#[serde(rename)]`.
/// None carries the code or token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OneTimeCodeEvent {
    /// A Magic Auth code for `email`. `user_id` is the user holding the email, or — for an email
    /// nobody holds yet — the id reserved for the user the code signs up (`new_user`).
    #[serde(rename = "MagicAuthCreated")]
    MagicAuthCreated {
        user_id: String,
        email: Email,
        new_user: bool,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    #[serde(rename = "EmailVerificationCreated")]
    EmailVerificationCreated {
        user_id: String,
        email: Email,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    #[serde(rename = "PasswordResetCreated")]
    PasswordResetCreated {
        user_id: String,
        email: Email,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    /// A code sent to `new_email` that moves the user's email there once confirmed.
    #[serde(rename = "EmailChangeCreated")]
    EmailChangeCreated {
        user_id: String,
        email: Email,
        new_email: Email,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    /// The reset token set a new password (the user's `UserPasswordChanged` is beside it). It
    /// repeats the reset's facts so `password_reset.succeeded` is built from this event alone.
    #[serde(rename = "PasswordResetSucceeded")]
    PasswordResetSucceeded {
        user_id: String,
        email: Email,
        expires_at: DateTime<Utc>,
        created_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
}

impl OneTimeCodeEvent {
    /// The purpose of the code this event is about.
    pub fn purpose(&self) -> Purpose {
        match self {
            Self::MagicAuthCreated { .. } => Purpose::MagicAuth,
            Self::EmailVerificationCreated { .. } => Purpose::EmailVerification,
            Self::PasswordResetCreated { .. } | Self::PasswordResetSucceeded { .. } => Purpose::PasswordReset,
            Self::EmailChangeCreated { .. } => Purpose::EmailChange,
        }
    }
}

impl DomainEvent for OneTimeCodeEvent {
    fn event_type(&self) -> String {
        match self {
            Self::MagicAuthCreated { .. } => "MagicAuthCreated",
            Self::EmailVerificationCreated { .. } => "EmailVerificationCreated",
            Self::PasswordResetCreated { .. } => "PasswordResetCreated",
            Self::EmailChangeCreated { .. } => "EmailChangeCreated",
            Self::PasswordResetSucceeded { .. } => "PasswordResetSucceeded",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

impl Claims for OneTimeCodeEvent {
    fn claims(&self) -> Vec<Claim> {
        Vec::new()
    }
}

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::claims::{Claim, Claims};

/// How the user first proved who they are in this session (WorkOS's session `auth_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    Password,
    MagicCode,
    Sso,
}

impl AuthMethod {
    /// The session object's `auth_method`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Password => "password",
            Self::MagicCode => "magic_code",
            Self::Sso => "sso",
        }
    }

    /// The method stored as [`AuthMethod::as_str`]; anything else (an older or unknown value)
    /// reads as a password sign-in.
    pub fn from_stored(s: &str) -> Self {
        match s {
            "magic_code" => Self::MagicCode,
            "sso" => Self::Sso,
            _ => Self::Password,
        }
    }

    /// The authenticate response's `authentication_method`.
    pub fn response_name(self) -> &'static str {
        match self {
            Self::Password => "Password",
            Self::MagicCode => "MagicAuth",
            Self::Sso => "SSO",
        }
    }
}

/// The grant of `POST /user_management/authenticate` that ended the sign-in (WorkOS names its
/// `authentication.*` events after it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    Password,
    MagicAuth,
    EmailVerification,
    OrganizationSelection,
    AuthorizationCode,
}

impl Grant {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Password => "password",
            Self::MagicAuth => "magic_auth",
            Self::EmailVerification => "email_verification",
            Self::OrganizationSelection => "organization_selection",
            Self::AuthorizationCode => "authorization_code",
        }
    }

    /// The grant stored as [`Grant::as_str`]; anything else reads as a password grant.
    pub fn from_stored(s: &str) -> Self {
        match s {
            "magic_auth" => Self::MagicAuth,
            "email_verification" => Self::EmailVerification,
            "organization_selection" => Self::OrganizationSelection,
            "authorization_code" => Self::AuthorizationCode,
            _ => Self::Password,
        }
    }

    /// The `authentication.<type>_succeeded|_failed` event type of this grant, if WorkOS has one.
    pub fn event_type(self) -> Option<&'static str> {
        match self {
            Self::Password => Some("password"),
            Self::MagicAuth => Some("magic_auth"),
            Self::EmailVerification => Some("email_verification"),
            Self::OrganizationSelection | Self::AuthorizationCode => None,
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeReason {
    /// `POST /user_management/sessions/revoke` (the application).
    Revoked,
    /// `GET /user_management/sessions/logout` (the user).
    LoggedOut,
    /// A spent refresh token was presented again after the grace window: the token family may be
    /// stolen, so the whole session ends.
    RefreshTokenReused,
    /// The user was deleted.
    UserDeleted,
    /// The user's password was reset: whoever knew the old one loses their sessions.
    PasswordReset,
}

/// Events of the [`super::Session`] aggregate, stored under the names in `#[serde(rename)]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SessionEvent {
    #[serde(rename = "SessionCreated")]
    SessionCreated {
        user_id: String,
        /// The user's email when they signed in (the `authentication.*` event carries it).
        email: String,
        organization_id: Option<String>,
        auth_method: AuthMethod,
        grant: Grant,
        ip_address: Option<String>,
        user_agent: Option<String>,
        /// The application's id for the end user's device, when it sent one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device_id: Option<String>,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    /// A refresh named another organization the user is a member of.
    #[serde(rename = "SessionOrganizationSwitched")]
    SessionOrganizationSwitched {
        organization_id: String,
        previous_organization_id: Option<String>,
        at: DateTime<Utc>,
    },
    #[serde(rename = "SessionRevoked")]
    SessionRevoked { reason: RevokeReason, at: DateTime<Utc> },
}

impl DomainEvent for SessionEvent {
    fn event_type(&self) -> String {
        match self {
            Self::SessionCreated { .. } => "SessionCreated",
            Self::SessionOrganizationSwitched { .. } => "SessionOrganizationSwitched",
            Self::SessionRevoked { .. } => "SessionRevoked",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

impl Claims for SessionEvent {
    fn claims(&self) -> Vec<Claim> {
        Vec::new()
    }
}

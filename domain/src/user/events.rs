use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::claims::{Claim, ClaimKind, Claims, KeyPart};
use crate::values::{Email, Metadata};

/// Events of the [`super::User`] aggregate. Each variant is stored under the name
/// in its `#[serde(rename)]`, which `event_type` returns too, so renaming a Rust variant
/// changes nothing stored; a stored name never changes (docs/EVENTS.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UserEvent {
    #[serde(rename = "UserCreated")]
    UserCreated {
        email: Email,
        first_name: Option<String>,
        last_name: Option<String>,
        /// The full name (the SDKs' `name`). Added after the first release: absent in older
        /// payloads (read as `None`) and left out when unset, so version 1 still describes it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        email_verified: bool,
        external_id: Option<String>,
        metadata: Metadata,
        has_password: bool,
        at: DateTime<Utc>,
    },
    /// A user who signed themselves up through a sign-in flow (Magic Auth to a new email, an
    /// accepted invitation, SSO), published as WorkOS's `user.created`.
    #[serde(rename = "UserSignedUp")]
    UserSignedUp {
        email: Email,
        first_name: Option<String>,
        last_name: Option<String>,
        email_verified: bool,
        method: SignUpMethod,
        at: DateTime<Utc>,
    },
    #[serde(rename = "UserUpdated")]
    UserUpdated { changes: UserChanges, at: DateTime<Utc> },
    /// The user's password was set or changed; the hash lives in the credential table, never here.
    #[serde(rename = "UserPasswordChanged")]
    UserPasswordChanged { at: DateTime<Utc> },
    /// A password set while the email was unproved was removed when another method (Magic Auth,
    /// SSO) first proved the email: whoever set it may not have held the address. The
    /// credential row is erased in the same transaction.
    #[serde(rename = "UserPasswordRemoved")]
    UserPasswordRemoved { at: DateTime<Utc> },
    #[serde(rename = "UserDeleted")]
    UserDeleted { at: DateTime<Utc> },
}

/// How a user signed up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignUpMethod {
    MagicAuth,
    Invitation,
    Sso,
}

/// The fields an update changed, with their new values; absent fields did not change.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct UserChanges {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Email>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::double_option")]
    pub first_name: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::double_option")]
    pub last_name: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::double_option")]
    pub name: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::double_option")]
    pub external_id: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::double_option")]
    pub locale: Option<Option<String>>,
}

impl UserChanges {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        match self {
            Self::UserCreated { .. } => "UserCreated",
            Self::UserSignedUp { .. } => "UserSignedUp",
            Self::UserUpdated { .. } => "UserUpdated",
            Self::UserPasswordChanged { .. } => "UserPasswordChanged",
            Self::UserPasswordRemoved { .. } => "UserPasswordRemoved",
            Self::UserDeleted { .. } => "UserDeleted",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

impl Claims for UserEvent {
    fn claims(&self) -> Vec<Claim> {
        let release = |kind| Claim::Release { kind, value: None };
        match self {
            Self::UserSignedUp { email, .. } => vec![
                Claim::AcquireOwn {
                    kind: ClaimKind::LiveUser,
                },
                Claim::Acquire {
                    kind: ClaimKind::UserEmail,
                    value: email.key(),
                },
            ],
            Self::UserCreated { email, external_id, .. } => {
                let mut c = vec![
                    Claim::AcquireOwn {
                        kind: ClaimKind::LiveUser,
                    },
                    Claim::Acquire {
                        kind: ClaimKind::UserEmail,
                        value: email.key(),
                    },
                ];
                if let Some(x) = external_id {
                    c.push(Claim::Acquire {
                        kind: ClaimKind::UserExternalId,
                        value: x.clone(),
                    });
                }
                c
            }
            Self::UserUpdated { changes, .. } => {
                let mut c = Vec::new();
                if let Some(email) = &changes.email {
                    c.push(release(ClaimKind::UserEmail));
                    c.push(Claim::Acquire {
                        kind: ClaimKind::UserEmail,
                        value: email.key(),
                    });
                }
                if let Some(ext) = &changes.external_id {
                    c.push(release(ClaimKind::UserExternalId));
                    if let Some(x) = ext {
                        c.push(Claim::Acquire {
                            kind: ClaimKind::UserExternalId,
                            value: x.clone(),
                        });
                    }
                }
                c
            }
            Self::UserPasswordChanged { .. } | Self::UserPasswordRemoved { .. } => Vec::new(),
            Self::UserDeleted { .. } => vec![
                Claim::RetireOwn {
                    kind: ClaimKind::LiveUser,
                },
                release(ClaimKind::UserEmail),
                release(ClaimKind::UserExternalId),
                // Memberships are `<organization_id>:<user_id>`: none may outlive the user.
                Claim::NoDependents {
                    kind: ClaimKind::Membership,
                    part: KeyPart::Second,
                },
            ],
        }
    }
}

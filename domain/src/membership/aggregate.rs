use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::events::MembershipEvent;
use crate::values::{DomainName, RoleSlug};
use crate::{NoServices, Tenanted};

#[derive(Debug, Clone, PartialEq)]
pub enum MembershipCommand {
    /// The caller has checked that the user and the organization exist.
    Create {
        user_id: String,
        organization_id: String,
        organization_name: String,
        role: RoleSlug,
        at: DateTime<Utc>,
    },
    /// Just-in-time membership: the user's verified email is at `domain`, a verified domain of
    /// the organization, whose policy is `auto` (the caller has checked all that).
    JoinByDomain {
        user_id: String,
        organization_id: String,
        organization_name: String,
        role: RoleSlug,
        domain: DomainName,
        at: DateTime<Utc>,
    },
    /// The user's email left the domain the membership came from: an active membership that
    /// only the domain gave (JIT, not since changed by a role change or a reactivation) is
    /// deactivated; any other is left as it is.
    LeaveDomain {
        at: DateTime<Utc>,
    },
    ChangeRole {
        role: RoleSlug,
        at: DateTime<Utc>,
    },
    Deactivate {
        at: DateTime<Utc>,
    },
    Reactivate {
        at: DateTime<Utc>,
    },
    /// A create that matches this (inactive) membership: WorkOS activates it with the given role.
    Rejoin {
        role: RoleSlug,
        at: DateTime<Utc>,
    },
    Delete {
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    #[error("the organization membership already exists")]
    AlreadyExists,
    #[error("the organization membership does not exist")]
    NotFound,
    #[error("a pending organization membership cannot be reactivated; the user needs to accept the invitation")]
    Pending,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MembershipStatus {
    #[default]
    Active,
    Inactive,
    Pending,
}

impl MembershipStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Inactive => "inactive",
            Self::Pending => "pending",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OrganizationMembership {
    pub user_id: String,
    pub organization_id: String,
    pub organization_name: String,
    pub role: Option<RoleSlug>,
    pub status: MembershipStatus,
    /// The domain that alone gave this membership (JIT); cleared once the API or an invitation
    /// changes it (a role change or a reactivation).
    #[serde(default)]
    pub from_domain: Option<DomainName>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub deleted: bool,
}

impl OrganizationMembership {
    pub fn exists(&self) -> bool {
        self.created_at.is_some() && !self.deleted
    }
}

impl OrganizationMembership {
    /// The event of a change to `role`, if it is a change.
    fn role_change(&self, role: RoleSlug, at: DateTime<Utc>) -> Option<MembershipEvent> {
        (self.role.as_ref() != Some(&role)).then_some(MembershipEvent::MembershipRoleChanged { role, at })
    }
}

impl Tenanted for OrganizationMembership {
    fn organization_id<'a>(&'a self, _aggregate_id: &'a str) -> Option<&'a str> {
        Some(self.organization_id.as_str()).filter(|id| !id.is_empty())
    }
}

impl Aggregate for OrganizationMembership {
    const TYPE: &'static str = "OrganizationMembership";
    type Command = MembershipCommand;
    type Event = MembershipEvent;
    type Error = MembershipError;
    type Services = NoServices;

    async fn handle(
        &mut self,
        command: MembershipCommand,
        _: &NoServices,
        sink: &EventSink<Self>,
    ) -> Result<(), MembershipError> {
        let events = match command {
            MembershipCommand::Create {
                user_id,
                organization_id,
                organization_name,
                role,
                at,
            } => {
                if self.created_at.is_some() {
                    return Err(MembershipError::AlreadyExists);
                }
                vec![MembershipEvent::MembershipCreated {
                    user_id,
                    organization_id,
                    organization_name,
                    role,
                    joined_by_domain: None,
                    at,
                }]
            }
            MembershipCommand::JoinByDomain {
                user_id,
                organization_id,
                organization_name,
                role,
                domain,
                at,
            } => {
                if self.created_at.is_some() {
                    return Err(MembershipError::AlreadyExists);
                }
                vec![MembershipEvent::MembershipCreated {
                    user_id,
                    organization_id,
                    organization_name,
                    role,
                    joined_by_domain: Some(domain),
                    at,
                }]
            }
            _ if !self.exists() => return Err(MembershipError::NotFound),
            MembershipCommand::ChangeRole { role, at } => self.role_change(role, at).into_iter().collect(),
            MembershipCommand::LeaveDomain { at } => (self.from_domain.is_some()
                && self.status == MembershipStatus::Active)
                .then_some(MembershipEvent::MembershipDeactivated { at })
                .into_iter()
                .collect(),
            MembershipCommand::Deactivate { at } => (self.status != MembershipStatus::Inactive)
                .then_some(MembershipEvent::MembershipDeactivated { at })
                .into_iter()
                .collect(),
            MembershipCommand::Reactivate { at } => (self.status != MembershipStatus::Active)
                .then_some(MembershipEvent::MembershipReactivated { at })
                .into_iter()
                .collect(),
            MembershipCommand::Rejoin { role, at } => match self.status {
                MembershipStatus::Active => return Err(MembershipError::AlreadyExists),
                MembershipStatus::Pending => return Err(MembershipError::Pending),
                MembershipStatus::Inactive => std::iter::once(MembershipEvent::MembershipReactivated { at })
                    .chain(self.role_change(role, at))
                    .collect(),
            },
            MembershipCommand::Delete { at } => vec![MembershipEvent::MembershipDeleted { at }],
        };
        for e in events {
            sink.write(e, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: MembershipEvent) {
        match event {
            MembershipEvent::MembershipCreated {
                user_id,
                organization_id,
                organization_name,
                role,
                joined_by_domain,
                at,
            } => {
                *self = OrganizationMembership {
                    user_id,
                    organization_id,
                    organization_name,
                    role: Some(role),
                    status: MembershipStatus::Active,
                    from_domain: joined_by_domain,
                    created_at: Some(at),
                    updated_at: Some(at),
                    deleted: false,
                };
            }
            MembershipEvent::MembershipRoleChanged { role, at } => {
                self.role = Some(role);
                self.from_domain = None;
                self.updated_at = Some(at);
            }
            MembershipEvent::MembershipDeactivated { at } => {
                self.status = MembershipStatus::Inactive;
                self.updated_at = Some(at);
            }
            MembershipEvent::MembershipReactivated { at } => {
                self.status = MembershipStatus::Active;
                self.from_domain = None;
                self.updated_at = Some(at);
            }
            MembershipEvent::MembershipDeleted { at } => {
                self.deleted = true;
                self.updated_at = Some(at);
            }
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

    fn created() -> MembershipEvent {
        MembershipEvent::MembershipCreated {
            user_id: "user_1".into(),
            organization_id: "org_1".into(),
            organization_name: "Acme".into(),
            role: RoleSlug::member(),
            joined_by_domain: None,
            at: at(),
        }
    }

    fn joined_by_domain() -> MembershipEvent {
        MembershipEvent::MembershipCreated {
            user_id: "user_1".into(),
            organization_id: "org_1".into(),
            organization_name: "Acme".into(),
            role: RoleSlug::member(),
            joined_by_domain: Some(DomainName::parse("domain", "acme.com").unwrap()),
            at: at(),
        }
    }

    #[test]
    fn joining_by_domain_records_the_domain_on_the_new_membership() {
        TestFramework::<OrganizationMembership>::with(NoServices)
            .given_no_previous_events()
            .when(MembershipCommand::JoinByDomain {
                user_id: "user_1".into(),
                organization_id: "org_1".into(),
                organization_name: "Acme".into(),
                role: RoleSlug::member(),
                domain: DomainName::parse("domain", "ACME.com").unwrap(),
                at: at(),
            })
            .then_expect_events(vec![joined_by_domain()]);
        TestFramework::<OrganizationMembership>::with(NoServices)
            .given(vec![created()])
            .when(MembershipCommand::JoinByDomain {
                user_id: "user_1".into(),
                organization_id: "org_1".into(),
                organization_name: "Acme".into(),
                role: RoleSlug::member(),
                domain: DomainName::parse("domain", "acme.com").unwrap(),
                at: at(),
            })
            .then_expect_error(MembershipError::AlreadyExists);
    }

    #[test]
    fn leaving_the_domain_deactivates_only_a_membership_the_domain_alone_gave() {
        let leave = || MembershipCommand::LeaveDomain { at: at() };
        let deactivated = MembershipEvent::MembershipDeactivated { at: at() };
        TestFramework::<OrganizationMembership>::with(NoServices)
            .given(vec![joined_by_domain()])
            .when(leave())
            .then_expect_events(vec![deactivated.clone()]);
        // Made by the API or an invitation: kept.
        TestFramework::<OrganizationMembership>::with(NoServices)
            .given(vec![created()])
            .when(leave())
            .then_expect_events(vec![]);
        // Changed by the API since: kept.
        let admin = RoleSlug::parse("role_slug", "admin").unwrap();
        TestFramework::<OrganizationMembership>::with(NoServices)
            .given(vec![
                joined_by_domain(),
                MembershipEvent::MembershipRoleChanged { role: admin, at: at() },
            ])
            .when(leave())
            .then_expect_events(vec![]);
        TestFramework::<OrganizationMembership>::with(NoServices)
            .given(vec![
                joined_by_domain(),
                deactivated.clone(),
                MembershipEvent::MembershipReactivated { at: at() },
            ])
            .when(leave())
            .then_expect_events(vec![]);
        // Already inactive: nothing more.
        TestFramework::<OrganizationMembership>::with(NoServices)
            .given(vec![joined_by_domain(), deactivated])
            .when(leave())
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_membership_created_event_without_its_domain_field_still_decodes() {
        let old = serde_json::json!({"MembershipCreated": {"user_id": "user_1", "organization_id": "org_1",
            "organization_name": "Acme", "role": "member", "at": "2023-11-14T22:13:20Z"}});
        let e: MembershipEvent = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(e, created());
        assert_eq!(
            serde_json::to_value(&e).unwrap()["MembershipCreated"].get("joined_by_domain"),
            None
        );
        let new = serde_json::to_value(joined_by_domain()).unwrap();
        assert_eq!(new["MembershipCreated"]["joined_by_domain"], "acme.com");
    }

    #[test]
    fn deactivating_then_reactivating_flips_the_status() {
        TestFramework::<OrganizationMembership>::with(NoServices)
            .given(vec![created()])
            .when(MembershipCommand::Deactivate { at: at() })
            .then_expect_events(vec![MembershipEvent::MembershipDeactivated { at: at() }]);
        TestFramework::<OrganizationMembership>::with(NoServices)
            .given(vec![created(), MembershipEvent::MembershipDeactivated { at: at() }])
            .when(MembershipCommand::Reactivate { at: at() })
            .then_expect_events(vec![MembershipEvent::MembershipReactivated { at: at() }]);
    }

    #[test]
    fn rejoining_an_inactive_membership_reactivates_it_with_the_new_role() {
        let admin = RoleSlug::parse("role_slug", "admin").unwrap();
        TestFramework::<OrganizationMembership>::with(NoServices)
            .given(vec![created(), MembershipEvent::MembershipDeactivated { at: at() }])
            .when(MembershipCommand::Rejoin {
                role: admin.clone(),
                at: at(),
            })
            .then_expect_events(vec![
                MembershipEvent::MembershipReactivated { at: at() },
                MembershipEvent::MembershipRoleChanged { role: admin, at: at() },
            ]);
        TestFramework::<OrganizationMembership>::with(NoServices)
            .given(vec![created(), MembershipEvent::MembershipDeactivated { at: at() }])
            .when(MembershipCommand::Rejoin {
                role: RoleSlug::member(),
                at: at(),
            })
            .then_expect_events(vec![MembershipEvent::MembershipReactivated { at: at() }]);
    }

    #[test]
    fn rejoining_an_active_or_deleted_membership_is_refused() {
        TestFramework::<OrganizationMembership>::with(NoServices)
            .given(vec![created()])
            .when(MembershipCommand::Rejoin {
                role: RoleSlug::member(),
                at: at(),
            })
            .then_expect_error(MembershipError::AlreadyExists);
        TestFramework::<OrganizationMembership>::with(NoServices)
            .given(vec![created(), MembershipEvent::MembershipDeleted { at: at() }])
            .when(MembershipCommand::Rejoin {
                role: RoleSlug::member(),
                at: at(),
            })
            .then_expect_error(MembershipError::NotFound);
    }

    #[test]
    fn deactivating_twice_is_a_no_op() {
        TestFramework::<OrganizationMembership>::with(NoServices)
            .given(vec![created(), MembershipEvent::MembershipDeactivated { at: at() }])
            .when(MembershipCommand::Deactivate { at: at() })
            .then_expect_events(vec![]);
    }

    #[test]
    fn changing_a_deleted_membership_is_not_found() {
        TestFramework::<OrganizationMembership>::with(NoServices)
            .given(vec![created(), MembershipEvent::MembershipDeleted { at: at() }])
            .when(MembershipCommand::ChangeRole {
                role: RoleSlug::member(),
                at: at(),
            })
            .then_expect_error(MembershipError::NotFound);
    }

    #[test]
    fn changing_to_the_same_role_emits_nothing() {
        TestFramework::<OrganizationMembership>::with(NoServices)
            .given(vec![created()])
            .when(MembershipCommand::ChangeRole {
                role: RoleSlug::member(),
                at: at(),
            })
            .then_expect_events(vec![]);
    }
}

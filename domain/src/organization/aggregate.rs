use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::commands::{NewDomain, OrganizationCommand, UpdateOrganization};
use super::events::{OrganizationChanges, OrganizationEvent};
use super::policy::OrganizationPolicy;
use crate::values::{DomainName, Metadata};
use crate::{NoServices, Tenanted};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrganizationError {
    #[error("the organization already exists")]
    AlreadyExists,
    #[error("the organization does not exist")]
    NotFound,
    #[error("the organization domain does not exist")]
    DomainNotFound,
    #[error("the domain {0} is already attached to this organization")]
    DuplicateDomain(String),
}

/// Verification state of a domain (WorkOS names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainState {
    Pending,
    Verified,
    Failed,
}

impl DomainState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Verified => "verified",
            Self::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainRecord {
    pub id: String,
    pub domain: DomainName,
    pub state: DomainState,
    pub verification_token: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Organization {
    pub name: String,
    pub external_id: Option<String>,
    pub metadata: Metadata,
    pub allow_profiles_outside_organization: bool,
    pub stripe_customer_id: Option<String>,
    pub domains: Vec<DomainRecord>,
    /// Days audit log events are kept; None until set.
    #[serde(default)]
    pub audit_logs_retention_days: Option<u32>,
    /// The policy for the users of its verified domains; None until set (the default applies).
    #[serde(default)]
    pub policy: Option<OrganizationPolicy>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub deleted: bool,
}

impl Organization {
    pub fn exists(&self) -> bool {
        self.created_at.is_some() && !self.deleted
    }

    pub fn domain(&self, id: &str) -> Option<&DomainRecord> {
        self.domains.iter().find(|d| d.id == id)
    }

    fn domain_named(&self, name: &DomainName) -> Option<&DomainRecord> {
        self.domains.iter().find(|d| &d.domain == name)
    }

    fn created_domain(d: NewDomain, at: DateTime<Utc>) -> OrganizationEvent {
        OrganizationEvent::OrganizationDomainCreated {
            domain_id: d.id,
            domain: d.domain,
            state: d.state,
            verification_token: d.verification_token,
            at,
        }
    }

    fn deleted_domain(d: &DomainRecord, at: DateTime<Utc>) -> OrganizationEvent {
        OrganizationEvent::OrganizationDomainDeleted {
            domain_id: d.id.clone(),
            domain: d.domain.clone(),
            was_verified: d.state == DomainState::Verified,
            at,
        }
    }

    /// The events an update produces: field changes, then the domain set reconciliation.
    fn update_events(&self, u: UpdateOrganization) -> Result<Vec<OrganizationEvent>, OrganizationError> {
        fn diff<T: PartialEq + Clone>(new: &Option<T>, old: &T) -> Option<T> {
            new.as_ref().filter(|n| *n != old).cloned()
        }
        let changes = OrganizationChanges {
            name: diff(&u.name, &self.name),
            external_id: diff(&u.external_id, &self.external_id),
            metadata: diff(&u.metadata, &self.metadata),
            allow_profiles_outside_organization: diff(
                &u.allow_profiles_outside_organization,
                &self.allow_profiles_outside_organization,
            ),
            stripe_customer_id: diff(&u.stripe_customer_id, &self.stripe_customer_id),
        };
        let mut events = Vec::new();
        if !changes.is_empty() {
            events.push(OrganizationEvent::OrganizationUpdated { changes, at: u.at });
        }
        if let Some(wanted) = u.domains {
            reject_duplicates(&wanted)?;
            for existing in &self.domains {
                if !wanted.iter().any(|w| w.domain == existing.domain) {
                    events.push(Self::deleted_domain(existing, u.at));
                }
            }
            for w in wanted {
                match self.domain_named(&w.domain) {
                    None => events.push(Self::created_domain(w, u.at)),
                    Some(existing) if w.state == DomainState::Verified && existing.state != DomainState::Verified => {
                        events.push(OrganizationEvent::OrganizationDomainVerified {
                            domain_id: existing.id.clone(),
                            domain: existing.domain.clone(),
                            at: u.at,
                        });
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(events)
    }
}

fn reject_duplicates(domains: &[NewDomain]) -> Result<(), OrganizationError> {
    for (i, d) in domains.iter().enumerate() {
        if domains[..i].iter().any(|o| o.domain == d.domain) {
            return Err(OrganizationError::DuplicateDomain(d.domain.as_str().to_string()));
        }
    }
    Ok(())
}

impl Tenanted for Organization {
    fn organization_id<'a>(&'a self, aggregate_id: &'a str) -> Option<&'a str> {
        Some(aggregate_id)
    }
}

impl Aggregate for Organization {
    const TYPE: &'static str = "Organization";
    type Command = OrganizationCommand;
    type Event = OrganizationEvent;
    type Error = OrganizationError;
    type Services = NoServices;

    async fn handle(
        &mut self,
        command: OrganizationCommand,
        _: &NoServices,
        sink: &EventSink<Self>,
    ) -> Result<(), OrganizationError> {
        let events = match command {
            OrganizationCommand::Create {
                name,
                external_id,
                metadata,
                allow_profiles_outside_organization,
                domains,
                at,
            } => {
                if self.created_at.is_some() {
                    return Err(OrganizationError::AlreadyExists);
                }
                reject_duplicates(&domains)?;
                let mut events = vec![OrganizationEvent::OrganizationCreated {
                    name,
                    external_id,
                    metadata,
                    allow_profiles_outside_organization,
                    at,
                }];
                events.extend(domains.into_iter().map(|d| Self::created_domain(d, at)));
                events
            }
            other => {
                if !self.exists() {
                    return Err(OrganizationError::NotFound);
                }
                match other {
                    OrganizationCommand::Create { .. } => Vec::new(),
                    OrganizationCommand::Update(u) => self.update_events(u)?,
                    // Its domains go first, each with its own event (docs/EVENTS.md, "Cascades").
                    OrganizationCommand::Delete { at } => self
                        .domains
                        .iter()
                        .map(|d| Self::deleted_domain(d, at))
                        .chain(std::iter::once(OrganizationEvent::OrganizationDeleted { at }))
                        .collect(),
                    OrganizationCommand::AddDomain { domain, at } => {
                        if self.domain_named(&domain.domain).is_some() {
                            return Err(OrganizationError::DuplicateDomain(domain.domain.as_str().to_string()));
                        }
                        vec![Self::created_domain(domain, at)]
                    }
                    OrganizationCommand::RecordVerification {
                        domain_id,
                        verified,
                        reason,
                        at,
                    } => {
                        let d = self.domain(&domain_id).ok_or(OrganizationError::DomainNotFound)?;
                        if verified {
                            if d.state == DomainState::Verified {
                                Vec::new()
                            } else {
                                vec![OrganizationEvent::OrganizationDomainVerified {
                                    domain_id,
                                    domain: d.domain.clone(),
                                    at,
                                }]
                            }
                        } else {
                            vec![OrganizationEvent::OrganizationDomainVerificationFailed {
                                domain_id,
                                domain: d.domain.clone(),
                                reason: reason.unwrap_or_else(|| "verification failed".into()),
                                at,
                            }]
                        }
                    }
                    OrganizationCommand::SetAuditLogsRetention {
                        retention_period_in_days,
                        at,
                    } => (self.audit_logs_retention_days != Some(retention_period_in_days))
                        .then_some(OrganizationEvent::OrganizationAuditLogsRetentionChanged {
                            retention_period_in_days,
                            previous_retention_period_in_days: self.audit_logs_retention_days,
                            at,
                        })
                        .into_iter()
                        .collect(),
                    OrganizationCommand::SetPolicy {
                        membership,
                        default_role,
                        authentication,
                        at,
                    } => {
                        let current = self.policy.clone().unwrap_or_default();
                        let wanted = OrganizationPolicy {
                            membership: membership.unwrap_or(current.membership),
                            default_role: default_role.unwrap_or_else(|| current.default_role.clone()),
                            authentication: authentication.unwrap_or(current.authentication),
                        };
                        if wanted == current {
                            Vec::new()
                        } else {
                            let before = self.policy.clone();
                            vec![OrganizationEvent::OrganizationPolicyChanged {
                                membership: wanted.membership,
                                default_role: wanted.default_role,
                                authentication: wanted.authentication,
                                previous_membership: before.as_ref().map(|p| p.membership),
                                previous_default_role: before.as_ref().map(|p| p.default_role.clone()),
                                previous_authentication: before.as_ref().map(|p| p.authentication),
                                at,
                            }]
                        }
                    }
                    OrganizationCommand::RemoveDomain { domain_id, at } => {
                        let d = self.domain(&domain_id).ok_or(OrganizationError::DomainNotFound)?;
                        vec![Self::deleted_domain(d, at)]
                    }
                }
            }
        };
        for e in events {
            sink.write(e, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: OrganizationEvent) {
        match event {
            OrganizationEvent::OrganizationCreated {
                name,
                external_id,
                metadata,
                allow_profiles_outside_organization,
                at,
            } => {
                self.name = name;
                self.external_id = external_id;
                self.metadata = metadata;
                self.allow_profiles_outside_organization = allow_profiles_outside_organization;
                self.created_at = Some(at);
                self.updated_at = Some(at);
            }
            OrganizationEvent::OrganizationUpdated { changes, at } => {
                if let Some(v) = changes.name {
                    self.name = v;
                }
                if let Some(v) = changes.external_id {
                    self.external_id = v;
                }
                if let Some(v) = changes.metadata {
                    self.metadata = v;
                }
                if let Some(v) = changes.allow_profiles_outside_organization {
                    self.allow_profiles_outside_organization = v;
                }
                if let Some(v) = changes.stripe_customer_id {
                    self.stripe_customer_id = v;
                }
                self.updated_at = Some(at);
            }
            OrganizationEvent::OrganizationDeleted { at } => {
                self.deleted = true;
                self.updated_at = Some(at);
            }
            OrganizationEvent::OrganizationDomainCreated {
                domain_id,
                domain,
                state,
                verification_token,
                at,
            } => {
                self.domains.push(DomainRecord {
                    id: domain_id,
                    domain,
                    state,
                    verification_token,
                    created_at: at,
                    updated_at: at,
                });
                self.updated_at = Some(at);
            }
            OrganizationEvent::OrganizationDomainVerified { domain_id, at, .. } => {
                self.set_state(&domain_id, DomainState::Verified, at)
            }
            OrganizationEvent::OrganizationDomainVerificationFailed { domain_id, at, .. } => {
                self.set_state(&domain_id, DomainState::Failed, at)
            }
            OrganizationEvent::OrganizationDomainDeleted { domain_id, at, .. } => {
                self.domains.retain(|d| d.id != domain_id);
                self.updated_at = Some(at);
            }
            // Configuration: the organization object (and its updated_at) does not change.
            OrganizationEvent::OrganizationAuditLogsRetentionChanged {
                retention_period_in_days,
                ..
            } => self.audit_logs_retention_days = Some(retention_period_in_days),
            // Configuration too: the organization object does not change.
            OrganizationEvent::OrganizationPolicyChanged {
                membership,
                default_role,
                authentication,
                ..
            } => {
                self.policy = Some(OrganizationPolicy {
                    membership,
                    default_role,
                    authentication,
                })
            }
        }
    }
}

impl Organization {
    fn set_state(&mut self, domain_id: &str, state: DomainState, at: DateTime<Utc>) {
        if let Some(d) = self.domains.iter_mut().find(|d| d.id == domain_id) {
            d.state = state;
            d.updated_at = at;
        }
        self.updated_at = Some(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::{Claim, ClaimKind, Claims};
    use crate::organization::{AuthenticationPolicy, MembershipPolicy};
    use crate::values::RoleSlug;
    use cqrs_es::test::TestFramework;

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default()
    }

    fn dn(s: &str) -> DomainName {
        DomainName::parse("domain", s).unwrap()
    }

    fn created() -> Vec<OrganizationEvent> {
        vec![
            OrganizationEvent::OrganizationCreated {
                name: "Acme".into(),
                external_id: None,
                metadata: Metadata::new(),
                allow_profiles_outside_organization: false,
                at: at(),
            },
            OrganizationEvent::OrganizationDomainCreated {
                domain_id: "org_domain_1".into(),
                domain: dn("acme.com"),
                state: DomainState::Pending,
                verification_token: "tok".into(),
                at: at(),
            },
        ]
    }

    fn new_domain(id: &str, name: &str, state: DomainState) -> NewDomain {
        NewDomain {
            id: id.into(),
            domain: dn(name),
            state,
            verification_token: "tok".into(),
        }
    }

    #[test]
    fn setting_the_retention_records_the_change_once() {
        let set = |days| OrganizationCommand::SetAuditLogsRetention {
            retention_period_in_days: days,
            at: at(),
        };
        let changed = |days, previous| OrganizationEvent::OrganizationAuditLogsRetentionChanged {
            retention_period_in_days: days,
            previous_retention_period_in_days: previous,
            at: at(),
        };
        TestFramework::<Organization>::with(NoServices)
            .given(created())
            .when(set(30))
            .then_expect_events(vec![changed(30, None)]);
        TestFramework::<Organization>::with(NoServices)
            .given([created(), vec![changed(30, None)]].concat())
            .when(set(365))
            .then_expect_events(vec![changed(365, Some(30))]);
        TestFramework::<Organization>::with(NoServices)
            .given([created(), vec![changed(30, None)]].concat())
            .when(set(30))
            .then_expect_events(vec![]);
        TestFramework::<Organization>::with(NoServices)
            .given_no_previous_events()
            .when(set(30))
            .then_expect_error(OrganizationError::NotFound);
    }

    fn set_policy(
        membership: Option<MembershipPolicy>,
        role: Option<&str>,
        authentication: Option<AuthenticationPolicy>,
    ) -> OrganizationCommand {
        OrganizationCommand::SetPolicy {
            membership,
            default_role: role.map(|r| RoleSlug::parse("default_role", r).unwrap()),
            authentication,
            at: at(),
        }
    }

    fn policy_changed(
        now: (MembershipPolicy, &str, AuthenticationPolicy),
        before: Option<(MembershipPolicy, &str, AuthenticationPolicy)>,
    ) -> OrganizationEvent {
        let role = |r: &str| RoleSlug::parse("default_role", r).unwrap();
        OrganizationEvent::OrganizationPolicyChanged {
            membership: now.0,
            default_role: role(now.1),
            authentication: now.2,
            previous_membership: before.map(|b| b.0),
            previous_default_role: before.map(|b| role(b.1)),
            previous_authentication: before.map(|b| b.2),
            at: at(),
        }
    }

    #[test]
    fn a_first_policy_change_fills_the_missing_values_from_the_defaults_and_has_no_previous_values() {
        use MembershipPolicy::*;
        TestFramework::<Organization>::with(NoServices)
            .given(created())
            .when(set_policy(Some(Auto), None, None))
            .then_expect_events(vec![policy_changed((Auto, "member", AuthenticationPolicy::Any), None)]);
    }

    #[test]
    fn a_later_policy_change_keeps_the_values_it_does_not_name_and_records_the_previous_ones() {
        use AuthenticationPolicy::*;
        use MembershipPolicy::*;
        TestFramework::<Organization>::with(NoServices)
            .given([created(), vec![policy_changed((Auto, "member", Any), None)]].concat())
            .when(set_policy(None, Some("admin"), Some(SsoRequired)))
            .then_expect_events(vec![policy_changed(
                (Auto, "admin", SsoRequired),
                Some((Auto, "member", Any)),
            )]);
    }

    #[test]
    fn a_policy_change_that_changes_nothing_records_nothing() {
        use AuthenticationPolicy::*;
        use MembershipPolicy::*;
        TestFramework::<Organization>::with(NoServices)
            .given(created())
            .when(set_policy(Some(InviteOnly), Some("member"), Some(Any)))
            .then_expect_events(vec![]);
        TestFramework::<Organization>::with(NoServices)
            .given([created(), vec![policy_changed((Auto, "admin", Any), None)]].concat())
            .when(set_policy(Some(Auto), None, None))
            .then_expect_events(vec![]);
    }

    #[test]
    fn the_policy_of_a_missing_or_deleted_organization_cannot_be_set() {
        TestFramework::<Organization>::with(NoServices)
            .given_no_previous_events()
            .when(set_policy(Some(MembershipPolicy::Auto), None, None))
            .then_expect_error(OrganizationError::NotFound);
        let mut deleted = created();
        deleted.push(OrganizationEvent::OrganizationDeleted { at: at() });
        TestFramework::<Organization>::with(NoServices)
            .given(deleted)
            .when(set_policy(Some(MembershipPolicy::Auto), None, None))
            .then_expect_error(OrganizationError::NotFound);
    }

    #[test]
    fn creating_an_organization_with_domains_emits_one_event_per_domain() {
        TestFramework::<Organization>::with(NoServices)
            .given_no_previous_events()
            .when(OrganizationCommand::Create {
                name: "Acme".into(),
                external_id: None,
                metadata: Metadata::new(),
                allow_profiles_outside_organization: false,
                domains: vec![new_domain("org_domain_1", "acme.com", DomainState::Pending)],
                at: at(),
            })
            .then_expect_events(created());
    }

    #[test]
    fn the_same_domain_twice_is_refused() {
        TestFramework::<Organization>::with(NoServices)
            .given(created())
            .when(OrganizationCommand::AddDomain {
                domain: new_domain("org_domain_2", "ACME.com", DomainState::Pending),
                at: at(),
            })
            .then_expect_error(OrganizationError::DuplicateDomain("acme.com".into()));
    }

    #[test]
    fn a_successful_check_verifies_and_claims_the_domain() {
        let verified = OrganizationEvent::OrganizationDomainVerified {
            domain_id: "org_domain_1".into(),
            domain: dn("acme.com"),
            at: at(),
        };
        TestFramework::<Organization>::with(NoServices)
            .given(created())
            .when(OrganizationCommand::RecordVerification {
                domain_id: "org_domain_1".into(),
                verified: true,
                reason: None,
                at: at(),
            })
            .then_expect_events(vec![verified.clone()]);
        assert_eq!(
            verified.claims(),
            vec![Claim::Acquire {
                kind: ClaimKind::VerifiedDomain,
                value: "acme.com".into()
            }]
        );
    }

    #[test]
    fn a_failed_check_records_why() {
        TestFramework::<Organization>::with(NoServices)
            .given(created())
            .when(OrganizationCommand::RecordVerification {
                domain_id: "org_domain_1".into(),
                verified: false,
                reason: Some("no record".into()),
                at: at(),
            })
            .then_expect_events(vec![OrganizationEvent::OrganizationDomainVerificationFailed {
                domain_id: "org_domain_1".into(),
                domain: dn("acme.com"),
                reason: "no record".into(),
                at: at(),
            }]);
    }

    #[test]
    fn unknown_domains_and_deleted_organizations_are_not_found() {
        TestFramework::<Organization>::with(NoServices)
            .given(created())
            .when(OrganizationCommand::RemoveDomain {
                domain_id: "org_domain_x".into(),
                at: at(),
            })
            .then_expect_error(OrganizationError::DomainNotFound);
        let mut deleted = created();
        deleted.push(OrganizationEvent::OrganizationDeleted { at: at() });
        TestFramework::<Organization>::with(NoServices)
            .given(deleted)
            .when(OrganizationCommand::Delete { at: at() })
            .then_expect_error(OrganizationError::NotFound);
    }

    #[test]
    fn an_update_with_a_domain_set_reconciles_domains() {
        let update = UpdateOrganization {
            name: Some("Acme Inc".into()),
            domains: Some(vec![new_domain("org_domain_2", "acme.io", DomainState::Verified)]),
            at: at(),
            ..Default::default()
        };
        TestFramework::<Organization>::with(NoServices)
            .given(created())
            .when(OrganizationCommand::Update(update))
            .then_expect_events(vec![
                OrganizationEvent::OrganizationUpdated {
                    changes: OrganizationChanges {
                        name: Some("Acme Inc".into()),
                        ..Default::default()
                    },
                    at: at(),
                },
                OrganizationEvent::OrganizationDomainDeleted {
                    domain_id: "org_domain_1".into(),
                    domain: dn("acme.com"),
                    was_verified: false,
                    at: at(),
                },
                OrganizationEvent::OrganizationDomainCreated {
                    domain_id: "org_domain_2".into(),
                    domain: dn("acme.io"),
                    state: DomainState::Verified,
                    verification_token: "tok".into(),
                    at: at(),
                },
            ]);
    }

    #[test]
    fn deleting_an_organization_deletes_its_domains_first_then_itself() {
        let mut given = created();
        given.push(OrganizationEvent::OrganizationDomainCreated {
            domain_id: "org_domain_2".into(),
            domain: dn("acme.io"),
            state: DomainState::Verified,
            verification_token: "tok".into(),
            at: at(),
        });
        TestFramework::<Organization>::with(NoServices)
            .given(given)
            .when(OrganizationCommand::Delete { at: at() })
            .then_expect_events(vec![
                OrganizationEvent::OrganizationDomainDeleted {
                    domain_id: "org_domain_1".into(),
                    domain: dn("acme.com"),
                    was_verified: false,
                    at: at(),
                },
                OrganizationEvent::OrganizationDomainDeleted {
                    domain_id: "org_domain_2".into(),
                    domain: dn("acme.io"),
                    was_verified: true,
                    at: at(),
                },
                OrganizationEvent::OrganizationDeleted { at: at() },
            ]);
    }

    #[test]
    fn a_deleted_organization_gives_up_its_liveness_and_allows_no_memberships() {
        use crate::claims::{Claim, ClaimKind, Claims, KeyPart};
        let claims = OrganizationEvent::OrganizationDeleted { at: at() }.claims();
        assert!(claims.contains(&Claim::RetireOwn {
            kind: ClaimKind::LiveOrganization
        }));
        assert!(claims.contains(&Claim::NoDependents {
            kind: ClaimKind::Membership,
            part: KeyPart::First
        }));
        assert!(created()[0].claims().contains(&Claim::AcquireOwn {
            kind: ClaimKind::LiveOrganization
        }));
    }
}

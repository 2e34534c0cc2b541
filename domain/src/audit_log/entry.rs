use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use super::AuditLogError;
use crate::claims::{Claim, ClaimKind, Claims};
use crate::{NoServices, Tenanted};

/// WorkOS audit metadata: string, number or boolean values by key.
pub type AuditMetadata = serde_json::Map<String, serde_json::Value>;

/// Who did it (the application's own actor, not keyledger's API key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditActor {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<AuditMetadata>,
}

/// What it was done to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditTarget {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<AuditMetadata>,
}

/// Where it was done from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditContext {
    pub location: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

/// An idempotency key and the hash of the request that used it first (a repeat with another
/// body is refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Idempotency {
    pub key: String,
    pub request_hash: String,
}

/// One audit event as the application reports it (validated by the caller).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAuditEvent {
    pub organization_id: String,
    pub action: String,
    pub occurred_at: DateTime<Utc>,
    pub actor: AuditActor,
    pub targets: Vec<AuditTarget>,
    pub context: AuditContext,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<AuditMetadata>,
    /// The schema version the event was validated against (absent: none or the latest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AuditLogEntryCommand {
    Create {
        event: NewAuditEvent,
        idempotency: Option<Idempotency>,
        at: DateTime<Utc>,
    },
}

/// Events of the [`AuditLogEntry`] aggregate. Each variant is stored under the name
/// in its `#[serde(rename)]`, which `event_type` returns too, so renaming a Rust variant
/// changes nothing stored; a stored name never changes (docs/EVENTS.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AuditLogEntryEvent {
    #[serde(rename = "AuditLogEventCreated")]
    AuditLogEventCreated {
        event: NewAuditEvent,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idempotency: Option<Idempotency>,
        at: DateTime<Utc>,
    },
}

impl AuditLogEntryEvent {
    /// The claim key of an idempotency key: keys are scoped to their organization.
    pub fn idempotency_claim(organization_id: &str, key: &str) -> String {
        format!("{organization_id}:{key}")
    }
}

impl DomainEvent for AuditLogEntryEvent {
    fn event_type(&self) -> String {
        match self {
            Self::AuditLogEventCreated { .. } => "AuditLogEventCreated",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

impl Claims for AuditLogEntryEvent {
    fn claims(&self) -> Vec<Claim> {
        match self {
            Self::AuditLogEventCreated {
                event,
                idempotency: Some(i),
                ..
            } => vec![Claim::Acquire {
                kind: ClaimKind::AuditLogIdempotencyKey,
                value: Self::idempotency_claim(&event.organization_id, &i.key),
            }],
            Self::AuditLogEventCreated { .. } => Vec::new(),
        }
    }
}

/// One recorded audit event (immutable once created).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditLogEntry {
    pub organization_id: String,
    pub created: bool,
}

impl Tenanted for AuditLogEntry {
    fn organization_id<'a>(&'a self, _aggregate_id: &'a str) -> Option<&'a str> {
        Some(self.organization_id.as_str()).filter(|id| !id.is_empty())
    }
}

impl Aggregate for AuditLogEntry {
    const TYPE: &'static str = "AuditLogEvent";
    type Command = AuditLogEntryCommand;
    type Event = AuditLogEntryEvent;
    type Error = AuditLogError;
    type Services = NoServices;

    async fn handle(
        &mut self,
        command: AuditLogEntryCommand,
        _: &NoServices,
        sink: &EventSink<Self>,
    ) -> Result<(), AuditLogError> {
        match command {
            AuditLogEntryCommand::Create { event, idempotency, at } => {
                if self.created {
                    return Err(AuditLogError::AlreadyExists);
                }
                sink.write(
                    AuditLogEntryEvent::AuditLogEventCreated { event, idempotency, at },
                    self,
                )
                .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: AuditLogEntryEvent) {
        match event {
            AuditLogEntryEvent::AuditLogEventCreated { event, .. } => {
                self.organization_id = event.organization_id;
                self.created = true;
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

    fn new_event() -> NewAuditEvent {
        NewAuditEvent {
            organization_id: "org_1".into(),
            action: "invoice.paid".into(),
            occurred_at: at(),
            actor: AuditActor {
                id: "user_1".into(),
                kind: "user".into(),
                name: None,
                metadata: None,
            },
            targets: Vec::new(),
            context: AuditContext {
                location: "1.2.3.4".into(),
                user_agent: None,
            },
            metadata: None,
            version: None,
        }
    }

    fn created(idempotency: Option<Idempotency>) -> AuditLogEntryEvent {
        AuditLogEntryEvent::AuditLogEventCreated {
            event: new_event(),
            idempotency,
            at: at(),
        }
    }

    #[test]
    fn an_audit_event_is_created_once() {
        TestFramework::<AuditLogEntry>::with(NoServices)
            .given_no_previous_events()
            .when(AuditLogEntryCommand::Create {
                event: new_event(),
                idempotency: None,
                at: at(),
            })
            .then_expect_events(vec![created(None)]);
        TestFramework::<AuditLogEntry>::with(NoServices)
            .given(vec![created(None)])
            .when(AuditLogEntryCommand::Create {
                event: new_event(),
                idempotency: None,
                at: at(),
            })
            .then_expect_error(AuditLogError::AlreadyExists);
    }

    #[test]
    fn an_idempotency_key_is_claimed_per_organization() {
        let key = Idempotency {
            key: "k1".into(),
            request_hash: "h".into(),
        };
        assert_eq!(
            created(Some(key)).claims(),
            vec![Claim::Acquire {
                kind: ClaimKind::AuditLogIdempotencyKey,
                value: "org_1:k1".into(),
            }]
        );
        assert!(created(None).claims().is_empty());
        let state = AuditLogEntry {
            organization_id: "org_1".into(),
            created: true,
        };
        assert_eq!(state.organization_id("audit_log_event_1"), Some("org_1"));
    }
}

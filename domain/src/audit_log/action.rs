use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::AuditLogError;
use crate::claims::{Claim, Claims};
use crate::{NoServices, Tenanted};

/// A target type of a schema, with the JSON Schema (subset) of its metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaTarget {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// The JSON Schema (subset) of the actor's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaActor {
    pub metadata: Value,
}

/// One version of an action's schema (checked by the caller).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditLogSchema {
    pub targets: Vec<SchemaTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<SchemaActor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AuditLogActionCommand {
    /// Adds the next schema version (creating the action with version 1).
    AddSchema { schema: AuditLogSchema, at: DateTime<Utc> },
}

/// Events of the [`AuditLogAction`] aggregate. Each variant is stored under the name
/// in its `#[serde(rename)]`, which `event_type` returns too, so renaming a Rust variant
/// changes nothing stored; a stored name never changes (docs/EVENTS.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AuditLogActionEvent {
    #[serde(rename = "AuditLogSchemaCreated")]
    AuditLogSchemaCreated {
        version: u32,
        schema: AuditLogSchema,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for AuditLogActionEvent {
    fn event_type(&self) -> String {
        match self {
            Self::AuditLogSchemaCreated { .. } => "AuditLogSchemaCreated",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

impl Claims for AuditLogActionEvent {
    fn claims(&self) -> Vec<Claim> {
        Vec::new()
    }
}

/// An audit-log action (aggregate id: its name), environment-wide as in WorkOS.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditLogAction {
    /// The latest schema version (0: no schema yet).
    pub versions: u32,
}

impl Tenanted for AuditLogAction {
    fn organization_id<'a>(&'a self, _aggregate_id: &'a str) -> Option<&'a str> {
        None
    }
}

impl Aggregate for AuditLogAction {
    const TYPE: &'static str = "AuditLogAction";
    type Command = AuditLogActionCommand;
    type Event = AuditLogActionEvent;
    type Error = AuditLogError;
    type Services = NoServices;

    async fn handle(
        &mut self,
        command: AuditLogActionCommand,
        _: &NoServices,
        sink: &EventSink<Self>,
    ) -> Result<(), AuditLogError> {
        match command {
            AuditLogActionCommand::AddSchema { schema, at } => {
                let version = self.versions.saturating_add(1);
                sink.write(AuditLogActionEvent::AuditLogSchemaCreated { version, schema, at }, self)
                    .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: AuditLogActionEvent) {
        match event {
            AuditLogActionEvent::AuditLogSchemaCreated { version, .. } => self.versions = version,
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

    fn schema() -> AuditLogSchema {
        AuditLogSchema {
            targets: vec![SchemaTarget {
                kind: "invoice".into(),
                metadata: None,
            }],
            actor: None,
            metadata: None,
        }
    }

    #[test]
    fn each_schema_is_the_next_version() {
        TestFramework::<AuditLogAction>::with(NoServices)
            .given(vec![AuditLogActionEvent::AuditLogSchemaCreated {
                version: 1,
                schema: schema(),
                at: at(),
            }])
            .when(AuditLogActionCommand::AddSchema {
                schema: schema(),
                at: at(),
            })
            .then_expect_events(vec![AuditLogActionEvent::AuditLogSchemaCreated {
                version: 2,
                schema: schema(),
                at: at(),
            }]);
    }
}

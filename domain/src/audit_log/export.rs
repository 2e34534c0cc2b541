use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use super::AuditLogError;
use crate::claims::{Claim, Claims};
use crate::{NoServices, Tenanted};

/// What an export contains: the organization's trail in a range of `occurred_at`, filtered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportFilter {
    pub organization_id: String,
    pub range_start: DateTime<Utc>,
    pub range_end: DateTime<Utc>,
    #[serde(default)]
    pub actions: Vec<String>,
    #[serde(default)]
    pub actor_names: Vec<String>,
    #[serde(default)]
    pub actor_ids: Vec<String>,
    #[serde(default)]
    pub targets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AuditLogExportCommand {
    Create { filter: ExportFilter, at: DateTime<Utc> },
}

/// Events of the [`AuditLogExport`] aggregate. Each variant is stored under the name
/// in its `#[serde(rename)]`, which `event_type` returns too, so renaming a Rust variant
/// changes nothing stored; a stored name never changes (docs/EVENTS.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AuditLogExportEvent {
    #[serde(rename = "AuditLogExportCreated")]
    AuditLogExportCreated { filter: ExportFilter, at: DateTime<Utc> },
}

impl DomainEvent for AuditLogExportEvent {
    fn event_type(&self) -> String {
        match self {
            Self::AuditLogExportCreated { .. } => "AuditLogExportCreated",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

impl Claims for AuditLogExportEvent {
    fn claims(&self) -> Vec<Claim> {
        Vec::new()
    }
}

/// An export request. Its contents are the trail up to the export's own place in the log, so
/// every download of one export yields the same rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditLogExport {
    pub organization_id: String,
    pub created: bool,
}

impl Tenanted for AuditLogExport {
    fn organization_id<'a>(&'a self, _aggregate_id: &'a str) -> Option<&'a str> {
        Some(self.organization_id.as_str()).filter(|id| !id.is_empty())
    }
}

impl Aggregate for AuditLogExport {
    const TYPE: &'static str = "AuditLogExport";
    type Command = AuditLogExportCommand;
    type Event = AuditLogExportEvent;
    type Error = AuditLogError;
    type Services = NoServices;

    async fn handle(
        &mut self,
        command: AuditLogExportCommand,
        _: &NoServices,
        sink: &EventSink<Self>,
    ) -> Result<(), AuditLogError> {
        match command {
            AuditLogExportCommand::Create { filter, at } => {
                if self.created {
                    return Err(AuditLogError::AlreadyExists);
                }
                sink.write(AuditLogExportEvent::AuditLogExportCreated { filter, at }, self)
                    .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: AuditLogExportEvent) {
        match event {
            AuditLogExportEvent::AuditLogExportCreated { filter, .. } => {
                self.organization_id = filter.organization_id;
                self.created = true;
            }
        }
    }
}

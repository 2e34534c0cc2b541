//! Audit logs: the application's own audit events (`AuditLogEntry`, one aggregate per event,
//! tenanted by its organization), the per-action metadata schemas (`AuditLogAction`, keyed by
//! action name, one event per schema version) and exports (`AuditLogExport`). Pure decisions only;
//! schema validation of incoming events happens before the command, against the read model.

mod action;
mod entry;
mod export;
pub mod validate;

pub use action::{
    AuditLogAction, AuditLogActionCommand, AuditLogActionEvent, AuditLogSchema, SchemaActor, SchemaTarget,
};
pub use entry::{
    AuditActor, AuditContext, AuditLogEntry, AuditLogEntryCommand, AuditLogEntryEvent, AuditMetadata, AuditTarget,
    Idempotency, NewAuditEvent,
};
pub use export::{AuditLogExport, AuditLogExportCommand, AuditLogExportEvent, ExportFilter};

/// Why an audit-log command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditLogError {
    #[error("the object already exists")]
    AlreadyExists,
}

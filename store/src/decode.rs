//! Turning stored rows back into typed domain events, upcasting old versions first.
//! Every (event_type, event_version) ever written must stay decodable here.

use keyledger_domain::audit_log::{
    AuditLogAction, AuditLogActionEvent, AuditLogEntry, AuditLogEntryEvent, AuditLogExport, AuditLogExportEvent,
};
use keyledger_domain::membership::{MembershipEvent, OrganizationMembership};
use keyledger_domain::organization::{Organization, OrganizationEvent};
use keyledger_domain::user::{User, UserEvent};
use keyledger_domain::webhook::{WebhookEndpoint, WebhookEndpointEvent};
use keyledger_domain::{Claim, Claims};
use serde_json::Value;

use cqrs_es::Aggregate;

/// Any domain event of any aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyEvent {
    User(UserEvent),
    Organization(OrganizationEvent),
    Membership(MembershipEvent),
    AuditLog(AuditLogEntryEvent),
    AuditLogAction(AuditLogActionEvent),
    AuditLogExport(AuditLogExportEvent),
    WebhookEndpoint(WebhookEndpointEvent),
}

impl AnyEvent {
    pub fn claims(&self) -> Vec<Claim> {
        match self {
            Self::User(e) => e.claims(),
            Self::Organization(e) => e.claims(),
            Self::Membership(e) => e.claims(),
            Self::AuditLog(e) => e.claims(),
            Self::AuditLogAction(e) => e.claims(),
            Self::AuditLogExport(e) => e.claims(),
            Self::WebhookEndpoint(e) => e.claims(),
        }
    }
}

/// The current version of every event type; older versions are upcast to it before decoding.
pub const CURRENT_VERSION: &str = "1";

/// Upcasts a stored payload to the current version of its event type. Version "1" is the first
/// of every type, so nothing needs changing yet; a version this build does not know is an error
/// (never a panic), so a newer writer's events are not misread by an older reader.
pub fn upcast(event_type: &str, event_version: &str, payload: Value) -> Result<Value, String> {
    match event_version {
        CURRENT_VERSION => Ok(payload),
        other => Err(format!("unknown version {other} of event type {event_type}")),
    }
}

/// Decodes a stored event of one aggregate's event type `E` by its (event type, version): the
/// payload is upcast to the current version of `event_type`, and must then be tagged with that
/// event type (the stored name each event variant declares with `#[serde(rename)]`).
pub fn decode_as<E: serde::de::DeserializeOwned>(
    event_type: &str,
    event_version: &str,
    payload: &Value,
) -> Result<E, String> {
    let payload = upcast(event_type, event_version, payload.clone())?;
    match payload.as_object() {
        Some(tagged) if tagged.len() == 1 && tagged.contains_key(event_type) => {}
        _ => {
            return Err(format!(
                "the payload of a {event_type} event is not tagged {event_type}"
            ))
        }
    }
    serde_json::from_value(payload).map_err(|e| format!("{event_type} v{event_version}: {e}"))
}

/// Decodes a stored event. The payload is the serde form of the aggregate's event enum.
pub fn decode(
    aggregate_type: &str,
    event_type: &str,
    event_version: &str,
    payload: &Value,
) -> Result<AnyEvent, String> {
    let (t, v, p) = (event_type, event_version, payload);
    let err = |e: String| format!("{aggregate_type}/{e}");
    match aggregate_type {
        User::TYPE => decode_as(t, v, p).map(AnyEvent::User).map_err(err),
        Organization::TYPE => decode_as(t, v, p).map(AnyEvent::Organization).map_err(err),
        OrganizationMembership::TYPE => decode_as(t, v, p).map(AnyEvent::Membership).map_err(err),
        AuditLogEntry::TYPE => decode_as(t, v, p).map(AnyEvent::AuditLog).map_err(err),
        AuditLogAction::TYPE => decode_as(t, v, p).map(AnyEvent::AuditLogAction).map_err(err),
        AuditLogExport::TYPE => decode_as(t, v, p).map(AnyEvent::AuditLogExport).map_err(err),
        WebhookEndpoint::TYPE => decode_as(t, v, p).map(AnyEvent::WebhookEndpoint).map_err(err),
        other => Err(format!("unknown aggregate type {other}")),
    }
}

/// [`decode`] from the payload's JSON text. An event at the current version (which [`upcast`]
/// leaves as it is) is parsed straight into its type, without building a `Value` first: a
/// rebuild decodes every event of the log. Older versions take the `Value` path to be upcast.
pub fn decode_text(
    aggregate_type: &str,
    event_type: &str,
    event_version: &str,
    payload: &str,
) -> Result<AnyEvent, String> {
    if event_version != CURRENT_VERSION {
        let value: Value = serde_json::from_str(payload)
            .map_err(|e| format!("{aggregate_type}/{event_type} v{event_version}: {e}"))?;
        return decode(aggregate_type, event_type, event_version, &value);
    }
    fn typed<E: serde::de::DeserializeOwned + cqrs_es::DomainEvent>(
        event_type: &str,
        payload: &str,
    ) -> Result<E, String> {
        let e: E = serde_json::from_str(payload).map_err(|e| format!("{event_type} v{CURRENT_VERSION}: {e}"))?;
        if e.event_type() != event_type {
            return Err(format!(
                "the payload of a {event_type} event is not tagged {event_type}"
            ));
        }
        Ok(e)
    }
    let (t, p) = (event_type, payload);
    let err = |e: String| format!("{aggregate_type}/{e}");
    match aggregate_type {
        User::TYPE => typed(t, p).map(AnyEvent::User).map_err(err),
        Organization::TYPE => typed(t, p).map(AnyEvent::Organization).map_err(err),
        OrganizationMembership::TYPE => typed(t, p).map(AnyEvent::Membership).map_err(err),
        AuditLogEntry::TYPE => typed(t, p).map(AnyEvent::AuditLog).map_err(err),
        AuditLogAction::TYPE => typed(t, p).map(AnyEvent::AuditLogAction).map_err(err),
        AuditLogExport::TYPE => typed(t, p).map(AnyEvent::AuditLogExport).map_err(err),
        WebhookEndpoint::TYPE => typed(t, p).map(AnyEvent::WebhookEndpoint).map_err(err),
        other => Err(format!("unknown aggregate type {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_from_text_agrees_with_decoding_a_value() {
        let payload =
            serde_json::json!({"UserUpdated": {"changes": {"first_name": "Ann"}, "at": "2026-01-01T00:00:00Z"}});
        let text = payload.to_string();
        assert_eq!(
            decode_text("User", "UserUpdated", "1", &text),
            decode("User", "UserUpdated", "1", &payload)
        );
        assert!(
            decode_text("User", "UserDeleted", "1", &text).is_err(),
            "a payload tagged otherwise"
        );
        assert!(
            decode_text("User", "UserUpdated", "7", &text).is_err(),
            "an unknown version"
        );
        assert!(decode_text("Nope", "UserUpdated", "1", &text).is_err());
    }

    #[test]
    fn unknown_versions_and_types_are_errors_not_panics() {
        assert!(upcast("UserCreated", "7", Value::Null).is_err());
        assert!(decode("Nope", "X", "1", &Value::Null).is_err());
        assert!(decode("User", "UserDeleted", "1", &serde_json::json!({"Bogus": {}})).is_err());
    }

    #[test]
    fn a_version_1_user_created_without_name_decodes_with_no_name() {
        // The payload as the first release wrote it, before `name` existed.
        let old = serde_json::json!({"UserCreated": {"email": "Ann@example.com", "first_name": "Ann",
            "last_name": null, "email_verified": false, "external_id": null, "metadata": {},
            "has_password": true, "at": "2026-01-01T00:00:00Z"}});
        match decode("User", "UserCreated", "1", &old) {
            Ok(AnyEvent::User(UserEvent::UserCreated { name, first_name, .. })) => {
                assert_eq!(name, None);
                assert_eq!(first_name.as_deref(), Some("Ann"));
            }
            other => panic!("decoded {other:?}"),
        }
        let mut with_name = old.clone();
        with_name["UserCreated"]["name"] = serde_json::json!("Ann Lee");
        match decode("User", "UserCreated", "1", &with_name) {
            Ok(AnyEvent::User(UserEvent::UserCreated { name, .. })) => assert_eq!(name.as_deref(), Some("Ann Lee")),
            other => panic!("decoded {other:?}"),
        }
    }

    #[test]
    fn a_user_created_without_name_is_written_as_version_1_always_was() {
        let e = UserEvent::UserCreated {
            email: keyledger_domain::values::Email::parse("email", "ann@example.com").unwrap(),
            first_name: None,
            last_name: None,
            name: None,
            email_verified: false,
            external_id: None,
            metadata: Default::default(),
            has_password: false,
            at: chrono::DateTime::from_timestamp(0, 0).unwrap_or_default(),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert!(v["UserCreated"].get("name").is_none(), "{v}");
    }

    #[test]
    fn a_stored_user_event_decodes() {
        let payload = serde_json::json!({"UserDeleted": {"at": "2026-01-01T00:00:00Z"}});
        assert!(matches!(
            decode("User", "UserDeleted", "1", &payload),
            Ok(AnyEvent::User(UserEvent::UserDeleted { .. }))
        ));
    }
}

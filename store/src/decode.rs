//! Turning stored rows back into typed domain events by their (event_type, event_version), never
//! by a Rust name: an older version is upcast to the current one first (docs/EVENTS.md). Every
//! (event_type, event_version) ever written must stay decodable here; nothing here writes.

use keyledger_domain::audit_log::{
    AuditLogAction, AuditLogActionEvent, AuditLogEntry, AuditLogEntryEvent, AuditLogExport, AuditLogExportEvent,
};
use keyledger_domain::authentication::{Authentication, AuthenticationEvent};
use keyledger_domain::connection::{Connection, ConnectionEvent};
use keyledger_domain::invitation::{Invitation, InvitationEvent};
use keyledger_domain::membership::{MembershipEvent, OrganizationMembership};
use keyledger_domain::one_time_code::{OneTimeCode, OneTimeCodeEvent};
use keyledger_domain::organization::{Organization, OrganizationEvent};
use keyledger_domain::session::{Session, SessionEvent};
use keyledger_domain::user::{User, UserEvent};
use keyledger_domain::webhook::{WebhookEndpoint, WebhookEndpointEvent};
use serde_json::Value;
use std::borrow::Cow;

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
    Session(SessionEvent),
    Authentication(AuthenticationEvent),
    Invitation(InvitationEvent),
    Connection(ConnectionEvent),
    OneTimeCode(OneTimeCodeEvent),
}

/// The version of `event_type` this build writes (its `DomainEvent::event_version`); stored
/// events of older versions are upcast to it before they are decoded. Every event type starts
/// at "1"; `projections/tests/golden_events.rs` checks this table against the domain's.
pub fn current_version(event_type: &str) -> &'static str {
    match event_type {
        "OrganizationAuditLogsRetentionChanged" => "2",
        _ => "1",
    }
}

/// One upcaster: the payload of a version, rewritten as the payload of the next version.
type Step = fn(Value) -> Result<Value, String>;

/// The upcaster from `(event_type, version)` to the next version, with that version's name;
/// `None` for a version this build does not know (such as one a newer release wrote).
fn next_version(event_type: &str, version: &str) -> Option<(&'static str, Step)> {
    match (event_type, version) {
        ("OrganizationAuditLogsRetentionChanged", "1") => Some(("2", retention_changed_v1_to_v2)),
        _ => None,
    }
}

/// `OrganizationAuditLogsRetentionChanged` v1 → v2: `previous` became
/// `previous_retention_period_in_days`, the name of the value beside it and the one the audit
/// trail publishes. Version 1 always wrote it (`null`: never set), so a missing one is `null`.
fn retention_changed_v1_to_v2(mut payload: Value) -> Result<Value, String> {
    let fields = payload
        .get_mut("OrganizationAuditLogsRetentionChanged")
        .and_then(Value::as_object_mut)
        .ok_or("the payload of an OrganizationAuditLogsRetentionChanged v1 event is not tagged with it")?;
    let previous = fields.remove("previous").unwrap_or(Value::Null);
    fields.insert("previous_retention_period_in_days".to_string(), previous);
    Ok(payload)
}

/// Upcasts a stored payload to the current version of its event type, one version at a time.
/// A payload already current is borrowed, not copied. A version this build does not know is an
/// error (never a panic), so a newer writer's events are not misread by an older reader.
pub fn upcast<'a>(event_type: &str, event_version: &str, payload: &'a Value) -> Result<Cow<'a, Value>, String> {
    let current = current_version(event_type);
    let mut payload = Cow::Borrowed(payload);
    let mut version = event_version;
    while version != current {
        let (next, step) = next_version(event_type, version)
            .ok_or_else(|| format!("unknown version {event_version} of event type {event_type}"))?;
        payload = Cow::Owned(step(payload.into_owned()).map_err(|e| format!("{event_type} v{version}: {e}"))?);
        version = next;
    }
    Ok(payload)
}

/// Decodes a stored event of one aggregate's event type `E` by its (event type, version): the
/// payload is upcast to the current version of `event_type`, and must then be tagged with that
/// event type (the stored name each event variant declares with `#[serde(rename)]`).
pub fn decode_as<E: serde::de::DeserializeOwned>(
    event_type: &str,
    event_version: &str,
    payload: &Value,
) -> Result<E, String> {
    let payload = upcast(event_type, event_version, payload)?;
    match payload.as_object() {
        Some(tagged) if tagged.len() == 1 && tagged.contains_key(event_type) => {}
        _ => {
            return Err(format!(
                "the payload of a {event_type} event is not tagged {event_type}"
            ))
        }
    }
    E::deserialize(payload.as_ref()).map_err(|e| format!("{event_type} v{event_version}: {e}"))
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
        Session::TYPE => decode_as(t, v, p).map(AnyEvent::Session).map_err(err),
        Authentication::TYPE => decode_as(t, v, p).map(AnyEvent::Authentication).map_err(err),
        Invitation::TYPE => decode_as(t, v, p).map(AnyEvent::Invitation).map_err(err),
        Connection::TYPE => decode_as(t, v, p).map(AnyEvent::Connection).map_err(err),
        OneTimeCode::TYPE => decode_as(t, v, p).map(AnyEvent::OneTimeCode).map_err(err),
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
    let current = current_version(event_type);
    if event_version != current {
        let value: Value = serde_json::from_str(payload)
            .map_err(|e| format!("{aggregate_type}/{event_type} v{event_version}: {e}"))?;
        return decode(aggregate_type, event_type, event_version, &value);
    }
    fn typed<E: serde::de::DeserializeOwned + cqrs_es::DomainEvent>(
        event_type: &str,
        payload: &str,
    ) -> Result<E, String> {
        let v = current_version(event_type);
        let e: E = serde_json::from_str(payload).map_err(|e| format!("{event_type} v{v}: {e}"))?;
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
        Session::TYPE => typed(t, p).map(AnyEvent::Session).map_err(err),
        Authentication::TYPE => typed(t, p).map(AnyEvent::Authentication).map_err(err),
        Invitation::TYPE => typed(t, p).map(AnyEvent::Invitation).map_err(err),
        Connection::TYPE => typed(t, p).map(AnyEvent::Connection).map_err(err),
        OneTimeCode::TYPE => typed(t, p).map(AnyEvent::OneTimeCode).map_err(err),
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
        // An older version goes through the upcaster, as from a value.
        let v1 = serde_json::json!({"OrganizationAuditLogsRetentionChanged": {"retention_period_in_days": 30,
            "previous": 7, "at": "2026-01-01T00:00:00Z"}});
        let text = v1.to_string();
        let from_text = decode_text("Organization", "OrganizationAuditLogsRetentionChanged", "1", &text);
        assert!(from_text.is_ok(), "{from_text:?}");
        assert_eq!(
            from_text,
            decode("Organization", "OrganizationAuditLogsRetentionChanged", "1", &v1)
        );
    }

    #[test]
    fn unknown_versions_and_types_are_errors_not_panics() {
        assert!(upcast("UserCreated", "7", &Value::Null).is_err());
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
    fn a_version_1_retention_change_is_upcast_to_version_2_and_decodes_alike() {
        use keyledger_domain::organization::OrganizationEvent;
        let t = "OrganizationAuditLogsRetentionChanged";
        let v1 =
            serde_json::json!({t: {"retention_period_in_days": 365, "previous": 30, "at": "2026-01-01T00:00:00Z"}});
        let v2 = serde_json::json!({t: {"retention_period_in_days": 365, "previous_retention_period_in_days": 30,
            "at": "2026-01-01T00:00:00Z"}});
        assert_eq!(upcast(t, "1", &v1).map(Cow::into_owned), Ok(v2.clone()));
        assert!(
            matches!(upcast(t, "2", &v2), Ok(Cow::Borrowed(_))),
            "a current payload is not copied"
        );
        let decoded = decode("Organization", t, "1", &v1);
        assert_eq!(decoded, decode("Organization", t, "2", &v2));
        assert!(
            matches!(
                decoded,
                Ok(AnyEvent::Organization(
                    OrganizationEvent::OrganizationAuditLogsRetentionChanged {
                        retention_period_in_days: 365,
                        previous_retention_period_in_days: Some(30),
                        ..
                    }
                ))
            ),
            "{decoded:?}"
        );
        // Never set: version 1 wrote `previous: null`.
        let never =
            serde_json::json!({t: {"retention_period_in_days": 30, "previous": null, "at": "2026-01-01T00:00:00Z"}});
        assert_eq!(
            upcast(t, "1", &never).map(|p| p[t]["previous_retention_period_in_days"].clone()),
            Ok(Value::Null)
        );
    }

    #[test]
    fn a_version_this_build_does_not_know_is_an_error() {
        let t = "OrganizationAuditLogsRetentionChanged";
        let v2 = serde_json::json!({t: {"retention_period_in_days": 30, "previous_retention_period_in_days": null,
            "at": "2026-01-01T00:00:00Z"}});
        for version in ["0", "3", "", "2.0"] {
            assert!(decode("Organization", t, version, &v2).is_err(), "version {version:?}");
        }
        let deleted = serde_json::json!({"UserDeleted": {"at": "2026-01-01T00:00:00Z"}});
        assert!(decode("User", "UserDeleted", "2", &deleted).is_err());
        // A version 1 payload whose tag is not its event type fails in the upcaster, not later.
        assert!(upcast(t, "1", &deleted).is_err());
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

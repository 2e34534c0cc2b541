//! The WorkOS `event` object of one change, as the `events` projection stores it in
//! `event_feed`. The live projection and the rebuild write it through this one serializer,
//! straight from borrowed documents (no copy of the object it carries).

use chrono::{DateTime, Utc};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

use crate::objects::{self, ts, Change};

/// One public event: a change made by a stored event, with the object before (`prior`) and
/// after (`after`) the command that made it.
pub struct PublicEvent<'a> {
    /// The stored event's id (the public event's id).
    pub id: &'a str,
    pub change: &'a Change,
    /// The stored event's metadata (the actor).
    pub metadata: &'a Value,
    pub recorded_at: &'a DateTime<Utc>,
    pub prior: Option<&'a Value>,
    pub after: Option<&'a Value>,
}

impl Serialize for PublicEvent<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let empty = Value::Object(Map::new());
        let object = self.after.or(self.prior).unwrap_or(&empty);
        let mut m = serializer.serialize_map(Some(6))?;
        m.serialize_entry("object", "event")?;
        m.serialize_entry("id", self.id)?;
        m.serialize_entry("event", self.change.event)?;
        // An event with extra fields wraps its object (WorkOS: `{reason, organization_domain}`).
        match self.change.extra.as_ref().and_then(Value::as_object) {
            Some(extra) => m.serialize_entry(
                "data",
                &Wrapped {
                    extra,
                    kind: self.change.kind.as_str(),
                    object,
                },
            )?,
            None => m.serialize_entry("data", object)?,
        }
        m.serialize_entry("created_at", &ts(self.recorded_at))?;
        let actor_id = self
            .metadata
            .get("actor_id")
            .and_then(Value::as_str)
            .unwrap_or("system");
        let previous_attributes = match (self.prior, self.after) {
            // `<object>.updated`, and keyledger's `organization.policy_updated`.
            (Some(p), Some(a)) if self.change.event.ends_with("updated") => Some(objects::previous_attributes(p, a)),
            _ => None,
        };
        m.serialize_entry(
            "context",
            &Context {
                actor: Actor {
                    id: actor_id,
                    source: if actor_id == "system" { "system" } else { "api" },
                    name: self.metadata.get("actor_name").and_then(Value::as_str),
                },
                previous_attributes,
            },
        )?;
        m.end()
    }
}

/// `data` of an event with extra fields: the extra fields and the object under its kind's name.
struct Wrapped<'a> {
    extra: &'a Map<String, Value>,
    kind: &'a str,
    object: &'a Value,
}

impl Serialize for Wrapped<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut m = serializer.serialize_map(None)?;
        for (k, v) in self.extra.iter().filter(|(k, _)| k.as_str() != self.kind) {
            m.serialize_entry(k, v)?;
        }
        m.serialize_entry(self.kind, self.object)?;
        m.end()
    }
}

#[derive(serde::Serialize)]
struct Context<'a> {
    actor: Actor<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_attributes: Option<Map<String, Value>>,
}

#[derive(serde::Serialize)]
struct Actor<'a> {
    id: &'a str,
    source: &'a str,
    name: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::Kind;
    use serde_json::json;

    fn change(event: &'static str, extra: Option<Value>) -> Change {
        Change {
            event,
            kind: Kind::OrganizationDomain,
            id: "org_domain_1".into(),
            extra,
        }
    }

    #[test]
    fn an_update_carries_the_previous_attributes_and_the_actor() {
        let c = change("organization_domain.updated", None);
        let before = json!({"id": "org_domain_1", "state": "pending", "updated_at": "a"});
        let after = json!({"id": "org_domain_1", "state": "verified", "updated_at": "b"});
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let e = PublicEvent {
            id: "event_1",
            change: &c,
            metadata: &json!({"actor_id": "key_1", "actor_name": "ci"}),
            recorded_at: &at,
            prior: Some(&before),
            after: Some(&after),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            json!({"object": "event", "id": "event_1", "event": "organization_domain.updated", "data": after,
                "created_at": "2023-11-14T22:13:20.000Z",
                "context": {"actor": {"id": "key_1", "source": "api", "name": "ci"},
                    "previous_attributes": {"state": "pending"}}})
        );
    }

    #[test]
    fn extra_fields_wrap_the_object_and_a_missing_object_is_empty() {
        let c = change(
            "organization_domain.verification_failed",
            Some(json!({"reason": "no TXT"})),
        );
        let at = DateTime::from_timestamp(0, 0).unwrap_or_default();
        let v = serde_json::to_value(PublicEvent {
            id: "event_2",
            change: &c,
            metadata: &json!({}),
            recorded_at: &at,
            prior: None,
            after: None,
        })
        .unwrap();
        assert_eq!(v["data"], json!({"reason": "no TXT", "organization_domain": {}}));
        assert_eq!(
            v["context"],
            json!({"actor": {"id": "system", "source": "system", "name": null}})
        );
    }
}

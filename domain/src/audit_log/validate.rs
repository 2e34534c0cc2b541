//! The JSON Schema subset WorkOS audit-log schemas use for metadata, checked by hand:
//! `{"type": "object", "properties": {"k": {"type": "string" | "number" | "integer" | "boolean"}},
//! "required": [...], "additionalProperties": bool}`. Without `required`, every listed property
//! is required (a schema lists what events must carry).

use serde_json::{Map, Value};

use super::{AuditLogSchema, AuditMetadata, NewAuditEvent};

const TYPES: [&str; 4] = ["string", "number", "integer", "boolean"];

/// Checks a metadata schema is in the supported subset; the error says what is wrong.
pub fn check_metadata_schema(schema: &Value) -> Result<(), String> {
    let o = schema.as_object().ok_or("must be a JSON object")?;
    for k in o.keys() {
        if !["type", "properties", "required", "additionalProperties"].contains(&k.as_str()) {
            return Err(format!("unsupported keyword '{k}'"));
        }
    }
    if let Some(t) = o.get("type") {
        if t != "object" {
            return Err("type must be \"object\"".into());
        }
    }
    let props = match o.get("properties") {
        None => &Map::new(),
        Some(Value::Object(p)) => p,
        Some(_) => return Err("properties must be an object".into()),
    };
    if props.len() > 50 {
        return Err("at most 50 properties".into());
    }
    for (k, p) in props {
        let t = p
            .as_object()
            .filter(|p| p.keys().all(|k| k == "type"))
            .and_then(|p| p.get("type"))
            .and_then(Value::as_str)
            .ok_or_else(|| format!("property '{k}' must be {{\"type\": ...}}"))?;
        if !TYPES.contains(&t) {
            return Err(format!("property '{k}' has unsupported type '{t}'"));
        }
    }
    match o.get("required") {
        None => {}
        Some(Value::Array(r)) => {
            for name in r {
                let n = name.as_str().ok_or("required must list property names")?;
                if !props.contains_key(n) {
                    return Err(format!("required property '{n}' is not among the properties"));
                }
            }
        }
        Some(_) => return Err("required must be an array".into()),
    }
    if o.get("additionalProperties").is_some_and(|a| !a.is_boolean()) {
        return Err("additionalProperties must be a boolean".into());
    }
    Ok(())
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        "boolean" => v.is_boolean(),
        _ => false,
    }
}

/// Validates metadata against a (checked) metadata schema; errors are (instancePath, message).
fn check_metadata(schema: &Value, data: Option<&AuditMetadata>, path: &str, out: &mut Vec<(String, String)>) {
    let empty = Map::new();
    let props = schema.get("properties").and_then(Value::as_object).unwrap_or(&empty);
    let required: Vec<&str> = match schema.get("required").and_then(Value::as_array) {
        Some(r) => r.iter().filter_map(Value::as_str).collect(),
        None => props.keys().map(String::as_str).collect(),
    };
    let Some(data) = data else {
        if !required.is_empty() {
            out.push((
                path.to_string(),
                format!("must have required properties {}", required.join(", ")),
            ));
        }
        return;
    };
    for name in &required {
        if !data.contains_key(*name) {
            out.push((path.to_string(), format!("must have required property '{name}'")));
        }
    }
    for (k, v) in data {
        match props.get(k).and_then(|p| p.get("type")).and_then(Value::as_str) {
            Some(t) if !type_matches(t, v) => out.push((format!("{path}/{k}"), format!("must be {t}"))),
            Some(_) => {}
            None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                out.push((format!("{path}/{k}"), "must not have additional properties".into()))
            }
            None => {}
        }
    }
}

/// Validates an event against its action's schema; errors are (instancePath, message), empty
/// when the event conforms.
pub fn validate_event(schema: &AuditLogSchema, event: &NewAuditEvent) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, t) in event.targets.iter().enumerate() {
        match schema.targets.iter().find(|s| s.kind == t.kind) {
            None => out.push((
                format!("/targets/{i}/type"),
                format!("target type '{}' is not in the schema", t.kind),
            )),
            Some(s) => {
                if let Some(m) = &s.metadata {
                    check_metadata(m, t.metadata.as_ref(), &format!("/targets/{i}/metadata"), &mut out);
                }
            }
        }
    }
    for s in &schema.targets {
        if !event.targets.iter().any(|t| t.kind == s.kind) {
            out.push(("/targets".into(), format!("must have a target of type '{}'", s.kind)));
        }
    }
    if let Some(a) = &schema.actor {
        check_metadata(&a.metadata, event.actor.metadata.as_ref(), "/actor/metadata", &mut out);
    }
    if let Some(m) = &schema.metadata {
        check_metadata(m, event.metadata.as_ref(), "/metadata", &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit_log::{AuditActor, AuditContext, AuditTarget, SchemaTarget};
    use serde_json::json;

    fn event(targets: &[(&str, Value)], metadata: Value) -> NewAuditEvent {
        NewAuditEvent {
            organization_id: "org_1".into(),
            action: "a".into(),
            occurred_at: chrono::DateTime::from_timestamp(0, 0).unwrap_or_default(),
            actor: AuditActor {
                id: "u".into(),
                kind: "user".into(),
                name: None,
                metadata: None,
            },
            targets: targets
                .iter()
                .map(|(k, m)| AuditTarget {
                    id: "t".into(),
                    kind: (*k).into(),
                    name: None,
                    metadata: m.as_object().cloned(),
                })
                .collect(),
            context: AuditContext {
                location: "1.2.3.4".into(),
                user_agent: None,
            },
            metadata: metadata.as_object().cloned(),
            version: None,
        }
    }

    fn schema() -> AuditLogSchema {
        AuditLogSchema {
            targets: vec![SchemaTarget {
                kind: "invoice".into(),
                metadata: Some(json!({"type": "object", "properties": {"cost": {"type": "number"}}})),
            }],
            actor: None,
            metadata: Some(json!({"type": "object", "properties": {"tx": {"type": "string"}}})),
        }
    }

    #[test]
    fn a_conforming_event_has_no_errors() {
        let e = event(&[("invoice", json!({"cost": 5}))], json!({"tx": "x"}));
        assert!(validate_event(&schema(), &e).is_empty());
    }

    #[test]
    fn wrong_target_types_and_mistyped_or_missing_metadata_are_reported_by_path() {
        let cases = [
            (event(&[("team", Value::Null)], json!({"tx": "x"})), "/targets/0/type"),
            (
                event(&[("invoice", json!({"cost": "5"}))], json!({"tx": "x"})),
                "/targets/0/metadata/cost",
            ),
            (event(&[("invoice", json!({"cost": 5}))], Value::Null), "/metadata"),
            (
                event(&[("invoice", json!({"cost": 5}))], json!({"tx": true})),
                "/metadata/tx",
            ),
        ];
        for (e, path) in cases {
            let errs = validate_event(&schema(), &e);
            assert!(errs.iter().any(|(p, _)| p == path), "{path}: {errs:?}");
        }
    }

    #[test]
    fn schemas_outside_the_subset_are_refused() {
        assert!(check_metadata_schema(&json!({"type": "object", "properties": {"k": {"type": "string"}}})).is_ok());
        for bad in [
            json!("x"),
            json!({"type": "array"}),
            json!({"properties": {"k": {"type": "object"}}}),
            json!({"properties": {"k": {"type": "string", "pattern": "x"}}}),
            json!({"$ref": "#/x"}),
            json!({"properties": {}, "required": ["k"]}),
        ] {
            assert!(check_metadata_schema(&bad).is_err(), "{bad}");
        }
    }
}

//! Golden fixtures of the stored event format: one JSON file per (aggregate type, event type,
//! version) under `tests/fixtures/events/<aggregate_type>/<event_type>.v<version>.json`, holding
//! the stored row's `aggregate_type`, `event_type`, `event_version` and `payload` exactly as they
//! were written. The files are static: they were produced once by serializing a fully populated
//! event (a new version's file: the previous version's upcast) and are never regenerated, so a
//! rename, a removed variant, a new required field or a broken upcaster that would orphan stored
//! rows fails here. Every event variant's `event_type()` is checked against the name serde stores
//! it under, and its `event_version()` against `decode::current_version`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking, helpers included"
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cqrs_es::{Aggregate, DomainEvent};
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
use keyledger_store::decode::{current_version, decode, decode_text, AnyEvent};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// One fixture file, read and split into the stored row's parts.
struct Fixture {
    path: PathBuf,
    aggregate_type: String,
    event_type: String,
    event_version: String,
    payload: Value,
}

impl Fixture {
    /// The path relative to the crate, for messages.
    fn name(&self) -> String {
        self.path
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap_or(&self.path)
            .display()
            .to_string()
    }
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events")
}

/// Every fixture file, sorted by path. Anything in the folder that is not a fixture is an error,
/// so a misnamed file cannot be silently skipped.
fn fixtures() -> Vec<Fixture> {
    let mut paths = Vec::new();
    for dir in std::fs::read_dir(fixtures_dir()).expect("the fixtures folder exists") {
        let dir = dir.expect("readable fixtures folder").path();
        assert!(dir.is_dir(), "{}: only aggregate folders belong here", dir.display());
        for file in std::fs::read_dir(&dir).expect("readable aggregate folder") {
            paths.push(file.expect("readable fixture").path());
        }
    }
    paths.sort();
    let fixtures: Vec<Fixture> = paths.into_iter().map(read_fixture).collect();
    assert!(!fixtures.is_empty(), "no fixtures under {}", fixtures_dir().display());
    fixtures
}

fn read_fixture(path: PathBuf) -> Fixture {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{shown}: {e}"));
    let row: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{shown}: not JSON: {e}"));
    let field = |k: &str| match row.get(k) {
        Some(Value::String(s)) => s.clone(),
        other => panic!("{shown}: `{k}` must be a string, found {other:?}"),
    };
    let fixture = Fixture {
        aggregate_type: field("aggregate_type"),
        event_type: field("event_type"),
        event_version: field("event_version"),
        payload: row
            .get("payload")
            .cloned()
            .unwrap_or_else(|| panic!("{shown}: no `payload`")),
        path,
    };
    let expected = fixtures_dir()
        .join(&fixture.aggregate_type)
        .join(format!("{}.v{}.json", fixture.event_type, fixture.event_version));
    assert_eq!(
        fixture.path, expected,
        "{shown}: a fixture lives at <aggregate_type>/<event_type>.v<event_version>.json"
    );
    assert_eq!(
        row.as_object().map(|m| m.len()),
        Some(4),
        "{shown}: a fixture holds exactly aggregate_type, event_type, event_version and payload"
    );
    fixture
}

/// The serde names of an enum's variants, read from its derived `Deserialize` (which hands them
/// to `Deserializer::deserialize_enum`), so the list comes from the code, not from a hand list.
fn variant_names<T: DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{Error, Visitor};

    struct Recorder(Option<&'static [&'static str]>);

    impl<'de> serde::Deserializer<'de> for &mut Recorder {
        type Error = serde::de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(Error::custom("not an enum"))
        }

        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _name: &'static str,
            variants: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = Some(variants);
            Err(Error::custom("variant names recorded"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map struct identifier
            ignored_any
        }
    }

    let mut recorder = Recorder(None);
    let _ = T::deserialize(&mut recorder);
    recorder
        .0
        .unwrap_or_else(|| panic!("{} does not deserialize as an enum", std::any::type_name::<T>()))
}

type Variants = fn() -> &'static [&'static str];

/// Every aggregate `decode` handles, with its event enum's variants. This list of aggregates is
/// by hand (there is no way to enumerate `AnyEvent`), but `aggregate_of` below matches `AnyEvent`
/// exhaustively, so adding an aggregate to `AnyEvent` does not compile until it is handled there;
/// add its row here at the same time. The variants of each enum come from the code.
const AGGREGATES: [(&str, Variants); 12] = [
    (User::TYPE, variant_names::<UserEvent>),
    (Organization::TYPE, variant_names::<OrganizationEvent>),
    (OrganizationMembership::TYPE, variant_names::<MembershipEvent>),
    (AuditLogEntry::TYPE, variant_names::<AuditLogEntryEvent>),
    (AuditLogAction::TYPE, variant_names::<AuditLogActionEvent>),
    (AuditLogExport::TYPE, variant_names::<AuditLogExportEvent>),
    (WebhookEndpoint::TYPE, variant_names::<WebhookEndpointEvent>),
    (Session::TYPE, variant_names::<SessionEvent>),
    (Authentication::TYPE, variant_names::<AuthenticationEvent>),
    (Invitation::TYPE, variant_names::<InvitationEvent>),
    (Connection::TYPE, variant_names::<ConnectionEvent>),
    (OneTimeCode::TYPE, variant_names::<OneTimeCodeEvent>),
];

/// The aggregate type, event type and version a decoded event is stored under.
fn aggregate_of(event: &AnyEvent) -> (&'static str, String, String) {
    fn parts<A: Aggregate>(e: &A::Event) -> (&'static str, String, String) {
        (A::TYPE, e.event_type(), e.event_version())
    }
    match event {
        AnyEvent::User(e) => parts::<User>(e),
        AnyEvent::Organization(e) => parts::<Organization>(e),
        AnyEvent::Membership(e) => parts::<OrganizationMembership>(e),
        AnyEvent::AuditLog(e) => parts::<AuditLogEntry>(e),
        AnyEvent::AuditLogAction(e) => parts::<AuditLogAction>(e),
        AnyEvent::AuditLogExport(e) => parts::<AuditLogExport>(e),
        AnyEvent::WebhookEndpoint(e) => parts::<WebhookEndpoint>(e),
        AnyEvent::Session(e) => parts::<Session>(e),
        AnyEvent::Authentication(e) => parts::<Authentication>(e),
        AnyEvent::Invitation(e) => parts::<Invitation>(e),
        AnyEvent::Connection(e) => parts::<Connection>(e),
        AnyEvent::OneTimeCode(e) => parts::<OneTimeCode>(e),
    }
}

/// The decoded event serialized again, as a new write would store it.
fn reserialize(event: &AnyEvent) -> serde_json::Result<Value> {
    match event {
        AnyEvent::User(e) => serde_json::to_value(e),
        AnyEvent::Organization(e) => serde_json::to_value(e),
        AnyEvent::Membership(e) => serde_json::to_value(e),
        AnyEvent::AuditLog(e) => serde_json::to_value(e),
        AnyEvent::AuditLogAction(e) => serde_json::to_value(e),
        AnyEvent::AuditLogExport(e) => serde_json::to_value(e),
        AnyEvent::WebhookEndpoint(e) => serde_json::to_value(e),
        AnyEvent::Session(e) => serde_json::to_value(e),
        AnyEvent::Authentication(e) => serde_json::to_value(e),
        AnyEvent::Invitation(e) => serde_json::to_value(e),
        AnyEvent::Connection(e) => serde_json::to_value(e),
        AnyEvent::OneTimeCode(e) => serde_json::to_value(e),
    }
}

fn decoded(f: &Fixture) -> AnyEvent {
    decode(&f.aggregate_type, &f.event_type, &f.event_version, &f.payload)
        .unwrap_or_else(|e| panic!("{}: the stored event no longer decodes: {e}", f.name()))
}

/// Whether the fixture is of the version the code writes today. Older versions (kept once a
/// version 2 exists) must still decode, but are upcast, so they are not written back as stored.
fn is_current(f: &Fixture, event: &AnyEvent) -> bool {
    let (_, _, version) = aggregate_of(event);
    f.event_version == version
}

#[test]
fn every_golden_fixture_decodes_as_the_event_type_it_was_stored_under() {
    for f in fixtures() {
        let event = decoded(&f);
        let (aggregate_type, event_type, _) = aggregate_of(&event);
        assert_eq!(
            (aggregate_type, event_type.as_str()),
            (f.aggregate_type.as_str(), f.event_type.as_str()),
            "{}: decodes as another (aggregate_type, event_type)",
            f.name()
        );
    }
}

#[test]
fn a_decoded_golden_event_of_the_current_version_is_written_back_exactly_as_it_was_stored() {
    for f in fixtures() {
        let event = decoded(&f);
        if !is_current(&f, &event) {
            continue;
        }
        let again = reserialize(&event).unwrap_or_else(|e| panic!("{}: does not serialize: {e}", f.name()));
        assert_eq!(
            again,
            f.payload,
            "{}: today's code writes this event differently from the stored payload (a renamed, \
             removed or added field?); stored events are never rewritten, so keep the old shape or \
             add a new version with an upcaster (docs/EVENTS.md)\n  stored:  {}\n  written: {}",
            f.name(),
            f.payload,
            again
        );
    }
}

/// The single key of a payload: the name serde stored the event variant under.
fn tag(payload: &Value) -> Option<&str> {
    match payload {
        Value::Object(m) if m.len() == 1 => m.keys().next().map(String::as_str),
        _ => None,
    }
}

#[test]
fn every_event_variant_is_stored_under_its_event_type_and_has_a_golden_fixture_of_its_current_version() {
    for (aggregate_type, variants) in AGGREGATES {
        for name in variants() {
            let version = current_version(name);
            let path = fixtures_dir()
                .join(aggregate_type)
                .join(format!("{name}.v{version}.json"));
            assert!(
                path.is_file(),
                "{aggregate_type}/{name} (version {version} by decode::current_version) has no golden \
                 fixture at {}; write one from a fully populated event (docs/EVENTS.md)",
                path.display()
            );
            let f = read_fixture(path);
            let event = decoded(&f);
            assert_eq!(
                aggregate_of(&event),
                (aggregate_type, name.to_string(), version.to_string()),
                "{}: the variant serde stores as {name} says another (aggregate_type, event_type(), \
                 event_version()), or decode::current_version disagrees with event_version()",
                f.name()
            );
            let written = reserialize(&event).unwrap_or_else(|e| panic!("{}: does not serialize: {e}", f.name()));
            assert_eq!(tag(&written), Some(*name), "{}: written under another tag", f.name());
            assert_eq!(written, f.payload, "{}: not written back as stored", f.name());
        }
    }
}

#[test]
fn every_golden_fixture_is_of_an_event_variant_the_code_has() {
    let from_code: BTreeSet<(&str, &str)> = AGGREGATES
        .iter()
        .flat_map(|(aggregate_type, variants)| variants().iter().map(move |v| (*aggregate_type, *v)))
        .collect();
    for f in fixtures() {
        assert_eq!(
            tag(&f.payload),
            Some(f.event_type.as_str()),
            "{}: payload tag",
            f.name()
        );
        assert!(
            from_code.contains(&(f.aggregate_type.as_str(), f.event_type.as_str())),
            "{}: no event variant of the code is stored as {}/{}; a stored name never changes",
            f.name(),
            f.aggregate_type,
            f.event_type
        );
    }
}

/// The fixture of an older version holds the same event as the current version's fixture, in the
/// older shape (a new version's fixture is written as the previous one upcast), so this checks
/// every upcaster on a real stored payload.
#[test]
fn an_older_version_of_an_event_decodes_to_the_same_event_as_its_current_version() {
    let mut upcast = 0;
    for old in fixtures() {
        let version = current_version(&old.event_type);
        if old.event_version == version {
            continue;
        }
        let current = read_fixture(
            fixtures_dir()
                .join(&old.aggregate_type)
                .join(format!("{}.v{version}.json", old.event_type)),
        );
        assert_eq!(
            decoded(&old),
            decoded(&current),
            "{} does not decode to the event of {}: check its upcaster in store/src/decode.rs",
            old.name(),
            current.name()
        );
        upcast += 1;
    }
    // OrganizationAuditLogsRetentionChanged v1 (fixtures are never removed).
    assert!(
        upcast >= 1,
        "no fixture of an older version: the upcasting is not exercised"
    );
}

#[test]
fn the_aggregate_list_covers_every_aggregate_that_has_fixtures() {
    let listed: BTreeSet<&str> = AGGREGATES.iter().map(|(t, _)| *t).collect();
    for f in fixtures() {
        let (aggregate_type, _, _) = aggregate_of(&decoded(&f));
        assert!(
            listed.contains(aggregate_type),
            "{}: add {aggregate_type} to AGGREGATES",
            f.name()
        );
    }
    assert_eq!(listed.len(), AGGREGATES.len(), "an aggregate is listed twice");
}

/// The rebuild decodes from the payload's text (`decode_text`, its own dispatch by aggregate
/// type): it must read every stored event as `decode` does.
#[test]
fn every_golden_fixture_decodes_the_same_from_its_text() {
    for f in fixtures() {
        let text = serde_json::to_string(&f.payload).unwrap();
        let from_text = decode_text(&f.aggregate_type, &f.event_type, &f.event_version, &text)
            .unwrap_or_else(|e| panic!("{}: decode_text: {e}", f.name()));
        assert_eq!(from_text, decoded(&f), "{}", f.name());
    }
}

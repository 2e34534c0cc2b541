//! keyledger's domain: aggregates, commands and events, and the value types they are built from.
//! Pure logic only: nothing here knows HTTP or SQL. Every event carries an explicit
//! `event_type`/`event_version` that never follows a Rust rename.

// The workspace lint table denies these everywhere (tests may, see clippy.toml); the crate
// states it too, so the rule is visible where the code is.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::todo)
)]

pub mod audit_log;
pub mod authentication;
pub mod claims;
pub mod connection;
pub mod ids;
pub mod invitation;
pub mod membership;
pub mod one_time_code;
pub mod organization;
pub mod session;
pub mod user;
pub mod values;
pub mod webhook;

pub use claims::{Claim, ClaimKind, Claims, KeyPart};

/// Looked up by the caller before a command runs; aggregates stay pure.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoServices;

/// The organization an aggregate's events belong to (stored with each event, indexed).
pub trait Tenanted {
    fn organization_id<'a>(&'a self, aggregate_id: &'a str) -> Option<&'a str>;
}

/// Serde helper for "absent / set to null / set to value" fields in change events.
pub mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(v: &Option<Option<T>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(inner) => inner.serialize(s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

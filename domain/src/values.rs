//! Parsed value types: constructing one is the validation.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Why a value was rejected; `field` names the request field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidValue {
    pub field: &'static str,
    pub code: &'static str,
    pub message: String,
}

impl InvalidValue {
    pub fn new(field: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            code,
            message: message.into(),
        }
    }
}

/// An email address: trimmed, Unicode-normalised to NFC (so `café` typed precomposed or with
/// a combining accent is one address), free of invisible and direction-changing characters;
/// compared case-insensitively through [`Email::key`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Email(String);

/// Characters that render as nothing or reorder text: an address holding one can look exactly
/// like another one. Zero-width and joiners, soft hyphen, BOM, word joiner and invisible
/// operators, the Mongolian vowel separator, and the bidirectional marks, embeddings, overrides
/// and isolates.
fn is_invisible_or_bidi(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E007F}'
    )
}

impl Email {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, InvalidValue> {
        use unicode_normalization::UnicodeNormalization;
        if raw.chars().any(is_invisible_or_bidi) {
            return Err(InvalidValue::new(
                field,
                "invalid_email",
                "the email contains invisible or text-direction characters",
            ));
        }
        let s: String = raw.trim().nfc().collect();
        let bad = || InvalidValue::new(field, "invalid_email", format!("'{raw}' is not a valid email address"));
        if s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        let (local, domain) = s.rsplit_once('@').ok_or_else(bad)?;
        if local.is_empty() || local.len() > 64 || local.contains('@') {
            return Err(bad());
        }
        DomainName::parse(field, domain).map_err(|_| bad())?;
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The uniqueness and lookup key: NFC (already), lower-cased.
    pub fn key(&self) -> String {
        self.0.to_lowercase()
    }

    /// The lookup key of an `email` filter: the same normalisation as [`Email::parse`] and
    /// [`Email::key`], without refusing anything (a filter that matches nothing is fine).
    pub fn lookup_key(raw: &str) -> String {
        use unicode_normalization::UnicodeNormalization;
        raw.trim().nfc().collect::<String>().to_lowercase()
    }
}

/// A DNS domain name such as `example.com`, lower-cased, with at least two labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DomainName(String);

impl DomainName {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, InvalidValue> {
        let s = raw.trim().trim_end_matches('.').to_lowercase();
        let bad = || InvalidValue::new(field, "invalid_domain", format!("'{raw}' is not a valid domain"));
        if s.is_empty() || s.len() > 253 {
            return Err(bad());
        }
        let labels: Vec<&str> = s.split('.').collect();
        if labels.len() < 2 {
            return Err(bad());
        }
        for label in &labels {
            let ok = !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !ok {
                return Err(bad());
            }
        }
        if labels.last().is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit())) {
            return Err(bad());
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A role slug of the environment. `member` is the default; `admin` exists from the start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RoleSlug(String);

impl RoleSlug {
    pub const ENVIRONMENT_ROLES: [&'static str; 2] = ["member", "admin"];

    pub fn parse(field: &'static str, raw: &str) -> Result<Self, InvalidValue> {
        if Self::ENVIRONMENT_ROLES.contains(&raw) {
            Ok(Self(raw.to_string()))
        } else {
            Err(InvalidValue::new(
                field,
                "invalid_role",
                format!("role '{raw}' does not exist; known roles: member, admin"),
            ))
        }
    }

    pub fn member() -> Self {
        Self("member".into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// WorkOS metadata: at most 50 string values, keys up to 40 and values up to 600 characters.
pub type Metadata = BTreeMap<String, String>;

pub fn validate_metadata(field: &'static str, m: &Metadata) -> Result<(), InvalidValue> {
    if m.len() > 50 {
        return Err(InvalidValue::new(
            field,
            "invalid_metadata",
            "metadata may hold at most 50 keys",
        ));
    }
    for (k, v) in m {
        if k.is_empty() || k.chars().count() > 40 {
            return Err(InvalidValue::new(
                field,
                "invalid_metadata",
                format!("metadata key '{k}' must be 1 to 40 characters"),
            ));
        }
        if v.chars().count() > 600 {
            return Err(InvalidValue::new(
                field,
                "invalid_metadata",
                format!("metadata value of '{k}' is longer than 600 characters"),
            ));
        }
    }
    Ok(())
}

/// An external id: 1 to 128 characters.
pub fn validate_external_id(field: &'static str, s: &str) -> Result<(), InvalidValue> {
    let n = s.chars().count();
    if n == 0 || n > 128 || s.chars().any(char::is_control) {
        return Err(InvalidValue::new(
            field,
            "invalid_external_id",
            "external_id must be 1 to 128 printable characters",
        ));
    }
    Ok(())
}

/// A short human text (names): at most `max` characters, no control characters.
pub fn validate_text(field: &'static str, s: &str, max: usize) -> Result<(), InvalidValue> {
    if s.chars().count() > max || s.chars().any(|c| c.is_control()) {
        return Err(InvalidValue::new(
            field,
            "invalid_value",
            format!("{field} must be at most {max} printable characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_parsed_and_keyed_case_insensitively() {
        let cases = [
            ("a@example.com", true),
            (" Ann.Lee+x@Example.COM ", true),
            ("no-at-sign", false),
            ("@example.com", false),
            ("a@localhost", false),
            ("a b@example.com", false),
            ("a@exa mple.com", false),
            ("a@@example.com", false),
        ];
        for (raw, ok) in cases {
            assert_eq!(Email::parse("email", raw).is_ok(), ok, "email {raw:?}");
        }
        let e = Email::parse("email", "Ann@Example.com").unwrap();
        assert_eq!(e.key(), "ann@example.com");
        assert_eq!(e.as_str(), "Ann@Example.com");
    }

    #[test]
    fn emails_are_nfc_normalised_before_they_are_keyed() {
        // (input, stored form, key): composed and decomposed spellings meet in NFC.
        let cases = [
            (
                "caf\u{e9}@example.com",
                "caf\u{e9}@example.com",
                "caf\u{e9}@example.com",
            ),
            (
                "cafe\u{301}@example.com",
                "caf\u{e9}@example.com",
                "caf\u{e9}@example.com",
            ),
            (
                "CAFE\u{301}@Example.com",
                "CAF\u{c9}@Example.com",
                "caf\u{e9}@example.com",
            ),
            (
                "A\u{30a}ngstr\u{f6}m@example.com",
                "\u{c5}ngstr\u{f6}m@example.com",
                "\u{e5}ngstr\u{f6}m@example.com",
            ),
            ("  x@example.com ", "x@example.com", "x@example.com"),
        ];
        for (raw, stored, key) in cases {
            let e = Email::parse("email", raw).unwrap_or_else(|err| panic!("{raw:?}: {err}"));
            assert_eq!(e.as_str(), stored, "stored form of {raw:?}");
            assert_eq!(e.key(), key, "key of {raw:?}");
            assert_eq!(Email::lookup_key(raw), key, "lookup key of {raw:?}");
        }
    }

    #[test]
    fn emails_with_invisible_or_direction_characters_are_refused() {
        let cases = [
            ("zero width space", "a\u{200B}b@example.com"),
            ("zero width non-joiner", "ab\u{200C}@example.com"),
            ("zero width joiner", "a\u{200D}b@example.com"),
            ("left-to-right mark", "\u{200E}ab@example.com"),
            ("right-to-left mark", "ab@example.com\u{200F}"),
            ("soft hyphen", "a\u{00AD}b@example.com"),
            ("byte order mark", "\u{FEFF}ab@example.com"),
            ("word joiner", "a\u{2060}b@example.com"),
            ("invisible separator", "a\u{2063}b@example.com"),
            ("arabic letter mark", "a\u{061C}b@example.com"),
            ("left-to-right embedding", "a\u{202A}b@example.com"),
            ("right-to-left embedding", "a\u{202B}b@example.com"),
            ("pop directional formatting", "a\u{202C}b@example.com"),
            ("left-to-right override", "a\u{202D}b@example.com"),
            ("right-to-left override", "a\u{202E}b@example.com"),
            ("left-to-right isolate", "a\u{2066}b@example.com"),
            ("right-to-left isolate", "a\u{2067}b@example.com"),
            ("first strong isolate", "a\u{2068}b@example.com"),
            ("pop directional isolate", "a\u{2069}b@example.com"),
            ("variation selector", "a\u{FE0F}b@example.com"),
            ("tag character", "a\u{E0041}b@example.com"),
            ("hangul filler", "a\u{3164}b@example.com"),
        ];
        for (what, raw) in cases {
            let err = Email::parse("email", raw).expect_err(what);
            assert_eq!(err.code, "invalid_email", "{what}");
            assert_eq!(err.field, "email", "{what}");
        }
    }

    #[test]
    fn domains_are_lowercased_and_need_two_labels() {
        let cases = [
            ("Example.COM", Some("example.com")),
            ("sub.example.co.uk.", Some("sub.example.co.uk")),
            ("example", None),
            ("-bad.com", None),
            ("exa_mple.com", None),
            ("1.2.3.4", None),
            ("", None),
        ];
        for (raw, want) in cases {
            let got = DomainName::parse("domain", raw).ok();
            assert_eq!(got.as_ref().map(|d| d.as_str()), want, "domain {raw:?}");
        }
    }

    #[test]
    fn only_environment_roles_parse() {
        assert!(RoleSlug::parse("role_slug", "admin").is_ok());
        assert!(RoleSlug::parse("role_slug", "member").is_ok());
        let err = RoleSlug::parse("role_slug", "owner").unwrap_err();
        assert_eq!(err.code, "invalid_role");
    }

    #[test]
    fn metadata_limits_hold() {
        let mut m = Metadata::new();
        m.insert("k".into(), "v".into());
        assert!(validate_metadata("metadata", &m).is_ok());
        m.insert("x".repeat(41), "v".into());
        assert!(validate_metadata("metadata", &m).is_err());
        let too_many: Metadata = (0..51).map(|i| (i.to_string(), String::new())).collect();
        assert!(validate_metadata("metadata", &too_many).is_err());
    }
}

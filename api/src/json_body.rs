//! Decoding a JSON request body into a typed struct with errors in plain words ("email is
//! required", "email must be a string", "x is not a known field") instead of serde's text.
//!
//! The body is parsed into a `serde_json::Value` first ([`parse`]: a syntax error is the caller's
//! 400, and a key repeated in one object is refused instead of one value being dropped); the
//! value is then deserialized through [`ValueDe`], a deserializer whose error type is
//! [`Problem`]: serde's derive code reports *what* went wrong through the structured `de::Error`
//! methods (`missing_field`, `invalid_type`, `unknown_field`, ...), which `Problem` keeps as data,
//! and `serde_path_to_error` says *where*. No error text is ever parsed. This module never
//! answers HTTP itself; it only returns a [`BodyError`].

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde_json::{Map, Value};

/// What serde's derive code reported, as data.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// A required field is absent.
    Missing(&'static str),
    /// A value of the wrong JSON type; `expected` is serde's description of the wanted type.
    WrongType { expected: String },
    /// A value of the right type that is not one of the allowed ones (an enum variant, ...).
    WrongValue { expected: String },
    /// A field the body type does not know.
    Unknown(String),
    /// Anything else a `Deserialize` impl reported (its own words).
    Other(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for Problem {}

impl de::Error for Problem {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Problem::Other(msg.to_string())
    }

    fn invalid_type(_: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Problem::WrongType {
            expected: exp.to_string(),
        }
    }

    fn invalid_value(_: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Problem::WrongValue {
            expected: exp.to_string(),
        }
    }

    fn invalid_length(len: usize, exp: &dyn de::Expected) -> Self {
        Problem::Other(format!("has {len} elements, expected {exp}"))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        Problem::WrongValue {
            expected: format!("one of {} (not {variant})", expected.join(", ")),
        }
    }

    fn unknown_field(field: &str, _: &'static [&'static str]) -> Self {
        Problem::Unknown(field.to_string())
    }

    fn missing_field(field: &'static str) -> Self {
        Problem::Missing(field)
    }

    fn duplicate_field(field: &'static str) -> Self {
        Problem::Other(format!("{field} is given twice"))
    }
}

/// A body that does not fit its type: the field (dotted path, `body` for the whole body), a
/// machine code for `errors[].code` and a message in plain words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyError {
    pub field: String,
    pub code: &'static str,
    pub message: String,
}

/// Why a body could not even be read as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Not JSON at all.
    Syntax,
    /// An object names this key twice (a plain parse would keep the last value silently).
    DuplicateKey(String),
}

/// Parses a request body into a JSON value, refusing an object that repeats a key.
pub fn parse(bytes: &[u8]) -> Result<Value, ParseError> {
    let duplicate = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = de::DeserializeSeed::deserialize(StrictSeed(&duplicate), &mut de).and_then(|v| de.end().map(|()| v));
    match (parsed, duplicate.into_inner()) {
        (Ok(v), _) => Ok(v),
        (Err(_), Some(key)) => Err(ParseError::DuplicateKey(key)),
        (Err(_), None) => Err(ParseError::Syntax),
    }
}

/// Builds a `Value` like serde_json does, but notes (and fails on) a repeated object key.
#[derive(Clone, Copy)]
struct StrictSeed<'a>(&'a RefCell<Option<String>>);

impl<'de> de::DeserializeSeed<'de> for StrictSeed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                let message = format!("{key} is given twice");
                *self.0.borrow_mut() = Some(key);
                return Err(de::Error::custom(message));
            }
            let value = map.next_value_seed(self)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// Deserializes `value` into `T`, or says in plain words why it does not fit.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, BodyError> {
    serde_path_to_error::deserialize(ValueDe(value)).map_err(|e| {
        let path = e.path().to_string();
        describe(path.trim_start_matches('.'), e.into_inner())
    })
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

fn describe(path: &str, problem: Problem) -> BodyError {
    let at_top = path.is_empty();
    match problem {
        Problem::Missing(f) => {
            let field = join(path, f);
            BodyError {
                message: format!("{field} is required"),
                field,
                code: "required",
            }
        }
        Problem::Unknown(f) => {
            // The path may already end with the unknown key, depending on where serde stopped.
            let field = if path == f || path.ends_with(&format!(".{f}")) {
                path.to_string()
            } else {
                join(path, &f)
            };
            BodyError {
                message: format!("{field} is not a known field"),
                field,
                code: "unknown_field",
            }
        }
        // Every request body is an object.
        Problem::WrongType { .. } if at_top => BodyError {
            field: "body".into(),
            code: "invalid_type",
            message: "the request body must be a JSON object".into(),
        },
        Problem::WrongType { expected } => BodyError {
            message: format!("{path} must be {}", kind(&expected)),
            field: path.to_string(),
            code: "invalid_type",
        },
        Problem::WrongValue { expected } => BodyError {
            message: format!(
                "{} must be {}",
                if at_top { "the request body" } else { path },
                known_kind(&expected).unwrap_or(&expected)
            ),
            field: if at_top { "body".into() } else { path.to_string() },
            code: "invalid_value",
        },
        Problem::Other(m) => BodyError {
            message: format!("{} {m}", if at_top { "the request body" } else { path }),
            field: if at_top { "body".into() } else { path.to_string() },
            code: "invalid_value",
        },
    }
}

/// [`kind`], when serde's description is one this module knows.
fn known_kind(expected: &str) -> Option<&'static str> {
    Some(kind(expected)).filter(|k| *k != OTHER_KIND)
}

const OTHER_KIND: &str = "a value of another type";

/// serde's description of an expected type (`Expected`), in the words of a JSON API.
fn kind(expected: &str) -> &'static str {
    match expected {
        "a string" | "a borrowed string" | "a character" => "a string",
        "a boolean" => "a boolean",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "an integer",
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a non-negative integer",
        "f32" | "f64" => "a number",
        "a sequence" => "an array",
        "a map" | "a JSON object" => "an object",
        e if e.starts_with("struct ") || e.contains("map") => "an object",
        e if e.starts_with("tuple") || e.contains("sequence") => "an array",
        _ => OTHER_KIND,
    }
}

/// A deserializer over a parsed JSON value whose error type is [`Problem`].
pub struct ValueDe(pub Value);

impl<'de> IntoDeserializer<'de, Problem> for ValueDe {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

fn visit_object<'de, V: Visitor<'de>>(map: Map<String, Value>, visitor: V) -> Result<V::Value, Problem> {
    let mut d = de::value::MapDeserializer::new(map.into_iter().map(|(k, v)| (k, ValueDe(v))));
    let out = visitor.visit_map(&mut d)?;
    d.end()?;
    Ok(out)
}

fn visit_array<'de, V: Visitor<'de>>(list: Vec<Value>, visitor: V) -> Result<V::Value, Problem> {
    let mut d = de::value::SeqDeserializer::new(list.into_iter().map(ValueDe));
    let out = visitor.visit_seq(&mut d)?;
    d.end()?;
    Ok(out)
}

impl<'de> de::Deserializer<'de> for ValueDe {
    type Error = Problem;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Problem> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else {
                    visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => visitor.visit_string(s),
            Value::Array(a) => visit_array(a, visitor),
            Value::Object(o) => visit_object(o, visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Problem> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            other => visitor.visit_some(ValueDe(other)),
        }
    }

    /// Structs come only from JSON objects (serde's derive would also take an array of the
    /// fields in order, which no client means).
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Problem> {
        match self.0 {
            Value::Object(o) => visit_object(o, visitor),
            _ => Err(Problem::WrongType {
                expected: "a JSON object".into(),
            }),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, Problem> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Problem> {
        match self.0 {
            Value::String(s) => visitor.visit_enum(s.into_deserializer()),
            Value::Object(o) if o.len() == 1 => {
                let Some((variant, value)) = o.into_iter().next() else {
                    return Err(Problem::Other("must name one variant".into()));
                };
                visitor.visit_enum(EnumDe { variant, value })
            }
            _ => Err(Problem::WrongType {
                expected: "a string".into(),
            }),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier ignored_any
    }
}

/// An externally tagged enum value `{"Variant": value}`.
struct EnumDe {
    variant: String,
    value: Value,
}

impl<'de> de::EnumAccess<'de> for EnumDe {
    type Error = Problem;
    type Variant = ValueDe;

    fn variant_seed<V: de::DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, ValueDe), Problem> {
        let v = seed.deserialize(self.variant.into_deserializer())?;
        Ok((v, ValueDe(self.value)))
    }
}

impl<'de> de::VariantAccess<'de> for ValueDe {
    type Error = Problem;

    fn unit_variant(self) -> Result<(), Problem> {
        match self.0 {
            Value::Null => Ok(()),
            _ => Err(Problem::WrongType {
                expected: "unit variant".into(),
            }),
        }
    }

    fn newtype_variant_seed<T: de::DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Problem> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value, Problem> {
        de::Deserializer::deserialize_any(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(self, _: &'static [&'static str], visitor: V) -> Result<V::Value, Problem> {
        de::Deserializer::deserialize_any(self, visitor)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "fields are read only through Debug in the tests")]
    struct Inner {
        domain: String,
        state: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "fields are read only through Debug in the tests")]
    struct Body {
        email: String,
        #[serde(default)]
        email_verified: Option<bool>,
        #[serde(default)]
        limit: Option<u32>,
        #[serde(default)]
        metadata: Option<BTreeMap<String, String>>,
        #[serde(default)]
        role_slugs: Option<Vec<String>>,
        #[serde(default)]
        domain_data: Option<Vec<Inner>>,
        #[serde(default)]
        any: Option<Value>,
    }

    #[test]
    fn body_errors_are_plain_words_naming_the_field() {
        let cases = [
            (json!({}), "email", "required", "email is required"),
            (json!({"email": 123}), "email", "invalid_type", "email must be a string"),
            (
                json!({"email": null}),
                "email",
                "invalid_type",
                "email must be a string",
            ),
            (
                json!({"email": "a@b.co", "email_verified": "yes"}),
                "email_verified",
                "invalid_type",
                "email_verified must be a boolean",
            ),
            (
                json!({"email": "a@b.co", "limit": "5"}),
                "limit",
                "invalid_type",
                "limit must be a non-negative integer",
            ),
            (
                json!({"email": "a@b.co", "limit": 1.5}),
                "limit",
                "invalid_type",
                "limit must be a non-negative integer",
            ),
            (
                json!({"email": "a@b.co", "limit": -1}),
                "limit",
                "invalid_value",
                "limit must be a non-negative integer",
            ),
            (
                json!({"email": "a@b.co", "metadata": []}),
                "metadata",
                "invalid_type",
                "metadata must be an object",
            ),
            (
                json!({"email": "a@b.co", "metadata": {"k": 1}}),
                "metadata.k",
                "invalid_type",
                "metadata.k must be a string",
            ),
            (
                json!({"email": "a@b.co", "role_slugs": "admin"}),
                "role_slugs",
                "invalid_type",
                "role_slugs must be an array",
            ),
            (
                json!({"email": "a@b.co", "role_slugs": ["admin", 2]}),
                "role_slugs[1]",
                "invalid_type",
                "role_slugs[1] must be a string",
            ),
            (
                json!({"email": "a@b.co", "domain_data": [{"domain": "x.com"}]}),
                "domain_data[0].state",
                "required",
                "domain_data[0].state is required",
            ),
            (
                json!({"email": "a@b.co", "domain_data": ["x.com"]}),
                "domain_data[0]",
                "invalid_type",
                "domain_data[0] must be an object",
            ),
            (
                json!({"email": "a@b.co", "nope": 1}),
                "nope",
                "unknown_field",
                "nope is not a known field",
            ),
            (
                json!({"email": "a@b.co", "domain_data": [{"domain": "x.com", "state": "pending", "x": 1}]}),
                "domain_data[0].x",
                "unknown_field",
                "domain_data[0].x is not a known field",
            ),
            (
                json!({"email": "a@b.co", "domain_data": [["x.com", "pending"]]}),
                "domain_data[0]",
                "invalid_type",
                "domain_data[0] must be an object",
            ),
            (
                json!([]),
                "body",
                "invalid_type",
                "the request body must be a JSON object",
            ),
            (
                json!(["a@b.co"]),
                "body",
                "invalid_type",
                "the request body must be a JSON object",
            ),
            (
                json!("x"),
                "body",
                "invalid_type",
                "the request body must be a JSON object",
            ),
            (
                json!(5),
                "body",
                "invalid_type",
                "the request body must be a JSON object",
            ),
            (
                json!(null),
                "body",
                "invalid_type",
                "the request body must be a JSON object",
            ),
        ];
        for (value, field, code, message) in cases {
            let ctx = value.to_string();
            let err = from_value::<Body>(value).expect_err(&ctx);
            assert_eq!(
                err,
                BodyError {
                    field: field.into(),
                    code,
                    message: message.into()
                },
                "{ctx}"
            );
        }
    }

    #[test]
    fn fitting_bodies_decode_with_every_json_type() {
        let b: Body = from_value(json!({
            "email": "a@b.co", "email_verified": true, "limit": 5, "metadata": {"k": "v"},
            "role_slugs": ["admin"], "domain_data": [{"domain": "x.com", "state": "verified"}],
            "any": {"n": [1, -2, 2.5, null, "s", false]}
        }))
        .expect("decodes");
        assert_eq!(b.limit, Some(5));
        assert_eq!(b.any, Some(json!({"n": [1, -2, 2.5, null, "s", false]})));
        let b: Body = from_value(json!({"email": "a@b.co", "metadata": null})).expect("null is absent");
        assert!(b.metadata.is_none());
    }

    #[test]
    fn parsing_refuses_repeated_keys_at_any_depth_and_keeps_every_json_type() {
        let cases: [(&[u8], Result<Value, ParseError>); 6] = [
            (
                br#"{"a": 1, "b": [true, null, -2, 2.5, "s", {}]}"#,
                Ok(json!({"a": 1, "b": [true, null, -2, 2.5, "s", {}]})),
            ),
            (
                br#"{"email": "a", "email": "b"}"#,
                Err(ParseError::DuplicateKey("email".into())),
            ),
            (
                br#"{"m": {"k": "1", "k": "2"}}"#,
                Err(ParseError::DuplicateKey("k".into())),
            ),
            (br#"[{"x": 1}, {"x": 2}]"#, Ok(json!([{"x": 1}, {"x": 2}]))),
            (br#"{"a": 1"#, Err(ParseError::Syntax)),
            (br#"{"a": 1} trailing"#, Err(ParseError::Syntax)),
        ];
        for (bytes, want) in cases {
            assert_eq!(parse(bytes), want, "{}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn enums_decode_and_unknown_variants_are_named() {
        #[derive(Debug, Deserialize, PartialEq)]
        #[serde(rename_all = "snake_case")]
        enum State {
            Pending,
            Verified,
        }
        #[derive(Debug, Deserialize)]
        struct B {
            state: State,
        }
        let b: B = from_value(json!({"state": "verified"})).expect("decodes");
        assert_eq!(b.state, State::Verified);
        let err = from_value::<B>(json!({"state": "nope"})).expect_err("unknown variant");
        assert_eq!(err.field, "state");
        assert_eq!(err.code, "invalid_value");
        assert_eq!(err.message, "state must be one of pending, verified (not nope)");
    }
}

//! Request extractors that answer in the API's error shape: JSON bodies and query strings
//! (lists in every form the SDKs send: `a,b`, repeated keys and `key[]`).

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// `Json<T>` whose rejections are `ApiError`s: 400 malformed, 422 wrong shape (naming the
/// field), 413 too large. Strings with NUL characters are refused (PostgreSQL cannot store them).
pub struct AppJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json_media_type);
        if !is_json {
            return Err(json_rejection(
                JsonRejection::MissingJsonContentType(Default::default()),
            ));
        }
        let bytes = match axum::body::Bytes::from_request(req, state).await {
            Ok(b) => b,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(too_large()),
            // A body too slow for the body-read timeout (`crate::protocol`) is a 408.
            Err(e) => {
                return Err(crate::protocol::body_timeout(&e)
                    .unwrap_or_else(|| ApiError::bad_request("invalid_body", e.body_text())))
            }
        };
        if contains_nul_escape(&bytes) {
            return Err(ApiError::invalid(
                "body",
                "invalid_character",
                "strings must not contain NUL (\\u0000) characters",
            ));
        }
        // Syntax first (400), then the shape, in plain words (422; `json_body`).
        let value = crate::json_body::parse(&bytes).map_err(|e| match e {
            crate::json_body::ParseError::Syntax => {
                ApiError::bad_request("invalid_json", "the request body is not valid JSON")
            }
            crate::json_body::ParseError::DuplicateKey(key) => {
                ApiError::invalid(&key, "duplicate_field", format!("{key} is given twice in one object"))
            }
        })?;
        crate::json_body::from_value(value)
            .map(Self)
            .map_err(|e| ApiError::invalid(&e.field, e.code, e.message))
    }
}

/// `application/json`, optionally with parameters (`; charset=utf-8`); not `application/jsonfoo`.
pub fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default();
    essence.trim().eq_ignore_ascii_case("application/json")
}

/// JSON can carry a NUL only as the escape `\u0000`.
fn contains_nul_escape(bytes: &[u8]) -> bool {
    bytes.windows(6).any(|w| w == b"\\u0000")
}

/// A body that could not be read whole: too slow (408, `crate::protocol`), over the limit (413),
/// or cut off (400). For readers of the raw body outside [`AppJson`] (`crate::idempotency`).
pub fn body_read_error(e: &axum::Error) -> ApiError {
    if let Some(timeout) = crate::protocol::body_timeout(e) {
        return timeout;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return too_large();
        }
        source = err.source();
    }
    ApiError::bad_request("invalid_body", "the request body could not be read")
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "the request body is larger than 1 MiB",
    )
}

fn json_rejection(r: JsonRejection) -> ApiError {
    match r {
        JsonRejection::MissingJsonContentType(_) => ApiError::bad_request(
            "invalid_content_type",
            "expected a request body with Content-Type: application/json",
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => too_large(),
        other => ApiError::bad_request("invalid_body", other.body_text()),
    }
}

/// The raw query string as (key, value) pairs, `key[]` normalised to `key`.
pub struct QueryPairs(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or("");
        let pairs = urlencoded(q.as_bytes()).map_err(|NulParameter(k)| {
            ApiError::invalid(
                &k,
                "invalid_character",
                "query parameters must not contain NUL characters",
            )
        })?;
        let pairs = pairs
            .into_iter()
            .map(|(k, v)| (k.strip_suffix("[]").map(str::to_string).unwrap_or(k), v))
            .collect();
        Ok(Self(pairs))
    }
}

/// A parameter (named here) whose name or value holds a NUL character.
#[derive(Debug, PartialEq, Eq)]
pub struct NulParameter(pub String);

/// A query string or `application/x-www-form-urlencoded` body as (name, value) pairs in order.
/// Every parser of such input goes through here: PostgreSQL cannot store NUL characters, so a
/// NUL in any name or value refuses the whole input before a lookup could fail on it.
pub fn urlencoded(bytes: &[u8]) -> Result<Vec<(String, String)>, NulParameter> {
    form_urlencoded::parse(bytes)
        .map(|(k, v)| {
            if k.contains('\0') || v.contains('\0') {
                Err(NulParameter(k.replace('\0', "\u{fffd}")))
            } else {
                Ok((k.into_owned(), v.into_owned()))
            }
        })
        .collect()
}

impl QueryPairs {
    /// A single-valued parameter; given twice is a 422.
    pub fn one(&self, key: &str) -> Result<Option<String>, ApiError> {
        let mut vals = self.0.iter().filter(|(k, _)| k == key).map(|(_, v)| v);
        let first = vals.next().cloned();
        if vals.next().is_some() {
            return Err(ApiError::invalid(
                key,
                "duplicate_parameter",
                format!("{key} may be given once"),
            ));
        }
        Ok(first.filter(|v| !v.is_empty()))
    }

    /// A list parameter in any form: `k=a,b`, `k=a&k=b`, `k[]=a&k[]=b`.
    pub fn many(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// A single path parameter whose rejections (e.g. invalid UTF-8 after percent-decoding) are
/// `ApiError`s in the JSON shape.
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Self(v)),
            Err(e) => Err(ApiError::bad_request("invalid_path", e.body_text())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_application_json_with_parameters_is_json() {
        for (ct, ok) in [
            ("application/json", true),
            ("Application/JSON", true),
            ("application/json; charset=utf-8", true),
            (" application/json ;charset=UTF-8", true),
            ("application/jsonfoo", false),
            ("application/json-patch+json", false),
            ("text/json", false),
            ("", false),
        ] {
            assert_eq!(is_json_media_type(ct), ok, "{ct:?}");
        }
    }

    #[test]
    fn urlencoded_input_with_a_nul_anywhere_is_refused() {
        assert_eq!(
            urlencoded(b"a=1&b=x%20y").unwrap(),
            vec![("a".into(), "1".into()), ("b".into(), "x y".into())]
        );
        assert_eq!(urlencoded(b"a=1&b=x%00y"), Err(NulParameter("b".into())));
        assert_eq!(urlencoded(b"a%00=1"), Err(NulParameter("a\u{fffd}".into())));
    }

    #[test]
    fn nul_escapes_are_found() {
        assert!(contains_nul_escape(br#"{"a":"x\u0000y"}"#));
        assert!(!contains_nul_escape(br#"{"a":"x\u0001y"}"#));
    }
}

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
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
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

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "the request body is larger than 1 MiB",
    )
}

/// axum's prefix on data errors, before serde's `path: message`.
const DATA_ERROR_PREFIX: &str = "Failed to deserialize the JSON body into the target type: ";

fn json_rejection(r: JsonRejection) -> ApiError {
    match r {
        JsonRejection::JsonDataError(e) => {
            let text = e.body_text();
            let detail = text.strip_prefix(DATA_ERROR_PREFIX).unwrap_or(&text).to_string();
            let (field, message) = split_path(&detail);
            let message = if message.contains("expected struct") {
                "expected a JSON object".to_string()
            } else {
                message
            };
            ApiError::invalid(&field, "invalid_value", message)
        }
        JsonRejection::JsonSyntaxError(_) => {
            ApiError::bad_request("invalid_json", "the request body is not valid JSON")
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::bad_request(
            "invalid_content_type",
            "expected a request body with Content-Type: application/json",
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => too_large(),
        other => ApiError::bad_request("invalid_body", other.body_text()),
    }
}

/// Splits serde's `path: message` (the path is absent for errors at the top level, where the
/// field is named in backticks: "unknown field `x`", "missing field `x`").
fn split_path(detail: &str) -> (String, String) {
    if let Some((path, message)) = detail.split_once(": ") {
        if !path.is_empty() && !path.contains(' ') {
            return (path.to_string(), message.to_string());
        }
    }
    let names_a_field = ["unknown field", "missing field", "duplicate field"]
        .iter()
        .any(|p| detail.starts_with(p));
    let field = detail
        .split('`')
        .nth(1)
        .filter(|f| names_a_field && !f.contains(' '))
        .unwrap_or("body");
    (field.to_string(), detail.to_string())
}

/// The raw query string as (key, value) pairs, `key[]` normalised to `key`.
pub struct QueryPairs(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or("");
        let pairs: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| {
                let k = k.strip_suffix("[]").unwrap_or(&k).to_string();
                (k, v.into_owned())
            })
            .collect();
        if let Some((k, _)) = pairs.iter().find(|(k, v)| k.contains('\0') || v.contains('\0')) {
            return Err(ApiError::invalid(
                k,
                "invalid_character",
                "query parameters must not contain NUL characters",
            ));
        }
        Ok(Self(pairs))
    }
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
    fn serde_paths_name_the_field() {
        let cases = [
            (
                "email: invalid type: integer `5`, expected a string at line 1 column 10",
                "email",
            ),
            (
                "metadata.k: invalid type: integer `1`, expected a string at line 1 column 5",
                "metadata.k",
            ),
            ("unknown field `nope`, expected one of `email`", "nope"),
            ("missing field `email` at line 1 column 2", "email"),
            ("invalid type: integer `5`, expected struct CreateBody", "body"),
        ];
        for (detail, field) in cases {
            assert_eq!(split_path(detail).0, field, "{detail}");
        }
    }

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
    fn nul_escapes_are_found() {
        assert!(contains_nul_escape(br#"{"a":"x\u0000y"}"#));
        assert!(!contains_nul_escape(br#"{"a":"x\u0001y"}"#));
    }
}

//! Request extractors that answer in the API's error shape: JSON bodies and query strings
//! (lists in every form the SDKs send: `a,b`, repeated keys and `key[]`).

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// `Json<T>` whose rejections are `ApiError`s: 400 malformed, 422 wrong shape, 413 too large.
pub struct AppJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    match r {
        JsonRejection::JsonDataError(e) => {
            let detail = e.body_text();
            let msg = detail.rsplit_once(": ").map(|(_, m)| m.to_string()).unwrap_or(detail);
            let field = field_of(&msg);
            ApiError::invalid(&field, "invalid_value", msg)
        }
        JsonRejection::JsonSyntaxError(_) => {
            ApiError::bad_request("invalid_json", "the request body is not valid JSON")
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::bad_request(
            "invalid_content_type",
            "expected a request body with Content-Type: application/json",
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is larger than 1 MiB",
        ),
        other => ApiError::bad_request("invalid_body", other.body_text()),
    }
}

/// Best-effort name of the field serde complained about (`unknown field `x``, `missing field `x``).
fn field_of(msg: &str) -> String {
    msg.split('`')
        .nth(1)
        .map(str::to_string)
        .unwrap_or_else(|| "body".to_string())
}

/// The raw query string as (key, value) pairs, `key[]` normalised to `key`.
pub struct QueryPairs(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or("");
        let pairs = form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| {
                let k = k.strip_suffix("[]").unwrap_or(&k).to_string();
                (k, v.into_owned())
            })
            .collect();
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

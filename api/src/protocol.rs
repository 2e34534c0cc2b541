//! Protocol-level limits, answered in the API's JSON error shape before any handler runs: URI
//! length (414), header count and size (431), a query string that is not UTF-8 (400), a bad or
//! too large `Content-Length` (400/413, without reading the body), a body that arrives too
//! slowly (408) or grows past the limit (413). It buffers the body (at most [`BODY_LIMIT`]);
//! it never interprets it.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use crate::error::ApiError;
use crate::BODY_LIMIT;

/// Longest accepted request target (path and query), in bytes.
pub const MAX_URI_LEN: usize = 8 * 1024;
/// Most request headers accepted.
pub const MAX_HEADERS: usize = 100;
/// Largest accepted total of header names and values, in bytes.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// The checks, in the order a request arrives: head first, then the body within `body_read`.
pub async fn guard(State(body_read): State<Duration>, req: Request, next: Next) -> Response {
    if let Err(e) = check_head(&req) {
        return e.into_response();
    }
    let declared = match declared_length(&req) {
        Ok(n) => n,
        Err(e) => return close(e),
    };
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        // Answered before reading a byte of the body; the connection cannot be reused.
        return close(too_large());
    }
    let may_have_body = declared.is_some_and(|n| n > 0) || req.headers().contains_key(header::TRANSFER_ENCODING);
    if !may_have_body {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(body_read, read_body(body)).await {
        Ok(Ok(bytes)) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        Ok(Err(e)) => close(e),
        Err(_) => close(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("the request body did not arrive within {} ms", body_read.as_millis()),
        )),
    }
}

fn check_head(req: &Request) -> Result<(), ApiError> {
    let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > MAX_URI_LEN {
        return Err(ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the request target is longer than {MAX_URI_LEN} bytes"),
        ));
    }
    let headers = req.headers();
    let bytes: usize = headers.iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        return Err(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("at most {MAX_HEADERS} request headers of {MAX_HEADER_BYTES} bytes in all are accepted"),
        ));
    }
    if let Some(q) = req.uri().query() {
        if !query_is_utf8(q) {
            return Err(ApiError::bad_request(
                "invalid_query",
                "the query string must be UTF-8 once percent-decoded",
            ));
        }
    }
    Ok(())
}

/// Every key and value percent-decodes (with `+` as space) to valid UTF-8.
fn query_is_utf8(q: &str) -> bool {
    q.split('&')
        .flat_map(|pair| pair.split('='))
        .all(|part| std::str::from_utf8(&percent_decode(part.as_bytes())).is_ok())
}

fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match input[i] {
            b'%' if i + 2 < input.len() => match (hex(input[i + 1]), hex(input[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// `Content-Length` as a number: one value (repeats must agree), digits only.
fn declared_length(req: &Request) -> Result<Option<u64>, ApiError> {
    let mut found: Option<u64> = None;
    for v in req.headers().get_all(header::CONTENT_LENGTH) {
        let n = v
            .to_str()
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(bad_length)?;
        if found.is_some_and(|f| f != n) {
            return Err(bad_length());
        }
        found = Some(n);
    }
    Ok(found)
}

fn bad_length() -> ApiError {
    ApiError::bad_request(
        "invalid_content_length",
        "Content-Length must be one non-negative integer",
    )
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "the request body is larger than 1 MiB",
    )
}

async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| ApiError::bad_request("invalid_body", "the request body could not be read"))?;
        if buf.len() + chunk.len() > BODY_LIMIT {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// An error after which the connection is not reused: the body was not (fully) read.
fn close(e: ApiError) -> Response {
    let mut r = e.into_response();
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_utf8_after_percent_decoding() {
        for (q, ok) in [
            ("a=b&c=d", true),
            ("email=caf%C3%A9%40x.com", true),
            ("a=%FF", false),
            ("%C3=x", false),
            ("a=%ZZ", true),
            ("a=%", true),
            ("a=%4", true),
            ("a=100%25", true),
        ] {
            assert_eq!(query_is_utf8(q), ok, "{q}");
        }
    }
}

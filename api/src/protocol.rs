//! Protocol-level limits, answered in the API's JSON error shape before any handler runs: URI
//! length (414), header count and size (431), a query string that is not UTF-8 (400), a bad or
//! too large `Content-Length` (400/413, without reading the body), and a deadline on the body
//! (408 when the handler's read of it hits the deadline). It never reads or buffers a body
//! itself: a request refused before its handler (no key, say) costs no body read.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::BODY_LIMIT;

/// Longest accepted request target (path and query), in bytes.
pub const MAX_URI_LEN: usize = 8 * 1024;
/// Most request headers accepted.
pub const MAX_HEADERS: usize = 100;
/// Largest accepted total of header names and values, in bytes.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// The checks, in the order a request arrives: head first, then a deadline on the body.
pub async fn guard(State(body_read): State<Duration>, req: Request, next: Next) -> Response {
    if let Err(e) = check_head(&req) {
        return e.into_response();
    }
    let declared = match declared_length(&req) {
        Ok(n) => n,
        Err(e) => return close(e.into_response()),
    };
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        // Answered before reading a byte of the body; the connection cannot be reused.
        return close(too_large().into_response());
    }
    let may_have_body = declared.is_some_and(|n| n > 0) || req.headers().contains_key(header::TRANSFER_ENCODING);
    if !may_have_body {
        return next.run(req).await;
    }
    let deadline = tokio::time::Instant::now() + body_read;
    let req = req.map(|inner| {
        Body::new(DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            body_read,
        })
    });
    let response = next.run(req).await;
    match response.status() {
        // The body was not read to its end: the connection cannot carry another request.
        StatusCode::REQUEST_TIMEOUT | StatusCode::PAYLOAD_TOO_LARGE => close(response),
        _ => response,
    }
}

/// The request body, failing with [`BodyTimeout`] once the deadline passes before its end.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    body_read: Duration,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let me = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut me.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match me.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(BodyTimeout(me.body_read))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The body did not arrive within the body-read timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} ms", .0.as_millis())]
pub struct BodyTimeout(Duration);

/// The `408 request_timeout` for a read that failed with [`BodyTimeout`] anywhere in its error
/// chain (extractors wrap body errors twice), `None` for any other failure.
pub fn body_timeout(e: &(dyn std::error::Error + 'static)) -> Option<ApiError> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(t) = err.downcast_ref::<BodyTimeout>() {
            return Some(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                t.to_string(),
            ));
        }
        next = err.source();
    }
    None
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

/// Every key and value percent-decodes to valid UTF-8 (`+` needs no decoding to check).
fn query_is_utf8(q: &str) -> bool {
    q.split(['&', '='])
        .all(|part| percent_encoding::percent_decode_str(part).decode_utf8().is_ok())
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

/// An answer after which the connection is not reused: the body was not (fully) read.
fn close(mut r: Response) -> Response {
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

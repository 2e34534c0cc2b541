//! The HTTP layer seen through raw TCP sockets: header-read, body-read and idle timeouts, a
//! `Content-Length` over the limit answered at once, protocol-level rejections in the JSON error
//! shape, the case-insensitive bearer scheme and what counts as JSON.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::TestApp;

/// Generous: a closed connection or an answer must come well within this.
const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response (head and `Content-Length` body) from `s`.
async fn read_response(s: &mut TcpStream) -> Raw {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(DEADLINE, s.read(&mut chunk))
            .await
            .expect("a response within the deadline")
            .expect("read");
        assert!(
            n > 0,
            "connection closed before a response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = tokio::time::timeout(DEADLINE, s.read(&mut chunk))
            .await
            .expect("the body within the deadline")
            .expect("read");
        assert!(n > 0, "connection closed mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = &buf[head_end..head_end + len];
    Raw {
        status,
        headers,
        body: serde_json::from_slice(body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into())),
    }
}

/// Sends `request` on a new connection and reads the response.
async fn exchange(app: &TestApp, request: &[u8]) -> Raw {
    let mut s = TcpStream::connect(app.addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    read_response(&mut s).await
}

/// Waits until the server closes `s` (EOF or reset), failing after [`DEADLINE`].
async fn closed_by_server(s: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout(DEADLINE, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the server kept the connection open past {DEADLINE:?}"),
        }
    }
}

fn assert_json_error(r: &Raw, status: u16, code: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(r.body["code"], code, "{r:?}");
    assert!(r.body["message"].is_string(), "{r:?}");
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{r:?}"
    );
}

fn timeouts(header: u64, body: u64, idle: u64) -> keyledger_api::serve::HttpTimeouts {
    keyledger_api::serve::HttpTimeouts {
        header_read: Duration::from_millis(header),
        body_read: Duration::from_millis(body),
        idle: Duration::from_millis(idle),
    }
}

#[tokio::test]
async fn a_request_head_that_arrives_too_slowly_gets_its_connection_closed() {
    let app = TestApp::spawn_with(|c| c.http = timeouts(300, 30_000, 30_000)).await;
    let mut s = TcpStream::connect(app.addr).await.expect("connect");
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let took = closed_by_server(&mut s).await;
    assert!(took >= Duration::from_millis(250), "not before the timeout: {took:?}");

    // A connection that sends nothing at all is slow headers too.
    let mut silent = TcpStream::connect(app.addr).await.expect("connect");
    closed_by_server(&mut silent).await;
    app.stop().await;
}

#[tokio::test]
async fn a_body_that_arrives_too_slowly_is_answered_408_in_json() {
    let app = TestApp::spawn_with(|c| c.http = timeouts(30_000, 300, 30_000)).await;
    // Read by the handler's extractor, and by the Idempotency-Key middleware before it (a key
    // in the header, or the organization create whose body may carry one).
    for (path, extra) in [
        ("/organizations", ""),
        ("/user_management/users", "Idempotency-Key: slow-body-1\r\n"),
        ("/organizations", "Idempotency-Key: slow-body-2\r\n"),
    ] {
        let mut s = TcpStream::connect(app.addr).await.expect("connect");
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n{extra}\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":",
            app.key
        );
        s.write_all(head.as_bytes()).await.expect("write");
        let r = read_response(&mut s).await;
        assert_json_error(&r, 408, "request_timeout");
        assert_eq!(r.header("connection"), Some("close"), "{path} {extra}: {r:?}");
    }
    let (_, orgs) = app.get("/organizations").await;
    assert_eq!(orgs["data"], json!([]), "nothing was created");
    let (_, users) = app.get("/user_management/users").await;
    assert_eq!(users["data"], json!([]), "nothing was created");
    app.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout_but_not_before_its_next_request() {
    let app = TestApp::spawn_with(|c| c.http = timeouts(200, 30_000, 1_500)).await;
    let mut s = TcpStream::connect(app.addr).await.expect("connect");
    let get = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    s.write_all(get).await.expect("write");
    assert_eq!(read_response(&mut s).await.status, 200);
    // Longer than the header-read timeout: between requests only the idle timeout counts.
    tokio::time::sleep(Duration::from_millis(600)).await;
    s.write_all(get).await.expect("write");
    assert_eq!(read_response(&mut s).await.status, 200, "the connection was kept alive");
    let took = closed_by_server(&mut s).await;
    assert!(
        took >= Duration::from_millis(1_300),
        "not before the idle timeout: {took:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_content_length_over_the_limit_is_answered_413_before_any_body_is_sent() {
    let app = TestApp::spawn().await;
    let started = Instant::now();
    let r = exchange(
        &app,
        format!(
            "POST /organizations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n",
            app.key
        )
        .as_bytes(),
    )
    .await;
    assert_json_error(&r, 413, "payload_too_large");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "at once, not after the 30 s body timeout"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_chunked_body_that_grows_past_the_limit_is_answered_413_in_json() {
    let app = TestApp::spawn().await;
    for extra in ["", "Idempotency-Key: big-body\r\n"] {
        chunked_past_the_limit(&app, extra).await;
    }
    app.stop().await;
}

async fn chunked_past_the_limit(app: &TestApp, extra: &str) {
    let mut s = TcpStream::connect(app.addr).await.expect("connect");
    let head = format!(
        "POST /organizations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n{extra}\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        app.key
    );
    s.write_all(head.as_bytes()).await.expect("write");
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..20 {
        let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
        frame.extend_from_slice(&chunk);
        frame.extend_from_slice(b"\r\n");
        if s.write_all(&frame).await.is_err() {
            break; // the server answered and closed early
        }
    }
    let r = read_response(&mut s).await;
    assert_json_error(&r, 413, "payload_too_large");
}

#[tokio::test]
async fn protocol_level_rejections_have_json_bodies() {
    let app = TestApp::spawn().await;
    let long_uri = format!("GET /health?x={} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9_000));
    assert_json_error(&exchange(&app, long_uri.as_bytes()).await, 414, "uri_too_long");

    let big_header = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(40_000)
    );
    assert_json_error(&exchange(&app, big_header.as_bytes()).await, 431, "headers_too_large");

    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many_headers = format!("GET /health HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    assert_json_error(&exchange(&app, many_headers.as_bytes()).await, 431, "headers_too_large");

    let bad_query = format!(
        "GET /organizations?search=%FF%FE HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        app.key
    );
    assert_json_error(&exchange(&app, bad_query.as_bytes()).await, 400, "invalid_query");
    app.stop().await;
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let app = TestApp::spawn().await;
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let r = app
            .http
            .get(format!("{}/organizations", app.base))
            .header("authorization", format!("{scheme} {}", app.key))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), StatusCode::OK, "scheme {scheme}");
    }
    let r = app
        .http
        .get(format!("{}/organizations", app.base))
        .header("authorization", format!("Basic {}", app.key))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "another scheme is refused");
    app.stop().await;
}

#[tokio::test]
async fn only_application_json_with_optional_parameters_counts_as_json() {
    let app = TestApp::spawn().await;
    let body = br#"{"name":"Acme"}"#.to_vec();
    for ct in ["application/jsonfoo", "application/json-patch+json", "text/plain"] {
        let (status, err) = app.raw(reqwest::Method::POST, "/organizations", ct, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{ct}: {err}");
        assert_eq!(err["code"], "invalid_content_type", "{ct}: {err}");
    }
    let (_, orgs) = app.get("/organizations").await;
    assert_eq!(orgs["data"], json!([]), "nothing was created");
    let (status, org) = app
        .raw(
            reqwest::Method::POST,
            "/organizations",
            "application/json; charset=utf-8",
            body,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{org}");
    app.stop().await;
}

#[tokio::test]
async fn requests_hyper_cannot_parse_are_refused_with_json_bodies_too() {
    let app = TestApp::spawn().await;
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "raw non-ASCII bytes in the query",
            b"GET /health?x=\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            "a Content-Length that is not a number",
            b"POST /organizations HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            "two different Content-Lengths",
            b"POST /organizations HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            "a URI beyond hyper's own 64 KiB cap",
            format!("GET /health?x={} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000)).into_bytes(),
            414,
            "uri_too_long",
        ),
        (
            "headers beyond hyper's own buffer",
            format!(
                "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "b".repeat(600_000)
            )
            .into_bytes(),
            431,
            "headers_too_large",
        ),
        (
            "a request line that is not HTTP",
            b"GARBAGE\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            "a header name with a space",
            b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
    ];
    for (what, request, status, code) in cases {
        let mut s = TcpStream::connect(app.addr).await.expect("connect");
        // The server may answer and close before all of a huge request is written.
        let _ = s.write_all(&request).await;
        let r = read_response(&mut s).await;
        assert_eq!(
            (r.status, r.body["code"].as_str()),
            (status, Some(code)),
            "{what}: {r:?}"
        );
        assert!(
            r.header("content-type").is_some_and(|c| c == "application/json"),
            "{what}: {r:?}"
        );
    }
    // The server still serves well-formed requests.
    assert_eq!(app.get("/health").await.0, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn a_request_without_a_key_is_refused_without_waiting_for_its_body() {
    let app = TestApp::spawn().await;
    let started = Instant::now();
    let r = exchange(
        &app,
        b"POST /organizations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n",
    )
    .await;
    assert_json_error(&r, 401, "unauthorized");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no body is awaited before the key check (the body timeout is 30 s)"
    );
    app.stop().await;
}

/// A request refused by the key check is answered before its body is read: when a body was
/// coming, the answer says `Connection: close`, so a client never sends its next request on the
/// connection the server is closing. Without a body the connection stays usable.
#[tokio::test]
async fn an_early_401_closes_the_connection_only_when_a_body_was_coming() {
    let app = TestApp::spawn().await;
    let body = br#"{"name":"x"}"#;
    let with_body = format!(
        "POST /organizations HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer sk_wrong\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut s = TcpStream::connect(app.addr).await.expect("connect");
    s.write_all(with_body.as_bytes()).await.expect("write");
    let r = read_response(&mut s).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    assert_eq!(r.body["code"], "unauthorized");

    // Two body-less requests with a wrong key on one connection: both answered.
    let get = "GET /organizations HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer sk_wrong\r\n\r\n";
    let mut s = TcpStream::connect(app.addr).await.expect("connect");
    for _ in 0..2 {
        s.write_all(get.as_bytes()).await.expect("write");
        let r = read_response(&mut s).await;
        assert_eq!(r.status, 401, "{r:?}");
        assert_ne!(r.header("connection"), Some("close"), "{r:?}");
    }
}

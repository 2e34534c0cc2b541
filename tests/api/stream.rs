//! Tests: `GET /events/stream` — the feed as server-sent events, in log order, resumable from
//! a cursor without loss or repeats, filtered like `GET /events`, with heartbeats, and with
//! connections that cannot hold each other up.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

/// One SSE message: a comment (heartbeat) or an event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Frame {
    pub comment: Option<String>,
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Option<String>,
}

/// A minimal SSE client over a streaming response.
pub struct SseClient {
    resp: reqwest::Response,
    buf: String,
}

impl SseClient {
    /// Opens `/events/stream{query}`, optionally with `Last-Event-ID`; asserts a 200 event stream.
    pub async fn open(app: &TestApp, query: &str, last_event_id: Option<&str>) -> SseClient {
        let resp = request(app, query, last_event_id).await;
        assert_eq!(resp.status(), StatusCode::OK, "open stream {query}");
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert!(ct.starts_with("text/event-stream"), "content type {ct}");
        assert_eq!(
            resp.headers().get("x-accel-buffering").map(|v| v.as_bytes()),
            Some(&b"no"[..]),
            "proxies are told not to buffer"
        );
        SseClient {
            resp,
            buf: String::new(),
        }
    }

    /// The next frame, or `None` when none arrives within `wait` (or the stream ended).
    pub async fn frame(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let raw: String = self.buf.drain(..end + 2).collect();
                return Some(parse(&raw));
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk()).await.ok()?;
            match chunk.expect("read stream") {
                Some(bytes) => self.buf.push_str(std::str::from_utf8(&bytes).expect("utf-8")),
                None => return None,
            }
        }
    }

    /// Reads until the server ends the stream; panics if it is still open after `wait`.
    pub async fn wait_end(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.resp.chunk()).await {
                Err(_) => panic!("the stream is still open after {wait:?}"),
                Ok(Ok(None)) | Ok(Err(_)) => return,
                Ok(Ok(Some(_))) => {}
            }
        }
    }

    /// The next event (heartbeats skipped); panics after `wait`.
    pub async fn event(&mut self, wait: Duration) -> Frame {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let f = self
                .frame(left)
                .await
                .unwrap_or_else(|| panic!("no event within {wait:?}"));
            if f.id.is_some() || f.data.is_some() {
                return f;
            }
        }
    }

    /// The next `n` events.
    pub async fn events(&mut self, n: usize, wait: Duration) -> Vec<Frame> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.event(wait).await);
        }
        out
    }

    /// Asserts that no event arrives within `wait`.
    pub async fn assert_quiet(&mut self, wait: Duration, ctx: &str) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.frame(left).await {
                None => return,
                Some(f) if f.id.is_none() && f.data.is_none() => continue,
                Some(f) => panic!("{ctx}: unexpected event {f:?}"),
            }
        }
    }
}

fn parse(raw: &str) -> Frame {
    let mut f = Frame::default();
    for line in raw.lines() {
        let (field, value) = match line.split_once(':') {
            Some((k, v)) => (k, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        let slot = match field {
            "" => &mut f.comment,
            "id" => &mut f.id,
            "event" => &mut f.event,
            "data" => &mut f.data,
            _ => continue,
        };
        match slot {
            Some(v) => {
                v.push('\n');
                v.push_str(value);
            }
            None => *slot = Some(value.to_string()),
        }
    }
    f
}

async fn request(app: &TestApp, query: &str, last_event_id: Option<&str>) -> reqwest::Response {
    let mut req = app
        .http
        .get(format!("{}/events/stream{query}", app.base))
        .bearer_auth(&app.key);
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id);
    }
    req.send().await.expect("send stream request")
}

const WAIT: Duration = Duration::from_secs(60);

fn ids_of(frames: &[Frame]) -> Vec<String> {
    frames.iter().map(|f| f.id.clone().expect("event id")).collect()
}

fn feed_ids(events: &[Value]) -> Vec<String> {
    events.iter().map(id_of).collect()
}

#[tokio::test]
async fn events_arrive_in_log_order_with_their_ids_names_and_bodies() {
    let app = TestApp::spawn().await;
    let mut sse = SseClient::open(&app, "", None).await;
    let org = app.create_organization("Acme", json!([])).await;
    for i in 0..5 {
        app.create_user(&format!("u{i}@example.com")).await;
    }
    let (s, _) = app
        .put(&format!("/organizations/{}", id_of(&org)), json!({ "name": "Acme 2" }))
        .await;
    assert_eq!(s, StatusCode::OK);
    let feed = app.all_events("").await;
    assert!(feed.len() >= 7, "feed: {feed:?}");
    let got = sse.events(feed.len(), WAIT).await;
    assert_eq!(ids_of(&got), feed_ids(&feed), "stream order is the feed's order");
    for (f, e) in got.iter().zip(&feed) {
        assert_eq!(f.event.as_deref(), e["event"].as_str(), "event name of {}", id_of(e));
        let body: Value = serde_json::from_str(f.data.as_deref().expect("data")).expect("data is JSON");
        assert_eq!(&body, e, "data is the WorkOS event object");
    }
    sse.assert_quiet(Duration::from_millis(500), "nothing beyond the feed")
        .await;
    drop(sse);
    app.stop().await;
}

#[tokio::test]
async fn without_a_cursor_the_stream_starts_at_the_head() {
    let app = TestApp::spawn().await;
    app.create_user("before@example.com").await;
    let mut sse = SseClient::open(&app, "", None).await;
    let after = app.create_user("after@example.com").await;
    let f = sse.event(WAIT).await;
    assert_eq!(f.event.as_deref(), Some("user.created"));
    let body: Value = serde_json::from_str(f.data.as_deref().expect("data")).expect("json");
    assert_eq!(
        body["data"]["id"], after["id"],
        "the first event is the first write after connecting"
    );
    drop(sse);
    app.stop().await;
}

#[tokio::test]
async fn last_event_id_resumes_after_a_disconnect_without_loss_or_repeats() {
    let app = TestApp::spawn().await;
    let mut sse = SseClient::open(&app, "", None).await;
    app.create_user("a@example.com").await;
    app.create_user("b@example.com").await;
    let first = sse.events(2, WAIT).await;
    drop(sse);
    // Written while disconnected.
    for i in 0..4 {
        app.create_user(&format!("gone{i}@example.com")).await;
    }
    let last = first[1].id.clone().expect("id");
    let mut sse = SseClient::open(&app, "", Some(&last)).await;
    app.create_user("live@example.com").await;
    let feed = feed_ids(&app.all_events("").await);
    let pos = feed.iter().position(|id| *id == last).expect("last id in feed");
    let want = &feed[pos + 1..];
    assert_eq!(want.len(), 5);
    let got = sse.events(want.len(), WAIT).await;
    assert_eq!(ids_of(&got), want, "every later event, once, in order");
    sse.assert_quiet(Duration::from_millis(500), "no repeats").await;
    assert_eq!(ids_of(&first), feed[..2].to_vec(), "first connection saw the first two");
    drop(sse);
    app.stop().await;
}

#[tokio::test]
async fn the_after_parameter_starts_after_that_event_and_the_header_wins_over_it() {
    let app = TestApp::spawn().await;
    for i in 0..3 {
        app.create_user(&format!("u{i}@example.com")).await;
    }
    let feed = feed_ids(&app.all_events("").await);
    assert_eq!(feed.len(), 3);
    let mut sse = SseClient::open(&app, &format!("?after={}", feed[0]), None).await;
    assert_eq!(ids_of(&sse.events(2, WAIT).await), feed[1..].to_vec());
    sse.assert_quiet(Duration::from_millis(300), "after").await;
    drop(sse);
    // A reconnecting EventSource keeps its URL and sends Last-Event-ID: the header wins.
    let mut sse = SseClient::open(&app, &format!("?after={}", feed[0]), Some(&feed[1])).await;
    assert_eq!(ids_of(&sse.events(1, WAIT).await), feed[2..].to_vec());
    sse.assert_quiet(Duration::from_millis(300), "header").await;
    drop(sse);
    app.stop().await;
}

#[tokio::test]
async fn filters_take_every_list_form_and_an_organization() {
    let app = TestApp::spawn().await;
    let org_a = app.create_organization("A", json!([])).await;
    let org_b = app.create_organization("B", json!([])).await;
    let user = app.create_user("m@example.com").await;
    app.create_membership(&id_of(&user), &id_of(&org_a), None).await;
    app.create_membership(&id_of(&user), &id_of(&org_b), None).await;
    app.create_user("n@example.com").await;
    let feed = app.all_events("").await;
    let first = id_of(&feed[0]);
    let queries = [
        "events=user.created,organization_membership.created".to_string(),
        "events=user.created&events=organization_membership.created".to_string(),
        "events[]=user.created&events[]=organization.created".to_string(),
        format!("organization_id={}", id_of(&org_b)),
        format!(
            "organization_id={}&events=organization_membership.created",
            id_of(&org_a)
        ),
    ];
    for query in queries {
        // The same filter on GET /events is the oracle; the stream starts after the first event.
        let want: Vec<String> = feed_ids(&app.all_events(&format!("&{query}")).await)
            .into_iter()
            .filter(|id| *id != first)
            .collect();
        assert!(!want.is_empty(), "{query}: the case selects something");
        assert!(want.len() < feed.len() - 1, "{query}: the case filters something out");
        let mut sse = SseClient::open(&app, &format!("?after={first}&{query}"), None).await;
        assert_eq!(ids_of(&sse.events(want.len(), WAIT).await), want, "{query}");
        sse.assert_quiet(Duration::from_millis(300), &query).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn heartbeats_keep_an_idle_stream_alive() {
    let app = TestApp::spawn_with(|c| c.stream_heartbeat = Duration::from_millis(100)).await;
    let mut sse = SseClient::open(&app, "", None).await;
    let mut beats = 0;
    while beats < 3 {
        let f = sse
            .frame(Duration::from_secs(60))
            .await
            .expect("a heartbeat within 60 s");
        assert!(f.comment.is_some() && f.id.is_none(), "heartbeat is a comment: {f:?}");
        beats += 1;
    }
    drop(sse);
    app.stop().await;
}

#[tokio::test]
async fn an_idle_client_that_never_reads_does_not_delay_another() {
    let app = TestApp::spawn().await;
    // Opened with a tiny receive buffer and never read: its socket buffers fill up after a
    // few events and the server's writes to it block.
    let idle = stalled_stream(&app).await;
    let mut reader = SseClient::open(&app, "", None).await;
    let n = 120;
    for chunk in (0..n).collect::<Vec<_>>().chunks(12) {
        let emails: Vec<String> = chunk.iter().map(|i| format!("busy{i}@example.com")).collect();
        futures::future::join_all(emails.iter().map(|e| app.create_user(e))).await;
    }
    // A generous deadline: a stream held up by the idle one would never get them all, since
    // the idle client reads nothing until it is dropped below.
    let got = sse_ids_within(&mut reader, n, Duration::from_secs(30)).await;
    assert_eq!(
        got.len(),
        n,
        "the reading client got every event while the idle one stalled"
    );
    drop(reader);
    drop(idle);
    app.stop().await;
}

/// A raw stream connection that has read its response head and will never read again.
async fn stalled_stream(app: &TestApp) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(1024).expect("small receive buffer");
    let mut tcp = socket.connect(app.addr).await.expect("connect");
    let head = format!(
        "GET /events/stream HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\naccept: text/event-stream\r\n\r\n",
        app.addr, app.key
    );
    tcp.write_all(head.as_bytes()).await.expect("send request");
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut b = [0u8; 256];
        let n = tokio::time::timeout(WAIT, tcp.read(&mut b))
            .await
            .expect("response head in time")
            .expect("read");
        assert!(n > 0, "connection closed before the response head");
        got.extend_from_slice(&b[..n]);
    }
    let head = String::from_utf8_lossy(&got);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    tcp
}

async fn sse_ids_within(sse: &mut SseClient, n: usize, wait: Duration) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut out = Vec::new();
    while out.len() < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match sse.frame(left).await {
            Some(f) => out.extend(f.id),
            None => break,
        }
    }
    out
}

#[tokio::test]
async fn bad_input_is_refused_with_json_before_the_stream_starts() {
    let app = TestApp::spawn().await;
    app.create_user("x@example.com").await;
    let before = app.log_len().await;
    let cases: &[(&str, Option<&str>, StatusCode, &str)] = &[
        (
            "?after=event_nope",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters/invalid_cursor",
        ),
        (
            "",
            Some("event_nope"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters/invalid_cursor",
        ),
        (
            "?limit=5",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters/unsupported_parameter",
        ),
        (
            "?order=desc",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters/unsupported_parameter",
        ),
        (
            "?before=event_x",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters/unsupported_parameter",
        ),
        (
            "?range_start=2020-01-01T00:00:00Z",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters/unsupported_parameter",
        ),
        (
            "?after=a&after=b",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters/duplicate_parameter",
        ),
        (
            "?organization_id=org_1&organization_id=org_2",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters/duplicate_parameter",
        ),
        (
            "?organization_id=org%00x",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters/invalid_character",
        ),
        (
            "?events=user.created%00",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters/invalid_character",
        ),
        (
            "?after=event%00",
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters/invalid_character",
        ),
    ];
    for (query, header, status, code) in cases {
        let ctx = format!("{query} {header:?}");
        let resp = request(&app, query, *header).await;
        let s = resp.status();
        let body: Value = serde_json::from_str(&resp.text().await.expect("body")).expect("JSON error body");
        assert_error(s, &body, *status, code, &ctx);
    }
    // A header that is not visible ASCII.
    let resp = app
        .http
        .get(format!("{}/events/stream", app.base))
        .bearer_auth(&app.key)
        .header(
            "last-event-id",
            reqwest::header::HeaderValue::from_bytes(b"ev\xffnt").expect("header"),
        )
        .send()
        .await
        .expect("send");
    let s = resp.status();
    let body: Value = serde_json::from_str(&resp.text().await.expect("body")).expect("JSON");
    assert_error(
        s,
        &body,
        StatusCode::BAD_REQUEST,
        "invalid_header",
        "non-ASCII Last-Event-ID",
    );
    assert_eq!(app.log_len().await, before, "bad streams changed nothing");
    app.stop().await;
}

#[tokio::test]
async fn the_stream_needs_an_api_key() {
    let app = TestApp::spawn().await;
    let (s, body) = app.request_with_key(Method::GET, "/events/stream", None, None).await;
    assert_error(s, &body, StatusCode::UNAUTHORIZED, "unauthorized", "no key");
    let (s, body) = app
        .request_with_key(Method::GET, "/events/stream", None, Some("sk_wrong_wrong_wrong"))
        .await;
    assert_error(s, &body, StatusCode::UNAUTHORIZED, "unauthorized", "wrong key");
    app.stop().await;
}

#[tokio::test]
async fn streams_beyond_the_limit_get_429_until_one_closes() {
    let app = TestApp::spawn_with(|c| {
        c.max_streams = 2;
        c.stream_heartbeat = Duration::from_millis(50);
    })
    .await;
    let a = SseClient::open(&app, "", None).await;
    let b = SseClient::open(&app, "", None).await;
    let resp = request(&app, "", None).await;
    let s = resp.status();
    let body: Value = serde_json::from_str(&resp.text().await.expect("body")).expect("JSON");
    assert_error(
        s,
        &body,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_streams",
        "third stream",
    );
    drop(a);
    // The server notices the closed connection at its next write (a heartbeat, every 50 ms).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let resp = request(&app, "", None).await;
        if resp.status() == StatusCode::OK {
            break;
        }
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(std::time::Instant::now() < deadline, "a slot was never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(b);
    app.stop().await;
}

#[tokio::test]
async fn stopping_the_server_ends_open_streams() {
    let app = TestApp::spawn().await;
    let mut sse = SseClient::open(&app, "", None).await;
    let stopped = tokio::time::timeout(Duration::from_secs(20), app.stop()).await;
    assert!(stopped.is_ok(), "the server drained with a stream open");
    sse.wait_end(Duration::from_secs(60)).await;
}

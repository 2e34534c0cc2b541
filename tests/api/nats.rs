//! Tests: the NATS JetStream publisher against a real nats-server — every event once, on its
//! subject, with `Nats-Msg-Id`; the checkpoint is the last acknowledged event; restarts and
//! NATS outages lose nothing. The shared server comes from `KEYLEDGER_TEST_NATS_URL`
//! (scripts/test.sh starts one); the outage test runs a nats-server of its own.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use keyledger_api::NatsConfig;
use keyledger_projections::feed;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

/// The NATS server the tests publish to. Missing configuration fails the test: it must not pass
/// without having run.
fn nats_url() -> String {
    std::env::var("KEYLEDGER_TEST_NATS_URL").expect(
        "KEYLEDGER_TEST_NATS_URL must name a NATS server with JetStream (scripts/test.sh starts a throwaway one)",
    )
}

/// A stream and subject prefix of this test's own on the shared server.
fn own_config(url: String) -> NatsConfig {
    let tag = ulid::Ulid::new().to_string();
    NatsConfig {
        url,
        stream: format!("KL_TEST_{tag}"),
        subject_prefix: format!("kltest_{}", tag.to_lowercase()),
    }
}

/// One message as JetStream stored it.
#[derive(Debug, Clone, PartialEq)]
struct Stored {
    subject: String,
    msg_id: Option<String>,
    body: Value,
}

async fn jetstream(url: &str) -> jetstream::Context {
    let client = async_nats::connect(url).await.expect("test client connects to NATS");
    jetstream::new(client)
}

/// Every message in the stream, in stream order (empty when the stream does not exist yet).
async fn stored(js: &jetstream::Context, stream: &str) -> Vec<Stored> {
    let Ok(mut s) = js.get_stream(stream).await else {
        return Vec::new();
    };
    let last = s.info().await.expect("stream info").state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let m = s.get_raw_message(seq).await.expect("get message");
        out.push(Stored {
            subject: m.subject.to_string(),
            msg_id: m
                .headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .map(|v| v.to_string()),
            body: serde_json::from_slice(&m.payload).expect("body is JSON"),
        });
    }
    out
}

/// A core subscriber to every subject under `prefix` (it sees every publish, duplicates
/// included); keep the client alive as long as the subscriber.
async fn subscribe_all(url: &str, prefix: &str) -> (async_nats::Client, async_nats::Subscriber) {
    let client = async_nats::connect(url).await.expect("connect");
    let live = client.subscribe(format!("{prefix}.>")).await.expect("subscribe");
    client.flush().await.expect("flush");
    (client, live)
}

/// The `Nats-Msg-Id` of every message `live` receives: at least `want`, then until it stays
/// quiet for `quiet`.
async fn msg_ids(live: &mut async_nats::Subscriber, want: usize, quiet: Duration) -> Vec<Option<String>> {
    // Until `want` have come (a generous deadline), then until `quiet` passes without another:
    // a slow machine delays messages, it does not lose them, while a duplicate would come next.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let next = if seen.len() < want {
            tokio::time::timeout_at(deadline, live.next()).await
        } else {
            tokio::time::timeout(quiet, live.next()).await
        };
        match next {
            Ok(Some(m)) => seen.push(m.headers.and_then(|h| h.get("Nats-Msg-Id").map(|v| v.to_string()))),
            _ => return seen,
        }
    }
}

/// Waits until the stream holds `n` messages.
async fn wait_stored(js: &jetstream::Context, stream: &str, n: usize, wait: Duration) -> Vec<Stored> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let got = stored(js, stream).await;
        if got.len() >= n {
            return got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stream {stream} holds {} of {n} messages",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `<prefix>.<organization id or "global">.<event name>`, from the feed row's organization.
async fn subjects(app: &TestApp, cfg: &NatsConfig) -> std::collections::HashMap<String, String> {
    let rows: Vec<(String, Option<String>, String)> =
        sqlx::query_as("select id, organization_id, event from event_feed")
            .fetch_all(&app.pool)
            .await
            .expect("feed rows");
    rows.into_iter()
        .map(|(id, org, event)| {
            let subject = format!("{}.{}.{event}", cfg.subject_prefix, org.as_deref().unwrap_or("global"));
            (id, subject)
        })
        .collect()
}

/// Writes a mix of global and per-organization events.
async fn write_some(app: &TestApp, tag: &str) {
    let org = app.create_organization(&format!("Org {tag}"), json!([])).await;
    let user = app.create_user(&format!("{tag}@example.com")).await;
    app.create_membership(&id_of(&user), &id_of(&org), None).await;
    let (s, _) = app
        .put(
            &format!("/organizations/{}", id_of(&org)),
            json!({ "name": format!("Org {tag} 2") }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
}

/// Asserts the stream holds exactly the feed, in order, each on its subject with its id.
async fn assert_matches_feed(app: &TestApp, cfg: &NatsConfig, got: &[Stored], feed: &[Value]) {
    let subjects = subjects(app, cfg).await;
    let got_ids: Vec<Option<String>> = got.iter().map(|m| m.msg_id.clone()).collect();
    let want_ids: Vec<Option<String>> = feed.iter().map(|e| Some(id_of(e))).collect();
    assert_eq!(got_ids, want_ids, "each event once, in feed order, with Nats-Msg-Id");
    for (m, e) in got.iter().zip(feed) {
        assert_eq!(m.body, *e, "body of {}", id_of(e));
        assert_eq!(Some(&m.subject), subjects.get(&id_of(e)), "subject of {}", id_of(e));
    }
}

/// Waits until the publisher's checkpoint is the feed's last event.
async fn wait_checkpoint_at_head(app: &TestApp, wait: Duration) {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let cp = feed::load_checkpoint(&app.pool, "nats").await.expect("checkpoint");
        let head = feed::head(&app.pool).await.expect("head");
        if cp == head && head != feed::FeedCursor::START {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "checkpoint {cp:?} never reached {head:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn every_event_is_published_once_on_its_subject_with_its_id() {
    let url = nats_url();
    let cfg = own_config(url.clone());
    // A core subscriber sees every publish, including duplicates JetStream would drop.
    let (_client, mut live) = subscribe_all(&url, &cfg.subject_prefix).await;
    let app = TestApp::spawn_with(|c| c.nats = Some(cfg.clone())).await;
    write_some(&app, "a").await;
    write_some(&app, "b").await;
    let feed = app.all_events("").await;
    let js = jetstream(&url).await;
    let got = wait_stored(&js, &cfg.stream, feed.len(), Duration::from_secs(60)).await;
    assert_matches_feed(&app, &cfg, &got, &feed).await;
    assert!(got.iter().any(|m| m.subject.contains(".global.user.created")));
    assert!(
        got.iter().any(|m| m.subject.contains(".org_")),
        "per-organization subjects"
    );
    let seen = msg_ids(&mut live, feed.len(), Duration::from_millis(500)).await;
    assert_eq!(
        seen,
        feed.iter().map(|e| Some(id_of(e))).collect::<Vec<_>>(),
        "published exactly once each"
    );
    app.stop().await;
    js.delete_stream(&cfg.stream).await.expect("delete stream");
}

#[tokio::test]
async fn the_checkpoint_is_the_last_acknowledged_event_and_health_shows_the_lag() {
    let url = nats_url();
    let cfg = own_config(url.clone());
    let app = TestApp::spawn_with(|c| c.nats = Some(cfg.clone())).await;
    write_some(&app, "c").await;
    let feed = app.all_events("").await;
    let js = jetstream(&url).await;
    let got = wait_stored(&js, &cfg.stream, feed.len(), Duration::from_secs(60)).await;
    wait_checkpoint_at_head(&app, Duration::from_secs(60)).await;
    let last = got.last().and_then(|m| m.msg_id.clone()).expect("last id");
    let cp = feed::load_checkpoint(&app.pool, "nats").await.expect("checkpoint");
    assert_eq!(
        Some(cp),
        feed::cursor_of(&app.pool, &last).await.expect("cursor"),
        "checkpoint = last acknowledged event"
    );
    let (s, health) = app.get("/health").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(health["subscribers"]["nats"]["behind"], 0, "{health}");
    app.stop().await;
    js.delete_stream(&cfg.stream).await.expect("delete stream");
}

#[tokio::test]
async fn a_restart_without_writes_republishes_nothing() {
    let url = nats_url();
    let cfg = own_config(url.clone());
    let mut app = TestApp::spawn_with(|c| c.nats = Some(cfg.clone())).await;
    write_some(&app, "d").await;
    let feed = app.all_events("").await;
    let js = jetstream(&url).await;
    wait_stored(&js, &cfg.stream, feed.len(), Duration::from_secs(60)).await;
    wait_checkpoint_at_head(&app, Duration::from_secs(60)).await;
    app.stop_workers_and_wait().await;
    let db_url = app.db_url.clone();
    drop(app);

    let (_client, mut live) = subscribe_all(&url, &cfg.subject_prefix).await;
    let app = TestApp::spawn_on_with(db_url, |c| c.nats = Some(cfg.clone())).await;
    let republished = tokio::time::timeout(Duration::from_secs(2), live.next()).await;
    assert!(
        republished.is_err(),
        "nothing republished after a restart: {republished:?}"
    );
    // And the restarted publisher carries on from its checkpoint.
    app.create_user("after-restart@example.com").await;
    let m = tokio::time::timeout(Duration::from_secs(60), live.next())
        .await
        .expect("the new event is published")
        .expect("message");
    assert!(m.subject.ends_with(".global.user.created"), "{}", m.subject);
    let feed = app.all_events("").await;
    let got = wait_stored(&js, &cfg.stream, feed.len(), Duration::from_secs(60)).await;
    assert_matches_feed(&app, &cfg, &got, &feed).await;
    app.stop().await;
    js.delete_stream(&cfg.stream).await.expect("delete stream");
}

/// A nats-server of the test's own, on a fixed port, with its store in a temp dir.
struct OwnNats {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
}

fn nats_server_binary() -> PathBuf {
    if let Ok(p) = std::env::var("KEYLEDGER_TEST_NATS_SERVER") {
        return PathBuf::from(p);
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("nats-server")).collect())
        .unwrap_or_default();
    candidates.push("/usr/sbin/nats-server".into());
    candidates.push("/usr/bin/nats-server".into());
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .expect("nats-server not found (set KEYLEDGER_TEST_NATS_SERVER or install it: apt-get install nats-server)")
}

impl OwnNats {
    fn new() -> OwnNats {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let store = std::env::temp_dir().join(format!("kl-nats-{}", ulid::Ulid::new()));
        OwnNats {
            child: None,
            port,
            store,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn start(&mut self) {
        let child = Command::new(nats_server_binary())
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while async_nats::connect(self.url()).await.is_err() {
            assert!(std::time::Instant::now() < deadline, "nats-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

#[tokio::test]
async fn events_written_while_nats_is_down_are_published_when_it_returns() {
    let mut nats = OwnNats::new();
    nats.start().await;
    let cfg = own_config(nats.url());
    let app = TestApp::spawn_with(|c| c.nats = Some(cfg.clone())).await;
    write_some(&app, "e").await;
    let before = app.all_events("").await;
    {
        let js = jetstream(&nats.url()).await;
        wait_stored(&js, &cfg.stream, before.len(), Duration::from_secs(60)).await;
    }
    wait_checkpoint_at_head(&app, Duration::from_secs(60)).await;

    nats.stop();
    write_some(&app, "f").await;
    app.create_user("while-down@example.com").await;
    // The writes have been projected into the feed (read-your-writes), and nothing can be
    // published: the publisher is behind.
    let (s, health) = app.get("/health").await;
    assert_eq!(s, StatusCode::OK);
    let behind = health["subscribers"]["nats"]["behind"].as_i64().unwrap_or(0);
    assert!(behind > 0, "the publisher is behind while NATS is down: {health}");

    nats.start().await;
    let feed = app.all_events("").await;
    assert!(feed.len() > before.len());
    let js = jetstream(&nats.url()).await;
    let got = wait_stored(&js, &cfg.stream, feed.len(), Duration::from_secs(30)).await;
    assert_matches_feed(&app, &cfg, &got, &feed).await;
    wait_checkpoint_at_head(&app, Duration::from_secs(60)).await;
    app.stop().await;
}

#[tokio::test]
async fn two_servers_on_one_database_publish_each_event_once() {
    let url = nats_url();
    let cfg = own_config(url.clone());
    let (_client, mut live) = subscribe_all(&url, &cfg.subject_prefix).await;
    let a = TestApp::spawn_with(|c| c.nats = Some(cfg.clone())).await;
    let b = TestApp::spawn_on_with(a.db_url.clone(), |c| c.nats = Some(cfg.clone())).await;
    write_some(&a, "g").await;
    write_some(&b, "h").await;
    let feed = a.all_events("").await;
    let js = jetstream(&url).await;
    wait_stored(&js, &cfg.stream, feed.len(), Duration::from_secs(60)).await;
    let seen = msg_ids(&mut live, feed.len(), Duration::from_millis(1000)).await;
    assert_eq!(
        seen,
        feed.iter().map(|e| Some(id_of(e))).collect::<Vec<_>>(),
        "one publisher: each event once, in order"
    );
    b.stop().await;
    a.stop().await;
    js.delete_stream(&cfg.stream).await.expect("delete stream");
}

#[tokio::test]
async fn projections_status_lists_the_publisher_and_its_lag() {
    let url = nats_url();
    let cfg = own_config(url.clone());
    let mut app = TestApp::spawn_with(|c| c.nats = Some(cfg.clone())).await;
    write_some(&app, "i").await;
    wait_checkpoint_at_head(&app, Duration::from_secs(60)).await;
    app.stop_workers_and_wait().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyledger"))
        .args(["projections", "status"])
        .env("DATABASE_URL", &app.db_url)
        .output()
        .expect("run keyledger projections status");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("nats "))
        .unwrap_or_else(|| panic!("no nats line in:\n{text}"));
    assert!(line.trim_end().ends_with(" 0"), "caught up: {line}");
    assert!(text.contains("subscriber"), "{text}");
    let js = jetstream(&url).await;
    js.delete_stream(&cfg.stream).await.expect("delete stream");
}

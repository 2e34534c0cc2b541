//! Webhooks: the endpoints API, and delivery to real HTTP receivers started here (failing,
//! down, hanging, killed server), with every signature checked.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxStatus};
use axum::routing::post;
use axum::Router;
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Sha256;

use keyledger_api::ssrf::WebhookAllow;

use crate::helpers::{assert_error, assert_rejected, id_of, TestApp};

/// What a receiver answers to its n-th request (0-based).
#[derive(Clone, Copy, Debug)]
enum Answer {
    Status(u16),
    Hang,
}

#[derive(Clone, Debug)]
struct Received {
    body: String,
    signature: String,
}

impl Received {
    fn event(&self) -> Value {
        serde_json::from_str(&self.body).expect("delivered body is JSON")
    }
    fn event_id(&self) -> String {
        self.event()["id"].as_str().expect("event id").to_string()
    }
}

type Script = Arc<dyn Fn(usize) -> Answer + Send + Sync>;

#[derive(Clone)]
struct ReceiverState {
    got: Arc<Mutex<Vec<Received>>>,
    script: Script,
}

/// A webhook receiver on loopback that records every request.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

async fn receive(State(st): State<ReceiverState>, headers: HeaderMap, body: String) -> AxStatus {
    let n = {
        let mut got = st.got.lock().expect("lock");
        got.push(Received {
            body,
            signature: headers
                .get("workos-signature")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
        });
        got.len() - 1
    };
    match (st.script)(n) {
        Answer::Status(s) => AxStatus::from_u16(s).expect("status"),
        Answer::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            AxStatus::OK
        }
    }
}

impl Receiver {
    async fn start(script: impl Fn(usize) -> Answer + Send + Sync + 'static) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::serve(listener, Arc::new(script)).await
    }

    async fn start_on(port: u16, script: impl Fn(usize) -> Answer + Send + Sync + 'static) -> Receiver {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        Self::serve(listener, Arc::new(script)).await
    }

    async fn serve(listener: tokio::net::TcpListener, script: Script) -> Receiver {
        let addr = listener.local_addr().expect("addr");
        let got = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new().route("/hook", post(receive)).with_state(ReceiverState {
            got: got.clone(),
            script,
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url: format!("http://{addr}/hook"),
            got,
            task,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }

    /// Waits until `pred` holds for the requests received so far.
    async fn wait_until(&self, what: &str, within: Duration, pred: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.received();
            if pred(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not reached within {within:?}; received {:?}",
                got.iter().map(Received::event_id).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Checks a `WorkOS-Signature` the way the SDKs do: `t=<ms>, v1=<hex HMAC-SHA256(secret, "t.body")>`.
fn assert_signed(r: &Received, secret: &str) {
    let (t, v1) = r
        .signature
        .split_once(", ")
        .unwrap_or_else(|| panic!("signature format: {:?}", r.signature));
    let t = t.strip_prefix("t=").expect("t=");
    let v1 = v1.strip_prefix("v1=").expect("v1=");
    let ms: i64 = t.parse().expect("t is unix milliseconds");
    let now = chrono::Utc::now().timestamp_millis();
    assert!((now - ms).abs() < 180_000, "timestamp {ms} is recent (now {now})");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{t}.{}", r.body).as_bytes());
    assert_eq!(v1, hex::encode(mac.finalize().into_bytes()), "signature of {}", r.body);
}

/// Distinct event ids in order of first arrival.
fn first_arrivals(got: &[Received]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in got {
        let id = r.event_id();
        if !out.contains(&id) {
            out.push(id);
        }
    }
    out
}

async fn create_endpoint(app: &TestApp, url: &str, events: &[&str]) -> Value {
    let (s, body) = app
        .post("/webhook_endpoints", json!({ "endpoint_url": url, "events": events }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "create endpoint: {body}");
    body
}

/// Ids of the feed's events with these names, in feed order.
async fn feed_ids(app: &TestApp, names: &[&str]) -> Vec<String> {
    app.all_events("")
        .await
        .into_iter()
        .filter(|e| names.contains(&e["event"].as_str().unwrap_or_default()))
        .map(|e| id_of(&e))
        .collect()
}

fn fast(c: &mut keyledger_api::Config) {
    c.webhook_retry_base = Duration::from_millis(20);
    c.webhook_timeout = Duration::from_secs(2);
}

const ALL: &[&str] = &["user.created", "user.updated", "user.deleted", "organization.created"];

#[tokio::test]
async fn endpoints_are_created_listed_updated_and_deleted_in_workos_shape() {
    let app = TestApp::spawn().await;
    let ep = create_endpoint(&app, "https://hooks.example.com/a", &["user.created", "user.created"]).await;
    let id = id_of(&ep);
    assert!(id.starts_with("we_"), "{ep}");
    assert_eq!(ep["object"], "webhook_endpoint");
    assert_eq!(ep["endpoint_url"], "https://hooks.example.com/a");
    assert_eq!(ep["status"], "enabled");
    assert_eq!(ep["events"], json!(["user.created"]), "duplicates collapse");
    let secret = ep["secret"].as_str().expect("secret").to_string();
    assert!(secret.starts_with("whsec_") && secret.len() > 30, "{secret}");
    assert!(ep["created_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{ep}");
    assert!(ep["updated_at"].is_string(), "{ep}");

    let (s, list) = app.get("/webhook_endpoints").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"][0]["id"], id.as_str());
    assert_eq!(list["data"][0]["secret"], secret.as_str(), "WorkOS lists the secret");

    let (s, up) = app
        .request(
            Method::PATCH,
            &format!("/webhook_endpoints/{id}"),
            Some(json!({ "endpoint_url": "https://hooks.example.com/b", "events": ["organization.created"], "status": "disabled" })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{up}");
    assert_eq!(up["endpoint_url"], "https://hooks.example.com/b");
    assert_eq!(up["events"], json!(["organization.created"]));
    assert_eq!(up["status"], "disabled");
    assert_eq!(up["secret"], secret.as_str(), "the secret stays");

    // The URL is free again after the change; taking a used one is a 409.
    create_endpoint(&app, "https://hooks.example.com/a", &["user.created"]).await;
    assert_rejected(
        &app,
        Method::POST,
        "/webhook_endpoints",
        Some(json!({ "endpoint_url": "https://hooks.example.com/b", "events": ["user.created"] })),
        (StatusCode::CONFLICT, "duplicate_endpoint"),
        "duplicate URL",
    )
    .await;

    // Every change is an event of the log, and none carries the secret.
    let rows: Vec<(String, Value)> = sqlx::query_as(
        "select event_type, payload from event where aggregate_type = 'WebhookEndpoint' and aggregate_id = $1 order by position",
    )
    .bind(&id)
    .fetch_all(&app.pool)
    .await
    .expect("events");
    let types: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        types,
        vec![
            "WebhookEndpointCreated",
            "WebhookEndpointUpdated",
            "WebhookEndpointDisabled"
        ]
    );
    let (all_payloads,): (String,) =
        sqlx::query_as("select coalesce(string_agg(payload::text || metadata::text, ' '), '') from event")
            .fetch_one(&app.pool)
            .await
            .expect("payloads");
    assert!(!all_payloads.contains(&secret), "the secret is never in the log");

    let (s, _) = app.delete(&format!("/webhook_endpoints/{id}")).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, list) = app.get("/webhook_endpoints").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1), "{list}");
    let (s, body) = app.delete(&format!("/webhook_endpoints/{id}")).await;
    assert_error(s, &body, StatusCode::NOT_FOUND, "entity_not_found", "delete twice");
    app.stop().await;
}

#[tokio::test]
async fn bad_endpoint_input_is_refused_with_4xx_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let ep = create_endpoint(&app, "http://127.0.0.1:9/hook", &["user.created"]).await;
    let id = id_of(&ep);
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    type Case<'a> = (&'a str, Method, String, Option<Value>, (StatusCode, &'a str));
    let cases: Vec<Case> = vec![
        (
            "relative URL",
            Method::POST,
            "/webhook_endpoints".into(),
            Some(json!({"endpoint_url": "/hook", "events": ["user.created"]})),
            (unprocessable, "invalid_request_parameters/invalid_url"),
        ),
        (
            "not a URL",
            Method::POST,
            "/webhook_endpoints".into(),
            Some(json!({"endpoint_url": "not a url", "events": ["user.created"]})),
            (unprocessable, "invalid_request_parameters/invalid_url"),
        ),
        (
            "ftp URL",
            Method::POST,
            "/webhook_endpoints".into(),
            Some(json!({"endpoint_url": "ftp://x.example/h", "events": ["user.created"]})),
            (unprocessable, "invalid_request_parameters/invalid_url"),
        ),
        (
            "credentials in URL",
            Method::POST,
            "/webhook_endpoints".into(),
            Some(json!({"endpoint_url": "https://u:p@x.example/h", "events": ["user.created"]})),
            (unprocessable, "invalid_request_parameters/invalid_url"),
        ),
        (
            "unknown event",
            Method::POST,
            "/webhook_endpoints".into(),
            Some(json!({"endpoint_url": "https://x.example/h", "events": ["user.created", "dsync.nope"]})),
            (unprocessable, "invalid_request_parameters/unknown_event_type"),
        ),
        (
            "no events",
            Method::POST,
            "/webhook_endpoints".into(),
            Some(json!({"endpoint_url": "https://x.example/h", "events": []})),
            (unprocessable, "invalid_request_parameters/invalid_events"),
        ),
        (
            "events not a list",
            Method::POST,
            "/webhook_endpoints".into(),
            Some(json!({"endpoint_url": "https://x.example/h", "events": "user.created"})),
            (unprocessable, "invalid_request_parameters/invalid_type"),
        ),
        (
            "URL not a string",
            Method::POST,
            "/webhook_endpoints".into(),
            Some(json!({"endpoint_url": 5, "events": ["user.created"]})),
            (unprocessable, "invalid_request_parameters/invalid_type"),
        ),
        (
            "missing URL",
            Method::POST,
            "/webhook_endpoints".into(),
            Some(json!({"events": ["user.created"]})),
            (unprocessable, "invalid_request_parameters/required"),
        ),
        (
            "unknown field",
            Method::POST,
            "/webhook_endpoints".into(),
            Some(json!({"endpoint_url": "https://x.example/h", "events": ["user.created"], "secret": "mine"})),
            (unprocessable, "invalid_request_parameters/unknown_field"),
        ),
        (
            "bad status",
            Method::PATCH,
            format!("/webhook_endpoints/{id}"),
            Some(json!({"status": "paused"})),
            (unprocessable, "invalid_request_parameters/invalid_status"),
        ),
        (
            "bad URL on update",
            Method::PATCH,
            format!("/webhook_endpoints/{id}"),
            Some(json!({"endpoint_url": "mailto:a@b.c"})),
            (unprocessable, "invalid_request_parameters/invalid_url"),
        ),
        (
            "unknown event on update",
            Method::PATCH,
            format!("/webhook_endpoints/{id}"),
            Some(json!({"events": ["user.exploded"]})),
            (unprocessable, "invalid_request_parameters/unknown_event_type"),
        ),
        (
            "unknown id on update",
            Method::PATCH,
            "/webhook_endpoints/we_nope".into(),
            Some(json!({"status": "disabled"})),
            (StatusCode::NOT_FOUND, "entity_not_found"),
        ),
        (
            "unknown id on delete",
            Method::DELETE,
            "/webhook_endpoints/we_nope".into(),
            None,
            (StatusCode::NOT_FOUND, "entity_not_found"),
        ),
        (
            "unknown id on deliveries",
            Method::GET,
            "/webhook_endpoints/we_nope/deliveries".into(),
            None,
            (StatusCode::NOT_FOUND, "entity_not_found"),
        ),
        (
            "unknown id on replay",
            Method::POST,
            "/webhook_endpoints/we_nope/replay".into(),
            Some(json!({"after": "event_x"})),
            (StatusCode::NOT_FOUND, "entity_not_found"),
        ),
        (
            "replay after unknown event",
            Method::POST,
            format!("/webhook_endpoints/{id}/replay"),
            Some(json!({"after": "event_nope"})),
            (unprocessable, "invalid_request_parameters/invalid_cursor"),
        ),
        (
            "replay without after",
            Method::POST,
            format!("/webhook_endpoints/{id}/replay"),
            Some(json!({})),
            (unprocessable, "invalid_request_parameters/required"),
        ),
        (
            "bad limit on deliveries",
            Method::GET,
            format!("/webhook_endpoints/{id}/deliveries?limit=0"),
            None,
            (unprocessable, "invalid_request_parameters/invalid_limit"),
        ),
    ];
    for (ctx, m, path, body, want) in cases {
        assert_rejected(&app, m, &path, body, want, ctx).await;
    }
    let (s, b) = app
        .request_with_key(Method::GET, "/webhook_endpoints", None, None)
        .await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "unauthorized", "no key");
    let (_, ep2) = app.get("/webhook_endpoints").await;
    assert_eq!(ep2["data"][0], ep, "the endpoint is unchanged");
    app.stop().await;
}

#[tokio::test]
async fn a_receiver_that_fails_first_gets_every_event_in_order_and_signed() {
    let app = TestApp::spawn_with(fast).await;
    let rx = Receiver::start(|n| {
        if n < 3 {
            Answer::Status(500)
        } else {
            Answer::Status(204)
        }
    })
    .await;
    let ep = create_endpoint(&app, &rx.url, &["user.created"]).await;
    let secret = ep["secret"].as_str().expect("secret").to_string();
    for i in 0..4 {
        app.create_user(&format!("fail{i}@example.com")).await;
    }
    let want = feed_ids(&app, &["user.created"]).await;
    assert_eq!(want.len(), 4);
    let got = rx
        .wait_until("all four delivered", Duration::from_secs(60), |g| {
            first_arrivals(g).len() == 4 && g.len() == 7
        })
        .await;
    assert_eq!(first_arrivals(&got), want, "delivered in log order");
    // The first event was tried three times and failed, then everything went through once.
    let ids: Vec<String> = got.iter().map(Received::event_id).collect();
    assert_eq!(
        ids[..4],
        [want[0].clone(), want[0].clone(), want[0].clone(), want[0].clone()]
    );
    for r in &got {
        assert_signed(r, &secret);
        assert_eq!(r.event()["object"], "event");
    }
    // The delivery log has every attempt.
    let id = id_of(&ep);
    let log = wait_deliveries(&app, &id, 7).await;
    let failed: Vec<&Value> = log.iter().filter(|d| d["status"] == "failed").collect();
    assert_eq!(failed.len(), 3, "{log:?}");
    assert!(failed
        .iter()
        .all(|d| d["status_code"] == 500 && d["event_id"] == want[0].as_str()));
    let attempts: Vec<i64> = log
        .iter()
        .filter(|d| d["event_id"] == want[0].as_str())
        .filter_map(|d| d["attempt"].as_i64())
        .collect();
    assert_eq!(attempts, vec![1, 2, 3, 4], "oldest first with order=asc");
    assert!(log
        .iter()
        .all(|d| d["object"] == "webhook_delivery" && d["duration_ms"].is_i64()));
    // Paginated like every list.
    let (s, page) = app
        .get(&format!("/webhook_endpoints/{id}/deliveries?limit=2&order=asc"))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(page["data"].as_array().map(Vec::len), Some(2));
    let after = page["list_metadata"]["after"].as_str().expect("after cursor");
    let (_, next) = app
        .get(&format!(
            "/webhook_endpoints/{id}/deliveries?limit=2&order=asc&after={after}"
        ))
        .await;
    assert_eq!(next["data"][0]["id"], log[2]["id"], "{next}");
    app.stop().await;
}

async fn wait_deliveries(app: &TestApp, id: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (s, body) = app
            .get(&format!("/webhook_endpoints/{id}/deliveries?limit=100&order=asc"))
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let data = body["data"].as_array().cloned().unwrap_or_default();
        if data.len() >= n {
            return data;
        }
        assert!(Instant::now() < deadline, "{n} deliveries logged: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_receiver_that_is_down_for_a_while_gets_everything_once_it_is_up() {
    let app = TestApp::spawn_with(|c| {
        fast(c);
        c.webhook_retry_base = Duration::from_millis(5);
    })
    .await;
    let port = crate::binary::free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let ep = create_endpoint(&app, &url, ALL).await;
    for i in 0..3 {
        app.create_user(&format!("down{i}@example.com")).await;
    }
    // Attempts fail with the port closed.
    let id = id_of(&ep);
    let log = wait_deliveries(&app, &id, 2).await;
    assert!(
        log.iter()
            .all(|d| d["status"] == "failed" && d["status_code"].is_null()),
        "{log:?}"
    );
    let rx = Receiver::start_on(port, |_| Answer::Status(200)).await;
    let want = feed_ids(&app, ALL).await;
    let got = rx
        .wait_until("all delivered", Duration::from_secs(60), |g| {
            first_arrivals(g).len() == 3
        })
        .await;
    assert_eq!(first_arrivals(&got), want);
    for r in &got {
        assert_signed(r, ep["secret"].as_str().expect("secret"));
    }
    app.stop().await;
}

#[tokio::test]
async fn a_hanging_receiver_does_not_delay_another_endpoint() {
    // The hanging receiver's first request never ends within the test: everything the healthy
    // endpoint gets, it gets while the other's delivery is still in flight.
    let app = TestApp::spawn_with(|c| {
        c.webhook_timeout = Duration::from_secs(3600);
    })
    .await;
    let hanging = Receiver::start(|_| Answer::Hang).await;
    let healthy = Receiver::start(|_| Answer::Status(200)).await;
    create_endpoint(&app, &hanging.url, ALL).await;
    create_endpoint(&app, &healthy.url, ALL).await;
    for i in 0..5 {
        app.create_user(&format!("hang{i}@example.com")).await;
    }
    let want = feed_ids(&app, ALL).await;
    hanging
        .wait_until("the hanging endpoint's first request", Duration::from_secs(60), |g| {
            g.len() == 1
        })
        .await;
    let got = healthy
        .wait_until("the healthy endpoint got all", Duration::from_secs(30), |g| {
            first_arrivals(g).len() == 5
        })
        .await;
    assert_eq!(first_arrivals(&got), want);
    assert_eq!(
        hanging.received().len(),
        1,
        "the hanging one still holds its first event"
    );
    app.stop().await;
}

#[tokio::test]
async fn endpoints_get_only_their_events_and_only_those_after_their_creation() {
    let app = TestApp::spawn_with(fast).await;
    app.create_organization("Before", json!([])).await;
    let orgs = Receiver::start(|_| Answer::Status(200)).await;
    let users = Receiver::start(|_| Answer::Status(200)).await;
    let orgs_ep = create_endpoint(&app, &orgs.url, &["organization.created"]).await;
    create_endpoint(&app, &users.url, &["user.created", "user.deleted"]).await;
    let u = app.create_user("filter@example.com").await;
    app.create_organization("After", json!([])).await;
    let (s, body) = app.delete(&format!("/user_management/users/{}", id_of(&u))).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let got = users
        .wait_until("user events", Duration::from_secs(60), |g| g.len() == 2)
        .await;
    let names: Vec<String> = got
        .iter()
        .map(|r| r.event()["event"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(names, vec!["user.created", "user.deleted"]);
    let got = orgs
        .wait_until("organization events", Duration::from_secs(60), |g| !g.is_empty())
        .await;
    // Once its checkpoint is at the head of the feed, the endpoint has had every event it wants.
    wait_endpoint_at_head(&app, &id_of(&orgs_ep)).await;
    let got_now = orgs.received();
    assert_eq!(got_now.len(), 1, "only the organization created after the endpoint");
    assert_eq!(got[0].event()["data"]["name"], "After");
    app.stop().await;
}

#[tokio::test]
async fn an_endpoint_moves_its_checkpoint_past_events_it_does_not_want() {
    // A filtered endpoint must not stay parked before the events it skips (it would rescan them
    // on every wake-up): with only unwanted events, its lag drops to zero with nothing delivered.
    let app = TestApp::spawn_with(fast).await;
    let rx = Receiver::start(|_| Answer::Status(200)).await;
    let ep = create_endpoint(&app, &rx.url, &["organization.deleted"]).await;
    for i in 0..5 {
        app.create_user(&format!("unwanted{i}@example.com")).await;
    }
    wait_endpoint_at_head(&app, &id_of(&ep)).await;
    assert!(rx.received().is_empty(), "nothing was delivered");
    let (s, log) = app.get(&format!("/webhook_endpoints/{}/deliveries", id_of(&ep))).await;
    assert_eq!(s, StatusCode::OK, "{log}");
    assert_eq!(log["data"], json!([]), "skipped events leave no delivery log rows");
    app.stop().await;
}

/// Waits until the endpoint's checkpoint is at the head of the feed (`/health` lag 0): it has
/// delivered or moved past every event so far.
async fn wait_endpoint_at_head(app: &TestApp, id: &str) {
    let name = format!("webhook:{id}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (s, health) = app.get("/health").await;
        assert_eq!(s, StatusCode::OK, "{health}");
        if health["subscribers"][&name]["behind"] == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the endpoint's checkpoint stayed behind the feed: {health}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn replay_redelivers_the_events_after_the_given_one() {
    let app = TestApp::spawn_with(fast).await;
    let rx = Receiver::start(|_| Answer::Status(200)).await;
    let ep = create_endpoint(&app, &rx.url, ALL).await;
    let id = id_of(&ep);
    for i in 0..3 {
        app.create_user(&format!("replay{i}@example.com")).await;
    }
    let want = feed_ids(&app, ALL).await;
    rx.wait_until("first pass", Duration::from_secs(60), |g| g.len() == 3)
        .await;
    let (s, body) = app
        .post(&format!("/webhook_endpoints/{id}/replay"), json!({ "after": want[0] }))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    let got = rx
        .wait_until("replayed", Duration::from_secs(60), |g| g.len() == 5)
        .await;
    let ids: Vec<String> = got.iter().map(Received::event_id).collect();
    assert_eq!(
        ids,
        vec![
            want[0].clone(),
            want[1].clone(),
            want[2].clone(),
            want[1].clone(),
            want[2].clone()
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn an_endpoint_failing_past_the_rule_is_disabled_by_an_event_and_resumes_when_enabled() {
    let app = TestApp::spawn_with(|c| {
        fast(c);
        c.webhook_max_attempts = 3;
    })
    .await;
    let healthy = Arc::new(Mutex::new(false));
    let h = healthy.clone();
    let rx = Receiver::start(move |_| {
        if *h.lock().expect("lock") {
            Answer::Status(200)
        } else {
            Answer::Status(503)
        }
    })
    .await;
    let ep = create_endpoint(&app, &rx.url, ALL).await;
    let id = id_of(&ep);
    app.create_user("disable@example.com").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, list) = app.get("/webhook_endpoints").await;
        if list["data"][0]["status"] == "disabled" {
            break;
        }
        assert!(Instant::now() < deadline, "not disabled: {list}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (payload, meta): (Value, Value) = sqlx::query_as(
        "select payload, metadata from event where aggregate_id = $1 and event_type = 'WebhookEndpointDisabled'",
    )
    .bind(&id)
    .fetch_one(&app.pool)
    .await
    .expect("the disabling event is in the log");
    assert_eq!(payload["WebhookEndpointDisabled"]["automatic"], true, "{payload}");
    assert!(payload["WebhookEndpointDisabled"]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("3 consecutive")));
    assert_eq!(meta["actor_id"], "system");
    // No attempt after disabling: checked here, and again below, where a fourth failed attempt
    // would come before the redelivery.
    assert_eq!(rx.received().len(), 3, "no attempt after disabling");

    // Re-enabled, it resumes with the same event from its checkpoint.
    *healthy.lock().expect("lock") = true;
    app.create_user("later@example.com").await;
    let (s, body) = app
        .request(
            Method::PATCH,
            &format!("/webhook_endpoints/{id}"),
            Some(json!({ "status": "enabled" })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let want = feed_ids(&app, ALL).await;
    let got = rx
        .wait_until("resumed", Duration::from_secs(60), |g| g.len() == 5)
        .await;
    let ids: Vec<String> = got.iter().map(Received::event_id).collect();
    assert_eq!(ids[2..], [want[0].clone(), want[0].clone(), want[1].clone()]);
    let log = wait_deliveries(&app, &id, 5).await;
    assert_eq!(log[3]["attempt"], 1, "re-enabling starts a new failure run: {log:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_delivery_loses_no_event_and_only_repeats_the_one_in_flight() {
    let db_url = crate::helpers::fresh_database().await;
    let key = "sk_test_webhook_kill_0123456789";
    let envs = [
        ("DATABASE_URL", db_url.as_str()),
        ("KEYLEDGER_BOOTSTRAP_API_KEY", key),
        ("KEYLEDGER_WEBHOOK_ALLOW", "127.0.0.1/32,::1/128"),
    ];
    // The first request hangs until the server is killed; every later one succeeds.
    let rx = Receiver::start(|n| if n == 0 { Answer::Hang } else { Answer::Status(200) }).await;
    let http = reqwest::Client::new();
    let (mut child, base) = crate::binary::serve(&envs, false).await;
    let r = http
        .post(format!("{base}/webhook_endpoints"))
        .bearer_auth(key)
        .json(&json!({ "endpoint_url": rx.url, "events": ["user.created"] }))
        .send()
        .await
        .expect("create endpoint");
    assert_eq!(r.status(), StatusCode::CREATED);
    let ep: Value = r.json().await.expect("json");
    let create_users = |base: String, range: std::ops::Range<u32>| {
        let http = http.clone();
        async move {
            for i in range {
                let r = http
                    .post(format!("{base}/user_management/users"))
                    .bearer_auth(key)
                    .json(&json!({ "email": format!("kill{i}@example.com") }))
                    .send()
                    .await
                    .expect("create user");
                assert_eq!(r.status(), StatusCode::CREATED);
            }
        }
    };
    create_users(base.clone(), 0..5).await;
    rx.wait_until("a delivery in flight", Duration::from_secs(60), |g| g.len() == 1)
        .await;
    child.kill().expect("SIGKILL");
    let _ = child.wait();

    let (mut child, base) = crate::binary::serve(&envs, false).await;
    create_users(base.clone(), 5..8).await;
    let pool = keyledger_api::connect(&db_url).await.expect("connect");
    let want: Vec<String> = sqlx::query_scalar(
        "select id from event_feed where event = 'user.created' order by transaction_id, position, seq",
    )
    .fetch_all(&pool)
    .await
    .expect("feed");
    let got = rx
        .wait_until("all delivered after the restart", Duration::from_secs(60), |g| {
            first_arrivals(g).len() == 8
        })
        .await;
    assert_eq!(want.len(), 8);
    assert_eq!(first_arrivals(&got), want, "no event lost, in order");
    // Only the event in flight at the kill may come twice.
    let ids: Vec<String> = got.iter().map(Received::event_id).collect();
    assert_eq!(ids.len(), 9, "{ids:?}");
    assert_eq!(ids[0], ids[1], "the in-flight event is redelivered first");
    for r in &got {
        assert_signed(r, ep["secret"].as_str().expect("secret"));
    }
    crate::binary::sigterm_and_wait(&mut child);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_two_servers_one_delivers_and_the_other_takes_over_when_it_stops() {
    let first = TestApp::spawn_with(fast).await;
    let leases = crate::helpers::lease_keys();
    crate::helpers::wait_leases_held_by(&first.pool, &leases, &first.name).await;
    let second = TestApp::spawn_on(first.db_url.clone()).await;
    let rx = Receiver::start(|_| Answer::Status(200)).await;
    create_endpoint(&first, &rx.url, &["user.created"]).await;
    for i in 0..6 {
        let app = if i % 2 == 0 { &first } else { &second };
        app.create_user(&format!("two{i}@example.com")).await;
    }
    rx.wait_until("six delivered", Duration::from_secs(60), |g| g.len() >= 6)
        .await;
    let held = crate::helpers::lease_holders(&second.pool, &leases).await;
    assert!(
        held.iter().all(|(_, h)| h.as_deref() == Some(first.name.as_str())),
        "the first server delivers and projects until it stops: {held:?}"
    );
    first.stop().await;
    crate::helpers::wait_leases_held_by(&second.pool, &leases, &second.name).await;
    for i in 6..9 {
        second.create_user(&format!("two{i}@example.com")).await;
    }
    let want = feed_ids(&second, &["user.created"]).await;
    let got = rx
        .wait_until(
            "the second server delivers after the first stopped",
            Duration::from_secs(60),
            |g| first_arrivals(g).len() == 9,
        )
        .await;
    assert_eq!(first_arrivals(&got), want, "in log order, nothing lost");
    assert_eq!(got.len(), 9, "one dispatcher at a time: no event delivered twice");
    second.stop().await;
}

/// The guard with no allow-list at all, as a server starts by default.
fn no_allow_list(c: &mut keyledger_api::Config) {
    fast(c);
    c.webhook_allow = WebhookAllow::default();
}

/// The port of a receiver's URL.
fn port_of(rx: &Receiver) -> u16 {
    reqwest::Url::parse(&rx.url)
        .ok()
        .and_then(|u| u.port())
        .expect("receiver port")
}

async fn assert_blocked_url(app: &TestApp, url: &str) {
    let before = app.log_len().await;
    let (s, b) = app
        .post(
            "/webhook_endpoints",
            json!({ "endpoint_url": url, "events": ["user.created"] }),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {b}");
    assert_eq!(b["code"], "invalid_request_parameters", "{url}: {b}");
    assert_eq!(b["errors"][0]["field"], "endpoint_url", "{url}: {b}");
    assert_eq!(b["errors"][0]["code"], "blocked_url", "{url}: {b}");
    assert_eq!(app.log_len().await, before, "{url}: the log changed");
}

#[tokio::test]
async fn by_default_endpoints_at_non_public_literals_or_localhost_are_refused_with_422() {
    let app = TestApp::spawn_with(no_allow_list).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://[::1]/",
        "http://localhost:8080/hook",
        "http://api.localhost/",
        "http://169.254.169.254/latest/meta-data",
        "http://[fd00:ec2::254]/latest/meta-data",
        "http://10.0.0.7/hook",
        "http://100.64.0.1/",
        "http://[::ffff:192.168.1.1]/",
        "http://[::127.0.0.1]/",
        "http://[2002:a00:1::]/",
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[64:ff9b:1::a00:1]/",
        "http://[ff02::1]/",
        "http://0/",
        "http://2130706433/",
    ] {
        assert_blocked_url(&app, url).await;
    }
    // Host names are only checked at delivery; an update to a blocked literal is refused too.
    let ep = create_endpoint(&app, "https://hooks.example.com/a", &["user.created"]).await;
    assert_rejected(
        &app,
        Method::PATCH,
        &format!("/webhook_endpoints/{}", id_of(&ep)),
        Some(json!({ "endpoint_url": "http://127.0.0.1:9/hook" })),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters/blocked_url",
        ),
        "update to loopback",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn an_allow_list_of_loopback_opens_loopback_only() {
    // The tests' own setting: 127.0.0.1/32 and ::1/128.
    let app = TestApp::spawn_with(fast).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://[::1]:9/hook",
        "http://localhost:9/hook",
    ] {
        create_endpoint(&app, url, &["user.created"]).await;
    }
    for url in [
        "http://127.0.0.2:9/hook",
        "http://10.0.0.1/",
        "http://169.254.169.254/",
        "http://[fd00:ec2::254]/",
        "http://[2002:7f00:1::]/",
        "http://[64:ff9b::7f00:1]/",
    ] {
        assert_blocked_url(&app, url).await;
    }
    app.stop().await;
}

/// What the server's guarded resolver, pointed at the app's own DNS server, returns for `host`:
/// the addresses a delivery may connect to, or `None` when it refuses them all. Nothing connects.
async fn guarded_lookup(app: &TestApp, allow: &WebhookAllow, host: &str) -> Option<Vec<std::net::IpAddr>> {
    use reqwest::dns::Resolve;
    let resolver = keyledger_api::ssrf::GuardedResolver::new(Some(app.dns.addr()), allow.clone());
    let name: reqwest::dns::Name = host.parse().expect("name");
    match resolver.resolve(name).await {
        Ok(addrs) => Some(addrs.map(|a| a.ip()).collect()),
        Err(e) => {
            assert!(keyledger_api::ssrf::is_blocked_error(&*e), "{host}: {e}");
            None
        }
    }
}

#[tokio::test]
async fn names_resolving_to_private_metadata_or_6to4_addresses_are_refused_before_connecting() {
    let app = TestApp::spawn_with(|c| {
        fast(c);
        c.webhook_max_attempts = 2;
    })
    .await;
    let rx = Receiver::start(|_| Answer::Status(200)).await;
    let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
    let blocked = [
        ("private.hooks.test", vec![ip("10.0.0.1")]),
        ("metadata.hooks.test", vec![ip("169.254.169.254")]),
        ("sixtofour.hooks.test", vec![ip("2002:a00:1::")]),
        (
            "several.hooks.test",
            vec![ip("10.0.0.1"), ip("fd00:ec2::254"), ip("2001::1")],
        ),
    ];
    for (name, addrs) in &blocked {
        app.dns.set_addrs(name, addrs.clone());
    }
    app.dns.set_addrs("allowed.hooks.test", vec![ip("127.0.0.1")]);
    app.dns
        .set_addrs("mixed.hooks.test", vec![ip("10.0.0.1"), ip("127.0.0.1")]);
    // First, without any request: the resolver the dispatcher uses hands out no blocked address.
    let allow = WebhookAllow::loopback();
    for (name, _) in &blocked {
        assert_eq!(guarded_lookup(&app, &allow, name).await, None, "{name}");
    }
    let loopback = Some(vec![ip("127.0.0.1")]);
    assert_eq!(guarded_lookup(&app, &allow, "allowed.hooks.test").await, loopback);
    assert_eq!(guarded_lookup(&app, &allow, "mixed.hooks.test").await, loopback);

    // Then deliveries: names are accepted at creation (DNS can change) and refused at delivery.
    let port = port_of(&rx);
    let mut refused = Vec::new();
    for (name, _) in &blocked {
        let ep = create_endpoint(&app, &format!("http://{name}:{port}/hook"), &["user.created"]).await;
        refused.push(id_of(&ep));
    }
    for name in ["allowed.hooks.test", "mixed.hooks.test"] {
        create_endpoint(&app, &format!("http://{name}:{port}/hook"), &["user.created"]).await;
    }
    app.create_user("resolved@example.com").await;
    for id in &refused {
        let log = wait_deliveries(&app, id, 2).await;
        assert!(
            log.iter()
                .all(|d| d["status"] == "failed" && d["error"] == "blocked address" && d["status_code"].is_null()),
            "{id}: {log:?}"
        );
    }
    // The allowed names got the event through the same resolver, exactly once each.
    let got = rx
        .wait_until("the allowed names' deliveries", Duration::from_secs(60), |g| {
            g.len() >= 2
        })
        .await;
    assert_eq!(got.len(), 2, "only the two allowed endpoints reached the receiver");
    app.stop().await;
    assert_eq!(rx.received().len(), 2, "nothing else reached the receiver");
}

#[tokio::test]
async fn without_an_allow_list_deliveries_to_loopback_names_and_literals_fail_as_blocked() {
    // Created while loopback is allowed ...
    let first = TestApp::spawn_with(fast).await;
    let rx = Receiver::start(|_| Answer::Status(200)).await;
    let port = port_of(&rx);
    let db_url = first.db_url.clone();
    let urls = [
        format!("http://localhost:{port}/hook"),
        rx.url.clone(),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        format!("http://loopback.hooks.test:{port}/hook"),
    ];
    let mut endpoints = Vec::new();
    for url in &urls {
        endpoints.push(create_endpoint(&first, url, &["user.created"]).await);
    }
    first.stop().await;
    // ... then delivered by a server with no allow-list: nothing reaches the receiver.
    let app = TestApp::spawn_on_with(db_url, |c| {
        no_allow_list(c);
        c.webhook_max_attempts = 3;
    })
    .await;
    app.dns.set_addrs(
        "loopback.hooks.test",
        vec!["127.0.0.1".parse().expect("ip"), "::1".parse().expect("ip")],
    );
    app.create_user("guarded@example.com").await;
    for ep in &endpoints {
        let log = wait_deliveries(&app, &id_of(ep), 3).await;
        assert!(
            log.iter()
                .all(|d| d["status"] == "failed" && d["error"] == "blocked address" && d["status_code"].is_null()),
            "{}: {log:?}",
            ep["endpoint_url"]
        );
    }
    // The failure rule applies as to any failed attempt.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, list) = app.get("/webhook_endpoints").await;
        let data = list["data"].as_array().cloned().unwrap_or_default();
        if data.len() == urls.len() && data.iter().all(|e| e["status"] == "disabled") {
            break;
        }
        assert!(Instant::now() < deadline, "not disabled: {list}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reasons: Vec<String> = sqlx::query_scalar(
        "select payload->'WebhookEndpointDisabled'->>'reason' from event where event_type = 'WebhookEndpointDisabled'",
    )
    .fetch_all(&app.pool)
    .await
    .expect("disabling events");
    assert_eq!(reasons.len(), urls.len(), "{reasons:?}");
    assert!(reasons.iter().all(|r| r.contains("blocked address")), "{reasons:?}");
    app.stop().await;
    assert!(rx.received().is_empty(), "the receiver got {:?}", rx.received());
}

//! `GET /metrics`: Prometheus text with request counts and latencies by route template and
//! status, commands and appended events, projection and subscriber lag, webhook deliveries and
//! the connection pool; no API key; optionally only on an address of its own.
//! Counters are process-wide (one recorder per process, shared by every test's server), so
//! the assertions are lower bounds.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::TestApp;

/// `(series with labels, value)` for every sample line.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(series, v)| (series.to_string(), v.parse().expect("a number")))
        .collect()
}

/// The value of the one series named `name` whose labels include every `labels` pair.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(text)
        .into_iter()
        .filter(|(series, _)| series == name || series.starts_with(&format!("{name}{{")))
        .find(|(series, _)| labels.iter().all(|(k, v)| series.contains(&format!("{k}=\"{v}\""))))
        .map(|(_, v)| v)
}

async fn scrape(base: &str) -> String {
    let r = reqwest::get(format!("{base}/metrics")).await.expect("scrape");
    assert_eq!(r.status(), StatusCode::OK);
    let ct = r.headers()["content-type"].to_str().expect("ascii").to_string();
    assert!(ct.starts_with("text/plain"), "{ct}");
    r.text().await.expect("text")
}

fn fast(c: &mut keyledger_api::Config) {
    c.webhook_retry_base = Duration::from_millis(20);
    c.webhook_timeout = Duration::from_secs(2);
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_commands_lag_webhooks_and_the_pool_without_a_key() {
    let app = TestApp::spawn_with(fast).await;
    let a = app.create_organization("Metrics A", json!([])).await;
    let b = app.create_organization("Metrics B", json!([])).await;
    let ids = [a["id"].as_str().expect("id"), b["id"].as_str().expect("id")];
    for id in ids {
        assert_eq!(app.get(&format!("/organizations/{id}")).await.0, StatusCode::OK);
    }
    assert_eq!(app.get("/organizations/org_nope").await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.get("/no/such/route").await.0, StatusCode::NOT_FOUND);
    // A closed loopback port: every delivery attempt fails.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let (s, endpoint) = app
        .post(
            "/webhook_endpoints",
            json!({ "endpoint_url": format!("http://127.0.0.1:{port}/hook"), "events": ["organization.created"] }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{endpoint}");
    app.create_organization("Metrics C", json!([])).await;

    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = scrape(&app.base).await;
        let failed = value(&text, "keyledger_webhook_deliveries_total", &[("outcome", "failed")]);
        if failed.is_some_and(|n| n >= 1.0) && text.contains("keyledger_subscriber_lag_events{") {
            break text;
        }
        assert!(Instant::now() < deadline, "no failed delivery counted: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let by_id = [("method", "GET"), ("route", "/organizations/{id}"), ("status", "200")];
    assert!(
        value(&text, "keyledger_http_requests_total", &by_id).is_some_and(|n| n >= 2.0),
        "{text}"
    );
    let not_found = [("method", "GET"), ("route", "/organizations/{id}"), ("status", "404")];
    assert!(
        value(&text, "keyledger_http_requests_total", &not_found).is_some_and(|n| n >= 1.0),
        "{text}"
    );
    let unmatched = [("method", "GET"), ("route", "unmatched"), ("status", "404")];
    assert!(
        value(&text, "keyledger_http_requests_total", &unmatched).is_some_and(|n| n >= 1.0),
        "{text}"
    );
    let created = [("method", "POST"), ("route", "/organizations"), ("status", "201")];
    assert!(
        value(&text, "keyledger_http_requests_total", &created).is_some_and(|n| n >= 3.0),
        "{text}"
    );
    let all_buckets = [
        ("method", "GET"),
        ("route", "/organizations/{id}"),
        ("status", "200"),
        ("le", "+Inf"),
    ];
    assert!(
        value(&text, "keyledger_http_request_duration_seconds_bucket", &all_buckets).is_some_and(|n| n >= 2.0),
        "{text}"
    );
    let sum = value(&text, "keyledger_http_request_duration_seconds_sum", &by_id).expect("latency sum");
    assert!(sum > 0.0 && sum < 3600.0, "plausible latency sum {sum}");
    for id in ids {
        assert!(!text.contains(id), "no series is labelled with an id");
    }

    let ok = [("aggregate", "Organization"), ("outcome", "ok")];
    assert!(
        value(&text, "keyledger_commands_total", &ok).is_some_and(|n| n >= 3.0),
        "{text}"
    );
    let appended = [("aggregate", "Organization")];
    assert!(
        value(&text, "keyledger_events_appended_total", &appended).is_some_and(|n| n >= 3.0),
        "{text}"
    );
    for p in keyledger_projections::engine::names() {
        let lag = value(&text, "keyledger_projection_lag_events", &[("projection", p)]);
        assert!(lag.is_some_and(|n| n >= 0.0), "lag of {p}: {text}");
    }
    let webhook = format!("webhook:{}", endpoint["id"].as_str().expect("id"));
    assert!(
        value(&text, "keyledger_subscriber_lag_events", &[("subscriber", &webhook)]).is_some_and(|n| n >= 0.0),
        "lag of {webhook}: {text}"
    );
    for pool in ["requests", "workers"] {
        let p = [("pool", pool)];
        let size = value(&text, "keyledger_db_pool_connections", &p);
        assert!(size.is_some_and(|n| n >= 1.0), "{pool}: {text}");
        let idle = value(&text, "keyledger_db_pool_idle_connections", &p);
        assert!(idle.is_some_and(|n| n >= 0.0), "{pool}: {text}");
    }
    let max = |pool| value(&text, "keyledger_db_pool_max_connections", &[("pool", pool)]);
    assert_eq!((max("requests"), max("workers")), (Some(48.0), Some(32.0)), "{text}");
    assert_eq!(value(&text, "keyledger_database_up", &[]), Some(1.0), "{text}");
    app.stop().await;
}

#[tokio::test]
async fn with_a_metrics_address_metrics_are_served_only_there() {
    let app = TestApp::spawn_with(|c| c.metrics_listen = Some("127.0.0.1:0".parse().expect("addr"))).await;
    let at = app.metrics_addr().expect("a metrics address");
    assert_ne!(at, app.addr);
    assert_eq!(app.get("/organizations").await.0, StatusCode::OK);
    let (status, body) = app.request_with_key(reqwest::Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not beside the API: {body}");
    assert_eq!(body["code"], "not_found");
    let text = scrape(&format!("http://{at}")).await;
    let listed = [("method", "GET"), ("route", "/organizations"), ("status", "200")];
    assert!(
        value(&text, "keyledger_http_requests_total", &listed).is_some_and(|n| n >= 1.0),
        "{text}"
    );
    let api_routes = reqwest::get(format!("http://{at}/organizations")).await.expect("get");
    assert_eq!(
        api_routes.status(),
        StatusCode::NOT_FOUND,
        "the metrics address serves nothing else"
    );
    app.stop().await;
}

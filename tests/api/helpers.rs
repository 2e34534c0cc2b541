//! `TestApp`: a live server on a fresh database, with one method per endpoint.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use keyledger_api::{build, connect, migrate, Config, Running};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::dns_server::TestDnsServer;

/// The server's URL of the database cluster the tests use.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL").expect("DATABASE_URL must be set (scripts/test.sh starts a throwaway PostgreSQL)")
}

/// Creates an empty, migrated database and returns its URL.
pub async fn fresh_database() -> String {
    let admin_url = database_url();
    let admin = connect(&admin_url).await.expect("connect to DATABASE_URL");
    let name = format!("kl_test_{}", ulid::Ulid::new().to_string().to_lowercase());
    sqlx::query(&format!("create database {name}"))
        .execute(&admin)
        .await
        .expect("create test database");
    admin.close().await;
    let url = with_database(&admin_url, &name);
    let pool = connect(&url).await.expect("connect to test database");
    migrate(&pool).await.expect("migrate");
    pool.close().await;
    url
}

/// Replaces the database name in a PostgreSQL URL.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = base[scheme_end..].find('/').map(|i| i + scheme_end);
    let host_part = match path_start {
        Some(i) => &base[..i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{name}?{q}"),
        None => format!("{host_part}/{name}"),
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub key: String,
    pub pool: PgPool,
    pub db_url: String,
    pub http: reqwest::Client,
    pub dns: TestDnsServer,
    running: Option<Running>,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        let db_url = fresh_database().await;
        Self::spawn_on(db_url).await
    }

    /// Starts a server on a fresh database with settings adjusted by `adjust`.
    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
        let db_url = fresh_database().await;
        Self::spawn_on_with(db_url, adjust).await
    }

    /// Starts a server on an existing (migrated) database.
    pub async fn spawn_on(db_url: String) -> TestApp {
        Self::spawn_on_with(db_url, |_| {}).await
    }

    /// Starts a server on an existing (migrated) database with settings adjusted by `adjust`.
    pub async fn spawn_on_with(db_url: String, adjust: impl FnOnce(&mut Config)) -> TestApp {
        let pool = connect(&db_url).await.expect("connect");
        let key = keyledger_api::auth::create_key(&pool, "tests")
            .await
            .expect("create key");
        let dns = TestDnsServer::start().await;
        let mut config = Config {
            listen: "127.0.0.1:0".parse().expect("addr"),
            dns_nameserver: Some(dns.addr()),
            read_your_writes: Duration::from_secs(5),
            ..Config::default()
        };
        adjust(&mut config);
        let running = build(pool.clone(), config).await.expect("build server");
        let addr = running.addr;
        TestApp {
            addr,
            base: format!("http://{addr}"),
            key,
            pool,
            db_url,
            http: reqwest::Client::new(),
            dns,
            running: Some(running),
        }
    }

    /// Waits until every projection has caught up with the log, then stops the workers (and
    /// the HTTP server), leaving the database for direct inspection.
    pub async fn stop_workers_and_wait(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let status = keyledger_projections::engine::status(&self.pool).await.expect("status");
            if status.iter().all(|s| s.behind == 0) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "projections did not catch up: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(r) = self.running.take() {
            r.stop().await.expect("stop");
        }
    }

    /// Where `GET /metrics` is served when `Config::metrics_listen` was set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.running.as_ref().and_then(|r| r.metrics_addr)
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await.expect("stop");
        }
    }

    /// Sends a request with the API key; `body` is sent as JSON when given.
    pub async fn request(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.request_with_key(method, path, body, Some(&self.key.clone())).await
    }

    pub async fn request_with_key(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        key: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("send request");
        let status = resp.status();
        let text = resp.text().await.expect("read body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    /// Sends raw bytes with a content type (for malformed-body tests).
    pub async fn raw(&self, method: Method, path: &str, content_type: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let resp = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(&self.key)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("send request");
        let status = resp.status();
        let text = resp.text().await.expect("read body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.request(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.request(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.request(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.request(Method::DELETE, path, None).await
    }

    // --- one helper per common endpoint, asserting success ---

    pub async fn create_user(&self, email: &str) -> Value {
        let (s, body) = self.post("/user_management/users", json!({ "email": email })).await;
        assert_eq!(s, StatusCode::CREATED, "create user {email}: {body}");
        body
    }

    pub async fn create_organization(&self, name: &str, domain_data: Value) -> Value {
        let (s, body) = self
            .post("/organizations", json!({ "name": name, "domain_data": domain_data }))
            .await;
        assert_eq!(s, StatusCode::CREATED, "create organization {name}: {body}");
        body
    }

    pub async fn create_membership(&self, user_id: &str, organization_id: &str, role: Option<&str>) -> Value {
        let mut b = json!({ "user_id": user_id, "organization_id": organization_id });
        if let Some(r) = role {
            b["role_slug"] = json!(r);
        }
        let (s, body) = self.post("/user_management/organization_memberships", b).await;
        assert_eq!(s, StatusCode::CREATED, "create membership: {body}");
        body
    }

    /// All events of the feed, oldest first, following `after` cursors.
    pub async fn all_events(&self, query: &str) -> Vec<Value> {
        self.all_pages(&format!("/events?limit=100&order=asc{query}")).await
    }

    /// Every item of a list endpoint (`path` with its query), following `after` cursors.
    pub async fn all_pages(&self, path: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = match &after {
                Some(a) => format!("{path}&after={a}"),
                None => path.to_string(),
            };
            let (s, body) = self.get(&page).await;
            assert_eq!(s, StatusCode::OK, "list {page}: {body}");
            out.extend(body["data"].as_array().cloned().unwrap_or_default());
            match body["list_metadata"]["after"].as_str() {
                Some(a) => after = Some(a.to_string()),
                None => return out,
            }
        }
    }

    /// Number of rows in the event log.
    pub async fn log_len(&self) -> i64 {
        let (n,): (i64,) = sqlx::query_as("select count(*) from event")
            .fetch_one(&self.pool)
            .await
            .expect("count");
        n
    }
}

/// The `id` of an object.
pub fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap_or_else(|| panic!("no id in {v}")).to_string()
}

/// The ids of a list response's `data`, in order.
pub fn ids(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(id_of)
        .collect()
}

/// Sends a request that must be refused with `status`/`code` and must leave the log untouched.
pub async fn assert_rejected(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
    want: (StatusCode, &str),
    ctx: &str,
) {
    let before = app.log_len().await;
    let (s, b) = app.request(method, path, body).await;
    assert_error(s, &b, want.0, want.1, ctx);
    assert_eq!(app.log_len().await, before, "{ctx}: the log changed");
}

/// Asserts an error response: status, machine code and the JSON shape.
pub fn assert_error(status: StatusCode, body: &Value, want_status: StatusCode, want_code: &str, ctx: &str) {
    assert_eq!(status, want_status, "{ctx}: status; body {body}");
    assert_eq!(body["code"].as_str(), Some(want_code), "{ctx}: code; body {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{ctx}: message; body {body}"
    );
}

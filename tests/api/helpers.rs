//! `TestApp`: a live server on a fresh database, with one method per endpoint.

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

/// The master key of the test servers (`TestApp`).
pub fn test_master_key() -> keyledger_api::secrets::MasterKey {
    keyledger_api::secrets::MasterKey::from_bytes([0x6b; 32])
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
    /// The PostgreSQL `application_name` of this server's connections (unique per server), to
    /// tell which of several servers on one database holds a lease.
    pub name: String,
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
        let name = format!("kl-test-{}", ulid::Ulid::new().to_string().to_lowercase());
        let sep = if db_url.contains('?') { '&' } else { '?' };
        let pool = connect(&format!("{db_url}{sep}application_name={name}"))
            .await
            .expect("connect");
        let key = keyledger_api::auth::create_key(&pool, "tests")
            .await
            .expect("create key");
        let dns = TestDnsServer::start().await;
        let mut config = Config {
            listen: "127.0.0.1:0".parse().expect("addr"),
            dns_nameserver: Some(dns.addr()),
            // Tests read their own writes right after them: a generous bound, so a machine
            // under load makes them slower, not wrong (5 s was exceeded at load average 12+).
            read_your_writes: Duration::from_secs(60),
            // The SSRF guard stays on; the tests' webhook receivers live on loopback only.
            webhook_allow: keyledger_api::ssrf::WebhookAllow::loopback(),
            // One master key for every test server: several servers on one database agree.
            master_key: Some(test_master_key()),
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
            name,
            http: reqwest::Client::new(),
            dns,
            running: Some(running),
        }
    }

    /// Waits until every projection has caught up with the log, then stops the workers (and
    /// the HTTP server), leaving the database for direct inspection.
    pub async fn stop_workers_and_wait(&mut self) {
        wait_caught_up(&self.pool).await;
        if let Some(r) = self.running.take() {
            r.stop().await.expect("stop");
        }
    }

    /// This server's access tokens (`keyledger_api::tokens`).
    pub fn tokens(&self) -> keyledger_api::tokens::Tokens {
        self.running.as_ref().expect("server running").tokens.clone()
    }

    /// This environment's client id (the SDKs' `client_id`).
    /// The server's state (for library functions beside HTTP, e.g. `policy::sso_required_for`).
    pub fn state(&self) -> keyledger_api::state::AppState {
        self.running.as_ref().expect("a running server").state.clone()
    }

    pub fn client_id(&self) -> String {
        self.tokens().client_id().to_string()
    }

    /// The claims of an access token, verified as a relying party does: the key from
    /// `GET /sso/jwks/{client_id}` by the token's `kid`, RS256 only, the issuer checked.
    pub async fn verify_access_token(&self, token: &str) -> Result<Value, String> {
        use jsonwebtoken::{Algorithm, DecodingKey, Validation};
        let (s, jwks) = self
            .request_with_key(Method::GET, &format!("/sso/jwks/{}", self.client_id()), None, None)
            .await;
        if s != StatusCode::OK {
            return Err(format!("GET jwks: {s} {jwks}"));
        }
        let kid = jsonwebtoken::decode_header(token)
            .map_err(|e| e.to_string())?
            .kid
            .ok_or("no kid")?;
        let jwk = jwks["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|k| k["kid"] == kid.as_str())
            .ok_or_else(|| format!("kid {kid} not in the JWKS"))?;
        let key = DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap_or(""), jwk["e"].as_str().unwrap_or(""))
            .map_err(|e| e.to_string())?;
        let mut v = Validation::new(Algorithm::RS256);
        v.validate_aud = false;
        v.set_issuer(&[self.tokens().issuer()]);
        jsonwebtoken::decode::<Value>(token, &key, &v)
            .map(|d| d.claims)
            .map_err(|e| e.to_string())
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

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.request(Method::PATCH, path, Some(body)).await
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

    /// The code of the newest one-time code of `purpose` (`magic_auth`, `email_verification`,
    /// …) for `email`, read through the API as an application would.
    pub async fn sent_code(&self, purpose: &str, email: &str) -> String {
        let (id,): (String,) = sqlx::query_as(
            "select id from one_time_code where purpose = $1 and email_key = $2 order by created_at desc limit 1",
        )
        .bind(purpose)
        .bind(email)
        .fetch_one(&self.pool)
        .await
        .unwrap();
        let (s, body) = self.get(&format!("/user_management/{purpose}/{id}")).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        body["code"].as_str().unwrap().to_string()
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
            let data = body["data"]
                .as_array()
                .unwrap_or_else(|| panic!("list {page}: no data array in {body}"));
            out.extend(data.iter().cloned());
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

/// The advisory-lock key of each projection's lease and of the webhook dispatcher's.
pub fn lease_keys() -> Vec<String> {
    vec![
        keyledger_projections::engine::LEASE_KEY.to_string(),
        "keyledger.webhook_dispatcher".to_string(),
    ]
}

/// Who holds each lease named in `keys` (session advisory locks on `hashtext(key)`): the
/// `application_name` of the holding connection (`TestApp::name`), `None` when nobody does.
pub async fn lease_holders(pool: &PgPool, keys: &[String]) -> Vec<(String, Option<String>)> {
    sqlx::query_as(
        "select k, (select a.application_name from pg_locks l join pg_stat_activity a on a.pid = l.pid \
           where l.locktype = 'advisory' and l.granted \
             and l.database = (select oid from pg_database where datname = current_database()) \
             and ((l.classid::bigint << 32) | l.objid::bigint) = hashtext(k)::bigint) \
         from unnest($1::text[]) k",
    )
    .bind(keys)
    .fetch_all(pool)
    .await
    .expect("lease holders")
}

/// Waits (generously) until `holder` holds every lease in `keys`, and returns.
pub async fn wait_leases_held_by(pool: &PgPool, keys: &[String], holder: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let held = lease_holders(pool, keys).await;
        if held.iter().all(|(_, h)| h.as_deref() == Some(holder)) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{holder} does not hold every lease: {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
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

/// Waits (generously) until every projection has applied the whole log.
pub async fn wait_caught_up(pool: &PgPool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = keyledger_projections::engine::status(pool).await.expect("status");
        if status.iter().all(|s| s.behind == 0) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "projections did not catch up: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Tables a refused request must leave exactly as they were, besides the read models: the log,
/// the claims (uniqueness), the credentials and webhook secrets, and the webhook endpoints.
const WRITTEN_WITH_EVENTS: &[&str] = &[
    "event",
    "claim",
    "credential",
    "webhook_endpoint",
    "webhook_endpoint_secret",
    "one_time_code",
    "connection_secret",
];

/// The log, the claims, the other tables written with events and every read model, as sorted
/// text rows per table, once the projections have caught up.
pub async fn state_snapshot(pool: &PgPool) -> Vec<(String, Vec<String>)> {
    wait_caught_up(pool).await;
    let read_models = keyledger_projections::engine::ALL.iter().flat_map(|p| p.tables());
    let mut out = Vec::new();
    for t in WRITTEN_WITH_EVENTS.iter().copied().chain(read_models) {
        let rows: Vec<(String,)> = sqlx::query_as(&format!("select t::text from {t} t order by 1"))
            .fetch_all(pool)
            .await
            .expect("snapshot");
        out.push((t.to_string(), rows.into_iter().map(|r| r.0).collect()));
    }
    out
}

/// Sends a request that must be refused with `status`/`code` and must leave the log, the claims
/// and the read models untouched.
pub async fn assert_rejected(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
    want: (StatusCode, &str),
    ctx: &str,
) {
    let before = state_snapshot(&app.pool).await;
    let (s, b) = app.request(method, path, body).await;
    assert_error(s, &b, want.0, want.1, ctx);
    let after = state_snapshot(&app.pool).await;
    for ((table, was), (_, is)) in before.iter().zip(after.iter()) {
        assert!(
            was == is,
            "{ctx}: table {table} changed:\nbefore {was:?}\nafter  {is:?}"
        );
    }
}

/// Asserts an error response: status, machine code and the JSON shape. `want_code` is the
/// top-level code, or `"invalid_request_parameters/<field code>"` for a validation failure, whose
/// first `errors` entry must then carry that field code.
pub fn assert_error(status: StatusCode, body: &Value, want_status: StatusCode, want_code: &str, ctx: &str) {
    assert_eq!(status, want_status, "{ctx}: status; body {body}");
    let (top, field_code) = match want_code.split_once('/') {
        Some((top, field)) => (top, Some(field)),
        None => (want_code, None),
    };
    assert_eq!(body["code"].as_str(), Some(top), "{ctx}: code; body {body}");
    if let Some(f) = field_code {
        assert_eq!(
            body["errors"][0]["code"].as_str(),
            Some(f),
            "{ctx}: field code; body {body}"
        );
    }
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{ctx}: message; body {body}"
    );
}

/// The command creating a user with `email` and nothing else (for tests that drive the bus).
pub fn create_user_command(email: &str) -> keyledger_domain::user::UserCommand {
    keyledger_domain::user::UserCommand::Create(keyledger_domain::user::CreateUser {
        email: keyledger_domain::values::Email::parse("email", email).expect("valid email"),
        first_name: None,
        last_name: None,
        name: None,
        email_verified: false,
        external_id: None,
        metadata: keyledger_domain::values::Metadata::new(),
        with_password: false,
        at: chrono::Utc::now(),
    })
}

/// A test identity provider (node, tests/idp/<kind>/idp.js or the path in `env`) on loopback,
/// stopped when dropped; `info` is the JSON line it prints once ready.
pub struct NodeIdp {
    pub info: Value,
    _child: tokio::process::Child,
}

impl NodeIdp {
    pub async fn start(kind: &str, env: &str, args: &[&str]) -> Self {
        use tokio::io::AsyncBufReadExt;
        let script =
            std::env::var(env).unwrap_or_else(|_| format!("{}/../tests/idp/{kind}/idp.js", env!("CARGO_MANIFEST_DIR")));
        let mut child = tokio::process::Command::new("node")
            .arg(&script)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start the test IdP (node {script}; run npm ci in tests/idp/{kind}): {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(30),
            tokio::io::BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .expect("the test IdP started in time")
        .expect("read its first line");
        let info: Value = serde_json::from_str(line.trim()).unwrap_or_else(|_| panic!("IdP said {line:?}"));
        Self { info, _child: child }
    }

    /// A string of its `info`.
    pub fn get(&self, k: &str) -> String {
        self.info[k].as_str().unwrap_or_else(|| panic!("{k}")).to_string()
    }
}

//! keyledger's HTTP API and process wiring: the axum router, the projection workers, the
//! LISTEN/NOTIFY wake-ups and graceful shutdown. Handlers turn requests into commands and read
//! models into WorkOS-shaped responses; they never write SQL against the log themselves.

// The workspace lint table denies these everywhere (tests may, see clippy.toml); the crate
// states it too, so the rule is visible where the code is.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::todo)
)]

pub mod api_keys;
pub mod auth;
pub mod authorization_codes;
pub mod cli;
pub mod codes;
pub mod connections;
pub mod dns;
pub mod error;
pub mod extract;
pub mod hosted;
pub mod idempotency;
pub mod invitations;
pub mod jit;
pub mod json_body;
pub mod mail;
pub mod metrics;
pub mod openapi;
pub mod password;
pub mod policy;
pub mod portal;
pub mod protocol;
pub mod rate_limit;
pub mod redirect_uris;
pub mod routes;
pub mod saml;
pub mod schemas;
pub mod secrets;
pub mod serve;
pub mod sessions;
pub mod signing_keys;
pub mod sso;
pub mod sso_saml;
pub mod ssrf;
pub mod state;
pub mod subscribers;
pub mod sweep;
pub mod tenant;
pub mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::Router;
use keyledger_projections::engine;
use keyledger_store::checkpoint::Progress;
use keyledger_store::commands::CommandBus;
use keyledger_store::EventStore;
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::routes::stream;
use crate::state::AppState;

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Runtime settings of the server (the CLI fills them from flags and environment).
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// DNS server for domain verification; `None` uses the system resolver.
    pub dns_nameserver: Option<SocketAddr>,
    /// Upper bound on how long a write's response waits for the projections.
    pub read_your_writes: Duration,
    /// Publish every public event to NATS JetStream (`None`: no publisher).
    pub nats: Option<NatsConfig>,
    /// This server's public base URL (e.g. `https://id.example.com`), for links it hands out
    /// (audit log export downloads); `None`: taken from the request's `Host` header.
    pub public_url: Option<String>,
    /// The `xmlsec1` program that checks SAML signatures (`crate::saml`); a bare name is looked
    /// up on PATH.
    pub xmlsec1: std::path::PathBuf,
    /// Interval of the heartbeat comments on `GET /events/stream` connections.
    pub stream_heartbeat: Duration,
    /// Most `GET /events/stream` connections open at once (429 beyond).
    pub max_streams: usize,
    /// First webhook retry delay; later ones are multiples of it (docs/API.md, "Retries").
    pub webhook_retry_base: Duration,
    /// Consecutive failed attempts on one event after which an endpoint is disabled.
    pub webhook_max_attempts: u32,
    /// How long a receiver has to answer a delivery.
    pub webhook_timeout: Duration,
    /// The SSRF guard (`crate::ssrf`) is always on: deliveries never connect to loopback,
    /// private, link-local or other non-public addresses, and endpoints naming such an IP literal
    /// (or `localhost`) are refused, except for what this allow-list names (internal receivers).
    pub webhook_allow: ssrf::WebhookAllow,
    /// Header-read, body-read and idle timeouts of HTTP connections (`crate::serve`).
    pub http: serve::HttpTimeouts,
    /// Serve `GET /metrics` only on this address instead of beside the API (`None`).
    pub metrics_listen: Option<SocketAddr>,
    /// The master key sealing secrets at rest (`crate::secrets`). `None`: a random one for this
    /// process only (tests); the CLI always passes one (flag, environment or key file).
    pub master_key: Option<secrets::MasterKey>,
    /// The SDKs' `client_id`; `None`: the one generated once and kept in the database.
    pub client_id: Option<String>,
    /// Lifetime of the access tokens signed (`KEYLEDGER_ACCESS_TOKEN_TTL_SECONDS`).
    pub access_token_ttl: Duration,
    /// How often the signing keys are reloaded from the database (a rotation made elsewhere is
    /// used and published within this bound).
    pub signing_keys_refresh: Duration,
    /// Password hashes run at once (default: the available cores; `crate::password::Hashing`).
    pub hashing_concurrency: usize,
    /// Password hashes that may wait for a turn before new ones get 503 `server_busy`
    /// (default: 64 per concurrent hash).
    pub hashing_queue: usize,
    /// The authentication rate limits (`crate::rate_limit`); 0 turns one off.
    pub rate_limits: rate_limit::Settings,
    /// The mailer (`crate::mail`); off without an SMTP URL.
    pub mail: mail::MailConfig,
    /// Sign-in and session settings.
    pub auth: state::AuthSettings,
}

/// Where and how the NATS JetStream publisher publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsConfig {
    pub url: String,
    /// JetStream stream name (created if absent).
    pub stream: String,
    /// Subjects are `<prefix>.<organization id or "global">.<event name>`.
    pub subject_prefix: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            dns_nameserver: None,
            read_your_writes: Duration::from_secs(5),
            nats: None,
            public_url: None,
            xmlsec1: "xmlsec1".into(),
            stream_heartbeat: Duration::from_secs(15),
            max_streams: 1024,
            webhook_retry_base: Duration::from_secs(30),
            webhook_max_attempts: 10,
            webhook_timeout: Duration::from_secs(10),
            webhook_allow: ssrf::WebhookAllow::default(),
            http: serve::HttpTimeouts::default(),
            metrics_listen: None,
            master_key: None,
            client_id: None,
            access_token_ttl: tokens::DEFAULT_TTL,
            signing_keys_refresh: tokens::DEFAULT_REFRESH,
            hashing_concurrency: password::default_concurrency(),
            hashing_queue: password::default_concurrency() * password::QUEUE_PER_PERMIT,
            rate_limits: rate_limit::Settings::default(),
            mail: mail::MailConfig::default(),
            auth: state::AuthSettings::default(),
        }
    }
}

/// Default bound on waiting for a pooled connection: past it a request answers 503
/// `database_unavailable` instead of queueing behind an unreachable or exhausted database.
pub const DEFAULT_DB_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long start-up keeps trying to reach a database that is still coming up.
const STARTUP_WAIT: Duration = Duration::from_secs(10);

/// Opens the connection pool with the default acquire bound.
pub async fn connect(url: &str) -> anyhow::Result<PgPool> {
    connect_with(url, DEFAULT_DB_ACQUIRE_TIMEOUT).await
}

/// Opens the connection pool; every later checkout waits at most `acquire_timeout`. Start-up
/// itself waits up to [`STARTUP_WAIT`] for the database to come up.
pub async fn connect_with(url: &str, acquire_timeout: Duration) -> anyhow::Result<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(48)
        .acquire_timeout(acquire_timeout)
        // No ping per checkout: a broken connection fails its query and sqlx discards it.
        .test_before_acquire(false)
        .connect_lazy(url)
        .context("parsing the database URL")?;
    let deadline = tokio::time::Instant::now() + STARTUP_WAIT;
    loop {
        match pool.acquire().await {
            Ok(_) => return Ok(pool),
            Err(e) if keyledger_store::availability::is_unavailable(&e) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => return Err(e).context("connecting to PostgreSQL"),
        }
    }
}

/// Connections of the background workers (projections, subscribers, LISTEN/NOTIFY), apart from
/// the requests' pool: a worker would rather wait for a connection than fail and back off, and
/// workers holding their ownership connections never starve requests of theirs.
const WORKER_CONNECTIONS: u32 = 32;
const WORKER_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The workers' pool: same database and settings as `pool`, opened lazily.
fn workers_pool(pool: &PgPool) -> PgPool {
    PgPoolOptions::new()
        .max_connections(WORKER_CONNECTIONS)
        .acquire_timeout(WORKER_ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .connect_lazy_with(pool.connect_options().as_ref().clone())
}

/// Applies the embedded migrations.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    keyledger_store::MIGRATOR.run(pool).await.context("applying migrations")
}

async fn not_found() -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint").into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint",
    )
    .into_response()
}

/// PostgreSQL cannot store NUL characters, so no id or path segment can contain one: refuse such
/// paths before any handler looks them up.
async fn reject_nul_in_path(req: axum::extract::Request, next: middleware::Next) -> Response {
    if req.uri().path().to_ascii_lowercase().contains("%00") {
        return ApiError::bad_request("invalid_character", "the path must not contain NUL characters").into_response();
    }
    next.run(req).await
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::internal().into_response()
}

/// The full HTTP API. Its operations are `routes::protected` (behind the API key) and
/// `routes::public`, the same lists `/openapi.json` documents: add routes there, never here.
pub fn router(state: AppState) -> Router {
    let (api, _) = routes::protected().split_for_parts();
    // Layers run bottom-up: the API key first, then Idempotency-Key (scoped by that key).
    let api = api
        .route_layer(middleware::from_fn_with_state(state.clone(), idempotency::middleware))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_key));
    let (public, _) = routes::public().split_for_parts();
    Router::new()
        .merge(public)
        .merge(api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(reject_nul_in_path))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(TraceLayer::new_for_http())
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// How long [`Running::stop`] waits for open connections to finish.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// A running server: its address and how to stop it.
pub struct Running {
    pub addr: SocketAddr,
    /// Where `GET /metrics` is served when `Config::metrics_listen` is set.
    pub metrics_addr: Option<SocketAddr>,
    /// This server's access tokens (the same as its `AppState::tokens`).
    pub tokens: tokens::Tokens,
    /// The server's state, for callers of its library functions beside HTTP (tests, the
    /// hosted pages' checks such as `policy::sso_required_for`).
    pub state: AppState,
    /// Stops the HTTP server (first), then the workers (second): in-flight writes still wait
    /// for their projections while the server drains.
    stop_http: watch::Sender<bool>,
    shutdown: watch::Sender<bool>,
    http: JoinHandle<std::io::Result<()>>,
    workers: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish, stops workers at a checkpoint.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop_http.send(true);
        // Bounded: a client that stopped reading (e.g. an event stream) would otherwise hold
        // its connection, and the drain, open until TCP gives up.
        let served = match tokio::time::timeout(DRAIN_LIMIT, &mut self.http).await {
            Ok(joined) => joined.context("joining the HTTP server")?.context("serving HTTP"),
            Err(_) => {
                tracing::warn!(limit = ?DRAIN_LIMIT, "connections still open after the drain limit; closing");
                self.http.abort();
                Ok(())
            }
        };
        let _ = self.shutdown.send(true);
        served?;
        for w in self.workers {
            let _ = w.await;
        }
        Ok(())
    }

    /// Waits until the server stops by itself (it does not, unless it fails).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.http)
            .await
            .context("joining the HTTP server")?
            .context("serving HTTP")
    }
}

/// Forwards LISTEN/NOTIFY wake-ups to the workers, reconnecting after failures.
/// Tells other processes about this process's appends: one NOTIFY per burst of commits
/// (changes that arrive while one is being sent collapse into the next).
async fn notify_others(pool: PgPool, mut appended: watch::Receiver<u64>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            r = appended.changed() => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
        appended.borrow_and_update();
        if let Err(e) = sqlx::query("select pg_notify('keyledger_events', '')")
            .execute(&pool)
            .await
        {
            tracing::warn!(error = %e, "NOTIFY failed; other processes fall back to polling");
        }
    }
}

/// Channel of api_key revocations and deletions (migration 0009's trigger).
const API_KEYS_CHANNEL: &str = "keyledger_api_keys";

async fn listen(
    pool: PgPool,
    wake: Arc<watch::Sender<u64>>,
    keys: auth::KeyCache,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN connection failed; workers fall back to polling");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        if let Err(e) = listener.listen_all(["keyledger_events", API_KEYS_CHANNEL]).await {
            tracing::warn!(error = %e, "LISTEN failed");
            continue;
        }
        // A revocation may have gone by while this connection was down.
        keys.clear();
        loop {
            tokio::select! {
                r = listener.try_recv() => match r {
                    Ok(Some(n)) if n.channel() == API_KEYS_CHANNEL => keys.clear(),
                    Ok(Some(_)) => { wake.send_modify(|n| *n = n.wrapping_add(1)); }
                    // Lost and reconnecting: whatever was sent meanwhile is gone, so act as if
                    // everything happened.
                    Ok(None) => {
                        keys.clear();
                        wake.send_modify(|n| *n = n.wrapping_add(1));
                    }
                    Err(e) => { tracing::warn!(error = %e, "LISTEN connection lost"); break; }
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Binds the listener, starts projection workers and serves the API until [`Running::stop`].
pub async fn build(pool: PgPool, config: Config) -> anyhow::Result<Running> {
    // Before anything records: counts made before the recorder exists are lost.
    metrics::handle();
    let verifier = dns::TxtVerifier::new(config.dns_nameserver).context("configuring the DNS resolver")?;
    let mailer = mail::Mailer::new(&config.mail).context("configuring the mailer")?;
    let progress = Progress::new(&engine::names());
    // Local workers wake the moment an append commits; other processes through NOTIFY.
    let (wake, wake_rx) = watch::channel(0u64);
    let wake = Arc::new(wake);
    let (appended, appended_rx) = watch::channel(0u64);
    let on_commit: keyledger_store::append::OnCommit = {
        let wake = wake.clone();
        Arc::new(move || {
            wake.send_modify(|n| *n = n.wrapping_add(1));
            appended.send_modify(|n| *n = n.wrapping_add(1));
        })
    };
    if let Some(nats) = &config.nats {
        nats.validate()?;
    }
    let master_key = match &config.master_key {
        Some(key) => {
            secrets::check_against_database(&pool, key).await?;
            key.clone()
        }
        None => {
            tracing::warn!("no secret key configured: using a random one for this process only");
            secrets::MasterKey::generate()?
        }
    };
    let client_id = tokens::client_id(&pool, config.client_id.as_deref()).await?;
    // Bound before the state: the tokens' issuer names the address when no public URL is set.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let tokens = tokens::Tokens::new(
        pool.clone(),
        master_key.clone(),
        tokens::TokenSettings {
            issuer: tokens::issuer(config.public_url.as_deref(), addr, &client_id),
            client_id: client_id.clone(),
            ttl: config.access_token_ttl,
            refresh: config.signing_keys_refresh,
        },
    );
    // Created before the state: live streams end when the HTTP server stops, so it can drain.
    let (stop_http, stop_http_rx) = watch::channel(false);
    let sso_http = connections::guarded_http_client(config.dns_nameserver, config.webhook_allow.clone())
        .context("building the HTTP client for identity providers")?;
    let state = AppState {
        bus: CommandBus::new(EventStore::with_commit_hook(pool.clone(), on_commit)),
        keys: auth::KeyCache::default(),
        pool: pool.clone(),
        progress: progress.clone(),
        verifier,
        hashing: password::Hashing::new(config.hashing_concurrency, config.hashing_queue),
        read_your_writes: config.read_your_writes,
        public_url: config.public_url.clone(),
        public_base: public_base(config.public_url.as_deref(), addr).into(),
        sso_http,
        oidc_discovery: sso::DiscoveryCache::default(),
        saml: saml::Verifier::new(
            config.xmlsec1.clone(),
            std::env::temp_dir().join(format!("keyledger-saml-certs-{}", std::process::id())),
        ),
        webhook_allow: Arc::new(config.webhook_allow.clone()),
        streams: stream::Streams::new(config.stream_heartbeat, config.max_streams, stop_http_rx.clone()),
        tokens: tokens.clone(),
        secrets: master_key,
        client_id: client_id.into(),
        limits: rate_limit::RateLimits::new(pool.clone(), config.rate_limits),
        mailer,
        auth: Arc::new(config.auth.clone()),
    };
    let (shutdown, shutdown_rx) = watch::channel(false);
    let workers_pool = workers_pool(&pool);
    let mut workers = vec![
        tokio::spawn(listen(
            workers_pool.clone(),
            wake,
            state.keys.clone(),
            shutdown_rx.clone(),
        )),
        tokio::spawn(notify_others(workers_pool.clone(), appended_rx, shutdown_rx.clone())),
        tokio::spawn(idempotency::sweeper(workers_pool.clone(), shutdown_rx.clone())),
        tokio::spawn(rate_limit::sweeper(workers_pool.clone(), shutdown_rx.clone())),
        tokio::spawn({
            let pool = workers_pool.clone();
            sweep::every(
                "one-time codes and pending authentications",
                Duration::from_secs(600),
                shutdown_rx.clone(),
                move || {
                    let pool = pool.clone();
                    async move { sweep::sign_in_leftovers(&pool).await }
                },
            )
        }),
        tokio::spawn(metrics::upkeep(shutdown_rx.clone())),
        tokio::spawn(tokens.clone().refresh_periodically(shutdown_rx.clone())),
    ];
    workers.extend(subscribers::spawn(&subscribers::Context {
        pool: workers_pool.clone(),
        progress: progress.clone(),
        bus: state.bus.clone(),
        config: config.clone(),
        shutdown: shutdown_rx.clone(),
    }));
    workers.push(tokio::spawn(engine::run_live(
        workers_pool.clone(),
        engine::ALL.to_vec(),
        progress.clone(),
        wake_rx.clone(),
        shutdown_rx.clone(),
    )));
    let app_state = state.clone();
    let mut app = router(state)
        .layer(middleware::from_fn_with_state(config.http.body_read, protocol::guard))
        .layer(middleware::from_fn(metrics::track));
    let metrics_addr = match config.metrics_listen {
        None => {
            app = app.merge(metrics::router(pool.clone(), workers_pool.clone()));
            None
        }
        Some(at) => {
            let listener = tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("binding the metrics listener {at}"))?;
            let bound = listener.local_addr().context("reading the metrics address")?;
            let served = serve::serve(
                listener,
                metrics::router(pool.clone(), workers_pool.clone()),
                config.http,
                stop_http_rx.clone(),
            );
            workers.push(tokio::spawn(async move {
                if let Err(e) = served.await {
                    tracing::error!(error = %e, "serving /metrics failed");
                }
            }));
            Some(bound)
        }
    };
    let http = tokio::spawn(serve::serve(listener, app, config.http, stop_http_rx));
    Ok(Running {
        addr,
        metrics_addr,
        tokens,
        state: app_state,
        stop_http,
        shutdown,
        http,
        workers,
    })
}

/// The base of the addresses identity providers call back: the public URL, else
/// `http://<listen address>`, without a trailing `/`.
pub fn public_base(public_url: Option<&str>, listen: SocketAddr) -> String {
    match public_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => format!("http://{listen}"),
    }
}

//! keyledger's HTTP API and process wiring: the axum router, the projection workers, the
//! LISTEN/NOTIFY wake-ups and graceful shutdown. Handlers turn requests into commands and read
//! models into WorkOS-shaped responses; they never write SQL against the log themselves.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::todo)
)]

pub mod auth;
pub mod cli;
pub mod dns;
pub mod embedded;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod openapi;
pub mod password;
pub mod routes;
pub mod ssrf;
pub mod state;
pub mod subscribers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use keyledger_projections::checkpoint::Progress;
use keyledger_projections::commands::CommandBus;
use keyledger_projections::{engine, EventStore};
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::routes::{
    audit_logs, events, health, memberships, organization_domains, organizations, stream, users, webhooks,
};
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
    /// The SSRF guard (`crate::ssrf`): deliveries never connect to loopback, private,
    /// link-local or other non-public addresses, and endpoints naming such an IP literal (or
    /// `localhost`) are refused. Off by default: self-hosted receivers often live on private
    /// networks.
    pub webhook_block_private: bool,
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
            stream_heartbeat: Duration::from_secs(15),
            max_streams: 1024,
            webhook_retry_base: Duration::from_secs(30),
            webhook_max_attempts: 10,
            webhook_timeout: Duration::from_secs(10),
            webhook_block_private: false,
        }
    }
}

/// Opens the connection pool.
pub async fn connect(url: &str) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(48)
        .acquire_timeout(Duration::from_secs(10))
        // No ping per checkout: a broken connection fails its query and sqlx discards it.
        .test_before_acquire(false)
        .connect(url)
        .await
        .context("connecting to PostgreSQL")
}

/// Applies the embedded migrations.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    keyledger_projections::MIGRATOR
        .run(pool)
        .await
        .context("applying migrations")
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

/// The full HTTP API.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/user_management/users", get(users::list).post(users::create))
        .route(
            "/user_management/users/{id}",
            get(users::get).put(users::update).delete(users::delete),
        )
        .route(
            "/user_management/users/external_id/{external_id}",
            get(users::get_by_external_id),
        )
        .route("/organizations", get(organizations::list).post(organizations::create))
        .route(
            "/organizations/{id}",
            get(organizations::get)
                .put(organizations::update)
                .delete(organizations::delete),
        )
        .route(
            "/organizations/external_id/{external_id}",
            get(organizations::get_by_external_id),
        )
        .route("/organization_domains", post(organization_domains::create))
        .route(
            "/organization_domains/{id}",
            get(organization_domains::get).delete(organization_domains::delete),
        )
        .route("/organization_domains/{id}/verify", post(organization_domains::verify))
        .route(
            "/user_management/organization_memberships",
            get(memberships::list).post(memberships::create),
        )
        .route(
            "/user_management/organization_memberships/{id}",
            get(memberships::get)
                .put(memberships::update)
                .delete(memberships::delete),
        )
        .route(
            "/user_management/organization_memberships/{id}/deactivate",
            put(memberships::deactivate),
        )
        .route(
            "/user_management/organization_memberships/{id}/reactivate",
            put(memberships::reactivate),
        )
        .route("/events", get(events::list))
        .merge(audit_logs::router())
        .merge(webhooks::router())
        .merge(stream::router())
        // Layers run bottom-up: the API key first, then Idempotency-Key (scoped by that key).
        .route_layer(middleware::from_fn_with_state(state.clone(), idempotency::middleware))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_key));
    Router::new()
        .route("/health", get(health::health))
        .route("/openapi.json", get(openapi::document))
        .merge(audit_logs::public_router())
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

async fn listen(pool: PgPool, wake: Arc<watch::Sender<u64>>, mut shutdown: watch::Receiver<bool>) {
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
        if let Err(e) = listener.listen("keyledger_events").await {
            tracing::warn!(error = %e, "LISTEN failed");
            continue;
        }
        loop {
            tokio::select! {
                r = listener.recv() => match r {
                    Ok(_) => { wake.send_modify(|n| *n = n.wrapping_add(1)); }
                    Err(e) => { tracing::warn!(error = %e, "LISTEN connection lost"); break; }
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Binds the listener, starts projection workers and serves the API until [`Running::stop`].
pub async fn build(pool: PgPool, config: Config) -> anyhow::Result<Running> {
    let verifier = dns::TxtVerifier::new(config.dns_nameserver).context("configuring the DNS resolver")?;
    let progress = Progress::new(&engine::names());
    // Local workers wake the moment an append commits; other processes through NOTIFY.
    let (wake, wake_rx) = watch::channel(0u64);
    let wake = Arc::new(wake);
    let (appended, appended_rx) = watch::channel(0u64);
    let on_commit: keyledger_projections::store::OnCommit = {
        let wake = wake.clone();
        Arc::new(move || {
            wake.send_modify(|n| *n = n.wrapping_add(1));
            appended.send_modify(|n| *n = n.wrapping_add(1));
        })
    };
    if let Some(nats) = &config.nats {
        nats.validate()?;
    }
    // Created before the state: live streams end when the HTTP server stops, so it can drain.
    let (stop_http, mut stop) = watch::channel(false);
    let state = AppState {
        bus: CommandBus::new(EventStore::new(pool.clone()).on_commit(on_commit)),
        keys: auth::KeyCache::default(),
        pool: pool.clone(),
        progress: progress.clone(),
        verifier,
        hashing: Arc::new(Semaphore::new(2)),
        read_your_writes: config.read_your_writes,
        public_url: config.public_url.clone(),
        webhook_block_private: config.webhook_block_private,
        streams: stream::Streams::new(config.stream_heartbeat, config.max_streams, stop.clone()),
    };
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut workers = vec![
        tokio::spawn(listen(pool.clone(), wake, shutdown_rx.clone())),
        tokio::spawn(notify_others(pool.clone(), appended_rx, shutdown_rx.clone())),
        tokio::spawn(idempotency::sweeper(pool.clone(), shutdown_rx.clone())),
    ];
    workers.extend(subscribers::spawn(&subscribers::Context {
        pool: pool.clone(),
        progress: progress.clone(),
        config: config.clone(),
        shutdown: shutdown_rx.clone(),
    }));
    for p in engine::ALL {
        workers.push(tokio::spawn(engine::run_worker(
            pool.clone(),
            p,
            progress.clone(),
            wake_rx.clone(),
            shutdown_rx.clone(),
        )));
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    // No Nagle delay: small responses and live-stream messages leave at once.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let http = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
    });
    Ok(Running {
        addr,
        stop_http,
        shutdown,
        http,
        workers,
    })
}

//! Shared application state and the per-request context recorded on every event.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use cqrs_es::Aggregate;
use keyledger_domain::{NoServices, Tenanted};
use keyledger_projections::checkpoint::{Caught, Progress};
use keyledger_projections::commands::{CommandBus, CommandError, Executed, Mode};
use keyledger_projections::engine;
use keyledger_projections::store::AppendExtras;
use sqlx::PgPool;
use tokio::sync::Semaphore;

use crate::auth::Actor;
use crate::dns::TxtVerifier;
use crate::error::ApiError;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub bus: CommandBus,
    pub progress: Progress,
    pub verifier: TxtVerifier,
    /// Recently verified API keys (see `auth::KeyCache`).
    pub keys: crate::auth::KeyCache,
    /// Bounds concurrent argon2 hashes so a password storm cannot starve other requests.
    pub hashing: Arc<Semaphore>,
    /// How long a command's response waits for the projections (read-your-writes).
    pub read_your_writes: Duration,
    /// `Config::public_url`: the base of links the server hands out (export downloads).
    pub public_url: Option<String>,
    /// `Config::webhook_allow`: endpoint URLs naming other non-public IP literals are refused.
    pub webhook_allow: Arc<crate::ssrf::WebhookAllow>,
    /// Limits and settings of `GET /events/stream`.
    pub streams: crate::routes::stream::Streams,
}

/// Who did it and from where: becomes every event's metadata.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub actor: Actor,
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// Further metadata a handler records (e.g. the end user's IP sent in a create-user body).
    pub extra: Vec<(&'static str, String)>,
}

impl RequestContext {
    pub fn metadata(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        m.insert("actor_id".into(), self.actor.id.clone());
        m.insert("actor_name".into(), self.actor.name.clone());
        m.insert(
            "occurred_at".into(),
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        );
        for (k, v) in [
            ("request_id", &self.request_id),
            ("ip", &self.ip),
            ("user_agent", &self.user_agent),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), v.clone());
            }
        }
        for (k, v) in &self.extra {
            m.insert((*k).into(), v.clone());
        }
        m
    }

    /// This context with further metadata entries (keys other than the standard ones).
    pub fn with_metadata(mut self, entries: Vec<(&'static str, String)>) -> Self {
        self.extra.extend(entries);
        self
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let actor = parts
            .extensions
            .get::<Actor>()
            .cloned()
            .ok_or_else(ApiError::unauthorized)?;
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string());
        Ok(Self {
            actor,
            request_id: header("x-request-id"),
            ip,
            user_agent: header("user-agent"),
            extra: Vec::new(),
        })
    }
}

impl AppState {
    /// Runs a command and waits (bounded) until the projections that consume `A`'s events have
    /// applied it.
    pub async fn execute<A>(
        &self,
        ctx: &RequestContext,
        id: &str,
        command: A::Command,
        extras: AppendExtras,
        mode: Mode,
    ) -> Result<Executed<A>, CommandError<A::Error>>
    where
        A: Aggregate<Services = NoServices> + Tenanted + Clone,
        A::Command: Clone,
        A::Error: Clone,
    {
        let result = self.bus.execute::<A>(id, command, &ctx.metadata(), extras, mode).await;
        crate::metrics::command(A::TYPE, &result, result.as_ref().map_or(0, |d| d.events.len()));
        let done = result?;
        if let Some(at) = done.position {
            let affected: Vec<&str> = engine::ALL
                .iter()
                .filter(|p| p.consumes(A::TYPE))
                .map(|p| p.name)
                .collect();
            match self
                .progress
                .wait_for(&self.pool, &affected, at, self.read_your_writes)
                .await
            {
                Caught::Up => {}
                Caught::TimedOut => {
                    tracing::warn!(?at, "projections did not catch up within the read-your-writes bound")
                }
                // The write is in the log, but nothing can be read back: answer 503, not a hang.
                Caught::Unavailable => {
                    return Err(CommandError::Unavailable(
                        "database unavailable while waiting for the projections".into(),
                    ))
                }
            }
        }
        Ok(done)
    }
}

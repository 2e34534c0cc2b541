//! Shared application state and the per-request context recorded on every event.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use cqrs_es::Aggregate;
use keyledger_domain::{NoServices, Tenanted};
use keyledger_projections::engine;
use keyledger_store::append::{IdempotencyFence, SideRows};
use keyledger_store::cascade::{Cascaded, Parent};
use keyledger_store::checkpoint::{Caught, Progress};
use keyledger_store::commands::{CommandBus, CommandError, Executed, Mode};
use keyledger_store::LogPosition;
use sqlx::PgPool;

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
    /// Bounds concurrent password hashes, and how many may wait, so a sign-in storm cannot
    /// starve other requests (`crate::password::Hashing`).
    pub hashing: crate::password::Hashing,
    /// How long a command's response waits for the projections (read-your-writes).
    pub read_your_writes: Duration,
    /// `Config::public_url`: the base of links the server hands out (export downloads).
    pub public_url: Option<String>,
    /// The base of the addresses identity providers call back (`/sso/oidc/callback`, SAML ACS
    /// and metadata): `Config::public_url`, else `http://<listen address>`; no trailing `/`.
    pub public_base: Arc<str>,
    /// The client for identity providers (OIDC discovery, tokens and keys; SAML metadata): names
    /// resolve through the SSRF guard (`crate::ssrf::GuardedResolver`), no redirect, no proxy.
    pub sso_http: reqwest::Client,
    /// OIDC providers' discovery documents and keys, kept a few minutes (`crate::sso`).
    pub oidc_discovery: crate::sso::DiscoveryCache,
    /// Checks SAML signatures with `xmlsec1` (`crate::saml`).
    pub saml: crate::saml::Verifier,
    /// `Config::webhook_allow`: endpoint URLs naming other non-public IP literals are refused.
    pub webhook_allow: Arc<crate::ssrf::WebhookAllow>,
    /// Limits and settings of `GET /events/stream`.
    pub streams: crate::routes::stream::Streams,
    /// Access tokens: signing, verification, the JWKS (`crate::tokens`).
    pub tokens: crate::tokens::Tokens,
    /// The master key sealing secrets at rest (`crate::secrets`).
    pub secrets: crate::secrets::MasterKey,
    /// The SDKs' `client_id` of this deployment.
    pub client_id: Arc<str>,
    /// Rate limits shared with every server on the database (`crate::rate_limit`).
    pub limits: crate::rate_limit::RateLimits,
    /// Authentication emails (`crate::mail`); off without an SMTP URL.
    pub mailer: crate::mail::Mailer,
    /// Sign-in and session settings.
    pub auth: Arc<AuthSettings>,
}

/// Sign-in and session settings (`Config::auth`).
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// `KEYLEDGER_REQUIRE_EMAIL_VERIFICATION`: password sign-in of an unverified email answers
    /// `email_verification_required` (WorkOS's default).
    pub require_email_verification: bool,
    /// `KEYLEDGER_REFRESH_GRACE_SECONDS`: how long a just-spent refresh token still returns its
    /// successor (concurrent refreshes from several tabs).
    pub refresh_grace: Duration,
    /// `KEYLEDGER_SESSION_TTL_SECONDS`: a session's lifetime from sign-in.
    pub session_ttl: Duration,
    /// `KEYLEDGER_REDIRECT_URIS`: where `return_to` (logout) may send a browser.
    pub redirect_uris: Vec<String>,
    /// `KEYLEDGER_INVITATION_URL`: the application's page that accepts invitations.
    pub invitation_url: Option<String>,
    /// `KEYLEDGER_PASSWORD_RESET_URL`: the application's page a reset link opens.
    pub password_reset_url: String,
    /// `KEYLEDGER_TENANT_READER_ROLE`: the membership role whose access tokens may read their
    /// organization through the management API (`crate::tenant`).
    pub tenant_reader_role: String,
}

/// The default `KEYLEDGER_PASSWORD_RESET_URL`.
pub const DEFAULT_PASSWORD_RESET_URL: &str = "http://127.0.0.1:8080/reset-password";

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            require_email_verification: true,
            refresh_grace: Duration::from_secs(5),
            session_ttl: Duration::from_secs(30 * 24 * 3600),
            redirect_uris: Vec::new(),
            invitation_url: None,
            password_reset_url: DEFAULT_PASSWORD_RESET_URL.to_string(),
            tenant_reader_role: "admin".to_string(),
        }
    }
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
    /// The request's `Idempotency-Key` reservation (`crate::idempotency`): its command's append
    /// marks it committed in the same transaction.
    pub idempotency: Option<IdempotencyFence>,
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
            idempotency: parts.extensions.get::<IdempotencyFence>().cloned(),
        })
    }
}

/// The request's context on an operation without an API key (the end user's browser, or a call
/// that authenticates by its body): becomes a [`RequestContext`] once the caller is known.
#[derive(Debug, Clone)]
pub struct PublicContext(RequestContext);

impl PublicContext {
    pub fn with_actor(self, actor: Actor) -> RequestContext {
        RequestContext { actor, ..self.0 }
    }

    /// The end user, unauthenticated (e.g. logging out of their own session by its id).
    pub fn anonymous(self) -> RequestContext {
        self.with_actor(Actor {
            id: "end_user".into(),
            name: "end user".into(),
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PublicContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if parts.extensions.get::<Actor>().is_none() {
            parts.extensions.insert(Actor {
                id: "end_user".into(),
                name: "end user".into(),
            });
        }
        RequestContext::from_request_parts(parts, state).await.map(Self)
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
        extras: SideRows,
        mode: Mode,
    ) -> Result<Executed<A>, CommandError<A::Error>>
    where
        A: Aggregate<Services = NoServices> + Tenanted + Clone,
        A::Command: Clone,
        A::Error: Clone,
        A::Event: keyledger_domain::Claims,
    {
        let extras = with_fence(extras, ctx);
        let result = self.bus.execute::<A>(id, command, &ctx.metadata(), extras, mode).await;
        crate::metrics::command(A::TYPE, &result, result.as_ref().map_or(0, |d| d.events.len()));
        let done = result?;
        if let Some(at) = done.position {
            self.settle(&[A::TYPE], at).await;
        }
        Ok(done)
    }

    /// Deletes a user or an organization with its memberships in one append
    /// (`keyledger_store::cascade`), then waits (bounded) for the projections of both.
    pub async fn delete_with_memberships<A>(
        &self,
        ctx: &RequestContext,
        parent: Parent,
        id: &str,
        command: A::Command,
        extras: SideRows,
    ) -> Result<Cascaded<A>, CommandError<A::Error>>
    where
        A: Aggregate<Services = NoServices> + Tenanted + Clone,
        A::Command: Clone,
        A::Error: Clone,
        A::Event: keyledger_domain::Claims,
    {
        let extras = with_fence(extras, ctx);
        let at = chrono::Utc::now();
        let result = self
            .bus
            .delete_with_memberships::<A>(parent, id, command, at, &ctx.metadata(), &extras)
            .await;
        let appended = result.as_ref().map_or(0, |d| d.events.len() + d.memberships.len());
        crate::metrics::command(A::TYPE, &result, appended);
        let done = result?;
        self.settle(
            &[A::TYPE, keyledger_domain::membership::OrganizationMembership::TYPE],
            done.position,
        )
        .await;
        Ok(done)
    }

    /// Read-your-writes: waits (bounded) until the projections consuming `types` reach `at`.
    /// The write is in the log whatever happens here, so neither a timeout nor a database that
    /// became unavailable meanwhile fails the request: a create renders its answer from its own
    /// events (`routes::created`), and an answer of 503 would make a client without an
    /// Idempotency-Key repeat a write that landed.
    pub(crate) async fn settle(&self, types: &[&str], at: LogPosition) {
        let affected: Vec<&str> = engine::ALL
            .iter()
            .filter(|p| types.iter().any(|t| p.consumes(t)))
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
            Caught::Unavailable => {
                tracing::warn!(
                    ?at,
                    "database unavailable while waiting for the projections; the write landed"
                )
            }
        }
    }
}

/// The request's `Idempotency-Key` reservation joins its command's append.
fn with_fence(mut extras: SideRows, ctx: &RequestContext) -> SideRows {
    if extras.idempotency.is_none() {
        extras.idempotency = ctx.idempotency.clone();
    }
    extras
}

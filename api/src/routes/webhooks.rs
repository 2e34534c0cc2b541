//! Webhook endpoints (`/webhook_endpoints`), their delivery log and replay. Changes are commands
//! on the `WebhookEndpoint` aggregate; the signing secret goes to the event store as an append
//! extra and never into an event. Delivery itself is `subscribers::webhooks`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, patch, post};
use axum::Router;
use keyledger_domain::ids::new_id;
use keyledger_domain::webhook::{UpdateWebhookEndpoint, WebhookEndpoint, WebhookEndpointCommand, WebhookEndpointError};
use keyledger_projections::commands::Mode;
use keyledger_projections::feed;
use keyledger_projections::objects::PUBLIC_EVENT_NAMES;
use keyledger_projections::store::AppendExtras;
use keyledger_projections::webhooks as store;
use serde::Deserialize;
use serde_json::json;

use super::{id_page, invalid_cursor, list_response, now, object};
use crate::error::{command_error, ApiError};
use crate::extract::{AppJson, PathParam, QueryPairs};
use crate::state::{AppState, RequestContext};

/// (method, path, summary, tag) of this module's endpoints, for the OpenAPI document.
pub const ROUTES: &[(&str, &str, &str, &str)] = &[
    ("get", "/webhook_endpoints", "List webhook endpoints", "webhooks"),
    ("post", "/webhook_endpoints", "Create a webhook endpoint", "webhooks"),
    (
        "patch",
        "/webhook_endpoints/{id}",
        "Update a webhook endpoint",
        "webhooks",
    ),
    (
        "delete",
        "/webhook_endpoints/{id}",
        "Delete a webhook endpoint",
        "webhooks",
    ),
    (
        "get",
        "/webhook_endpoints/{id}/deliveries",
        "List an endpoint's delivery attempts (extension)",
        "webhooks",
    ),
    (
        "post",
        "/webhook_endpoints/{id}/replay",
        "Redeliver the events after a given event (extension)",
        "webhooks",
    ),
];

/// This module's endpoints (all behind the API key).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/webhook_endpoints", get(list).post(create))
        .route("/webhook_endpoints/{id}", patch(update).delete(delete))
        .route("/webhook_endpoints/{id}/deliveries", get(deliveries))
        .route("/webhook_endpoints/{id}/replay", post(replay))
}

fn endpoint_error(e: WebhookEndpointError) -> ApiError {
    match e {
        WebhookEndpointError::NotFound => ApiError::not_found("webhook endpoint"),
        WebhookEndpointError::AlreadyExists => ApiError::conflict("the webhook endpoint already exists"),
    }
}

/// Longest accepted endpoint URL.
const MAX_URL: usize = 2048;

/// An absolute http(s) URL with a host, normalised by the URL parser.
pub fn endpoint_url(raw: &str) -> Result<String, ApiError> {
    let bad = |why: &str| ApiError::invalid("endpoint_url", "invalid_url", format!("endpoint_url {why}"));
    let raw = raw.trim();
    if raw.len() > MAX_URL {
        return Err(bad("must be at most 2048 characters"));
    }
    let url = reqwest::Url::parse(raw).map_err(|_| bad("must be an absolute http or https URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must use http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not carry credentials"));
    }
    Ok(url.to_string())
}

/// Refuses a URL whose host is a non-public IP literal or `localhost` that the allow-list does
/// not open (the SSRF guard). Other host names pass: they are checked at every delivery, since
/// DNS can change.
pub fn guard_endpoint_url(url: &str, allow: &crate::ssrf::WebhookAllow) -> Result<(), ApiError> {
    let parsed = reqwest::Url::parse(url).map_err(|_| {
        ApiError::invalid(
            "endpoint_url",
            "invalid_url",
            "endpoint_url must be an absolute http or https URL",
        )
    })?;
    if allow.refuses_endpoint_url(&parsed) {
        return Err(ApiError::invalid(
            "endpoint_url",
            "blocked_url",
            "endpoint_url must not point at a loopback, private, link-local or other non-public address unless the server allows it",
        ));
    }
    Ok(())
}

/// Event names from the catalog this server emits, without duplicates, in the given order.
pub fn event_names(names: Vec<String>) -> Result<Vec<String>, ApiError> {
    if names.is_empty() {
        return Err(ApiError::invalid(
            "events",
            "invalid_events",
            "events must list at least one event name",
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for n in names {
        if !PUBLIC_EVENT_NAMES.contains(&n.as_str()) {
            return Err(ApiError::invalid(
                "events",
                "unknown_event_type",
                format!(
                    "unknown event type '{}'; known: {}",
                    n.chars().take(100).collect::<String>(),
                    PUBLIC_EVENT_NAMES.join(", ")
                ),
            ));
        }
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

/// A fresh signing secret: `whsec_` and 32 random bytes, base62-free hex (64 characters).
fn new_secret() -> String {
    let mut b = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut b);
    format!("whsec_{}", hex::encode(b))
}

async fn found(state: &AppState, id: &str) -> Result<serde_json::Value, ApiError> {
    store::endpoint(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))
}

pub async fn list(State(state): State<AppState>, q: QueryPairs) -> Result<Response, ApiError> {
    let page = id_page(&q, "we")?;
    Ok(list_response(store::endpoints(&state.pool, &page).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    endpoint_url: String,
    events: Vec<String>,
}

pub async fn create(
    State(state): State<AppState>,
    ctx: RequestContext,
    AppJson(b): AppJson<CreateBody>,
) -> Result<Response, ApiError> {
    let url = endpoint_url(&b.endpoint_url)?;
    guard_endpoint_url(&url, &state.webhook_allow)?;
    let events = event_names(b.events)?;
    let id = new_id("we");
    let extras = AppendExtras {
        webhook_secret: Some((id.clone(), new_secret())),
        ..AppendExtras::default()
    };
    let cmd = WebhookEndpointCommand::Create {
        endpoint_url: url,
        events,
        at: now(),
    };
    state
        .execute::<WebhookEndpoint>(&ctx, &id, cmd, extras, Mode::New)
        .await
        .map_err(|e| command_error(e, endpoint_error))?;
    Ok(object(StatusCode::CREATED, found(&state, &id).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    #[serde(default)]
    endpoint_url: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    events: Option<Vec<String>>,
}

pub async fn update(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParam(id): PathParam,
    AppJson(b): AppJson<UpdateBody>,
) -> Result<Response, ApiError> {
    let url = b.endpoint_url.as_deref().map(endpoint_url).transpose()?;
    if let Some(u) = &url {
        guard_endpoint_url(u, &state.webhook_allow)?;
    }
    let events = b.events.map(event_names).transpose()?;
    let enabled = match b.status.as_deref() {
        None => None,
        Some("enabled") => Some(true),
        Some("disabled") => Some(false),
        Some(_) => {
            return Err(ApiError::invalid(
                "status",
                "invalid_status",
                "status must be one of enabled, disabled",
            ))
        }
    };
    let cmd = WebhookEndpointCommand::Update(UpdateWebhookEndpoint {
        endpoint_url: url,
        events,
        enabled,
        at: now(),
    });
    state
        .execute::<WebhookEndpoint>(&ctx, &id, cmd, AppendExtras::default(), Mode::Retry)
        .await
        .map_err(|e| command_error(e, endpoint_error))?;
    Ok(object(StatusCode::OK, found(&state, &id).await?))
}

pub async fn delete(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    state
        .execute::<WebhookEndpoint>(
            &ctx,
            &id,
            WebhookEndpointCommand::Delete { at: now() },
            AppendExtras::default(),
            Mode::Retry,
        )
        .await
        .map_err(|e| command_error(e, endpoint_error))?;
    Ok(axum::response::IntoResponse::into_response(StatusCode::NO_CONTENT))
}

pub async fn deliveries(
    State(state): State<AppState>,
    PathParam(id): PathParam,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let page = id_page(&q, "webhook_delivery")?;
    found(&state, &id).await?;
    Ok(list_response(store::deliveries(&state.pool, &id, &page).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    after: String,
}

/// Rewinds the endpoint's checkpoint to the event `after`: the dispatcher redelivers every
/// matching event after it, in order (at-least-once: receivers dedupe on the event id).
pub async fn replay(
    State(state): State<AppState>,
    PathParam(id): PathParam,
    AppJson(b): AppJson<ReplayBody>,
) -> Result<Response, ApiError> {
    found(&state, &id).await?;
    let cursor = feed::cursor_of(&state.pool, &b.after)
        .await?
        .ok_or_else(|| invalid_cursor("after", "after is not the id of an event in the feed"))?;
    feed::store_checkpoint(&state.pool, &store::checkpoint_name(&id), cursor, true).await?;
    Ok(object(
        StatusCode::ACCEPTED,
        json!({ "object": "webhook_replay", "webhook_endpoint_id": id, "after": b.after }),
    ))
}

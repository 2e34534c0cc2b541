//! Webhook endpoints (`/webhook_endpoints`), their delivery log and replay. Changes are commands
//! on the `WebhookEndpoint` aggregate; the signing secret goes to the event store as an append
//! extra and never into an event. Delivery itself is `subscribers::webhooks`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use keyledger_domain::ids::new_id;
use keyledger_domain::webhook::{UpdateWebhookEndpoint, WebhookEndpoint, WebhookEndpointCommand, WebhookEndpointError};
use keyledger_projections::feed;
use keyledger_projections::objects::PUBLIC_EVENT_NAMES;
use keyledger_projections::webhooks as store;
use keyledger_store::append::SideRows;
use keyledger_store::commands::Mode;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{id_page, invalid_cursor, list_response, now, object, ListParams};
use crate::error::{command_error, ApiError};
use crate::extract::{AppJson, PathParam, QueryPairs};
use crate::schemas;
use crate::state::{AppState, RequestContext};

/// This module's operations (all behind the API key; see `routes::protected` for how to add one).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(update, delete))
        .routes(routes!(deliveries))
        .routes(routes!(replay))
}

const ID: &str = "The endpoint's id (`we_...`).";

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

#[utoipa::path(get, path = "/webhook_endpoints", tag = "webhooks", operation_id = "list_webhook_endpoints",
    summary = "List webhook endpoints", params(ListParams),
    responses((status = 200, description = "A page of endpoints, with their secrets", body = schemas::WebhookEndpointList)))]
pub async fn list(State(state): State<AppState>, q: QueryPairs) -> Result<Response, ApiError> {
    let page = id_page(&q, "we")?;
    Ok(list_response(store::endpoints(&state.pool, &page).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateWebhookEndpoint)]
pub struct CreateBody {
    /// Absolute `http`/`https` URL without credentials.
    #[schema(max_length = 2048)]
    endpoint_url: String,
    /// Event names from the catalog (docs/EVENTS.md); duplicates collapse.
    #[schema(value_type = Vec<schemas::EventName>, min_items = 1)]
    events: Vec<String>,
}

#[utoipa::path(post, path = "/webhook_endpoints", tag = "webhooks", operation_id = "create_webhook_endpoint",
    summary = "Create a webhook endpoint", request_body = CreateBody,
    responses((status = 201, description = "The new endpoint, `enabled`, with its secret", body = schemas::WebhookEndpoint),
        (status = 409, description = "Another endpoint has this URL", body = schemas::ErrorBody),
        (status = 422, description = "Invalid URL or event name", body = schemas::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    ctx: RequestContext,
    AppJson(b): AppJson<CreateBody>,
) -> Result<Response, ApiError> {
    let url = endpoint_url(&b.endpoint_url)?;
    guard_endpoint_url(&url, &state.webhook_allow)?;
    let events = event_names(b.events)?;
    let id = new_id("we");
    let extras = SideRows {
        webhook_secret: Some((id.clone(), new_secret())),
        ..SideRows::default()
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = UpdateWebhookEndpoint)]
pub struct UpdateBody {
    #[serde(default)]
    #[schema(max_length = 2048)]
    endpoint_url: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<schemas::EndpointStatus>)]
    status: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Vec<schemas::EventName>>, min_items = 1)]
    events: Option<Vec<String>>,
}

#[utoipa::path(patch, path = "/webhook_endpoints/{id}", tag = "webhooks", operation_id = "update_webhook_endpoint",
    summary = "Update a webhook endpoint", params(("id" = String, Path, description = ID)), request_body = UpdateBody,
    responses((status = 200, description = "The endpoint", body = schemas::WebhookEndpoint),
        (status = 404, description = "No such endpoint", body = schemas::ErrorBody),
        (status = 409, description = "Another endpoint has this URL", body = schemas::ErrorBody),
        (status = 422, description = "Invalid field", body = schemas::ErrorBody)))]
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
        .execute::<WebhookEndpoint>(&ctx, &id, cmd, SideRows::default(), Mode::Retry)
        .await
        .map_err(|e| command_error(e, endpoint_error))?;
    Ok(object(StatusCode::OK, found(&state, &id).await?))
}

#[utoipa::path(delete, path = "/webhook_endpoints/{id}", tag = "webhooks", operation_id = "delete_webhook_endpoint",
    summary = "Delete a webhook endpoint", params(("id" = String, Path, description = ID)),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "No such endpoint", body = schemas::ErrorBody)))]
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
            SideRows::default(),
            Mode::Retry,
        )
        .await
        .map_err(|e| command_error(e, endpoint_error))?;
    Ok(axum::response::IntoResponse::into_response(StatusCode::NO_CONTENT))
}

#[utoipa::path(get, path = "/webhook_endpoints/{id}/deliveries", tag = "webhooks",
    operation_id = "list_webhook_deliveries", summary = "List an endpoint's delivery attempts (extension)",
    params(("id" = String, Path, description = ID), ListParams),
    responses((status = 200, description = "A page of attempts, newest first", body = schemas::WebhookDeliveryList),
        (status = 404, description = "No such endpoint", body = schemas::ErrorBody)))]
pub async fn deliveries(
    State(state): State<AppState>,
    PathParam(id): PathParam,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let page = id_page(&q, "webhook_delivery")?;
    found(&state, &id).await?;
    Ok(list_response(store::deliveries(&state.pool, &id, &page).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ReplayWebhookEndpoint)]
pub struct ReplayBody {
    /// An event id: every matching event after it is delivered again.
    after: String,
}

/// Rewinds the endpoint's checkpoint to the event `after`: the dispatcher redelivers every
/// matching event after it, in order (at-least-once: receivers dedupe on the event id).
#[utoipa::path(post, path = "/webhook_endpoints/{id}/replay", tag = "webhooks",
    operation_id = "replay_webhook_endpoint", summary = "Redeliver the events after a given event (extension)",
    params(("id" = String, Path, description = ID)), request_body = ReplayBody,
    responses((status = 202, description = "The endpoint's checkpoint is rewound", body = schemas::WebhookReplay),
        (status = 404, description = "No such endpoint", body = schemas::ErrorBody),
        (status = 422, description = "`after` is no event id", body = schemas::ErrorBody)))]
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

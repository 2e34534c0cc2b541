-- Webhook endpoints. `webhook_endpoint` is the read model of the WebhookEndpoint aggregate,
-- written from its events in the same transaction as their append (so it never lags the log);
-- `webhook_endpoint_secret` holds each endpoint's signing secret, which no event carries, written
-- in the creating append's transaction; `webhook_delivery` is the delivery log (one row per attempt).
create table webhook_endpoint (
    id              text primary key,
    endpoint_url    text not null,
    events          text[] not null,
    status          text not null check (status in ('enabled', 'disabled')),
    disabled_reason text,
    created_at      timestamptz not null,
    updated_at      timestamptz not null
);

create table webhook_endpoint_secret (
    endpoint_id text primary key,
    secret      text not null
);

create table webhook_delivery (
    id          text primary key,
    endpoint_id text not null,
    event_id    text not null,
    event       text not null,
    attempt     int not null,
    status_code int,
    error       text,
    duration_ms int not null,
    delivered   boolean not null,
    created_at  timestamptz not null default now()
);
create index webhook_delivery_endpoint_idx on webhook_delivery (endpoint_id, id);

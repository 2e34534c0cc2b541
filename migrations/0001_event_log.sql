-- The event log: the only source of truth. Rows are only ever inserted.
create table event (
    position        bigint generated always as identity primary key,
    transaction_id  xid8 not null default pg_current_xact_id(),
    id              text not null,
    aggregate_type  text not null,
    aggregate_id    text not null,
    sequence        bigint not null,
    event_type      text not null,
    event_version   text not null,
    payload         jsonb not null,
    metadata        jsonb not null,
    organization_id text,
    recorded_at     timestamptz not null default now(),
    constraint event_aggregate_sequence_key unique (aggregate_type, aggregate_id, sequence),
    constraint event_id_key unique (id)
);
-- Gap-free catch-up reads order by (transaction_id, position).
create index event_transaction_position_idx on event (transaction_id, position);
-- Per-tenant history.
create index event_organization_idx on event (organization_id, transaction_id, position)
    where organization_id is not null;
-- The log only grows: analyze and vacuum (for the visibility map) on inserts, early.
alter table event set (autovacuum_analyze_scale_factor = 0.01, autovacuum_vacuum_insert_scale_factor = 0.05);

-- Set-wide rules: one holder per (kind, value), taken in the append's transaction.
create table claim (
    kind         text not null,
    value        text not null,
    aggregate_id text not null,
    claimed_at   timestamptz not null default now(),
    primary key (kind, value)
);
create index claim_holder_idx on claim (aggregate_id, kind);

-- Password hashes live outside the immutable log so erasure can delete them.
create table credential (
    user_id       text primary key,
    password_hash text not null,
    updated_at    timestamptz not null default now()
);

-- Management API keys, stored as SHA-256 of the secret.
create table api_key (
    id         text primary key,
    name       text not null,
    key_hash   bytea not null unique,
    key_hint   text not null,
    created_at timestamptz not null default now()
);

-- One row per projection: how far it has applied the log.
create table projection_checkpoint (
    name           text primary key,
    transaction_id xid8 not null default '0',
    position       bigint not null default 0,
    updated_at     timestamptz not null default now()
);

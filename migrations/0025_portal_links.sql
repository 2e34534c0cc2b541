-- Admin Portal links (issue 10): `POST /portal/generate_link` hands out a link whose secret opens
-- the portal of one organization for one intent. Only the SHA-256 of the secret is kept (a
-- 256-bit random value). Opening it is one conditional UPDATE (`used_at is null and
-- expires_at > now()`), so a link opens once, even when two browsers race. A short-lived
-- credential like `authorization_code`, not identity history: a table, not events.
create table portal_link (
    secret_hash     bytea primary key,
    organization_id text not null,
    intent          text not null,
    return_url      text,
    success_url     text,
    expires_at      timestamptz not null,
    used_at         timestamptz,
    created_at      timestamptz not null default now()
);
create index portal_link_organization_idx on portal_link (organization_id);
create index portal_link_expires_idx on portal_link (expires_at);

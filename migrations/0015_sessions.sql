-- Sessions (issue 9). The log holds each session's creation, organization switches and end
-- (aggregate `Session`); `session_view` is the `sessions` projection of them. Refresh-token
-- rotation is not an event: `session_token` holds, per session, the generation of its current
-- refresh token (the token is a MAC over the session id, its generation and the row's salt, so
-- neither the database nor the master key alone can make one), when it last rotated (the grace
-- window) and whether the token family was revoked.
create table session_view (
    id              text primary key,
    body            jsonb not null,
    user_id         text generated always as (body ->> 'user_id') stored,
    organization_id text generated always as (body ->> 'organization_id') stored
);
create index session_view_user_idx on session_view (user_id, id);
create index session_view_org_idx on session_view (organization_id, id);

insert into projection_checkpoint (name) values ('sessions') on conflict do nothing;

create table session_token (
    session_id      text primary key,
    user_id         text not null,
    organization_id text,
    salt            bytea not null,
    generation      bigint not null default 0,
    rotated_at      timestamptz,
    expires_at      timestamptz not null,
    revoked_at      timestamptz,
    created_at      timestamptz not null default now()
);
create index session_token_user_idx on session_token (user_id);

-- A sign-in that proved who the user is but needs one more step (verify the email, pick an
-- organization): WorkOS's `pending_authentication_token`. Only the token's SHA-256 is kept; it is
-- single-use and short-lived.
create table pending_authentication (
    token_hash            bytea primary key,
    user_id               text not null,
    auth_method           text not null,
    grant_type            text not null,
    email_verification_id text,
    organization_id       text,
    expires_at            timestamptz not null,
    used_at               timestamptz,
    created_at            timestamptz not null default now()
);
create index pending_authentication_expiry_idx on pending_authentication (expires_at);

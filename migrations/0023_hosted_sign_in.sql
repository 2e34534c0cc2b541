-- Hosted sign-in (AuthKit pages, issue 10): the environment's registered redirect URIs and the
-- authorization codes the pages hand to them.
--
-- redirect_uri: environment configuration like the signing keys, not identity history, so a
-- table and not events (docs/ARCHITECTURE.md, "Hosted pages"). `uri` is compared exactly as
-- registered; the first one registered is the default.
create table redirect_uri (
    id         text primary key,
    uri        text not null unique,
    is_default boolean not null default false,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

-- authorization_code: one per finished hosted sign-in, single use, ~10 minutes. Only the
-- SHA-256 of the code is kept (a 256-bit random value: nothing to brute-force). Redeeming is one
-- conditional UPDATE (`used_at is null and expires_at > now()`), so two concurrent exchanges of
-- one code cannot both win. It carries what the session it starts needs: the user, the
-- organization, how they proved who they are (auth_method, grant_type, pending_grant: the same
-- session events as a password sign-in), and what binds it: client, redirect URI, PKCE challenge.
create table authorization_code (
    code_hash      bytea primary key,
    client_id      text not null,
    redirect_uri   text not null,
    code_challenge text,
    user_id        text not null,
    organization_id text,
    auth_method    text not null,
    grant_type     text not null,
    pending_grant  text,
    expires_at     timestamptz not null,
    used_at        timestamptz,
    created_at     timestamptz not null default now()
);
create index authorization_code_expires_idx on authorization_code (expires_at);

-- The OIDC sign-in of SSO connections (issue 10): short-lived, single-use rows of each step,
-- never events. Each is found by the SHA-256 of the token the browser or the application holds,
-- so a database read never yields a usable token.
-- sso_state:        our `state` at the identity provider: the connection, the application's
--                   redirect_uri and state, and (sealed with the master key) nonce and PKCE verifier.
-- sso_code:         the code the application exchanges at POST /sso/token, with the profile.
-- sso_access_token: the access token of GET /sso/profile, with the profile.
create table sso_state (
    state_hash    bytea primary key,
    connection_id text not null,
    redirect_uri  text not null,
    app_state     text,
    sealed        bytea not null,
    expires_at    timestamptz not null,
    used_at       timestamptz
);

create table sso_code (
    code_hash    bytea primary key,
    redirect_uri text not null,
    profile      jsonb not null,
    expires_at   timestamptz not null,
    used_at      timestamptz
);

create table sso_access_token (
    token_hash bytea primary key,
    profile    jsonb not null,
    expires_at timestamptz not null
);
create index sso_access_token_expiry_idx on sso_access_token (expires_at);

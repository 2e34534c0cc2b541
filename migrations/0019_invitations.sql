-- Invitations (issue 9). The log holds each invitation's creation, acceptance, revocation,
-- resending and replacement after expiry (aggregate `Invitation`); `invitation_view` is the
-- `invitations` projection of them, listed by organization and by email. The token that accepts
-- an invitation never enters the log: `invitation_token` keeps it sealed with the master key
-- (WorkOS's GET returns it) and its SHA-256 for the look-up by token.
create table invitation_view (
    id              text primary key,
    body            jsonb not null,
    organization_id text generated always as (body ->> 'organization_id') stored,
    email           text generated always as (lower(body ->> 'email')) stored
);
create index invitation_view_org_idx on invitation_view (organization_id, id);
create index invitation_view_email_idx on invitation_view (email, id);

insert into projection_checkpoint (name) values ('invitations') on conflict do nothing;

create table invitation_token (
    invitation_id text primary key,
    token_hash    bytea not null unique,
    sealed        bytea not null,
    created_at    timestamptz not null default now()
);

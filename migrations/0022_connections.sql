-- SSO connections (issue 10). The log holds each connection's creation ("SSO connection added"),
-- changes, activation, deactivation and deletion (aggregate `Connection`); `connection_view` is
-- the `connections` projection of them, listed by organization. Client secrets and private
-- keys never enter the log: `connection_secret` keeps each sealed with the master key (AES-GCM,
-- bound to its connection and row id), and events name only the row's id.
create table connection_view (
    id              text primary key,
    body            jsonb not null,
    organization_id text generated always as (body ->> 'organization_id') stored,
    connection_type text generated always as (body ->> 'connection_type') stored
);
create index connection_view_org_idx on connection_view (organization_id, id);
create index connection_view_type_idx on connection_view (connection_type, id);

insert into projection_checkpoint (name) values ('connections') on conflict do nothing;

alter table connection_view enable row level security;
alter table connection_view force row level security;
create policy tenant_wall on connection_view
    using (coalesce(current_setting('keyledger.organization_id', true), '') = ''
           or organization_id = current_setting('keyledger.organization_id', true));

do $$
begin
    if to_regrole('keyledger_tenant_reader') is not null then
        grant select on connection_view to keyledger_tenant_reader;
    end if;
end
$$;

-- A row is written before the append of the event that names it; a row no event names (its
-- append failed) is removed by the writer, and rows of a deleted connection with it.
create table connection_secret (
    id            text primary key,
    connection_id text not null,
    purpose       text not null,
    sealed        bytea not null,
    created_at    timestamptz not null default now()
);
create index connection_secret_connection_idx on connection_secret (connection_id);

-- Read models: documents rendered from the log by projections, plus generated columns to
-- filter on. Rows of an organization's data carry organization_id; their indexes lead with it.
create table user_view (
    id          text primary key,
    body        jsonb not null,
    email       text generated always as (lower(body ->> 'email')) stored,
    external_id text generated always as (body ->> 'external_id') stored
);
create index user_view_email_idx on user_view (email);
create index user_view_external_id_idx on user_view (external_id);

create table organization_view (
    id          text primary key,
    body        jsonb not null,
    external_id text generated always as (body ->> 'external_id') stored,
    name_lower  text generated always as (lower(body ->> 'name')) stored
);
create index organization_view_external_id_idx on organization_view (external_id);

create table organization_domain_view (
    id              text primary key,
    body            jsonb not null,
    organization_id text generated always as (body ->> 'organization_id') stored,
    domain          text generated always as (body ->> 'domain') stored
);
create index organization_domain_view_org_idx on organization_domain_view (organization_id, id);
create index organization_domain_view_domain_idx on organization_domain_view (domain, organization_id);

create table organization_membership_view (
    id              text primary key,
    body            jsonb not null,
    organization_id text generated always as (body ->> 'organization_id') stored,
    user_id         text generated always as (body ->> 'user_id') stored,
    status          text generated always as (body ->> 'status') stored
);
create index organization_membership_view_org_idx on organization_membership_view (organization_id, id);
create index organization_membership_view_user_idx on organization_membership_view (user_id, id);

-- The public event feed (GET /events): one row per WorkOS event, in log order.
create table event_feed (
    id              text primary key,
    transaction_id  xid8 not null,
    position        bigint not null,
    seq             int not null,
    event           text not null,
    organization_id text,
    created_at      timestamptz not null,
    body            jsonb not null
);
create index event_feed_order_idx on event_feed (transaction_id, position, seq);
create index event_feed_org_idx on event_feed (organization_id, transaction_id, position, seq);
create index event_feed_created_idx on event_feed (created_at);

-- The feed projection's own copy of the objects, to render `data` and `previous_attributes`.
create table feed_object (
    kind text not null,
    id   text not null,
    body jsonb not null,
    primary key (kind, id)
);

insert into projection_checkpoint (name) values ('users'), ('organizations'), ('memberships'), ('events');

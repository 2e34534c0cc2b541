-- Point-in-time reads (`?as_of=`, projections/src/history.rs): they fold events straight from
-- the log, so they need to find streams by what the read models no longer hold.

-- A domain id → the organization whose stream created it, even after the domain or the
-- organization was deleted (queries repeat this expression and predicate exactly).
create index event_domain_created_idx on event ((payload -> 'OrganizationDomainCreated' ->> 'domain_id'))
    where event_type = 'OrganizationDomainCreated';

-- The membership events of one organization up to an instant, without reading its other
-- events (an organization's own stream can be long).
create index event_membership_org_idx on event (organization_id, recorded_at)
    where aggregate_type = 'OrganizationMembership';

-- A cache of folded streams: the documents of aggregate (type, id) after its first `sequence`
-- events, the latest of which was recorded at `recorded_at`. Rows of another `format` than the
-- code's `SNAPSHOT_FORMAT` are ignored. Deleting rows (or all of them) never changes an answer.
create table history_snapshot (
    aggregate_type text not null,
    aggregate_id   text not null,
    format         int not null,
    sequence       bigint not null,
    recorded_at    timestamptz not null,
    documents      jsonb not null,
    created_at     timestamptz not null default now(),
    primary key (aggregate_type, aggregate_id, format, sequence)
);

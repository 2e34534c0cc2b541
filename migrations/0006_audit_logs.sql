-- Audit logs (projection `audit_logs`): the application's own audit events, the per-action
-- schemas and the exports, all fed from the log. Change events of an organization are not copied
-- here: the trail query merges them from `event_feed` (docs/ARCHITECTURE.md, "Audit trail").
create table audit_log_event (
    id              text primary key,
    organization_id text not null,
    transaction_id  xid8 not null,
    position        bigint not null,
    action          text not null,
    actor_id        text not null,
    actor_name      text,
    target_types    text[] not null,
    occurred_at     timestamptz not null,
    body            jsonb not null
);
create index audit_log_event_org_idx on audit_log_event (organization_id, transaction_id, position);

-- Environment-wide, as in WorkOS: one row per (action, version).
create table audit_log_schema (
    action     text not null,
    version    int not null,
    created_at timestamptz not null,
    body       jsonb not null,
    primary key (action, version)
);

create table audit_log_export (
    id              text primary key,
    organization_id text not null,
    transaction_id  xid8 not null,
    position        bigint not null,
    filter          jsonb not null,
    created_at      timestamptz not null
);
create index audit_log_export_org_idx on audit_log_export (organization_id);

insert into projection_checkpoint (name) values ('audit_logs');

-- Download links of exports: random tokens stored as SHA-256, valid 10 minutes. Not state the log
-- must reproduce (like api_key): a rebuild keeps them, and losing them only costs a new GET.
create table audit_log_export_link (
    token_hash bytea primary key,
    export_id  text not null,
    expires_at timestamptz not null
);
create index audit_log_export_link_expiry_idx on audit_log_export_link (expires_at);

alter table audit_log_event enable row level security;
alter table audit_log_event force row level security;
create policy tenant_wall on audit_log_event
    using (coalesce(current_setting('keyledger.organization_id', true), '') = ''
           or organization_id = current_setting('keyledger.organization_id', true));

alter table audit_log_export enable row level security;
alter table audit_log_export force row level security;
create policy tenant_wall on audit_log_export
    using (coalesce(current_setting('keyledger.organization_id', true), '') = ''
           or organization_id = current_setting('keyledger.organization_id', true));

do $$
begin
    if to_regrole('keyledger_tenant_reader') is not null then
        grant select on audit_log_event, audit_log_schema, audit_log_export to keyledger_tenant_reader;
    end if;
end
$$;

-- Idempotency keys expire: an `audit_log_idempotency_key` claim older than 24 hours may be taken
-- over by another aggregate (a new event). Otherwise identical to 0004's function.
create or replace function keyledger_append(
    p_ids text[], p_aggregate_types text[], p_aggregate_ids text[], p_sequences bigint[],
    p_event_types text[], p_event_versions text[], p_payloads jsonb[], p_metadata jsonb[],
    p_organization_ids text[],
    p_claim_ops text[], p_claim_kinds text[], p_claim_values text[], p_claim_holders text[],
    p_credential_user text, p_credential_hash text, p_erase_credential text
) returns table (transaction_id bigint, last_position bigint)
language plpgsql as $$
declare
    v_last bigint;
    v_took int;
begin
    with ins as (
        insert into event (id, aggregate_type, aggregate_id, sequence, event_type, event_version,
                           payload, metadata, organization_id)
        select * from unnest(p_ids, p_aggregate_types, p_aggregate_ids, p_sequences, p_event_types,
                             p_event_versions, p_payloads, p_metadata, p_organization_ids)
        returning event.position
    )
    select max(ins.position) into v_last from ins;

    for i in 1 .. coalesce(array_length(p_claim_ops, 1), 0) loop
        if p_claim_ops[i] = 'release_all' then
            delete from claim where kind = p_claim_kinds[i] and aggregate_id = p_claim_holders[i];
        elsif p_claim_ops[i] = 'release' then
            delete from claim
             where kind = p_claim_kinds[i] and value = p_claim_values[i] and aggregate_id = p_claim_holders[i];
        else
            insert into claim (kind, value, aggregate_id)
            values (p_claim_kinds[i], p_claim_values[i], p_claim_holders[i])
            on conflict (kind, value) do update set aggregate_id = excluded.aggregate_id,
                claimed_at = case when claim.aggregate_id = excluded.aggregate_id then claim.claimed_at else now() end
            where claim.aggregate_id = excluded.aggregate_id
               or (claim.kind = 'audit_log_idempotency_key' and claim.claimed_at < now() - interval '24 hours');
            get diagnostics v_took = row_count;
            if v_took = 0 then
                raise exception using errcode = 'KL409', message = p_claim_kinds[i], detail = p_claim_values[i];
            end if;
        end if;
    end loop;

    if p_credential_user is not null then
        insert into credential (user_id, password_hash) values (p_credential_user, p_credential_hash)
        on conflict (user_id) do update set password_hash = excluded.password_hash, updated_at = now();
    end if;
    if p_erase_credential is not null then
        delete from credential where user_id = p_erase_credential;
    end if;

    return query select pg_current_xact_id()::text::bigint, v_last;
end
$$;

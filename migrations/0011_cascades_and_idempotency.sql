-- Cascading deletes that hold under concurrency, and Idempotency-Key on every write
-- (docs/ARCHITECTURE.md, "Cascades" and "Idempotency").
--
-- 1. Liveness claims: every existing user and organization holds `live_user` / `live_organization`
--    with its own id. A membership's append locks both (`require`, FOR KEY SHARE); a deletion's
--    append gives its own up first (`retire`), so it waits for appends that hold the lock, and
--    appends arriving later find it gone. After its releases, a deletion's append fails
--    (KL412) if a membership claim still names it (`no_dependents:<part>`).
-- 2. keyledger_append gains these operations; everything else is as in 0006, minus the
--    audit-log idempotency takeover (Idempotency-Key now has one mechanism, the table below).
-- 3. idempotency_key: one row per (API key, Idempotency-Key).

insert into claim (kind, value, aggregate_id)
select 'live_user', aggregate_id, aggregate_id from event where aggregate_type = 'User'
group by aggregate_id having bool_and(event_type <> 'UserDeleted')
on conflict do nothing;

insert into claim (kind, value, aggregate_id)
select 'live_organization', aggregate_id, aggregate_id from event where aggregate_type = 'Organization'
group by aggregate_id having bool_and(event_type <> 'OrganizationDeleted')
on conflict do nothing;

-- A membership's key is `<organization_id>:<user_id>`: these find a parent's memberships
-- (the cascade's enumeration and the append's no_dependents check).
create index claim_key_first_part_idx on claim (kind, split_part(value, ':', 1));
create index claim_key_second_part_idx on claim (kind, split_part(value, ':', 2));

-- Audit-log keys were claims until now; they live in idempotency_key from here on.
delete from claim where kind = 'audit_log_idempotency_key';

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
    v_n int := coalesce(array_length(p_claim_ops, 1), 0);
    v_part int;
begin
    -- Parents first, before any other row is touched: every append that locks parents takes
    -- them in this one phase (users before organizations, as the claims list them), so creators
    -- and deleters never wait on each other in opposite orders.
    for i in 1 .. v_n loop
        if p_claim_ops[i] = 'require' then
            perform 1 from claim where kind = p_claim_kinds[i] and value = p_claim_values[i] for key share;
            if not found then
                raise exception using errcode = 'KL404', message = p_claim_kinds[i], detail = p_claim_values[i];
            end if;
        elsif p_claim_ops[i] = 'retire' then
            delete from claim
             where kind = p_claim_kinds[i] and value = p_claim_values[i] and aggregate_id = p_claim_holders[i];
        end if;
    end loop;

    with ins as (
        insert into event (id, aggregate_type, aggregate_id, sequence, event_type, event_version,
                           payload, metadata, organization_id)
        select * from unnest(p_ids, p_aggregate_types, p_aggregate_ids, p_sequences, p_event_types,
                             p_event_versions, p_payloads, p_metadata, p_organization_ids)
        returning event.position
    )
    select max(ins.position) into v_last from ins;

    for i in 1 .. v_n loop
        if p_claim_ops[i] = 'release_all' then
            delete from claim where kind = p_claim_kinds[i] and aggregate_id = p_claim_holders[i];
        elsif p_claim_ops[i] = 'release' then
            delete from claim
             where kind = p_claim_kinds[i] and value = p_claim_values[i] and aggregate_id = p_claim_holders[i];
        elsif p_claim_ops[i] = 'acquire' then
            insert into claim (kind, value, aggregate_id)
            values (p_claim_kinds[i], p_claim_values[i], p_claim_holders[i])
            on conflict (kind, value) do update set aggregate_id = excluded.aggregate_id
            where claim.aggregate_id = excluded.aggregate_id;
            get diagnostics v_took = row_count;
            if v_took = 0 then
                raise exception using errcode = 'KL409', message = p_claim_kinds[i], detail = p_claim_values[i];
            end if;
        end if;
    end loop;

    -- Last, after this append's own releases (a statement sees the rows committed before it
    -- began, so a dependent whose append committed while the retire waited is seen here).
    for i in 1 .. v_n loop
        if p_claim_ops[i] like 'no_dependents:%' then
            v_part := split_part(p_claim_ops[i], ':', 2)::int;
            if (v_part = 1 and exists (select 1 from claim where kind = p_claim_kinds[i]
                                        and split_part(value, ':', 1) = p_claim_values[i]))
               or (v_part = 2 and exists (select 1 from claim where kind = p_claim_kinds[i]
                                           and split_part(value, ':', 2) = p_claim_values[i])) then
                raise exception using errcode = 'KL412', message = p_claim_kinds[i], detail = p_claim_values[i];
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

-- Idempotency-Key (api/src/idempotency.rs): the first request with a key reserves the row
-- (`running`, with a lease), the append of its command marks it `committed` in the same
-- transaction (only while `owner` is still this request's token: a fence), and the response
-- is stored (`done`). Rows are deleted 24 hours after `created_at` by a periodic sweep.
create table idempotency_key (
    scope        text not null,
    key          text not null,
    fingerprint  text not null,
    owner        text not null,
    state        text not null check (state in ('running', 'committed', 'done')),
    status       smallint,
    content_type text,
    body         bytea,
    created_at   timestamptz not null default now(),
    leased_until timestamptz not null,
    primary key (scope, key)
);
create index idempotency_key_created_idx on idempotency_key (created_at);

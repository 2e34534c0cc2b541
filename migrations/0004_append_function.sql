-- One command's append as one statement: its events, its claims and its credential change, all
-- or nothing (a statement is atomic), in one round trip instead of BEGIN/insert/claims/COMMIT.
-- A claim another aggregate holds raises SQLSTATE KL409 (message = kind, detail = value), told
-- apart from the (aggregate, sequence) unique violation that means a lost race.
create function keyledger_append(
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
            on conflict (kind, value) do update set aggregate_id = excluded.aggregate_id
            where claim.aggregate_id = excluded.aggregate_id;
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

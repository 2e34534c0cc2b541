-- Group commit (store/src/append.rs): concurrent commands share one statement and one commit.
--
-- keyledger_append_one is one command's append: its events, its set-wide claims, and its side
-- rows (the password hash or its erasure, a webhook endpoint's signing secret, the request's
-- Idempotency-Key fence). It raises on failure; it is 0011's keyledger_append plus the side rows
-- that used to be separate statements.
--
-- keyledger_append_batch runs many commands' appends in one statement: first all together in
-- one subtransaction; should any fail, again with each in its own subtransaction (a BEGIN ...
-- EXCEPTION block): a command that conflicts on a sequence, finds a
-- claim taken or a parent gone, or loses a lock race is rolled back alone and reported in its
-- own row; its neighbours commit. Batches are capped well under PostgreSQL's 64 cached
-- subtransaction ids per backend (store/src/append.rs, MAX_BATCH), past which every snapshot in
-- the cluster gets slower.
-- The membership-key indexes serve only membership claims: partial, so the user, email and
-- liveness claims every create takes do not maintain two expression indexes each.
drop index claim_key_first_part_idx;
drop index claim_key_second_part_idx;
create index claim_key_first_part_idx on claim (split_part(value, ':', 1)) where kind = 'membership';
create index claim_key_second_part_idx on claim (split_part(value, ':', 2)) where kind = 'membership';

create or replace function keyledger_append_one(
    p_ids text[], p_aggregate_types text[], p_aggregate_ids text[], p_sequences bigint[],
    p_event_types text[], p_event_versions text[], p_payloads jsonb[], p_metadata jsonb[],
    p_organization_ids text[],
    p_claim_ops text[], p_claim_kinds text[], p_claim_values text[], p_claim_holders text[],
    p_credential_user text, p_credential_hash text, p_erase_credential text,
    p_webhook_endpoint text, p_webhook_secret text,
    p_fence_scope text, p_fence_key text, p_fence_owner text
) returns bigint
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
    -- The literal kind lets the planner use the partial membership-key indexes.
    for i in 1 .. v_n loop
        if p_claim_ops[i] like 'no_dependents:%' then
            if p_claim_kinds[i] <> 'membership' then
                raise exception using errcode = 'KL500', message = 'no_dependents is only known for memberships';
            end if;
            v_part := split_part(p_claim_ops[i], ':', 2)::int;
            if (v_part = 1 and exists (select 1 from claim where kind = 'membership'
                                        and split_part(value, ':', 1) = p_claim_values[i]))
               or (v_part = 2 and exists (select 1 from claim where kind = 'membership'
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
    if p_webhook_endpoint is not null then
        insert into webhook_endpoint_secret (endpoint_id, secret) values (p_webhook_endpoint, p_webhook_secret)
        on conflict (endpoint_id) do update set secret = excluded.secret;
    end if;
    -- The request's Idempotency-Key is marked committed with its command, and only while the
    -- request still holds it (a reservation taken over by another request refuses the append).
    if p_fence_key is not null then
        update idempotency_key set state = 'committed'
         where scope = p_fence_scope and key = p_fence_key and owner = p_fence_owner
           and state in ('running', 'committed');
        get diagnostics v_took = row_count;
        if v_took = 0 then
            raise exception using errcode = 'KL409', message = 'idempotency_key', detail = p_fence_key;
        end if;
    end if;
    return v_last;
end
$$;

-- One row per command, in order: outcome 'ok' (last_position set), 'conflict' (the aggregate
-- moved on: its sequence is taken, or a dependent appeared), 'claim_taken' / 'claim_missing'
-- (kind and value set), 'lost_race' (a deadlock or serialization failure: safe to submit again)
-- or 'error' (kind = SQLSTATE, value = message). Events of command c are p_*[previous end + 1 ..
-- p_event_end[c]], its claims likewise by p_claim_end; the side-row arrays have one entry per
-- command (null: none).
create or replace function keyledger_append_batch(
    p_event_end int[], p_claim_end int[],
    p_ids text[], p_aggregate_types text[], p_aggregate_ids text[], p_sequences bigint[],
    p_event_types text[], p_event_versions text[], p_payloads jsonb[], p_metadata jsonb[],
    p_organization_ids text[],
    p_claim_ops text[], p_claim_kinds text[], p_claim_values text[], p_claim_holders text[],
    p_credential_user text[], p_credential_hash text[], p_erase_credential text[],
    p_webhook_endpoint text[], p_webhook_secret text[],
    p_fence_scope text[], p_fence_key text[], p_fence_owner text[]
) returns table (outcome text, transaction_id bigint, last_position bigint, kind text, value text)
language plpgsql as $$
-- The output columns `kind` and `value` are also claim columns: in queries, names mean columns.
#variable_conflict use_column
declare
    e0 int := 1;
    c0 int := 1;
    v_n int := coalesce(array_length(p_event_end, 1), 0);
    v_last bigint[];
    v_positions bigint[];
    v_took int;
    v_set_failed boolean := false;
    v_constraint text;
    v_state text;
    v_message text;
    v_detail text;
begin
    -- Set-based path, for batches whose claims are all acquisitions and whose side rows are at
    -- most credentials and fences (creates, mostly): one insert of every event, one of every
    -- claim, one update of every fence, in one subtransaction. Any failure (a taken claim, two
    -- commands claiming one value, a taken sequence, a fence lost) rolls it back, and the
    -- commands are decided one by one below.
    if v_n > 0
       and coalesce('acquire' = all(p_claim_ops), true)
       and cardinality(array_remove(p_erase_credential, null)) = 0
       and cardinality(array_remove(p_webhook_endpoint, null)) = 0 then
        begin
            with ins as (
                insert into event (id, aggregate_type, aggregate_id, sequence, event_type, event_version,
                                   payload, metadata, organization_id)
                select * from unnest(p_ids, p_aggregate_types, p_aggregate_ids, p_sequences, p_event_types,
                                     p_event_versions, p_payloads, p_metadata, p_organization_ids)
                returning event.id, event.position
            )
            select array_agg(ins.position order by u.ord) into v_positions
              from ins join unnest(p_ids) with ordinality as u(id, ord) on u.id = ins.id;
            insert into claim (kind, value, aggregate_id)
            select * from unnest(p_claim_kinds, p_claim_values, p_claim_holders)
            on conflict (kind, value) do update set aggregate_id = excluded.aggregate_id
            where claim.aggregate_id = excluded.aggregate_id;
            get diagnostics v_took = row_count;
            if v_took <> coalesce(array_length(p_claim_ops, 1), 0) then
                raise exception using errcode = 'KL409', message = 'set-based path';
            end if;
            insert into credential (user_id, password_hash)
            select u, h from unnest(p_credential_user, p_credential_hash) as c(u, h) where u is not null
            on conflict (user_id) do update set password_hash = excluded.password_hash, updated_at = now();
            update idempotency_key k set state = 'committed'
              from unnest(p_fence_scope, p_fence_key, p_fence_owner) as f(s, k, o)
             where f.k is not null and k.scope = f.s and k.key = f.k and k.owner = f.o
               and k.state in ('running', 'committed');
            get diagnostics v_took = row_count;
            if v_took <> cardinality(array_remove(p_fence_key, null)) then
                raise exception using errcode = 'KL409', message = 'set-based path';
            end if;
            for c in 1 .. v_n loop
                outcome := 'ok';
                transaction_id := pg_current_xact_id_if_assigned()::text::bigint;
                last_position := v_positions[p_event_end[c]];
                kind := null;
                value := null;
                return next;
            end loop;
            return;
        exception when others then
            v_set_failed := true;
        end;
    end if;

    -- Fast path: every command at once, in one subtransaction. Most batches have no failing
    -- command; any failure rolls the attempt back and the loop below decides command by command.
    -- (Skipped when the set-based attempt failed: the same failure would end it.)
    if not v_set_failed then
        begin
            for c in 1 .. v_n loop
                v_last[c] := keyledger_append_one(
                    p_ids[e0:p_event_end[c]], p_aggregate_types[e0:p_event_end[c]],
                    p_aggregate_ids[e0:p_event_end[c]], p_sequences[e0:p_event_end[c]],
                    p_event_types[e0:p_event_end[c]], p_event_versions[e0:p_event_end[c]],
                    p_payloads[e0:p_event_end[c]], p_metadata[e0:p_event_end[c]],
                    p_organization_ids[e0:p_event_end[c]],
                    p_claim_ops[c0:p_claim_end[c]], p_claim_kinds[c0:p_claim_end[c]],
                    p_claim_values[c0:p_claim_end[c]], p_claim_holders[c0:p_claim_end[c]],
                    p_credential_user[c], p_credential_hash[c], p_erase_credential[c],
                    p_webhook_endpoint[c], p_webhook_secret[c],
                    p_fence_scope[c], p_fence_key[c], p_fence_owner[c]);
                e0 := p_event_end[c] + 1;
                c0 := p_claim_end[c] + 1;
            end loop;
        exception when others then
            v_last := null;
        end;
        if v_last is not null then
            for c in 1 .. v_n loop
                outcome := 'ok';
                transaction_id := pg_current_xact_id_if_assigned()::text::bigint;
                last_position := v_last[c];
                kind := null;
                value := null;
                return next;
            end loop;
            return;
        end if;
    end if;
    e0 := 1;
    c0 := 1;
    for c in 1 .. v_n loop
        outcome := 'ok';
        last_position := null;
        kind := null;
        value := null;
        begin
            last_position := keyledger_append_one(
                p_ids[e0:p_event_end[c]], p_aggregate_types[e0:p_event_end[c]],
                p_aggregate_ids[e0:p_event_end[c]], p_sequences[e0:p_event_end[c]],
                p_event_types[e0:p_event_end[c]], p_event_versions[e0:p_event_end[c]],
                p_payloads[e0:p_event_end[c]], p_metadata[e0:p_event_end[c]],
                p_organization_ids[e0:p_event_end[c]],
                p_claim_ops[c0:p_claim_end[c]], p_claim_kinds[c0:p_claim_end[c]],
                p_claim_values[c0:p_claim_end[c]], p_claim_holders[c0:p_claim_end[c]],
                p_credential_user[c], p_credential_hash[c], p_erase_credential[c],
                p_webhook_endpoint[c], p_webhook_secret[c],
                p_fence_scope[c], p_fence_key[c], p_fence_owner[c]);
        exception
            when unique_violation then
                get stacked diagnostics v_constraint = constraint_name, v_message = message_text;
                if v_constraint = 'event_aggregate_sequence_key' then
                    outcome := 'conflict';
                else
                    outcome := 'error';
                    kind := '23505';
                    value := v_message;
                end if;
            when deadlock_detected or serialization_failure then
                outcome := 'lost_race';
            when others then
                get stacked diagnostics v_state = returned_sqlstate, v_message = message_text,
                                        v_detail = pg_exception_detail;
                if v_state = 'KL409' then
                    outcome := 'claim_taken';
                    kind := v_message;
                    value := v_detail;
                elsif v_state = 'KL404' then
                    outcome := 'claim_missing';
                    kind := v_message;
                    value := v_detail;
                elsif v_state = 'KL412' then
                    outcome := 'conflict';
                else
                    outcome := 'error';
                    kind := v_state;
                    value := v_message;
                end if;
        end;
        transaction_id := pg_current_xact_id_if_assigned()::text::bigint;
        return next;
        e0 := p_event_end[c] + 1;
        c0 := p_claim_end[c] + 1;
    end loop;
end
$$;

-- The one-command append of 0004 (redefined by 0006 and 0011) has no caller any more: the
-- append is keyledger_append_one inside keyledger_append_batch.
drop function keyledger_append(text[], text[], text[], bigint[], text[], text[], jsonb[], jsonb[], text[],
                               text[], text[], text[], text[], text, text, text);

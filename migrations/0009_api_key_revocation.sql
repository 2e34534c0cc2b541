-- API keys are revoked, not deleted: the row stays so the audit trail can still name the key.
alter table api_key add column revoked_at timestamptz;

-- Every server caches verified keys for a few seconds; any revocation or deletion tells them all
-- (on commit) to drop their caches. A server that misses it falls back to the cache's TTL.
create function keyledger_api_key_changed() returns trigger language plpgsql as $$
begin
    perform pg_notify('keyledger_api_keys', coalesce(new.id, old.id));
    return null;
end
$$;

create trigger api_key_changed
    after update of revoked_at or delete on api_key
    for each row execute function keyledger_api_key_changed();

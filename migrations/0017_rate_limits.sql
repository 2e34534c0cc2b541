-- Rate limits shared by every server on this database (api/src/rate_limit.rs): one row per
-- limited key, checked and updated by one upsert per check (GCRA).
--
-- key: SHA-256 of `<limit>:<key>` (the key is often an email: personal data is never stored).
-- tat: the GCRA's "theoretical arrival time". A row whose tat has passed is the same as no row,
--      so the sweeper deletes those; no index on tat, so a check's update stays HOT.
-- allowed: the outcome of the last check, read back by that check's own RETURNING (PostgreSQL
--      15 cannot return the old row of an upsert).
--
-- Unlogged: a check writes no WAL, so its commit waits for no disk flush (measured on the dev
-- machine: ~1,500 sequential checks/s instead of ~250, and a failed-password storm cannot make
-- the database flush once per attempt). The price: after a PostgreSQL crash, or on a promoted
-- standby, the counts start empty, which is at most one more burst per key and minute.
create unlogged table rate_limit (
    key bytea primary key check (length(key) = 32),
    tat timestamptz not null,
    allowed boolean not null
) with (fillfactor = 70);

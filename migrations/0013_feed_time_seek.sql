-- Lists that stay fast as the log grows (docs/PERFORMANCE.md, "Issue 8: growth").
--
-- 1. `GET /events` by type and time range. The feed is ordered by (transaction_id, position,
--    seq), but `created_at` (the append's `now()`) is only almost in that order: a transaction
--    that started earlier can commit, and so sort, later. A time range therefore could not seek
--    in feed order, and every such query scanned the feed from its start. `created_at_max` is
--    the latest `created_at` of the row and of every row before it in feed order: it never
--    decreases along the feed, so (created_at_max, transaction_id, position, seq) is feed order,
--    and every row with created_at >= T lies at or after the first row with created_at_max >= T:
--    one index seek finds where a range starts. The events projection writes it (engine.rs).
alter table event_feed add column created_at_max timestamptz;
update event_feed f set created_at_max = m.running_max
  from (select transaction_id, position, seq,
               max(created_at) over (order by transaction_id, position, seq) as running_max
          from event_feed) m
 where (f.transaction_id, f.position, f.seq) = (m.transaction_id, m.position, m.seq);
alter table event_feed alter column created_at_max set not null;

-- Events of one type in feed order from a time (or a cursor) on. A list of every type walks
-- each type present (found by skipping along this index) and merges them: an index on
-- (created_at_max, ...) alone would serve it too, but the planner then prefers it for one type
-- as well (it is correlated with the table, so its cost looks lower) and filters the type out
-- of every row in between.
create index event_feed_event_time_idx on event_feed (event, created_at_max, transaction_id, position, seq);
-- A time window read whole for the types asked for (a window with few of them, where the
-- ordered walk would run past it): index-only, with the feed place at hand. (Every type's
-- window reads `event_feed_created_idx`.)
create index event_feed_event_created_idx on event_feed (event, created_at) include (transaction_id, position, seq);

-- 2. An organization's memberships: the page's ids from the index alone (the status filter
--    included), then a page of rows. Under row-level security the planner expects a handful of
--    rows and fetched every member's row to sort them.
drop index organization_membership_view_org_idx;
create index organization_membership_view_org_idx on organization_membership_view (organization_id, id) include (status);

-- 3. An organization's audit trail filtered by action: the rows of that action, not every row
--    of the organization fetched to look at its action.
create index audit_log_event_org_action_idx on audit_log_event (organization_id, action, transaction_id, position);

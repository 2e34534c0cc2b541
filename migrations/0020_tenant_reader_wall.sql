-- Access tokens of an organization's admins read that organization's projections (docs/API.md,
-- "Reading an organization with a user's access token"). Row-level security is their second
-- wall: every table those reads touch is covered. Migrations 0003 and 0006 cover the domains,
-- memberships, the event feed and the audit tables; this covers the two documents a membership
-- embeds, the organization itself and the member users. Without `keyledger.organization_id`
-- (projection workers, API-key reads) every row stays visible.
alter table organization_view enable row level security;
alter table organization_view force row level security;
create policy tenant_wall on organization_view
    using (coalesce(current_setting('keyledger.organization_id', true), '') = ''
           or id = current_setting('keyledger.organization_id', true));

-- A user belongs to no organization of its own: under a scope, the users with a membership of
-- that organization are visible. The test is a function whose body is resolved when it runs, so
-- the policy holds no reference to organization_membership_view (a rebuild swaps that table).
create or replace function keyledger_member_of_scope(p_user_id text) returns boolean
language sql stable as $$
    select exists (select 1 from public.organization_membership_view m
                   where m.user_id = p_user_id
                     and m.organization_id = current_setting('keyledger.organization_id', true))
$$;

alter table user_view enable row level security;
alter table user_view force row level security;
create policy tenant_wall on user_view
    using (coalesce(current_setting('keyledger.organization_id', true), '') = ''
           or keyledger_member_of_scope(id));

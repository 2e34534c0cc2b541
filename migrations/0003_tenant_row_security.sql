-- Row-level security as a second tenant wall on per-organization read models: when a session
-- sets `keyledger.organization_id` (org-scoped reads do, in their transaction), only that
-- organization's rows are visible, whatever the query's own filters say. Without the setting
-- (projection workers, environment-wide reads) every row is visible. FORCE applies it to the
-- owning role too, which is the role keyledger runs as.
alter table organization_domain_view enable row level security;
alter table organization_domain_view force row level security;
create policy tenant_wall on organization_domain_view
    using (coalesce(current_setting('keyledger.organization_id', true), '') = ''
           or organization_id = current_setting('keyledger.organization_id', true));

alter table organization_membership_view enable row level security;
alter table organization_membership_view force row level security;
create policy tenant_wall on organization_membership_view
    using (coalesce(current_setting('keyledger.organization_id', true), '') = ''
           or organization_id = current_setting('keyledger.organization_id', true));

alter table event_feed enable row level security;
alter table event_feed force row level security;
create policy tenant_wall on event_feed
    using (coalesce(current_setting('keyledger.organization_id', true), '') = ''
           or organization_id = current_setting('keyledger.organization_id', true));

-- The policies bind only roles without BYPASSRLS, and keyledger often connects as a superuser
-- (always, on its embedded PostgreSQL). Org-scoped reads therefore switch, inside their
-- transaction, to this role: it can only read the read models. Roles are cluster-wide; where
-- the connecting user may not create roles, the wall is skipped (the queries' filters still hold).
do $$
begin
    begin
        create role keyledger_tenant_reader nologin;
    exception when duplicate_object or unique_violation then null;
    end;
    begin
        execute format('grant keyledger_tenant_reader to %I', current_user);
    exception when others then null;
    end;
exception when insufficient_privilege then
    raise notice 'cannot create role keyledger_tenant_reader; row-level security is not enforced for reads';
end
$$;

do $$
begin
    if to_regrole('keyledger_tenant_reader') is not null then
        grant select on user_view, organization_view, organization_domain_view,
            organization_membership_view, event_feed to keyledger_tenant_reader;
    end if;
end
$$;

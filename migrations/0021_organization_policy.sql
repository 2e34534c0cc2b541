-- Organization policy (issue 10): for the users of its verified domains, an organization says
-- whether they join by themselves (`membership`: auto / invite_only, with `default_role`) and how
-- they may sign in (`authentication`: any / sso_required). The log holds each change
-- (`OrganizationPolicyChanged`); `organization_policy_view` is its current value, kept by the
-- `organizations` projection (one row per organization that ever set one; `id` is the
-- organization's id). Organizations without a row have the defaults.
create table organization_policy_view (
    id   text primary key,
    body jsonb not null
);

-- Readable with an organization admin's access token (docs/API.md): the tenant wall of
-- migration 0020.
alter table organization_policy_view enable row level security;
alter table organization_policy_view force row level security;
create policy tenant_wall on organization_policy_view
    using (coalesce(current_setting('keyledger.organization_id', true), '') = ''
           or id = current_setting('keyledger.organization_id', true));

do $$
begin
    if to_regrole('keyledger_tenant_reader') is not null then
        grant select on organization_policy_view to keyledger_tenant_reader;
    end if;
end
$$;

-- Roles. The role running migrations owns every table. The app role is the only one api and workers log in
-- with: it is not an owner and cannot bypass row-level security. The system role cannot log in; it owns the few
-- security-definer functions that must look across tenants (see core/src/db.rs, SystemDb).
do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'switchyard_app') then
    create role switchyard_app login nobypassrls nosuperuser nocreatedb nocreaterole;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'switchyard_system') then
    create role switchyard_system nologin nobypassrls nosuperuser nocreatedb nocreaterole;
  end if;
end
$$;

grant usage on schema public to switchyard_app, switchyard_system;
-- readyz compares applied migrations with the binary's own list.
grant select on _sqlx_migrations to switchyard_app;

-- Every tenant table's policy reads `app.tenant_id`, which TenantTx sets with `set_config(.., true)`: the
-- setting is transaction-local, so a pooled connection carries nothing over to the next user.

create function set_updated_at() returns trigger
language plpgsql as $$
begin
  new.updated_at := now();
  return new;
end
$$;

-- Confines a tenant-owned table to the transaction's tenant: RLS enabled and forced (so even the table's owner is
-- subject to it) and the one policy every tenant table has. `app.tenant_id` is set transaction-locally by TenantTx.
create function confine_to_tenant(tbl regclass, tenant_column name default 'tenant_id') returns void
language plpgsql as $fn$
begin
  execute format('alter table %s enable row level security', tbl);
  execute format('alter table %s force row level security', tbl);
  execute format(
    $sql$create policy tenant_isolation on %1$s
           using (%2$I = (select nullif(current_setting('app.tenant_id', true), '')::uuid))
           with check (%2$I = (select nullif(current_setting('app.tenant_id', true), '')::uuid))$sql$,
    tbl, tenant_column);
end
$fn$;

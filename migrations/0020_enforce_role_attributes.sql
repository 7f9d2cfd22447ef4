-- The roles' attributes are part of the security model, so every migration run enforces them, not only the first
-- one that created the roles: an app role someone made a superuser, gave BYPASSRLS or let create objects would
-- quietly lift row-level security. Altered only when wrong, so a migrating role without the right to change them
-- fails here, loudly, only when there is something to fix.
do $$
begin
  if exists (select 1 from pg_roles where rolname = 'switchyard_app'
             and (rolsuper or rolbypassrls or rolcreatedb or rolcreaterole or not rolcanlogin)) then
    alter role switchyard_app login nobypassrls nosuperuser nocreatedb nocreaterole;
  end if;
  if exists (select 1 from pg_roles where rolname = 'switchyard_system'
             and (rolsuper or rolbypassrls or rolcreatedb or rolcreaterole or rolcanlogin)) then
    alter role switchyard_system nologin nobypassrls nosuperuser nocreatedb nocreaterole;
  end if;
end
$$;

-- Nobody but the owner creates objects in the schema (Postgres before 15 let every role do so by default).
revoke create on schema public from public;
revoke create on schema public from switchyard_app, switchyard_system;

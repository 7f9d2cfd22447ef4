-- A bridge whose API process stopped without closing its tunnel (killed, its machine lost) stayed `online` for good:
-- the "bridge offline" alert never fired and its venue's stations showed as reachable. The workers now take a
-- bridge silent for two minutes (its heartbeat is every 15 seconds) as offline; this lists them across tenants,
-- (tenant, bridge) ids only, oldest first. Each is then set offline inside its own tenant. Silence is measured by
-- the database's clock, which stamped `last_seen_at`, never a caller's.
create function sys_silent_bridges(p_limit integer)
returns table (tenant_id uuid, bridge_id uuid)
language sql stable security definer set search_path = public, pg_temp as $$
  select b.tenant_id, b.id from bridge b
   where b.online and b.revoked_at is null and b.last_seen_at < now() - interval '2 minutes'
   order by b.last_seen_at
   limit least(greatest(p_limit, 1), 1000)
$$;
alter function sys_silent_bridges(integer) owner to switchyard_system;
revoke all on function sys_silent_bridges(integer) from public;
grant execute on function sys_silent_bridges(integer) to switchyard_app;

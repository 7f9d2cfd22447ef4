-- A charger whose API process stopped without closing its connection (killed, its machine lost) stayed `online` for
-- good: its station showed as reachable, the "charger offline" alert never fired and commands waited for a
-- connection that was gone. A live connection keeps its charger's seen mark at most about 105 seconds old (its own
-- checks, even when the charger only answers pings), so the workers take a charger silent for three minutes as offline; this
-- lists them across tenants, (tenant, charger) ids only, oldest first. Each is then set offline inside its own
-- tenant. Silence is measured by the database's clock, which stamped `last_seen_at`.
create function sys_silent_chargers(p_limit integer)
returns table (tenant_id uuid, charger_id uuid)
language sql stable security definer set search_path = public, pg_temp as $$
  select c.tenant_id, c.id from charger c
   where c.online and c.last_seen_at < now() - interval '3 minutes'
   order by c.last_seen_at
   limit least(greatest(p_limit, 1), 1000)
$$;
alter function sys_silent_chargers(integer) owner to switchyard_system;
revoke all on function sys_silent_chargers(integer) from public;
grant execute on function sys_silent_chargers(integer) to switchyard_app;

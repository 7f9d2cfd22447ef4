-- Platform-wide figures for the workers' /metrics (and the alert rules built on them): counts and ages only,
-- never a tenant's rows, so the app role may read them across tenants.
create function sys_platform_gauges(p_now timestamptz)
returns table (
  sessions_active bigint,
  rentals_active bigint,
  billing_oldest_due_seconds double precision,
  bridges_offline bigint,
  chargers_offline bigint,
  agents_offline bigint
)
language sql stable security definer set search_path = public, pg_temp as $$
  select
    (select count(*) from session where status in ('active', 'paused') and asset_id is null),
    (select count(*) from session where status in ('active', 'paused') and asset_id is not null),
    -- A claimed session's next tick is pushed past its lease, so only the backlog no worker has taken counts.
    coalesce((select extract(epoch from p_now - min(next_tick_at))::double precision
              from session where status = 'active' and next_tick_at <= p_now), 0),
    -- Bridges and chargers that were once connected and have been silent for five minutes.
    (select count(*) from bridge
      where revoked_at is null and not online and last_seen_at < p_now - interval '5 minutes'),
    (select count(*) from charger
      where station_id is not null and not online and last_seen_at < p_now - interval '5 minutes'),
    -- PC agents that their bridge last reported disconnected, five minutes ago or more.
    (select count(*) from station s
      cross join lateral (
        select b.body, b.occurred_at from bridge_event b
        where b.tenant_id = s.tenant_id and b.station_id = s.id and b.kind = 'agent_state'
        order by b.occurred_at desc limit 1
      ) e
      where s.control = 'agent' and s.archived_at is null
        and e.body ->> 'connected' = 'false' and e.occurred_at < p_now - interval '5 minutes')
$$;
revoke all on function sys_platform_gauges(timestamptz) from public;
grant execute on function sys_platform_gauges(timestamptz) to switchyard_app;

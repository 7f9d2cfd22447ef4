-- An eject's answer: what became of the powerbank. `acked_at` and `result` say only that the bridge passed the
-- command on (it acknowledges an eject when it publishes it to the cabinet); the cabinet's report (or the bridge's
-- on its behalf after a timeout), the workers closing it unsent, or staff who looked at the cabinet answer it.
alter table device_command
  add column answered_at timestamptz,
  add column outcome text check (outcome in ('ejected', 'not_ejected', 'expired', 'staff_ejected', 'staff_not_ejected')),
  add constraint device_command_outcome_answered check ((outcome is null) = (answered_at is null));

-- Ejects answered before this migration: by their cabinet's report, or closed unsent by the workers.
update device_command c
   set answered_at = e.received_at,
       outcome = case when (e.body->>'ok')::boolean then 'ejected' else 'not_ejected' end
  from bridge_event e
 where e.tenant_id = c.tenant_id and e.station_id = c.station_id and e.kind = 'cabinet_ejected'
   and e.body->>'request_id' = c.id::text and c.command = 'eject';
update device_command set answered_at = acked_at, outcome = 'expired'
 where command = 'eject' and result = 'expired' and answered_at is null;

-- The ejects a cabinet has not answered yet (bridge-driven cabinets only: a manual cabinet's eject has no deadline
-- and is only a record), so the list of those waiting for staff stays as small as the ejects in flight.
create index device_command_unanswered_idx on device_command (tenant_id, created_at)
  where command = 'eject' and answered_at is null and deadline_at is not null;

-- The platform gauges also count ejects waiting for staff (taken, unanswered, past their deadline, the rental still
-- running), for the alert that sends someone to the console. Counts only leave the function, as before.
grant select (command, session_id, answered_at) on device_command to switchyard_system;
drop function sys_platform_gauges(timestamptz);
create function sys_platform_gauges(p_now timestamptz)
returns table (
  sessions_active bigint,
  rentals_active bigint,
  billing_oldest_due_seconds double precision,
  bridges_offline bigint,
  chargers_offline bigint,
  agents_offline bigint,
  ejects_unanswered bigint
)
language sql stable security definer set search_path = public, pg_temp as $$
  select
    (select count(*) from session where status in ('active', 'paused') and asset_id is null),
    (select count(*) from session where status in ('active', 'paused') and asset_id is not null),
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
        and e.body ->> 'connected' = 'false' and e.occurred_at < p_now - interval '5 minutes'),
    (select count(*) from device_command c
       join session r on r.tenant_id = c.tenant_id and r.id = c.session_id
      where c.command = 'eject' and c.answered_at is null and c.deadline_at <= p_now
        and c.delivered_at is not null and r.status in ('active', 'paused'))
$$;
alter function sys_platform_gauges(timestamptz) owner to switchyard_system;
revoke all on function sys_platform_gauges(timestamptz) from public;
grant execute on function sys_platform_gauges(timestamptz) to switchyard_app;

-- An eject at a bridge-driven cabinet (control `cabinet` when the rental started) that no tunnel took by its
-- deadline (the venue's bridge dropped right after the rental started and stayed away) is never taken: it would hand
-- a powerbank to nobody. The workers close it unsent and void its rental, whatever the bridge does. The deadline is
-- fixed when the eject is written, so changing the station's control later neither voids rentals of a manual
-- cabinet (whose eject is only a record) nor lets a late eject through; a command without one never expires.
alter table device_command add column deadline_at timestamptz;

-- Ejects waiting at the upgrade get the deadline they would have had (2 minutes after they were written).
update device_command c set deadline_at = c.created_at + interval '120 seconds'
from station s
where s.tenant_id = c.tenant_id and s.id = c.station_id and s.control = 'cabinet'
  and c.command = 'eject' and c.session_id is not null and c.delivered_at is null;

-- Only ejects still waiting, so it stays as small as the ejects in flight.
create index device_command_deadline_idx on device_command (deadline_at)
  where delivered_at is null and deadline_at is not null;

grant select (tenant_id, id, deadline_at, delivered_at) on device_command to switchyard_system;
create policy system_overdue_read on device_command for select to switchyard_system using (true);

-- The workers find the overdue ejects across tenants here (their ids only), then void each in its own tenant
-- transaction; `p_skip` are ids a worker failed to void a moment ago, so that they do not hold up the rest.
create function sys_overdue_ejects(p_limit integer, p_skip uuid[])
returns table (tenant_id uuid, command_id uuid)
language sql stable security definer set search_path = public, pg_temp as $$
  select c.tenant_id, c.id from device_command c
  where c.delivered_at is null and c.deadline_at <= now() and c.id <> all (p_skip)
  order by c.deadline_at, c.tenant_id, c.id
  limit p_limit
$$;
alter function sys_overdue_ejects(integer, uuid[]) owner to switchyard_system;
revoke all on function sys_overdue_ejects(integer, uuid[]) from public;
grant execute on function sys_overdue_ejects(integer, uuid[]) to switchyard_app;

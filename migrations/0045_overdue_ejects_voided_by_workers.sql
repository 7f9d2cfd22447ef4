-- An eject that no tunnel took within its deadline (the venue's bridge dropped right after the rental started and
-- stayed away) is closed unsent and its rental voided by the workers, whatever the bridge does; a tunnel no longer
-- takes it. The workers find such ejects across tenants here, then void each in its own tenant transaction.
create index device_command_eject_waiting_idx on device_command (created_at)
  where delivered_at is null and command = 'eject' and session_id is not null;

grant select (tenant_id, id, station_id, session_id, command, created_at, delivered_at) on device_command
  to switchyard_system;
create policy system_overdue_read on device_command for select to switchyard_system using (true);

-- Only ejects of bridge-driven cabinets (control `cabinet`): a manual cabinet's eject is a record, not a delivery.
create function sys_overdue_ejects(p_deadline_secs double precision, p_limit integer)
returns table (tenant_id uuid, command_id uuid)
language sql stable security definer set search_path = public, pg_temp as $$
  select c.tenant_id, c.id from device_command c
  join station s on s.tenant_id = c.tenant_id and s.id = c.station_id
  where c.delivered_at is null and c.command = 'eject' and c.session_id is not null
    and c.created_at <= now() - make_interval(secs => p_deadline_secs)
    and s.control = 'cabinet'
  order by c.created_at, c.tenant_id, c.id
  limit p_limit
$$;
alter function sys_overdue_ejects(double precision, integer) owner to switchyard_system;
revoke all on function sys_overdue_ejects(double precision, integer) from public;
grant execute on function sys_overdue_ejects(double precision, integer) to switchyard_app;

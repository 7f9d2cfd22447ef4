-- What the cloud needs to judge a bridge's reports (issue 9): which tunnel of a bridge is the live one, when its
-- tunnel last went down, and what planned end each session had as last delivered to the bridge. A switch-off
-- report that the bridge could not have made is refused and kept as an anomaly, visible to owners.
alter table bridge add column tunnel_id uuid, add column tunnel_down_at timestamptz;

-- One row each time a bridge is told a new planned end for a session (a schedule repeating it adds nothing).
create table bridge_delivery (
  tenant_id uuid not null,
  bridge_id uuid not null,
  session_id uuid not null,
  until timestamptz,
  delivered_at timestamptz not null default now(),
  primary key (tenant_id, bridge_id, session_id, delivered_at),
  foreign key (tenant_id, bridge_id) references bridge (tenant_id, id)
);
select confine_to_tenant('bridge_delivery');
grant select, insert on bridge_delivery to switchyard_app;

-- What a bridge sent that was refused: a switch-off it could not have made, a sequence out of its window, a flood.
create table bridge_anomaly (
  tenant_id uuid not null,
  id uuid not null,
  bridge_id uuid not null,
  kind text not null,
  station_id uuid,
  session_id uuid,
  seq bigint,
  detail jsonb not null default '{}',
  created_at timestamptz not null default now(),
  primary key (tenant_id, id),
  foreign key (tenant_id, bridge_id) references bridge (tenant_id, id)
);
create index bridge_anomaly_bridge_idx on bridge_anomaly (tenant_id, bridge_id, created_at);
select confine_to_tenant('bridge_anomaly');
grant select, insert on bridge_anomaly to switchyard_app;

-- Retention, run by the workers' housekeeping: bridge events and deliveries older than the retention period go
-- (anomalies stay). The system role may see and delete only that.
create index bridge_event_received_idx on bridge_event (received_at);
create index bridge_delivery_delivered_idx on bridge_delivery (delivered_at);
grant select (tenant_id, received_at), delete on bridge_event to switchyard_system;
grant select (tenant_id, delivered_at), delete on bridge_delivery to switchyard_system;
create policy system_purge_read on bridge_event for select to switchyard_system using (true);
create policy system_purge on bridge_event for delete to switchyard_system using (true);
create policy system_purge_read on bridge_delivery for select to switchyard_system using (true);
create policy system_purge on bridge_delivery for delete to switchyard_system using (true);

create function sys_purge_bridge_events(p_before timestamptz, out events bigint, out deliveries bigint)
language plpgsql volatile security definer set search_path = public, pg_temp as $$
begin
  delete from bridge_event where received_at < p_before;
  get diagnostics events = row_count;
  delete from bridge_delivery where delivered_at < p_before;
  get diagnostics deliveries = row_count;
end
$$;
alter function sys_purge_bridge_events(timestamptz) owner to switchyard_system;
revoke all on function sys_purge_bridge_events(timestamptz) from public;
grant execute on function sys_purge_bridge_events(timestamptz) to switchyard_app;

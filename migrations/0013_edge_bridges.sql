-- Edge bridges: one per venue (or more), authenticated by a token of which only the SHA-256 is stored.
create table bridge (
  tenant_id uuid not null references tenant (id),
  id uuid not null,
  venue_id uuid not null,
  name text not null check (length(name) between 1 and 100),
  token_hash bytea not null,
  revoked_at timestamptz,
  online boolean not null default false,
  last_seen_at timestamptz,
  version text,
  clock_offset_ms bigint,
  last_seq bigint not null default 0,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (tenant_id, id),
  foreign key (tenant_id, venue_id) references venue (tenant_id, id)
);
-- Looked up across tenants by the tunnel (tokens are 256 random bits; like refresh tokens, not a unique key).
create index bridge_token_hash_idx on bridge (token_hash);
create index bridge_venue_idx on bridge (tenant_id, venue_id);
create trigger bridge_updated_at before update on bridge for each row execute function set_updated_at();
select confine_to_tenant('bridge');

-- Upstream events, kept once per (bridge, seq): a redelivered event is dropped.
create table bridge_event (
  tenant_id uuid not null,
  bridge_id uuid not null,
  seq bigint not null check (seq > 0),
  station_id uuid,
  kind text not null,
  body jsonb not null,
  occurred_at timestamptz not null,
  received_at timestamptz not null default now(),
  primary key (tenant_id, bridge_id, seq),
  foreign key (tenant_id, bridge_id) references bridge (tenant_id, id)
);
create index bridge_event_station_idx on bridge_event (tenant_id, station_id, occurred_at);
select confine_to_tenant('bridge_event');

alter table device_command add column acked_at timestamptz, add column result text;

grant select, insert, update on bridge to switchyard_app;
grant select, insert on bridge_event to switchyard_app;

-- The tunnel finds a bridge by its token's hash, across tenants (a listed system query).
grant select (tenant_id, id, token_hash, revoked_at) on bridge to switchyard_system;
create policy system_token_read on bridge for select to switchyard_system using (true);
create function sys_bridge_by_token(p_hash bytea)
returns table (tenant_id uuid, bridge_id uuid)
language sql stable security definer set search_path = public, pg_temp as $$
  select b.tenant_id, b.id from bridge b where b.token_hash = p_hash and b.revoked_at is null
$$;
alter function sys_bridge_by_token(bytea) owner to switchyard_system;
revoke all on function sys_bridge_by_token(bytea) from public;
grant execute on function sys_bridge_by_token(bytea) to switchyard_app;

-- A new command wakes the tunnels of its venue (`listen switchyard_commands`, payload `<tenant id>:<venue id>`).
create function notify_command() returns trigger
language plpgsql as $$
begin
  perform pg_notify('switchyard_commands', new.tenant_id::text || ':' || coalesce(
    (select s.venue_id::text from station s where s.tenant_id = new.tenant_id and s.id = new.station_id), ''));
  return null;
end
$$;
create trigger device_command_notify after insert on device_command
  for each row execute function notify_command();

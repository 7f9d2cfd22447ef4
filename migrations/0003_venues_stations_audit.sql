create table venue (
  tenant_id uuid not null references tenant (id),
  id uuid not null,
  name text not null check (length(name) between 1 and 100),
  timezone text not null,
  currency char(3) not null check (currency ~ '^[A-Z]{3}$'),
  address text not null default '' check (length(address) <= 500),
  archived_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (tenant_id, id)
);
create unique index venue_name_key on venue (tenant_id, lower(name)) where archived_at is null;
create trigger venue_updated_at before update on venue for each row execute function set_updated_at();
select confine_to_tenant('venue');

create type station_kind as enum
  ('pc', 'console', 'arcade', 'karaoke_room', 'ev_charger', 'powerbank_cabinet', 'kiosk');
create type station_control as enum ('agent', 'shelly', 'tasmota', 'mikrotik', 'ocpp', 'manual');
create type station_status as enum ('offline', 'online', 'in_session', 'maintenance');

create table station (
  tenant_id uuid not null,
  id uuid not null,
  venue_id uuid not null,
  name text not null check (length(name) between 1 and 100),
  kind station_kind not null,
  control station_control not null,
  status station_status not null default 'offline',
  control_settings jsonb not null default '{}' check (jsonb_typeof(control_settings) = 'object'),
  location text not null default '' check (length(location) <= 200),
  archived_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (tenant_id, id),
  foreign key (tenant_id, venue_id) references venue (tenant_id, id)
);
create index station_venue_idx on station (tenant_id, venue_id);
create unique index station_name_key on station (tenant_id, venue_id, lower(name)) where archived_at is null;
create trigger station_updated_at before update on station for each row execute function set_updated_at();
select confine_to_tenant('station');

-- An EV connector or a powerbank slot, numbered from 1 within its station.
create table connector (
  tenant_id uuid not null,
  id uuid not null,
  station_id uuid not null,
  number integer not null check (number between 1 and 64),
  status station_status not null default 'offline',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (tenant_id, id),
  foreign key (tenant_id, station_id) references station (tenant_id, id),
  constraint connector_number_key unique (tenant_id, station_id, number)
);
create trigger connector_updated_at before update on connector for each row execute function set_updated_at();
select confine_to_tenant('connector');

-- Every mutation, written in the same transaction as the change itself. Append-only for the app role.
create table audit_log (
  tenant_id uuid not null references tenant (id),
  id uuid not null,
  actor_user_id uuid,
  action text not null,
  object_type text not null,
  object_id uuid,
  request_id text,
  detail jsonb not null default '{}',
  created_at timestamptz not null default now(),
  primary key (tenant_id, id)
);
create index audit_log_created_idx on audit_log (tenant_id, created_at desc);
select confine_to_tenant('audit_log');

grant select, insert, update, delete on venue, station, connector to switchyard_app;
grant select, insert on audit_log to switchyard_app;

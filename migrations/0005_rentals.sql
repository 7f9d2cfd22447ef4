-- Powerbank rentals (seed 004): assets docked in cabinet slots, quotes with a TTL, and rentals as sessions that
-- carry an asset, a deposit and a return station.
create table asset (
  tenant_id uuid not null references tenant (id),
  id uuid not null,
  label text not null check (length(label) between 1 and 64),
  status text not null default 'docked' check (status in ('docked', 'rented', 'written_off')),
  station_id uuid,
  connector_id uuid,
  patron_id uuid,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (tenant_id, id),
  foreign key (tenant_id, station_id) references station (tenant_id, id),
  foreign key (tenant_id, connector_id) references connector (tenant_id, id),
  foreign key (tenant_id, patron_id) references patron (tenant_id, id),
  check ((status = 'docked') = (connector_id is not null and station_id is not null))
);
create unique index asset_label_key on asset (tenant_id, lower(label));
-- One asset per slot.
create unique index asset_slot_key on asset (tenant_id, connector_id) where connector_id is not null;
create index asset_station_idx on asset (tenant_id, station_id) where station_id is not null;
create trigger asset_updated_at before update on asset for each row execute function set_updated_at();
select confine_to_tenant('asset');

create table quote (
  tenant_id uuid not null references tenant (id),
  id uuid not null,
  patron_id uuid not null,
  station_id uuid not null,
  tariff_id uuid not null,
  tariff_version integer not null,
  expires_at timestamptz not null,
  consumed_at timestamptz,
  created_at timestamptz not null default now(),
  primary key (tenant_id, id),
  foreign key (tenant_id, patron_id) references patron (tenant_id, id),
  foreign key (tenant_id, station_id) references station (tenant_id, id),
  foreign key (tenant_id, tariff_id, tariff_version) references tariff_version (tenant_id, tariff_id, version)
);
create index quote_expiry_idx on quote (expires_at) where consumed_at is null;
select confine_to_tenant('quote');

alter table session add column asset_id uuid;
alter table session add column quote_id uuid;
alter table session add column return_station_id uuid;
alter table session add column deposit_amount bigint not null default 0 check (deposit_amount >= 0);
alter table session add foreign key (tenant_id, asset_id) references asset (tenant_id, id);
alter table session add foreign key (tenant_id, quote_id) references quote (tenant_id, id);
alter table session add foreign key (tenant_id, return_station_id) references station (tenant_id, id);
-- A quote starts at most one rental.
create unique index session_quote_key on session (tenant_id, quote_id) where quote_id is not null;

grant select, insert, update, delete on asset, quote to switchyard_app;

-- A cabinet serves many rentals at once: "one running session per station" holds for sessions without an asset.
drop index session_station_running_key;
create unique index session_station_running_key on session (tenant_id, station_id)
  where status in ('active', 'paused') and asset_id is null;

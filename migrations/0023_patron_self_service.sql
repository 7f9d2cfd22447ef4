-- The patron app acts: self-service stations, QR codes on stations and venues, and venue check-in with a geofence.

-- A QR token is 244 random bits (two random UUIDs less their version bits), hex: unguessable, and rotated by
-- setting it back to its default. `gen_random_uuid()` draws from the server's strong random source.
alter table station
  add column self_service boolean not null default false,
  add column qr_token text not null
    default translate(gen_random_uuid()::text || gen_random_uuid()::text, '-', '')
    check (length(qr_token) between 32 and 128);

-- Venue coordinates (WGS 84 degrees) and the geofence radius in metres: all three or none.
alter table venue
  add column latitude double precision check (latitude between -90 and 90),
  add column longitude double precision check (longitude between -180 and 180),
  add column geofence_m integer check (geofence_m between 10 and 100000),
  add column qr_token text not null
    default translate(gen_random_uuid()::text || gen_random_uuid()::text, '-', '')
    check (length(qr_token) between 32 and 128),
  add constraint venue_geofence_complete
    check ((latitude is null) = (longitude is null) and (latitude is null) = (geofence_m is null));

-- A patron's presence at a venue: open until checked out. One open check-in per patron, anywhere in the tenant.
create table venue_checkin (
  tenant_id uuid not null references tenant (id),
  id uuid not null,
  venue_id uuid not null,
  patron_id uuid not null,
  -- Where the patron said it was, and how far that is from the venue in metres (null: the venue has no geofence).
  latitude double precision not null check (latitude between -90 and 90),
  longitude double precision not null check (longitude between -180 and 180),
  distance_m integer check (distance_m >= 0),
  checked_in_at timestamptz not null default now(),
  checked_out_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (tenant_id, id),
  foreign key (tenant_id, venue_id) references venue (tenant_id, id),
  foreign key (tenant_id, patron_id) references patron (tenant_id, id),
  check (checked_out_at is null or checked_out_at >= checked_in_at)
);
create unique index venue_checkin_open_key on venue_checkin (tenant_id, patron_id) where checked_out_at is null;
create index venue_checkin_venue_open_idx on venue_checkin (tenant_id, venue_id) where checked_out_at is null;
create trigger venue_checkin_updated_at before update on venue_checkin
  for each row execute function set_updated_at();
select confine_to_tenant('venue_checkin');
grant select, insert, update on venue_checkin to switchyard_app;

-- Charging (seed 002): the cloud is an OCPP 1.6J / 2.0.1 central system. A charger (charge point) belongs to one
-- station of kind `ev_charger` and control `ocpp`; its transactions are metered sessions billed from the same
-- ledger; commands to it go through an outbox like the bridges' device commands.

-- A charge point's identity (the `{chargePointId}` of `/ocpp/{chargePointId}`) is unique across the platform, so
-- that a connecting charger finds its tenant. That one platform-wide namespace lives in a directory the app role
-- cannot read or write; the listed functions below claim, release and look up identities. Like `app_user`, it is a
-- platform table (no tenant's rows, so no tenant policy): its holder column is named for what it holds.
create table charge_point_directory (
  charge_point_id text primary key,
  holder_tenant_id uuid not null references tenant (id),
  charger_id uuid not null
);
revoke all on charge_point_directory from public;

create type charger_registration as enum ('pending', 'accepted', 'rejected');

create table charger (
  tenant_id uuid not null references tenant (id),
  id uuid not null,
  -- Null while the charger waits for an operator to adopt it (it connected with the tenant's onboarding key).
  station_id uuid,
  -- OCPP identities: printable, no slash (it is a URL path segment), at most 48 characters (2.0.1's limit).
  charge_point_id text not null check (charge_point_id ~ '^[A-Za-z0-9._:*+@-]{1,48}$'),
  -- SHA-256 of the HTTP Basic password (random, 32 characters: a hash of a strong secret needs no slow KDF).
  password_hash bytea,
  registration charger_registration not null default 'accepted',
  protocol text check (protocol in ('ocpp1.6', 'ocpp2.0.1')),
  vendor text not null default '' check (length(vendor) <= 50),
  model text not null default '' check (length(model) <= 50),
  serial_number text not null default '' check (length(serial_number) <= 50),
  firmware_version text not null default '' check (length(firmware_version) <= 50),
  boot_at timestamptz,
  last_seen_at timestamptz,
  online boolean not null default false,
  -- The live connection: a newer one replaces it, and the older closes.
  connection_id uuid,
  -- Set while the charger is connected through its venue's edge bridge.
  via_bridge uuid,
  heartbeat_secs integer not null default 300 check (heartbeat_secs between 10 and 86400),
  -- The local authorization list version the charger last accepted.
  local_list_version bigint not null default 0,
  -- The power limit set by a charging profile (W), if any.
  power_limit_w integer check (power_limit_w > 0),
  -- The configuration the charger last reported (GetConfiguration / GetVariables).
  configuration jsonb not null default '{}',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (tenant_id, id),
  foreign key (tenant_id, station_id) references station (tenant_id, id),
  constraint charger_station_key unique (tenant_id, station_id),
  constraint charger_identity_key unique (tenant_id, charge_point_id),
  check ((station_id is null) = (registration = 'pending'))
);
create trigger charger_updated_at before update on charger for each row execute function set_updated_at();
select confine_to_tenant('charger');
grant select, insert, update, delete on charger to switchyard_app;

-- What an OCPP connector reports (Available, Preparing, Charging, SuspendedEV, Faulted, ...), as reported.
alter table connector
  add column ocpp_status text check (length(ocpp_status) <= 30),
  add column error_code text check (length(error_code) <= 50),
  add column status_at timestamptz;

-- Tenant settings: what happens to a charger with an unknown identity, and the local list's version.
alter table tenant
  add column unknown_chargers text not null default 'refuse' check (unknown_chargers in ('refuse', 'pending')),
  add column charger_onboarding_key_hash bytea,
  add column tag_list_version bigint not null default 0;
create index tenant_onboarding_key_idx on tenant (charger_onboarding_key_hash)
  where charger_onboarding_key_hash is not null;

-- RFID tags for chargers: blocked, expiring, grouped under a parent tag (OCPP's parentIdTag), versioned for
-- differential local-list updates. A tag first seen in a transaction a charger kept offline is stored blocked and
-- without a patron, so that the transaction is kept rather than lost.
alter table rfid_tag
  alter column patron_id drop not null,
  add column blocked boolean not null default false,
  add column expires_at timestamptz,
  add column parent_uid text check (length(parent_uid) between 1 and 64),
  add column version bigint not null default 0,
  add column updated_at timestamptz not null default now(),
  add constraint rfid_tag_unowned_blocked check (patron_id is not null or blocked);
create index rfid_tag_version_idx on rfid_tag (tenant_id, version);
grant update on rfid_tag to switchyard_app;

-- Sessions on a charger run per connector; sessions read an energy meter (a charger's, or a smart plug's
-- counter) from its first reading.
alter table session
  add column connector integer check (connector between 1 and 64),
  add column meter_start_wh bigint,
  add column meter_last_wh bigint,
  add column power_w integer;
drop index session_station_running_key;
create unique index session_station_running_key on session (tenant_id, station_id, coalesce(connector, 0))
  where status in ('active', 'paused') and asset_id is null;

-- OCPP 1.6 transaction ids are integers the central system hands out: one sequence for the platform.
create sequence ocpp_transaction_id_seq as integer;
grant usage on sequence ocpp_transaction_id_seq to switchyard_app;

create table charging_transaction (
  tenant_id uuid not null references tenant (id),
  id uuid not null,
  charger_id uuid not null,
  station_id uuid not null,
  connector integer not null check (connector between 1 and 64),
  -- The transaction's id in OCPP: 1.6, the integer handed out; 2.0.1, the charger's own transactionId.
  ocpp_id text not null check (length(ocpp_id) between 1 and 36),
  id_tag text not null check (length(id_tag) between 1 and 64),
  -- What the tag was judged at the start: Accepted, Blocked, Expired, Invalid, NoCredit, ConcurrentTx.
  auth_status text not null,
  -- The metered session it bills; none when the tag was not accepted (the transaction is kept, not billed).
  session_id uuid,
  meter_start_wh bigint not null check (meter_start_wh >= 0),
  meter_last_wh bigint not null check (meter_last_wh >= 0),
  power_w integer,
  started_at timestamptz not null,
  stopped_at timestamptz,
  stop_reason text check (length(stop_reason) <= 50),
  -- Reported by a charger that kept it while its link was down.
  offline boolean not null default false,
  reservation_id integer,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (tenant_id, id),
  foreign key (tenant_id, charger_id) references charger (tenant_id, id),
  foreign key (tenant_id, station_id) references station (tenant_id, id),
  foreign key (tenant_id, session_id) references session (tenant_id, id),
  constraint charging_transaction_ocpp_key unique (tenant_id, charger_id, ocpp_id),
  -- A StartTransaction sent twice (its answer lost) gets the same transaction.
  constraint charging_transaction_start_key unique (tenant_id, charger_id, connector, id_tag, started_at, meter_start_wh)
);
create index charging_transaction_station_idx on charging_transaction (tenant_id, station_id, started_at desc);
create index charging_transaction_session_idx on charging_transaction (tenant_id, session_id);
create trigger charging_transaction_updated_at before update on charging_transaction
  for each row execute function set_updated_at();
select confine_to_tenant('charging_transaction');
grant select, insert, update on charging_transaction to switchyard_app;

-- OCPP 2.0.1 TransactionEvent sequence numbers seen per transaction: a repeated one is answered, not applied.
create table charging_transaction_event (
  tenant_id uuid not null,
  transaction_id uuid not null,
  seq_no integer not null,
  event_type text not null,
  received_at timestamptz not null default now(),
  primary key (tenant_id, transaction_id, seq_no),
  foreign key (tenant_id, transaction_id) references charging_transaction (tenant_id, id)
);
select confine_to_tenant('charging_transaction_event');
grant select, insert on charging_transaction_event to switchyard_app;

-- Reservations (ReserveNow): reservationId is an integer in OCPP, one sequence for the platform.
create sequence ocpp_reservation_id_seq as integer;
grant usage on sequence ocpp_reservation_id_seq to switchyard_app;
create table charging_reservation (
  tenant_id uuid not null references tenant (id),
  id integer not null default nextval('ocpp_reservation_id_seq'),
  charger_id uuid not null,
  station_id uuid not null,
  connector integer not null check (connector between 0 and 64),
  patron_id uuid not null,
  id_tag text not null,
  expires_at timestamptz not null,
  status text not null default 'requested'
    check (status in ('requested', 'accepted', 'refused', 'used', 'cancelled', 'expired')),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (tenant_id, id),
  foreign key (tenant_id, charger_id) references charger (tenant_id, id),
  foreign key (tenant_id, station_id) references station (tenant_id, id),
  foreign key (tenant_id, patron_id) references patron (tenant_id, id)
);
create trigger charging_reservation_updated_at before update on charging_reservation
  for each row execute function set_updated_at();
select confine_to_tenant('charging_reservation');
grant select, insert, update on charging_reservation to switchyard_app;

-- Calls from the central system to a charger (remote start, reset, configuration, local list, ...): written with the
-- change that causes them, taken in order by whichever API replica holds the charger's connection (one call in
-- flight per charger), answered or timed out.
create table ocpp_call (
  tenant_id uuid not null references tenant (id),
  id uuid not null,
  charger_id uuid not null,
  action text not null check (action ~ '^[A-Za-z]{3,40}$'),
  payload jsonb not null,
  status text not null default 'pending'
    check (status in ('pending', 'sent', 'answered', 'error', 'timeout', 'expired')),
  -- The answer (CALLRESULT payload), or the CALLERROR's code and description.
  response jsonb,
  error text,
  session_id uuid,
  requested_by uuid,
  connection_id uuid,
  created_at timestamptz not null default now(),
  sent_at timestamptz,
  answered_at timestamptz,
  primary key (tenant_id, id),
  foreign key (tenant_id, charger_id) references charger (tenant_id, id)
);
create index ocpp_call_pending_idx on ocpp_call (tenant_id, charger_id, created_at) where status = 'pending';
create index ocpp_call_charger_idx on ocpp_call (tenant_id, charger_id, created_at desc);
select confine_to_tenant('ocpp_call');
grant select, insert, update on ocpp_call to switchyard_app;

-- The listed cross-tenant functions.
grant select (tenant_id, id, charge_point_id, password_hash) on charger to switchyard_system;
create policy system_identity_read on charger for select to switchyard_system using (true);
grant select (id, unknown_chargers, charger_onboarding_key_hash) on tenant to switchyard_system;
create policy system_onboarding_read on tenant for select to switchyard_system using (true);
grant select, insert, delete on charge_point_directory to switchyard_system;

-- A connecting charger: its tenant, charger and password hash, by identity.
create function sys_charger_identity(p_charge_point_id text)
returns table (tenant_id uuid, charger_id uuid, password_hash bytea)
language sql stable security definer set search_path = public, pg_temp as $$
  select c.tenant_id, c.id, c.password_hash
  from charge_point_directory d join charger c on c.tenant_id = d.holder_tenant_id and c.id = d.charger_id
  where d.charge_point_id = p_charge_point_id
$$;

-- A charger with an unknown identity that presents an onboarding key: the tenant that takes unknown chargers as
-- pending with that key.
create function sys_tenant_by_onboarding_key(p_hash bytea)
returns uuid
language sql stable security definer set search_path = public, pg_temp as $$
  select t.id from tenant t
  where t.charger_onboarding_key_hash = p_hash and t.unknown_chargers = 'pending'
  limit 1
$$;

-- Claims an identity for a charger of the current tenant (the transaction's `app.tenant_id`, never an argument):
-- true when claimed (or already this charger's), false when another charger has it.
create function sys_claim_charge_point_id(p_charge_point_id text, p_charger uuid)
returns boolean
language plpgsql volatile security definer set search_path = public, pg_temp as $$
declare
  me uuid := nullif(current_setting('app.tenant_id', true), '')::uuid;
  holder record;
begin
  if me is null then
    raise exception 'no tenant' using errcode = 'insufficient_privilege';
  end if;
  insert into charge_point_directory (charge_point_id, holder_tenant_id, charger_id)
  values (p_charge_point_id, me, p_charger)
  on conflict (charge_point_id) do nothing;
  select d.holder_tenant_id as tenant_id, d.charger_id into holder from charge_point_directory d
  where d.charge_point_id = p_charge_point_id;
  return holder.tenant_id = me and holder.charger_id = p_charger;
end
$$;

-- Releases an identity held by a charger of the current tenant.
create function sys_release_charge_point_id(p_charge_point_id text)
returns void
language sql volatile security definer set search_path = public, pg_temp as $$
  delete from charge_point_directory
  where charge_point_id = p_charge_point_id
    and holder_tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid
$$;

alter function sys_charger_identity(text) owner to switchyard_system;
alter function sys_tenant_by_onboarding_key(bytea) owner to switchyard_system;
alter function sys_claim_charge_point_id(text, uuid) owner to switchyard_system;
alter function sys_release_charge_point_id(text) owner to switchyard_system;
revoke all on function sys_charger_identity(text) from public;
revoke all on function sys_tenant_by_onboarding_key(bytea) from public;
revoke all on function sys_claim_charge_point_id(text, uuid) from public;
revoke all on function sys_release_charge_point_id(text) from public;
grant execute on function sys_charger_identity(text) to switchyard_app;
grant execute on function sys_tenant_by_onboarding_key(bytea) to switchyard_app;
grant execute on function sys_claim_charge_point_id(text, uuid) to switchyard_app;
grant execute on function sys_release_charge_point_id(text) to switchyard_app;

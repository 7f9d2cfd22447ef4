-- Tariffs are versioned: editing one adds a version; a session keeps the terms it started with.
create table tariff (
  tenant_id uuid not null references tenant (id),
  id uuid not null,
  name text not null check (length(name) between 1 and 100),
  current_version integer not null default 1,
  archived_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (tenant_id, id)
);
create unique index tariff_name_key on tariff (tenant_id, lower(name)) where archived_at is null;
create trigger tariff_updated_at before update on tariff for each row execute function set_updated_at();
select confine_to_tenant('tariff');

create table tariff_version (
  tenant_id uuid not null,
  tariff_id uuid not null,
  version integer not null check (version >= 1),
  terms jsonb not null check (jsonb_typeof(terms) = 'object'),
  created_at timestamptz not null default now(),
  primary key (tenant_id, tariff_id, version),
  foreign key (tenant_id, tariff_id) references tariff (tenant_id, id)
);
select confine_to_tenant('tariff_version');

-- Which tariff applies where: a venue, a station kind at a venue, or one station. The most specific wins.
create table tariff_assignment (
  tenant_id uuid not null,
  id uuid not null,
  tariff_id uuid not null,
  venue_id uuid not null,
  station_kind station_kind,
  station_id uuid,
  created_at timestamptz not null default now(),
  primary key (tenant_id, id),
  foreign key (tenant_id, tariff_id) references tariff (tenant_id, id),
  foreign key (tenant_id, venue_id) references venue (tenant_id, id),
  foreign key (tenant_id, station_id) references station (tenant_id, id)
);
create unique index tariff_assignment_scope_key
  on tariff_assignment (tenant_id, venue_id, station_kind, station_id) nulls not distinct;
select confine_to_tenant('tariff_assignment');

-- An end customer of one tenant.
create table patron (
  tenant_id uuid not null references tenant (id),
  id uuid not null,
  display_name text not null check (length(display_name) between 1 and 100),
  email text check (email = lower(email)),
  phone text check (length(phone) <= 32),
  tier text not null default 'standard' check (length(tier) between 1 and 32),
  walk_in boolean not null default false,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (tenant_id, id)
);
create unique index patron_email_key on patron (tenant_id, email) where email is not null;
create trigger patron_updated_at before update on patron for each row execute function set_updated_at();
select confine_to_tenant('patron');

create table rfid_tag (
  tenant_id uuid not null,
  uid text not null check (length(uid) between 4 and 64),
  patron_id uuid not null,
  created_at timestamptz not null default now(),
  primary key (tenant_id, uid),
  foreign key (tenant_id, patron_id) references patron (tenant_id, id) on delete cascade
);
select confine_to_tenant('rfid_tag');

-- The ledger: append-only double entry in integer minor units. An account is (owner, purpose, currency); its
-- balance is the sum of its entries. Every journal's entries sum to zero per currency (checked at commit), and
-- every journal has an idempotency key unique per tenant, so retrying a step is a no-op.
create table ledger_account (
  tenant_id uuid not null references tenant (id),
  id uuid not null,
  owner_kind text not null check (owner_kind in ('patron', 'venue')),
  owner_id uuid not null,
  purpose text not null check (purpose in ('wallet', 'deposit_hold', 'debt', 'revenue', 'cash_drawer', 'clearing')),
  currency char(3) not null check (currency ~ '^[A-Z]{3}$'),
  created_at timestamptz not null default now(),
  primary key (tenant_id, id),
  constraint ledger_account_owner_key unique (tenant_id, owner_kind, owner_id, purpose, currency)
);
select confine_to_tenant('ledger_account');

create table journal (
  tenant_id uuid not null references tenant (id),
  id uuid not null,
  idempotency_key text not null check (length(idempotency_key) between 1 and 200),
  kind text not null,
  memo text not null default '',
  session_id uuid,
  created_at timestamptz not null default now(),
  primary key (tenant_id, id),
  constraint journal_idempotency_key unique (tenant_id, idempotency_key)
);
create index journal_session_idx on journal (tenant_id, session_id) where session_id is not null;
select confine_to_tenant('journal');

create table journal_entry (
  tenant_id uuid not null,
  journal_id uuid not null,
  line smallint not null,
  account_id uuid not null,
  amount bigint not null check (amount <> 0),
  currency char(3) not null,
  primary key (tenant_id, journal_id, line),
  foreign key (tenant_id, journal_id) references journal (tenant_id, id),
  foreign key (tenant_id, account_id) references ledger_account (tenant_id, id)
);
create index journal_entry_account_idx on journal_entry (tenant_id, account_id);
select confine_to_tenant('journal_entry');

-- Each insert into journal_entry carries whole journals, and each journal's entries sum to zero per currency:
-- checked once per statement over the rows it inserted (a transition table), not once per row.
create function journal_balances() returns trigger language plpgsql as $$
declare
  unbalanced uuid;
begin
  select journal_id into unbalanced from inserted
  group by tenant_id, journal_id, currency having sum(amount) <> 0 limit 1;
  if found then
    raise exception 'journal % does not balance', unbalanced using errcode = 'check_violation';
  end if;
  return null;
end
$$;
create trigger journal_entry_balanced after insert on journal_entry
  referencing new table as inserted for each statement execute function journal_balances();

create type session_status as enum ('active', 'paused', 'ended', 'expired', 'bought_out', 'failed');

create table session (
  tenant_id uuid not null references tenant (id),
  id uuid not null,
  station_id uuid not null,
  venue_id uuid not null,
  patron_id uuid not null,
  started_by uuid,
  origin text not null check (origin in ('staff', 'patron', 'device')),
  status session_status not null default 'active',
  tariff_id uuid not null,
  tariff_version integer not null,
  terms jsonb not null,
  timezone text not null,
  tier text not null,
  currency char(3) not null,
  started_at timestamptz not null,
  planned_end_at timestamptz,
  ended_at timestamptz,
  energy_wh bigint not null default 0 check (energy_wh >= 0),
  charged_amount bigint not null default 0 check (charged_amount >= 0),
  ticks integer not null default 0,
  next_tick_at timestamptz,
  -- Warnings already sent for the current planned end: bit 1 = 5 minutes, bit 2 = 1 minute.
  warnings_sent smallint not null default 0,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (tenant_id, id),
  foreign key (tenant_id, station_id) references station (tenant_id, id),
  foreign key (tenant_id, venue_id) references venue (tenant_id, id),
  foreign key (tenant_id, patron_id) references patron (tenant_id, id),
  foreign key (tenant_id, tariff_id, tariff_version) references tariff_version (tenant_id, tariff_id, version)
);
-- One running session per station.
create unique index session_station_running_key on session (tenant_id, station_id) where status in ('active', 'paused');
create index session_patron_idx on session (tenant_id, patron_id, started_at desc);
-- The billing tick finds due sessions across tenants through this index.
create index session_due_idx on session (next_tick_at) where status = 'active';
create trigger session_updated_at before update on session for each row execute function set_updated_at();
select confine_to_tenant('session');

-- State-changing POSTs with an Idempotency-Key: the first request's response is stored and replayed.
create table idempotency_key (
  tenant_id uuid not null references tenant (id),
  key text not null check (length(key) between 1 and 200),
  scope text not null,
  request_hash bytea not null,
  status smallint,
  response jsonb,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  primary key (tenant_id, scope, key)
);
create index idempotency_key_expiry_idx on idempotency_key (expires_at);
select confine_to_tenant('idempotency_key');

-- Commands for station controls (the edge bridge consumes them), written with the change that causes them.
create table device_command (
  tenant_id uuid not null references tenant (id),
  id uuid not null,
  station_id uuid not null,
  session_id uuid,
  command text not null check (command in ('switch_on', 'switch_off', 'extend', 'warn', 'eject', 'accept_return')),
  payload jsonb not null default '{}',
  created_at timestamptz not null default now(),
  delivered_at timestamptz,
  primary key (tenant_id, id),
  foreign key (tenant_id, station_id) references station (tenant_id, id)
);
create index device_command_station_idx on device_command (tenant_id, station_id, created_at);
select confine_to_tenant('device_command');

alter table station add column expected_on boolean not null default false;
alter table station add column expected_until timestamptz;

grant select, insert, update, delete on tariff, tariff_version, tariff_assignment, patron, rfid_tag, session,
  idempotency_key, device_command to switchyard_app;
-- The ledger is append-only for the app role.
grant select, insert on ledger_account, journal, journal_entry to switchyard_app;

-- The billing tick claims due sessions across tenants: the one cross-tenant write, through one security-definer
-- function. Claimed sessions get a lease (their next tick moves `p_lease_secs` ahead) so other workers skip them;
-- the worker then bills each inside its own tenant and sets the real next tick. A worker that dies mid-batch
-- leaves its sessions to be claimed again when the lease runs out.
grant select (tenant_id, id, status, next_tick_at), update (next_tick_at) on session to switchyard_system;
create policy system_claim_read on session for select to switchyard_system using (true);
create policy system_claim_write on session for update to switchyard_system using (true) with check (true);

create function sys_claim_due_sessions(p_now timestamptz, p_limit integer, p_lease_secs integer)
returns table (tenant_id uuid, session_id uuid)
language sql volatile security definer set search_path = public, pg_temp as $$
  with due as (
    select s.tenant_id, s.id from session s
    where s.status = 'active' and s.next_tick_at <= p_now
    -- Grouped by tenant, so that a batch bills many sessions per tenant transaction. Every pass drains all that
    -- is due, so the order does not starve anyone.
    order by s.tenant_id, s.next_tick_at
    limit p_limit
    for update skip locked
  )
  update session s set next_tick_at = p_now + make_interval(secs => p_lease_secs)
  from due where s.tenant_id = due.tenant_id and s.id = due.id
  returning s.tenant_id, s.id
$$;
alter function sys_claim_due_sessions(timestamptz, integer, integer) owner to switchyard_system;
revoke all on function sys_claim_due_sessions(timestamptz, integer, integer) from public;
grant execute on function sys_claim_due_sessions(timestamptz, integer, integer) to switchyard_app;

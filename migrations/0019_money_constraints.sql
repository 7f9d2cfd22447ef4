-- Money paths: the database holds the ledger to its own shape, and tenants cap what staff may take in cash.
--
-- Existing data: every journal entry has been written by `ledger::post` with its journal's currency to accounts
-- chosen by that currency, every session, station and ledger owner id was read from its row before it was used,
-- and nothing deletes sessions, stations, patrons or venues. The constraints are added as `not valid` and then
-- validated, so a row that does break one stops this migration (in its transaction: nothing changes) and names
-- the constraint, rather than being silently accepted.

-- A journal entry's currency is its account's currency: a composite key on the account carries the currency, and
-- the entry references it.
alter table ledger_account add constraint ledger_account_currency_key unique (tenant_id, id, currency);
alter table journal_entry add constraint journal_entry_account_currency_fk
  foreign key (tenant_id, account_id, currency) references ledger_account (tenant_id, id, currency) not valid;
alter table journal_entry validate constraint journal_entry_account_currency_fk;

-- Session and station references that had no key.
alter table journal add constraint journal_session_fk
  foreign key (tenant_id, session_id) references session (tenant_id, id) not valid;
alter table journal validate constraint journal_session_fk;

create index device_command_session_idx on device_command (tenant_id, session_id) where session_id is not null;
alter table device_command add constraint device_command_session_fk
  foreign key (tenant_id, session_id) references session (tenant_id, id) not valid;
alter table device_command validate constraint device_command_session_fk;

alter table bridge_event add constraint bridge_event_station_fk
  foreign key (tenant_id, station_id) references station (tenant_id, id) not valid;
alter table bridge_event validate constraint bridge_event_station_fk;

-- A ledger account's owner is a patron or a venue (`owner_kind`, `owner_id`): one column cannot reference two
-- tables, so each kind gets a stored generated column that holds the id only for its kind (null otherwise, and a
-- foreign key ignores a null), and that column references its table.
alter table ledger_account
  add column owner_patron_id uuid generated always as (case when owner_kind = 'patron' then owner_id end) stored,
  add column owner_venue_id uuid generated always as (case when owner_kind = 'venue' then owner_id end) stored;
alter table ledger_account add constraint ledger_account_patron_fk
  foreign key (tenant_id, owner_patron_id) references patron (tenant_id, id) not valid;
alter table ledger_account validate constraint ledger_account_patron_fk;
alter table ledger_account add constraint ledger_account_venue_fk
  foreign key (tenant_id, owner_venue_id) references venue (tenant_id, id) not valid;
alter table ledger_account validate constraint ledger_account_venue_fk;

-- What one STAFF member may top up in cash at once (minor units of the venue's currency); more needs a manager or
-- an owner. The owner changes it (`setStaffCashTopUpCap`).
alter table tenant add column staff_cash_top_up_cap bigint not null default 20000
  check (staff_cash_top_up_cap between 0 and 1000000000000);

-- A patron account's balance was the sum of all its entries, read at every start, stop, tick, top-up and wallet
-- view: the cost grew with the patron's history (a regular with a year of per-minute ticks has tens of thousands of
-- entries, and every billing tick summed them for every wallet in its batch). Now each patron account's balance is
-- kept in `ledger_balance`, moved by the same statement that inserts the entries (a statement-level trigger over
-- its transition table), so reading it is one primary-key probe whatever the history.
--
-- Only patron accounts (wallet, deposit hold, debt): a debit already takes the account's lock (`ledger::lock`) until
-- its commit, so the kept row adds little waiting (a credit, a top-up, now waits for a movement of the same patron
-- account that has not committed yet). A venue's revenue account is credited
-- by every session of the venue; keeping its balance in one row would make every stop of the venue wait for the one
-- before it to commit. Its balance is still the sum of its entries, read only by the books view.
--
-- The entries stay the truth: the ledger is append-only (no update or delete of entries), so the kept balance can
-- only move with them. The app role may read it, never write it. The trigger's function writes it as the system
-- role, and only for the rows the statement inserted, which the entries' own policy already confined to the
-- transaction's tenant (a superuser's setup script, which sets no tenant, keeps the balances too).
create table ledger_balance (
  tenant_id uuid not null,
  account_id uuid not null,
  balance bigint not null,
  primary key (tenant_id, account_id),
  foreign key (tenant_id, account_id) references ledger_account (tenant_id, id)
);
select confine_to_tenant('ledger_balance');
grant select on ledger_balance to switchyard_app;

create function ledger_balances_follow() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
begin
  -- In account order, so that two statements moving several of the same accounts take their rows in one order.
  insert into ledger_balance as b (tenant_id, account_id, balance)
  select i.tenant_id, i.account_id, sum(i.amount)::bigint
  from inserted i
  join ledger_account a on a.tenant_id = i.tenant_id and a.id = i.account_id
  where a.owner_kind = 'patron'
  group by i.tenant_id, i.account_id
  order by i.tenant_id, i.account_id
  on conflict (tenant_id, account_id) do update set balance = b.balance + excluded.balance;
  return null;
end
$$;
create trigger journal_entry_balances after insert on journal_entry
  referencing new table as inserted for each statement execute function ledger_balances_follow();
alter function ledger_balances_follow() owner to switchyard_system;
revoke all on function ledger_balances_follow() from public;
grant select (tenant_id, id, owner_kind) on ledger_account to switchyard_system;
grant select, insert, update on ledger_balance to switchyard_system;
create policy system_balances on ledger_account for select to switchyard_system using (true);
create policy system_balances on ledger_balance for all to switchyard_system using (true) with check (true);

-- The balances of the history so far, read across tenants: the owner running this migration is confined like
-- everyone else (row-level security is forced), so the three tables let their owner through for this one
-- statement, inside the migration's transaction.
alter table journal_entry no force row level security;
alter table ledger_account no force row level security;
alter table ledger_balance no force row level security;
insert into ledger_balance (tenant_id, account_id, balance)
select e.tenant_id, e.account_id, sum(e.amount)::bigint
from journal_entry e
join ledger_account a on a.tenant_id = e.tenant_id and a.id = e.account_id
where a.owner_kind = 'patron'
group by e.tenant_id, e.account_id;
alter table journal_entry force row level security;
alter table ledger_account force row level security;
alter table ledger_balance force row level security;

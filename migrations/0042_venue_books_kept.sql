-- A venue's books (revenue, cash drawer, card clearing) were the sums of all the venue's entries, so the books view
-- cost more with every session the venue ever had. A kept balance per venue account, moved with every entry, would
-- make each stop of the venue wait for the one before it to commit (every stop credits the revenue account). So the
-- venue's balances are kept as the rollup pass takes journals off the analytics queue, off the paying path:
--
-- * the analytics queue now takes every journal with an entry on a venue account (it took those on revenue and
--   debt accounts: card top-ups and refunds, which move clearing, and cash top-ups are added);
-- * deleting journals from the queue adds their venue-account entries to `ledger_venue_balance`: a statement
--   trigger, in the deleting transaction, so whichever worker binary takes them (an older release during a
--   rollout or after a rollback too) keeps the balances right;
-- * a venue account's balance is its kept balance plus its entries in journals still queued, read in one
--   statement (one snapshot), so it equals the sum of all its entries at every moment, whether or not the pass
--   has run.
--
-- The app role may read the kept balances, never write them; the trigger's function writes them as the system role.
create table ledger_venue_balance (
  tenant_id uuid not null,
  account_id uuid not null,
  balance bigint not null,
  updated_at timestamptz not null default now(),
  primary key (tenant_id, account_id),
  foreign key (tenant_id, account_id) references ledger_account (tenant_id, id)
);
select confine_to_tenant('ledger_venue_balance');
grant select on ledger_venue_balance to switchyard_app;

create function ledger_venue_balances_follow() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
begin
  -- In account order, as the patrons' kept balances (0040).
  insert into ledger_venue_balance as b (tenant_id, account_id, balance)
  select e.tenant_id, e.account_id, sum(e.amount)::bigint
  from taken t
  join journal_entry e on e.tenant_id = t.tenant_id and e.journal_id = t.journal_id
  join ledger_account a on a.tenant_id = e.tenant_id and a.id = e.account_id
  where a.owner_kind = 'venue'
  group by e.tenant_id, e.account_id
  order by e.tenant_id, e.account_id
  on conflict (tenant_id, account_id) do update set balance = b.balance + excluded.balance, updated_at = now();
  return null;
end
$$;
create trigger analytics_journal_queue_books after delete on analytics_journal_queue
  referencing old table as taken for each statement execute function ledger_venue_balances_follow();
alter function ledger_venue_balances_follow() owner to switchyard_system;
revoke all on function ledger_venue_balances_follow() from public;
grant select (tenant_id, journal_id, account_id, amount) on journal_entry to switchyard_system;
create policy system_venue_books on journal_entry for select to switchyard_system using (true);
grant select, insert, update on ledger_venue_balance to switchyard_system;
create policy system_venue_books on ledger_venue_balance for all to switchyard_system using (true) with check (true);

create or replace function analytics_queue_journals() returns trigger language plpgsql as $$
begin
  insert into analytics_journal_queue (tenant_id, journal_id)
  select distinct i.tenant_id, i.journal_id from inserted i
  join ledger_account a on a.tenant_id = i.tenant_id and a.id = i.account_id
  where a.purpose = 'debt' or a.owner_kind = 'venue'
  on conflict do nothing;
  return null;
end
$$;

-- The history so far: every venue account's entries, less those of journals still queued (the pass adds them).
alter table journal_entry no force row level security;
alter table ledger_account no force row level security;
alter table analytics_journal_queue no force row level security;
alter table ledger_venue_balance no force row level security;
insert into ledger_venue_balance (tenant_id, account_id, balance)
select e.tenant_id, e.account_id, sum(e.amount)::bigint
from journal_entry e
join ledger_account a on a.tenant_id = e.tenant_id and a.id = e.account_id
where a.owner_kind = 'venue'
  and not exists (select 1 from analytics_journal_queue q where q.tenant_id = e.tenant_id and q.journal_id = e.journal_id)
group by e.tenant_id, e.account_id;
alter table journal_entry force row level security;
alter table ledger_account force row level security;
alter table analytics_journal_queue force row level security;
alter table ledger_venue_balance force row level security;

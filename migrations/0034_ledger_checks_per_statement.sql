-- The billing tick writes a journal and two entries per running session; with per-row foreign keys each of those
-- rows paid a row-level trigger that looked up and share-locked its parent (500,000 for 100,000 sessions), four
-- times the cost of the writes themselves. The same guarantees, at a cost proportional to what a statement writes:
--
-- * The rows the ledger refers to are never deleted and never change their keys: journals, their entries and
--   ledger accounts are append-only for everyone (not only for the app role, which could never change them), and
--   sessions are kept forever (their journals, receipts and reports refer to them). Guards below refuse it, so no
--   reference can be broken after it was checked, and no lock is needed to keep it valid.
-- * References are checked once per statement over the rows it inserted (a transition table), with index probes
--   (never a scan of the whole ledger): every entry's journal exists in its tenant, every entry's account exists in
--   its tenant with the entry's currency, every journal's session exists in its tenant. The errors are the
--   foreign-key violations they were (SQLSTATE 23503).
-- * The one redundant key goes: (tenant, account) is implied by (tenant, account, currency).

create function ledger_refuse_change() returns trigger language plpgsql as $$
begin
  raise exception '% rows are never changed or deleted (post a correcting journal instead)', tg_table_name
    using errcode = 'restrict_violation';
end
$$;

create function session_refuse_delete() returns trigger language plpgsql as $$
begin
  raise exception 'sessions are never deleted: the ledger, receipts and reports refer to them'
    using errcode = 'restrict_violation';
end
$$;

create trigger journal_append_only before update or delete on journal
  for each row execute function ledger_refuse_change();
create trigger journal_append_only_truncate before truncate on journal
  for each statement execute function ledger_refuse_change();
create trigger journal_entry_append_only before update or delete on journal_entry
  for each row execute function ledger_refuse_change();
create trigger journal_entry_append_only_truncate before truncate on journal_entry
  for each statement execute function ledger_refuse_change();
-- An account's key and currency never change (its owner and purpose neither: the owner key maps to it).
create trigger ledger_account_append_only before update or delete on ledger_account
  for each row execute function ledger_refuse_change();
create trigger ledger_account_append_only_truncate before truncate on ledger_account
  for each statement execute function ledger_refuse_change();
create trigger session_kept before delete on session
  for each row execute function session_refuse_delete();
create trigger session_kept_truncate before truncate on session
  for each statement execute function session_refuse_delete();
create trigger session_key_fixed before update of tenant_id, id on session
  for each row when (old.tenant_id is distinct from new.tenant_id or old.id is distinct from new.id)
  execute function session_refuse_delete();
revoke delete on session from switchyard_app;

alter table journal drop constraint journal_session_fk;
alter table journal_entry drop constraint journal_entry_tenant_id_journal_id_fkey;
alter table journal_entry drop constraint journal_entry_tenant_id_account_id_fkey;
alter table journal_entry drop constraint journal_entry_account_currency_fk;

-- The checks probe the primary keys once per inserted row, never scan a table: hash and merge joins are off inside
-- them, and the planner is told that a tenant has many journals and sessions (a thousandth of the rows share a
-- tenant id), so that it never takes another index leading on tenant_id for a key lookup when its statistics still
-- describe a young, small table.
alter table journal alter column tenant_id set (n_distinct = -0.001);
alter table session alter column tenant_id set (n_distinct = -0.001);
analyze journal;
analyze session;

create function journal_sessions_exist() returns trigger language plpgsql
set enable_hashjoin = off set enable_mergejoin = off as $$
declare
  missing uuid;
begin
  select i.session_id into missing from inserted i
  where i.session_id is not null
    and not exists (select 1 from session s where s.tenant_id = i.tenant_id and s.id = i.session_id)
  limit 1;
  if found then
    raise exception 'journal refers to session %, which does not exist', missing
      using errcode = 'foreign_key_violation', constraint = 'journal_session_fk';
  end if;
  return null;
end
$$;
create trigger journal_session_exists after insert on journal
  referencing new table as inserted for each statement execute function journal_sessions_exist();

-- Each insert into journal_entry carries whole journals: each sums to zero per currency, and refers to a journal
-- and accounts of its tenant.
create function journal_entries_valid() returns trigger language plpgsql
set enable_hashjoin = off set enable_mergejoin = off set work_mem = '64MB' as $$
declare
  bad uuid;
begin
  select journal_id into bad from inserted
  group by tenant_id, journal_id, currency having sum(amount) <> 0 limit 1;
  if found then
    raise exception 'journal % does not balance', bad using errcode = 'check_violation';
  end if;
  select i.journal_id into bad from inserted i
  where not exists (select 1 from journal j where j.tenant_id = i.tenant_id and j.id = i.journal_id)
  limit 1;
  if found then
    raise exception 'journal entries refer to journal %, which does not exist', bad
      using errcode = 'foreign_key_violation', constraint = 'journal_entry_tenant_id_journal_id_fkey';
  end if;
  select i.account_id into bad from inserted i
  where not exists (
    select 1 from ledger_account a
    where a.tenant_id = i.tenant_id and a.id = i.account_id and a.currency = i.currency
  )
  limit 1;
  if found then
    raise exception 'a journal entry refers to account %, which does not exist in its currency', bad
      using errcode = 'foreign_key_violation', constraint = 'journal_entry_account_currency_fk';
  end if;
  return null;
end
$$;
drop trigger journal_entry_balanced on journal_entry;
drop function journal_balances();
create trigger journal_entry_valid after insert on journal_entry
  referencing new table as inserted for each statement execute function journal_entries_valid();

-- The analytics queues are filled by triggers from journals and sessions, whose tenant is already checked: their
-- own per-row key on the tenant only repeated that check for every queued row.
alter table analytics_journal_queue drop constraint analytics_journal_queue_tenant_id_fkey;
alter table analytics_session_queue drop constraint analytics_session_queue_tenant_id_fkey;

-- A charger's local authorization list, and an edge bridge's copy of it, is what a charger or a bridge judges a tag
-- by while it cannot ask the cloud. The list gave every owned, unblocked tag as `Accepted`, so a patron in debt or
-- without funds, whom an online Authorize refuses (`NoCredit`), could charge whenever the charger or its bridge was
-- offline. A tag now keeps whether its patron lacked credit when the list last said so; the list gives such a tag
-- as `NoCredit` (`Blocked` to a 1.6 charger), and a change takes the tag's next list version like any other, so the
-- chargers hear it in a differential update.

alter table rfid_tag add column no_credit boolean not null default false;

-- Whether a patron lacks credit for the local lists: owes a debt in any currency, or holds no wallet with a positive
-- balance in any. (An online Authorize judges in the currency of the charger's venue; a tenant's list is one for all
-- its venues.) Run as its caller, under the caller's row-level security.
create function patron_lacks_credit(p_tenant uuid, p_patron uuid) returns boolean
language sql stable set search_path = public, pg_temp as $$
  select exists (select 1 from ledger_account a
                   join ledger_balance b on b.tenant_id = a.tenant_id and b.account_id = a.id
                  where a.tenant_id = p_tenant and a.owner_kind = 'patron' and a.owner_id = p_patron
                    and a.purpose = 'debt' and b.balance < 0)
      or not exists (select 1 from ledger_account a
                       join ledger_balance b on b.tenant_id = a.tenant_id and b.account_id = a.id
                      where a.tenant_id = p_tenant and a.owner_kind = 'patron' and a.owner_id = p_patron
                        and a.purpose = 'wallet' and b.balance > 0)
$$;

-- Existing tags start as the lists have them (credit); the workers' first pass finds those whose patron lacks it and
-- gives each a new list version, so chargers that hold the current list hear the change.

-- The tenants, among those with chargers, where some unblocked tag's credit is not what the list last said: the
-- workers bring each up to date inside its own tenant. Tenant ids only.
grant select (tenant_id, patron_id, blocked, no_credit) on rfid_tag to switchyard_system;
create policy system_credit_read on rfid_tag for select to switchyard_system using (true);
grant select (tenant_id, id, owner_kind, owner_id, purpose) on ledger_account to switchyard_system;
create function sys_tag_credit_stale(p_limit integer)
returns table (tenant_id uuid)
language sql stable security definer set search_path = public, pg_temp as $$
  select distinct t.tenant_id from rfid_tag t
   where t.patron_id is not null and not t.blocked
     and exists (select 1 from charger c where c.tenant_id = t.tenant_id)
     and t.no_credit <> patron_lacks_credit(t.tenant_id, t.patron_id)
   limit least(greatest(p_limit, 1), 1000)
$$;
alter function sys_tag_credit_stale(integer) owner to switchyard_system;
revoke all on function sys_tag_credit_stale(integer) from public;
grant execute on function sys_tag_credit_stale(integer) to switchyard_app;

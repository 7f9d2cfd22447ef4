-- The billing claim serves the longest-waiting sessions first. It used to order by (tenant_id, next_tick_at): when
-- the workers bill fewer sessions per second than fall due, the lowest tenant ids were claimed again and again and
-- the highest never. Ordered by how long each session has waited, overload delays everyone a little and no one for
-- ever; the worker still groups the claimed batch by tenant (one transaction per tenant). `session_due_idx`
-- (next_tick_at where active) serves this order.
create or replace function sys_claim_due_sessions(p_now timestamptz, p_limit integer, p_lease_secs integer)
returns table (tenant_id uuid, session_id uuid)
language sql volatile security definer set search_path = public, pg_temp as $$
  with due as (
    select s.tenant_id, s.id from session s
    where s.status = 'active' and s.next_tick_at <= p_now
    order by s.next_tick_at, s.tenant_id, s.id
    limit p_limit
    for update skip locked
  )
  update session s set next_tick_at = p_now + make_interval(secs => p_lease_secs)
  from due where s.tenant_id = due.tenant_id and s.id = due.id
  returning s.tenant_id, s.id
$$;

-- The debt claim already serves the oldest due attempt first; a stable tie-break makes its order total.
create or replace function sys_claim_due_debts(p_now timestamptz, p_limit integer, p_lease_secs integer)
returns table (tenant_id uuid, patron_id uuid, currency text)
language sql volatile security definer set search_path = public, pg_temp as $$
  with due as (
    select d.tenant_id, d.patron_id, d.currency from debt_collection d
    where d.next_attempt_at <= p_now
    order by d.next_attempt_at, d.tenant_id, d.patron_id, d.currency
    limit p_limit
    for update skip locked
  )
  update debt_collection d set next_attempt_at = p_now + make_interval(secs => p_lease_secs)
  from due
  where d.tenant_id = due.tenant_id and d.patron_id = due.patron_id and d.currency = due.currency
  returning d.tenant_id, d.patron_id, d.currency::text
$$;

-- The billing claim wrote every due session twice per tick: it leased a session by pushing its next tick past the
-- lease (an update of an indexed column, a new entry in each of the session's indexes), then the tick moved it
-- again. A worker now only reads which sessions are due, longest-waiting first; it bills each tenant's share in
-- one tenant transaction under a transaction-scoped advisory lock on (billing, tenant), skipping a tenant another
-- worker holds, and locks the sessions that are still due (`for update`, re-checked after a concurrent tick). A
-- worker that dies mid-tick releases its locks with its transaction: nothing is leased, nothing waits for a lease
-- to run out, and the tick's own update is the one write a session gets.
--
-- The due index carries the read's order, so a backlog is never sorted.
drop function sys_claim_due_sessions(timestamptz, integer, integer);
drop index session_due_idx;
create index session_due_idx on session (next_tick_at, tenant_id, id) where status = 'active';
drop policy system_claim_write on session;
revoke update (next_tick_at) on session from switchyard_system;

create function sys_due_sessions(p_now timestamptz, p_limit integer)
returns table (tenant_id uuid, session_id uuid)
language sql stable security definer set search_path = public, pg_temp as $$
  select s.tenant_id, s.id from session s
  where s.status = 'active' and s.next_tick_at <= p_now
  order by s.next_tick_at, s.tenant_id, s.id
  limit p_limit
$$;
alter function sys_due_sessions(timestamptz, integer) owner to switchyard_system;
revoke all on function sys_due_sessions(timestamptz, integer) from public;
grant execute on function sys_due_sessions(timestamptz, integer) to switchyard_app;

-- `sys_platform_gauges` (migration 0033) is unchanged: its oldest due session now also counts one a worker is
-- billing at this moment, which is what a backlog is.

-- The ledger's idempotency keys are compared byte by byte: they are identifiers, never sorted for people, and a
-- locale-aware comparison on every probe of the unique index cost the tick's journal inserts.
alter table journal alter column idempotency_key type text collate "C";

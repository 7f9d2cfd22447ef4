-- The billing claim leased a session by pushing its next tick past the lease: a second update of an indexed column
-- per session per tick, which writes a new entry into every index of the session table. The lease now lives in a
-- column of its own that no index holds, so claiming is a heap-only update (the pages keep room for it), and the
-- tick's own update is the only one that moves the session in the indexes.
--
-- A leased session stays in the due range of `session_due_idx` only while a worker bills it (or until its lease
-- ends, when that worker died): the claim steps over at most those. The index now also holds the claim's order, so
-- a backlog is not sorted on every claim.
alter table session add column billing_leased_until timestamptz;
alter table session set (fillfactor = 90);
drop index session_due_idx;
create index session_due_idx on session (next_tick_at, tenant_id, id) where status = 'active';

create or replace function sys_claim_due_sessions(p_now timestamptz, p_limit integer, p_lease_secs integer)
returns table (tenant_id uuid, session_id uuid)
language sql volatile security definer set search_path = public, pg_temp as $$
  with due as (
    select s.tenant_id, s.id from session s
    where s.status = 'active' and s.next_tick_at <= p_now
      and (s.billing_leased_until is null or s.billing_leased_until <= p_now)
    order by s.next_tick_at, s.tenant_id, s.id
    limit p_limit
    for update skip locked
  )
  update session s set billing_leased_until = p_now + make_interval(secs => p_lease_secs)
  from due where s.tenant_id = due.tenant_id and s.id = due.id
  returning s.tenant_id, s.id
$$;

create or replace function sys_platform_gauges(p_now timestamptz)
returns table (
  sessions_active bigint,
  rentals_active bigint,
  billing_oldest_due_seconds double precision,
  bridges_offline bigint,
  chargers_offline bigint,
  agents_offline bigint
)
language sql stable security definer set search_path = public, pg_temp as $$
  select
    (select count(*) from session where status in ('active', 'paused') and asset_id is null),
    (select count(*) from session where status in ('active', 'paused') and asset_id is not null),
    -- Only the backlog no worker holds a lease on counts.
    coalesce((select extract(epoch from p_now - min(next_tick_at))::double precision
              from session where status = 'active' and next_tick_at <= p_now
                and (billing_leased_until is null or billing_leased_until <= p_now)), 0),
    -- Bridges and chargers that were once connected and have been silent for five minutes.
    (select count(*) from bridge
      where revoked_at is null and not online and last_seen_at < p_now - interval '5 minutes'),
    (select count(*) from charger
      where station_id is not null and not online and last_seen_at < p_now - interval '5 minutes'),
    -- PC agents that their bridge last reported disconnected, five minutes ago or more.
    (select count(*) from station s
      cross join lateral (
        select b.body, b.occurred_at from bridge_event b
        where b.tenant_id = s.tenant_id and b.station_id = s.id and b.kind = 'agent_state'
        order by b.occurred_at desc limit 1
      ) e
      where s.control = 'agent' and s.archived_at is null
        and e.body ->> 'connected' = 'false' and e.occurred_at < p_now - interval '5 minutes')
$$;

grant select (billing_leased_until), update (billing_leased_until) on session to switchyard_system;
revoke update (next_tick_at) on session from switchyard_system;

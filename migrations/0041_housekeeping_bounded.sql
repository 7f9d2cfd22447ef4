-- The housekeeping and numbering functions run as the system role across tenants, and the app role may call them
-- (the workers connect as the app role). Their arguments used to be taken as given, so a caller could purge what
-- is still needed: idempotency keys within their 24 hours (a retry would then act twice), the bridge events that
-- drop a replayed `(bridge, seq)`, live events a subscriber is about to resume from. The cutoffs are now clamped to
-- what the workers ever ask for, and a transaction confined to one tenant cannot number another's events at all.

-- Keys past their expiry, and quotes a day past theirs: never a later cutoff than now.
create or replace function sys_purge_expired(p_now timestamptz, out keys bigint, out quotes bigint)
language plpgsql volatile security definer set search_path = public, pg_temp as $$
declare
  v_now timestamptz := least(p_now, now());
begin
  delete from idempotency_key where expires_at < v_now;
  get diagnostics keys = row_count;
  -- A quote that started a rental is kept: the rental references it.
  delete from quote q where q.consumed_at is null and q.expires_at < v_now - interval '1 day'
    and not exists (select 1 from session s where s.tenant_id = q.tenant_id and s.quote_id = q.id);
  get diagnostics quotes = row_count;
end
$$;

-- Bridge events and deliveries: kept at least a day (`BRIDGE_EVENT_RETENTION_DAYS` is 1 to 3650).
create or replace function sys_purge_bridge_events(p_before timestamptz, out events bigint, out deliveries bigint)
language plpgsql volatile security definer set search_path = public, pg_temp as $$
declare
  v_before timestamptz := least(p_before, now() - interval '1 day');
begin
  delete from bridge_event where received_at < v_before;
  get diagnostics events = row_count;
  delete from bridge_delivery where delivered_at < v_before;
  get diagnostics deliveries = row_count;
end
$$;

-- Live events: kept at least a minute (the workers keep the resume window, 10 s or more, and a minute beyond it).
create or replace function sys_purge_live_events(p_before timestamptz) returns bigint
language plpgsql volatile security definer set search_path = public, pg_temp as $$
declare n bigint;
begin
  delete from live_event where created_at < least(p_before, now() - interval '1 minute');
  get diagnostics n = row_count;
  return n;
end
$$;

-- As in 0036, but a transaction confined to a tenant numbers only that tenant's events, whether or not it passes
-- events of its own. (The numbering after a commit runs outside any tenant transaction and names its tenant.)
create or replace function sys_number_live_events(
  p_tenant uuid, p_notify boolean,
  p_kinds text[] default '{}', p_venues uuid[] default '{}', p_stations uuid[] default '{}',
  p_subjects uuid[] default '{}', p_patrons uuid[] default '{}', p_users uuid[] default '{}',
  p_data jsonb[] default '{}', p_lock_timeout_ms integer default null
) returns bigint
language plpgsql volatile security definer set search_path = public, pg_temp as $$
declare
  v_confined uuid := nullif(current_setting('app.tenant_id', true), '')::uuid;
  v_last bigint;
  v_n bigint;
  v_given bigint;
begin
  -- A transaction's own events are written for the tenant the transaction is confined to, never another; and a
  -- confined transaction numbers no other tenant's.
  if (cardinality(p_kinds) > 0 or v_confined is not null) and p_tenant is distinct from v_confined then
    raise exception 'live events of another tenant' using errcode = '42501';
  end if;
  -- After a commit, a numbering that waits this long gives up (its events are numbered by the periodic look).
  if p_lock_timeout_ms is not null then
    perform set_config('lock_timeout', p_lock_timeout_ms || 'ms', true);
  end if;
  -- An advisory lock, not the counter row: a call that finds nothing to number takes no row lock, gets no
  -- transaction id, and its commit waits for no flush.
  perform pg_advisory_xact_lock(hashtextextended('switchyard.live_event:' || p_tenant::text, 0));
  -- Each statement below sees what committed before the lock was granted (read committed, a fresh snapshot).
  if cardinality(p_kinds) = 0 and not exists (select 1 from live_event_pending where tenant_id = p_tenant) then
    return null;
  end if;
  select coalesce((select last_seq from live_event_counter where tenant_id = p_tenant for update), 0) into v_last;
  with moved as (
    delete from live_event_pending where tenant_id = p_tenant returning *
  ), landed as (
    insert into live_event (tenant_id, seq, kind, venue_id, station_id, subject_id, patron_id, user_id, data, created_at)
    select tenant_id, v_last + row_number() over (order by id), kind, venue_id, station_id, subject_id, patron_id,
           user_id, data, created_at
    from moved
    returning 1
  )
  select count(*) into v_n from landed;
  insert into live_event (tenant_id, seq, kind, venue_id, station_id, subject_id, patron_id, user_id, data)
  select p_tenant, v_last + v_n + t.n, t.kind, t.venue, t.station, t.subject, t.patron, t.login, t.data
  from unnest(p_kinds, p_venues, p_stations, p_subjects, p_patrons, p_users, p_data)
    with ordinality as t(kind, venue, station, subject, patron, login, data, n);
  get diagnostics v_given = row_count;
  if v_n + v_given = 0 then
    return null;
  end if;
  v_last := v_last + v_n + v_given;
  insert into live_event_counter (tenant_id, last_seq) values (p_tenant, v_last)
  on conflict (tenant_id) do update set last_seq = excluded.last_seq, updated_at = now();
  if p_notify then
    perform pg_notify('switchyard_events', p_tenant::text || ':' || v_last::text);
  end if;
  return v_last;
end
$$;

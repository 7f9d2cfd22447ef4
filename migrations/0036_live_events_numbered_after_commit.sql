-- Live events were numbered inside the transaction that emitted them: it took its tenant's counter row as its last
-- step and held it until its commit was on disk, so a tenant's writing transactions committed one at a time (about
-- 240 a second here, whatever the cores). Now a transaction only appends its events to `live_event_pending`, and
-- right after its commit calls `sys_number_live_events`, which numbers every committed pending event of the tenant
-- under a transaction-scoped advisory lock and moves it to `live_event`. One call numbers all that committed while
-- the previous one held the lock, so a busy tenant pays one flush per batch, not one per transaction; a call that
-- finds its events already numbered writes nothing.
--
-- What clients see is unchanged: numbers per tenant with no gaps, never going back. A number is handed out only
-- to a committed event, under the lock, and the lock is released after the numbering commit is visible, so no
-- reader ever sees n + 1 before n. Events of a transaction that waited for another (a row lock) are appended, and
-- so numbered, after the other's.
create table live_event_pending (
  id bigint generated always as identity,
  -- No reference to `tenant`: the row lives for milliseconds and `live_event` checks the reference when it lands,
  -- once per batch, instead of every writing transaction taking a share lock on its tenant's row.
  tenant_id uuid not null,
  kind text not null check (kind ~ '^[a-z_]+\.[a-z_]+$'),
  venue_id uuid,
  station_id uuid,
  subject_id uuid,
  patron_id uuid,
  user_id uuid,
  data jsonb not null default '{}',
  created_at timestamptz not null default now(),
  primary key (tenant_id, id)
);
select confine_to_tenant('live_event_pending');
grant select, insert on live_event_pending to switchyard_app;

-- The app role keeps its grants on `live_event` and `live_event_counter` for one release: the previous release's
-- processes still number their events inside their transactions, under the counter row, while a rollout runs. The
-- numbering below takes that row too (`for update`) before it reads the last number, so old and new writers never
-- hand out the same number. A later migration takes the grants away.
grant select, delete on live_event_pending to switchyard_system;
create policy system_numbering_read on live_event_pending for select to switchyard_system using (true);
create policy system_numbering_delete on live_event_pending for delete to switchyard_system using (true);
grant insert on live_event to switchyard_system;
create policy system_numbering_insert on live_event for insert to switchyard_system with check (true);
grant select, insert, update on live_event_counter to switchyard_system;
create policy system_numbering on live_event_counter for all to switchyard_system using (true) with check (true);

-- Numbers the tenant's committed pending events in the order they were appended, then the events given as arrays
-- (a transaction's own, when it numbers them as its last step instead of appending them), and returns the tenant's
-- last number, or null when there was nothing to number (another call did it). With `p_notify` the new last number
-- is announced on `switchyard_events` at this call's commit (Postgres signals); otherwise the caller publishes it.
-- Called right after the writer's commit, outside any transaction; or as a transaction's last step (the billing
-- tick's), which then holds the tenant's numbering until it commits.
create function sys_number_live_events(
  p_tenant uuid, p_notify boolean,
  p_kinds text[] default '{}', p_venues uuid[] default '{}', p_stations uuid[] default '{}',
  p_subjects uuid[] default '{}', p_patrons uuid[] default '{}', p_users uuid[] default '{}',
  p_data jsonb[] default '{}', p_lock_timeout_ms integer default null
) returns bigint
language plpgsql volatile security definer set search_path = public, pg_temp as $$
declare
  v_last bigint;
  v_n bigint;
  v_given bigint;
begin
  -- A transaction's own events are written for the tenant the transaction is confined to, never another.
  if cardinality(p_kinds) > 0
     and p_tenant is distinct from nullif(current_setting('app.tenant_id', true), '')::uuid then
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
alter function sys_number_live_events(uuid, boolean, text[], uuid[], uuid[], uuid[], uuid[], uuid[], jsonb[], integer)
  owner to switchyard_system;
revoke all on function sys_number_live_events(uuid, boolean, text[], uuid[], uuid[], uuid[], uuid[], uuid[], jsonb[], integer)
  from public;
grant execute on function sys_number_live_events(uuid, boolean, text[], uuid[], uuid[], uuid[], uuid[], uuid[], jsonb[], integer)
  to switchyard_app;

-- Tenants with events whose writer committed but never numbered them (its process stopped in between), past a
-- grace period in which the writer would have: the API's periodic look numbers each with `sys_number_live_events`,
-- one tenant per statement, so that it never holds two tenants' numbering at once.
create function sys_stranded_live_event_tenants(p_grace interval) returns setof uuid
language sql stable security definer set search_path = public, pg_temp as $$
  select distinct p.tenant_id from live_event_pending p where p.created_at < now() - p_grace order by 1
$$;
alter function sys_stranded_live_event_tenants(interval) owner to switchyard_system;
revoke all on function sys_stranded_live_event_tenants(interval) from public;
grant execute on function sys_stranded_live_event_tenants(interval) to switchyard_app;

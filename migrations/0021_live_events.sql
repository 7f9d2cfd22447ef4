-- Live events: what subscribers hear about, written in the transaction that made the change (an outbox) and
-- numbered per tenant in commit order, so that a client that saw event n and reconnects asks for everything after
-- n and misses nothing. The per-tenant counter row is taken as the last step before commit: transactions of one
-- tenant that emit events commit one after the other, and the numbers never go back.
create table live_event_counter (
  tenant_id uuid not null references tenant (id) primary key,
  last_seq bigint not null check (last_seq >= 0),
  updated_at timestamptz not null default now()
);
select confine_to_tenant('live_event_counter');

create table live_event (
  tenant_id uuid not null references tenant (id),
  seq bigint not null check (seq > 0),
  kind text not null check (kind ~ '^[a-z_]+\.[a-z_]+$'),
  venue_id uuid,
  station_id uuid,
  -- The session, rental, SOS, task or bridge the event is about.
  subject_id uuid,
  -- Set when only this patron (and staff) may hear it: the patron's sessions, wallet and payments.
  patron_id uuid,
  -- Set when the event concerns one login: a task's assignee, a removed member.
  user_id uuid,
  data jsonb not null default '{}',
  created_at timestamptz not null default now(),
  primary key (tenant_id, seq)
);
create index live_event_created_idx on live_event (created_at);
select confine_to_tenant('live_event');

grant select, insert, update on live_event_counter to switchyard_app;
grant select, insert on live_event to switchyard_app;

-- Housekeeping: events older than the resume window are deleted (the counter stays).
create function sys_purge_live_events(p_before timestamptz) returns bigint
language plpgsql volatile security definer set search_path = public, pg_temp as $$
declare n bigint;
begin
  delete from live_event where created_at < p_before;
  get diagnostics n = row_count;
  return n;
end
$$;
alter function sys_purge_live_events(timestamptz) owner to switchyard_system;
revoke all on function sys_purge_live_events(timestamptz) from public;
grant execute on function sys_purge_live_events(timestamptz) to switchyard_app;
grant select (tenant_id, created_at), delete on live_event to switchyard_system;
create policy system_purge_read on live_event for select to switchyard_system using (true);
create policy system_purge on live_event for delete to switchyard_system using (true);

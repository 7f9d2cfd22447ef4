-- Analytics (issue 12): rollups that switchyard-workers maintain incrementally, so that no analytics request scans
-- sessions or the ledger.
--
-- What is counted comes through two queues, written by triggers in the same transaction as the business write (the
-- transactional outbox the notifications use): a journal with an entry on a venue's revenue or a patron's debt
-- account, and a session reaching an end (ended, expired, bought out). A worker pass takes a tenant's queued rows
-- (`for update skip locked`, under a per-tenant advisory lock), adds them to the rollups and deletes them, all in one
-- transaction: a row is counted exactly when its deletion commits, so overlapping workers count it once and a worker
-- that dies counts nothing (its transaction rolls back and the rows wait for the next pass).

create table analytics_journal_queue (
  tenant_id uuid not null references tenant (id),
  journal_id uuid not null,
  queued_at timestamptz not null default now(),
  primary key (tenant_id, journal_id)
);
create index analytics_journal_queue_age_idx on analytics_journal_queue (tenant_id, queued_at, journal_id);
select confine_to_tenant('analytics_journal_queue');

create table analytics_session_queue (
  tenant_id uuid not null references tenant (id),
  session_id uuid not null,
  queued_at timestamptz not null default now(),
  primary key (tenant_id, session_id)
);
create index analytics_session_queue_age_idx on analytics_session_queue (tenant_id, queued_at, session_id);
select confine_to_tenant('analytics_session_queue');

-- Journal entries come in whole journals per statement (the balance check relies on it too): one queue row per
-- journal that moved revenue or debt.
create function analytics_queue_journals() returns trigger language plpgsql as $$
begin
  insert into analytics_journal_queue (tenant_id, journal_id)
  select distinct i.tenant_id, i.journal_id from inserted i
  join ledger_account a on a.tenant_id = i.tenant_id and a.id = i.account_id
  where a.purpose in ('revenue', 'debt')
  on conflict do nothing;
  return null;
end
$$;
create trigger journal_entry_analytics after insert on journal_entry
  referencing new table as inserted for each statement execute function analytics_queue_journals();

-- A session is queued once: when it reaches an end from a running state (or is written already ended).
create function analytics_queue_session() returns trigger language plpgsql as $$
begin
  insert into analytics_session_queue (tenant_id, session_id) values (new.tenant_id, new.id)
  on conflict do nothing;
  return null;
end
$$;
create trigger session_analytics_end after update of status on session
  for each row when (old.status in ('active', 'paused') and new.status in ('ended', 'expired', 'bought_out'))
  execute function analytics_queue_session();
create trigger session_analytics_insert after insert on session
  for each row when (new.status in ('ended', 'expired', 'bought_out'))
  execute function analytics_queue_session();

-- Revenue: the sum of the entries on a venue's revenue account, by the venue-local day of the journal, the station
-- kind and payment method of its session ('other' for a journal without one), and currency.
create table analytics_revenue_day (
  tenant_id uuid not null references tenant (id),
  venue_id uuid not null,
  day date not null,
  station_kind text not null,
  payment_method text not null,
  currency char(3) not null,
  amount bigint not null default 0,
  updated_at timestamptz not null default now(),
  primary key (tenant_id, venue_id, day, station_kind, payment_method, currency),
  foreign key (tenant_id, venue_id) references venue (tenant_id, id)
);
create index analytics_revenue_day_idx on analytics_revenue_day (tenant_id, day);
select confine_to_tenant('analytics_revenue_day');

-- Sessions that ended, by the venue-local day they ended and the station kind: how many, how long (started to
-- ended, pauses included: the station was taken), energy.
create table analytics_session_day (
  tenant_id uuid not null references tenant (id),
  venue_id uuid not null,
  day date not null,
  station_kind text not null,
  sessions bigint not null default 0,
  duration_secs bigint not null default 0,
  energy_wh bigint not null default 0,
  updated_at timestamptz not null default now(),
  primary key (tenant_id, venue_id, day, station_kind),
  foreign key (tenant_id, venue_id) references venue (tenant_id, id)
);
create index analytics_session_day_idx on analytics_session_day (tenant_id, day);
select confine_to_tenant('analytics_session_day');

-- Busy station time: each ended session's seconds, split over the venue-local hours they fell in, by station kind.
-- Utilisation is busy seconds over the stations' seconds in those hours.
create table analytics_busy_hour (
  tenant_id uuid not null references tenant (id),
  venue_id uuid not null,
  day date not null,
  hour smallint not null check (hour between 0 and 23),
  station_kind text not null,
  busy_secs bigint not null default 0,
  primary key (tenant_id, venue_id, day, hour, station_kind),
  foreign key (tenant_id, venue_id) references venue (tenant_id, id)
);
-- Covering: the heatmap and the daily metrics read a period's rows from the index alone.
create index analytics_busy_hour_idx on analytics_busy_hour (tenant_id, day) include (venue_id, hour, busy_secs);
select confine_to_tenant('analytics_busy_hour');

-- Per patron and venue, all time: what the venue earned from the patron (revenue entries of the patron's sessions)
-- and the patron's ended sessions.
create table analytics_patron (
  tenant_id uuid not null references tenant (id),
  patron_id uuid not null,
  venue_id uuid not null,
  currency char(3) not null,
  spent bigint not null default 0,
  sessions bigint not null default 0,
  duration_secs bigint not null default 0,
  updated_at timestamptz not null default now(),
  primary key (tenant_id, patron_id, venue_id, currency),
  foreign key (tenant_id, patron_id) references patron (tenant_id, id),
  foreign key (tenant_id, venue_id) references venue (tenant_id, id)
);
create index analytics_patron_spent_idx on analytics_patron (tenant_id, venue_id, spent desc);
select confine_to_tenant('analytics_patron');

-- What each patron owes: minus the balance of its debt account, kept from the same journal queue.
create table analytics_debt (
  tenant_id uuid not null references tenant (id),
  patron_id uuid not null,
  currency char(3) not null,
  owed bigint not null default 0,
  updated_at timestamptz not null default now(),
  primary key (tenant_id, patron_id, currency),
  foreign key (tenant_id, patron_id) references patron (tenant_id, id)
);
create index analytics_debt_owed_idx on analytics_debt (tenant_id, owed desc) where owed > 0;
select confine_to_tenant('analytics_debt');

-- The daily summary of a venue's venue-local day, once: the pass that inserts this row queues the owners' messages
-- in the same transaction.
create table analytics_daily_summary (
  tenant_id uuid not null references tenant (id),
  venue_id uuid not null,
  day date not null,
  created_at timestamptz not null default now(),
  primary key (tenant_id, venue_id, day),
  foreign key (tenant_id, venue_id) references venue (tenant_id, id)
);
select confine_to_tenant('analytics_daily_summary');

-- `update` only because `select … for update` needs it: the pass locks the rows it deletes.
grant select, insert, update, delete on analytics_journal_queue, analytics_session_queue to switchyard_app;
grant select, insert, update on analytics_revenue_day, analytics_session_day, analytics_busy_hour, analytics_patron,
  analytics_debt to switchyard_app;
grant select, insert on analytics_daily_summary to switchyard_app;

-- Owners opt in to the daily summary with a channel preference of its own topic (no channels by default).
alter table notification_preference drop constraint notification_preference_topic_check;
alter table notification_preference add constraint notification_preference_topic_check
  check (topic in ('receipts', 'low_balance', 'session_warnings', 'sos', 'reports', 'daily_summary'));

-- The workers find tenants with queued rows, and venues whose last venue-local day has a summary to send, across
-- tenants: two reviewed security-definer functions reading only these columns.
grant select (tenant_id, queued_at) on analytics_journal_queue, analytics_session_queue to switchyard_system;
create policy system_read on analytics_journal_queue for select to switchyard_system using (true);
create policy system_read on analytics_session_queue for select to switchyard_system using (true);
grant select (tenant_id, id, timezone, archived_at) on venue to switchyard_system;
create policy system_analytics_read on venue for select to switchyard_system using (true);
grant select (tenant_id, subject_id, topic, channels) on notification_preference to switchyard_system;
create policy system_read on notification_preference for select to switchyard_system using (true);
grant select (tenant_id, venue_id, day) on analytics_daily_summary to switchyard_system;
create policy system_read on analytics_daily_summary for select to switchyard_system using (true);

-- Tenants with queued rows, the longest-waiting first.
create function sys_analytics_pending_tenants(p_limit integer)
returns table (tenant_id uuid)
language sql stable security definer set search_path = public, pg_temp as $$
  select q.tenant_id from (
    select j.tenant_id, min(j.queued_at) as oldest from analytics_journal_queue j group by j.tenant_id
    union all
    select s.tenant_id, min(s.queued_at) from analytics_session_queue s group by s.tenant_id
  ) q
  group by q.tenant_id order by min(q.oldest), q.tenant_id limit p_limit
$$;
alter function sys_analytics_pending_tenants(integer) owner to switchyard_system;
revoke all on function sys_analytics_pending_tenants(integer) from public;
grant execute on function sys_analytics_pending_tenants(integer) to switchyard_app;

-- Venues (not archived) with an owner who chose a channel for the daily summary, whose venue-local yesterday (as of
-- p_now) has no summary yet.
create function sys_daily_summaries_due(p_now timestamptz, p_limit integer)
returns table (tenant_id uuid, venue_id uuid, day date)
language sql stable security definer set search_path = public, pg_temp as $$
  select v.tenant_id, v.id, (p_now at time zone v.timezone)::date - 1
  from venue v
  where v.archived_at is null
    and exists (select 1 from notification_preference p
                join membership m on m.tenant_id = p.tenant_id and m.user_id = p.subject_id and m.role = 'owner'
                where p.tenant_id = v.tenant_id and p.topic = 'daily_summary' and cardinality(p.channels) > 0)
    and not exists (select 1 from analytics_daily_summary d
                    where d.tenant_id = v.tenant_id and d.venue_id = v.id
                      and d.day = (p_now at time zone v.timezone)::date - 1)
  order by v.tenant_id, v.id
  limit p_limit
$$;
alter function sys_daily_summaries_due(timestamptz, integer) owner to switchyard_system;
revoke all on function sys_daily_summaries_due(timestamptz, integer) from public;
grant execute on function sys_daily_summaries_due(timestamptz, integer) to switchyard_app;

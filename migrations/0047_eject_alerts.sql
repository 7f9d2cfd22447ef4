-- An eject that comes to wait for staff (taken, unanswered, past its deadline, the rental still running) is
-- announced once: a live event for the console and the staff apps, and a message to the venue's owners and managers.
-- `alerted_at` records that it was, so that workers running at once, or a pass retried, announce it once.
alter table device_command add column alerted_at timestamptz;

-- Owners and managers choose their channels for equipment alerts like for any other topic.
alter table notification_preference drop constraint notification_preference_topic_check;
alter table notification_preference add constraint notification_preference_topic_check
  check (topic in ('receipts', 'low_balance', 'session_warnings', 'sos', 'reports', 'daily_summary', 'equipment'));

-- The workers find the ejects to announce across tenants here (their ids only), then announce each in its own tenant
-- transaction; `p_skip` are ids a worker failed to announce a moment ago, so that they do not hold up the rest. The
-- partial index holds only taken ejects that are neither answered nor announced: those in flight, and the few whose
-- rental ended without an answer.
grant select (alerted_at) on device_command to switchyard_system;
create index device_command_unalerted_idx on device_command (deadline_at)
  where command = 'eject' and answered_at is null and alerted_at is null and delivered_at is not null;
create function sys_unalerted_ejects(p_limit integer, p_skip uuid[])
returns table (tenant_id uuid, command_id uuid)
language sql stable security definer set search_path = public, pg_temp as $$
  select c.tenant_id, c.id from device_command c
    join session s on s.tenant_id = c.tenant_id and s.id = c.session_id
   where c.command = 'eject' and c.answered_at is null and c.deadline_at is not null and c.alerted_at is null
     and c.deadline_at <= now() and c.delivered_at is not null and s.status in ('active', 'paused')
     and c.id <> all (p_skip)
   order by c.deadline_at, c.tenant_id, c.id
   limit p_limit
$$;
alter function sys_unalerted_ejects(integer, uuid[]) owner to switchyard_system;
revoke all on function sys_unalerted_ejects(integer, uuid[]) from public;
grant execute on function sys_unalerted_ejects(integer, uuid[]) to switchyard_app;

-- Notifications: an outbox of messages (email, SMS, push) written in the same transaction as the
-- event that causes them and delivered by switchyard-workers. One row per (event key, channel, recipient): the
-- unique key makes enqueueing idempotent, so a retried business step never queues a second message.
create table notification (
  tenant_id uuid not null references tenant (id),
  id uuid not null,
  -- What caused it, e.g. `invitation:<id>`, `session:<id>:receipt`, `sos:<id>`.
  event_key text not null check (length(event_key) between 1 and 200),
  channel text not null check (channel in ('email', 'sms', 'push')),
  recipient text not null check (length(recipient) between 1 and 320),
  -- The template: invitation, verify_email, password_reset, receipt, sos, debt.
  kind text not null check (length(kind) between 1 and 40),
  locale text not null default 'en' check (locale in ('en', 'de')),
  data jsonb not null default '{}',
  -- A one-time token the message carries (an invitation, a password reset). Only the message needs it: it is
  -- cleared once the message is sent or given up, so the database keeps it no longer than delivery takes.
  secret text,
  status text not null default 'pending' check (status in ('pending', 'sent', 'dead')),
  attempts integer not null default 0,
  next_attempt_at timestamptz not null default now(),
  -- The claim that holds the row: a worker records an outcome only under its own claim.
  claim_id uuid,
  last_attempt_at timestamptz,
  last_error text check (length(last_error) <= 300),
  sent_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (tenant_id, id),
  constraint notification_once_key unique (tenant_id, event_key, channel, recipient)
);
create index notification_due_idx on notification (next_attempt_at) where status = 'pending';
create index notification_recent_idx on notification (tenant_id, last_attempt_at);
create index notification_list_idx on notification (tenant_id, id desc);
create trigger notification_updated_at before update on notification for each row execute function set_updated_at();
select confine_to_tenant('notification');
grant select, insert, update on notification to switchyard_app;

-- A message due now wakes the workers at once (the poll stays the fallback).
create trigger notification_due after insert on notification
  for each row when (new.status = 'pending' and new.next_attempt_at <= now())
  execute function notify_work();

-- The delivery claim (sys_claim_due_notifications, at the end) reads and leases rows across tenants.
grant select (tenant_id, id, status, channel, next_attempt_at, claim_id), update (next_attempt_at, claim_id)
  on notification to switchyard_system;
create policy system_claim_read on notification for select to switchyard_system using (true);
create policy system_claim_write on notification for update to switchyard_system using (true) with check (true);


-- The language messages are written in, per login and per patron.
alter table app_user add column locale text not null default 'en' check (locale in ('en', 'de'));
alter table patron add column locale text not null default 'en' check (locale in ('en', 'de'));
-- The language the inviter chose for the invitee: the invitation's email, and the new login's messages after.
alter table invitation add column locale text not null default 'en' check (locale in ('en', 'de'));
-- When the login proved it reads its email (the verification code, or a password reset by email). Sign-up logins
-- from before this migration count as verified (nothing could verify them then); logins created by invitations stay
-- unverified, as they were.
alter table app_user add column email_verified_at timestamptz;
update app_user set email_verified_at = created_at where unverified_tenant_id is null;

-- One-time login tokens (email verification, password reset). Like app_user they belong to a login, not to a
-- tenant; only their SHA-256 is stored, and each is spent once.
create table login_token (
  id uuid primary key,
  user_id uuid not null references app_user (id) on delete cascade,
  purpose text not null check (purpose in ('verify_email', 'password_reset')),
  token_hash bytea not null,
  expires_at timestamptz not null,
  used_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint login_token_hash_key unique (token_hash)
);
create index login_token_user_idx on login_token (user_id, purpose);
create trigger login_token_updated_at before update on login_token for each row execute function set_updated_at();
grant select, insert, update on login_token to switchyard_app;

-- A completed password reset signs the login out everywhere: every refresh-token family of the user, in every
-- tenant it belongs to, is revoked in the reset's own transaction.
grant update (revoked_at) on refresh_token to switchyard_system;
grant select (user_id, revoked_at) on refresh_token to switchyard_system;
create policy system_revoke on refresh_token for update to switchyard_system using (true) with check (true);
create function sys_revoke_user_refresh_tokens(p_user_id uuid)
returns bigint
language sql volatile security definer set search_path = public, pg_temp as $$
  with revoked as (
    update refresh_token set revoked_at = now() where user_id = p_user_id and revoked_at is null returning 1
  )
  select count(*) from revoked
$$;
alter function sys_revoke_user_refresh_tokens(uuid) owner to switchyard_system;
revoke all on function sys_revoke_user_refresh_tokens(uuid) from public;
grant execute on function sys_revoke_user_refresh_tokens(uuid) to switchyard_app;

-- A member's phone number (E.164), for SMS (an SOS, say). Patrons already have one.
alter table app_user add column phone text check (phone ~ '^\+[1-9][0-9]{6,14}$');

-- Devices that take push messages: a member's or a patron's app registers its FCM or APNs token. A token belongs to
-- one subject of one tenant (registering it again moves it).
create table push_device (
  tenant_id uuid not null references tenant (id),
  id uuid not null,
  subject_id uuid not null,
  platform text not null check (platform in ('fcm', 'apns')),
  token text not null check (length(token) between 8 and 4096),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (tenant_id, id),
  constraint push_device_token_key unique (tenant_id, platform, token)
);
create index push_device_subject_idx on push_device (tenant_id, subject_id);
create trigger push_device_updated_at before update on push_device for each row execute function set_updated_at();
select confine_to_tenant('push_device');
grant select, insert, update, delete on push_device to switchyard_app;

-- Which channels a member or patron (the subject) wants for each kind of message; no row: the defaults (receipts,
-- low balance and reports by email, session warnings by push, SOS by email, SMS and push).
create table notification_preference (
  tenant_id uuid not null references tenant (id),
  subject_id uuid not null,
  topic text not null check (topic in ('receipts', 'low_balance', 'session_warnings', 'sos', 'reports')),
  channels text[] not null check (channels <@ array['email', 'sms', 'push']::text[]),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (tenant_id, subject_id, topic)
);
create trigger notification_preference_updated_at before update on notification_preference
  for each row execute function set_updated_at();
select confine_to_tenant('notification_preference');
grant select, insert, update, delete on notification_preference to switchyard_app;

-- The delivery claim, across tenants: the longest-waiting due messages first, skipping rows another worker holds,
-- each leased (next_attempt_at moved past the lease) under a fresh claim id; only the channels the calling worker
-- can deliver.
create function sys_claim_due_notifications(p_now timestamptz, p_limit integer, p_lease_secs integer,
                                            p_channels text[])
returns table (tenant_id uuid, notification_id uuid, claim_id uuid)
language sql volatile security definer set search_path = public, pg_temp as $$
  with due as (
    select n.tenant_id, n.id from notification n
    where n.status = 'pending' and n.next_attempt_at <= p_now and n.channel = any(p_channels)
    order by n.next_attempt_at, n.tenant_id, n.id
    limit p_limit
    for update skip locked
  )
  update notification n set next_attempt_at = p_now + make_interval(secs => p_lease_secs),
    claim_id = gen_random_uuid()
  from due where n.tenant_id = due.tenant_id and n.id = due.id
  returning n.tenant_id, n.id, n.claim_id
$$;
alter function sys_claim_due_notifications(timestamptz, integer, integer, text[]) owner to switchyard_system;
revoke all on function sys_claim_due_notifications(timestamptz, integer, integer, text[]) from public;
grant execute on function sys_claim_due_notifications(timestamptz, integer, integer, text[]) to switchyard_app;

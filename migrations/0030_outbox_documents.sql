-- Documents through the messaging outbox (issue 12): kiosk reports are delivered by outbox rows written in the
-- report's own transaction (one per report, channel and recipient); the report keeps each channel's outcome.
-- And a void invoice keeps the links to its sessions (its venue scope), while the sessions are free again.

-- Each channel's delivery of a report: null when that channel was not asked for (no address, or the patron's
-- channel choice leaves it out), else `pending` until the outbox sent it (`sent`) or gave up (`failed`). The report's
-- `delivery` sums them up: `pending` while any is, then `sent` when every asked channel was sent, else `failed`.
alter table report
  add column email_delivery text check (email_delivery in ('pending', 'sent', 'failed')),
  add column sms_delivery text check (sms_delivery in ('pending', 'sent', 'failed'));
update report set email_delivery = delivery where sent_to_email is not null and delivery <> 'none';
update report set sms_delivery = delivery where sent_to_phone is not null and delivery <> 'none';

-- Voiding an invoice used to delete its invoice_session links, and with them the only record of which venues the
-- invoice concerns (venue-scoped managers are confined by it). The links stay now, marked void; a session is on at
-- most one invoice that is not void.
alter table invoice_session add column voided boolean not null default false;
alter table invoice_session drop constraint invoice_session_once;
create unique index invoice_session_once on invoice_session (tenant_id, session_id) where not voided;
grant update (voided) on invoice_session to switchyard_app;

-- Account mail (a password reset) is about a login, which may belong to several tenants. Its home is the tenant the
-- login is confined to while unverified, else the tenant it joined first (where it was created, for a sign-up);
-- the outbox row, its sending limit and the name the message is sent under are that tenant's. A login in no tenant
-- has nowhere to sign in and gets no reset.
grant select (created_at) on membership to switchyard_system;
grant select (id, unverified_tenant_id) on app_user to switchyard_system;
create function sys_user_home_tenant(p_user_id uuid)
returns uuid
language sql stable security definer set search_path = public, pg_temp as $$
  select coalesce(
    (select u.unverified_tenant_id from app_user u
      where u.id = p_user_id
        and exists (select 1 from membership m where m.user_id = u.id and m.tenant_id = u.unverified_tenant_id)),
    (select m.tenant_id from membership m where m.user_id = p_user_id order by m.created_at, m.tenant_id limit 1))
$$;
alter function sys_user_home_tenant(uuid) owner to switchyard_system;
revoke all on function sys_user_home_tenant(uuid) from public;
grant execute on function sys_user_home_tenant(uuid) to switchyard_app;

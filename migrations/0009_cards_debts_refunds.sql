-- Saved cards, card deposit holds, debt collection and refunds.

-- A patron's saved card at the payment provider (one per patron; saving another replaces it).
create table patron_card (
  tenant_id uuid not null,
  patron_id uuid not null,
  provider text not null check (provider in ('dev', 'stripe')),
  customer_ref text not null,
  payment_method_ref text not null,
  brand text not null default 'card',
  last4 text not null default '',
  created_at timestamptz not null default now(),
  primary key (tenant_id, patron_id),
  foreign key (tenant_id, patron_id) references patron (tenant_id, id)
);
select confine_to_tenant('patron_card');

-- A payment is a wallet top-up, an off-session debt charge, or a manual-capture deposit hold for a rental.
alter table payment
  add column kind text not null default 'top_up' check (kind in ('top_up', 'debt', 'deposit')),
  add column session_id uuid,
  add column captured_amount bigint not null default 0 check (captured_amount >= 0),
  add column refunded_amount bigint not null default 0 check (refunded_amount >= 0),
  add constraint payment_session_fk foreign key (tenant_id, session_id) references session (tenant_id, id),
  add constraint payment_refund_bound check (refunded_amount <= amount),
  drop constraint payment_status_check,
  add constraint payment_status_check
    check (status in ('pending', 'authorized', 'confirmed', 'failed', 'canceled'));
create unique index payment_deposit_key on payment (tenant_id, session_id) where kind = 'deposit';

create table refund (
  tenant_id uuid not null,
  id uuid not null,
  payment_id uuid not null,
  amount bigint not null check (amount > 0),
  provider_ref text not null,
  idempotency_key text not null,
  created_by uuid,
  created_at timestamptz not null default now(),
  primary key (tenant_id, id),
  foreign key (tenant_id, payment_id) references payment (tenant_id, id),
  constraint refund_idempotency_key unique (tenant_id, idempotency_key)
);
create index refund_payment_idx on refund (tenant_id, payment_id);
select confine_to_tenant('refund');

-- One row per patron and currency while the patron owes money: the collector's schedule and history.
-- `charges` numbers the charge attempts, so a retried attempt reuses its provider idempotency key.
create table debt_collection (
  tenant_id uuid not null,
  patron_id uuid not null,
  currency char(3) not null,
  venue_id uuid not null,
  status text not null default 'due' check (status in ('due', 'no_card', 'exhausted')),
  attempts integer not null default 0,
  charges integer not null default 0,
  collected bigint not null default 0,
  next_attempt_at timestamptz,
  last_error text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (tenant_id, patron_id, currency),
  foreign key (tenant_id, patron_id) references patron (tenant_id, id),
  foreign key (tenant_id, venue_id) references venue (tenant_id, id)
);
create index debt_collection_due_idx on debt_collection (next_attempt_at) where next_attempt_at is not null;
create trigger debt_collection_updated_at before update on debt_collection
  for each row execute function set_updated_at();
select confine_to_tenant('debt_collection');

grant select, insert, update, delete on patron_card, debt_collection to switchyard_app;
grant select, insert on refund to switchyard_app;

-- The collectors claim due debts across tenants, leasing each for a while (like the billing claim).
grant select (tenant_id, patron_id, currency, next_attempt_at), update (next_attempt_at)
  on debt_collection to switchyard_system;
create policy system_claim_read on debt_collection for select to switchyard_system using (true);
create policy system_claim_write on debt_collection for update to switchyard_system using (true) with check (true);

create function sys_claim_due_debts(p_now timestamptz, p_limit integer, p_lease_secs integer)
returns table (tenant_id uuid, patron_id uuid, currency text)
language sql volatile security definer set search_path = public, pg_temp as $$
  with due as (
    select d.tenant_id, d.patron_id, d.currency from debt_collection d
    where d.next_attempt_at <= p_now
    order by d.next_attempt_at
    limit p_limit
    for update skip locked
  )
  update debt_collection d set next_attempt_at = p_now + make_interval(secs => p_lease_secs)
  from due
  where d.tenant_id = due.tenant_id and d.patron_id = due.patron_id and d.currency = due.currency
  returning d.tenant_id, d.patron_id, d.currency::text
$$;
alter function sys_claim_due_debts(timestamptz, integer, integer) owner to switchyard_system;
revoke all on function sys_claim_due_debts(timestamptz, integer, integer) from public;
grant execute on function sys_claim_due_debts(timestamptz, integer, integer) to switchyard_app;

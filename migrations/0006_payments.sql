-- Card payments (wallet top-ups) through a payment provider: the dev emulator or Stripe. A confirmed payment
-- credits the wallet once (journal `payment:<id>:confirmed`).
create table payment (
  tenant_id uuid not null references tenant (id),
  id uuid not null,
  patron_id uuid not null,
  venue_id uuid not null,
  amount bigint not null check (amount > 0),
  currency char(3) not null,
  status text not null default 'pending' check (status in ('pending', 'confirmed', 'failed', 'canceled')),
  provider text not null check (provider in ('dev', 'stripe')),
  provider_ref text not null,
  failure_reason text,
  idempotency_key text not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  confirmed_at timestamptz,
  primary key (tenant_id, id),
  foreign key (tenant_id, patron_id) references patron (tenant_id, id),
  foreign key (tenant_id, venue_id) references venue (tenant_id, id),
  constraint payment_idempotency_key unique (tenant_id, idempotency_key)
);
create index payment_pending_idx on payment (tenant_id, created_at) where status = 'pending';
create trigger payment_updated_at before update on payment for each row execute function set_updated_at();
select confine_to_tenant('payment');

-- Webhook events, recorded before any effect so that a redelivery is a no-op.
create table webhook_event (
  tenant_id uuid not null references tenant (id),
  provider text not null,
  event_id text not null,
  event_type text not null,
  received_at timestamptz not null default now(),
  primary key (tenant_id, provider, event_id)
);
select confine_to_tenant('webhook_event');

grant select, insert, update on payment to switchyard_app;
grant select, insert on webhook_event to switchyard_app;

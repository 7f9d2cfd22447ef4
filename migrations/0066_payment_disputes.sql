-- Card disputes (chargebacks). Stripe withdraws a disputed amount from the account that took the payment and
-- reinstates it if the dispute is won. Its dispute events name the payment's intent but carry none of our metadata,
-- so the webhook finds the payment by its reference at the provider (one lookup across tenants, below).
create table payment_dispute (
  tenant_id uuid not null,
  id uuid not null,
  payment_id uuid not null,
  -- The dispute at the provider (`du_…`).
  provider_ref text not null,
  amount bigint not null check (amount > 0),
  -- How much of `amount` came out of the patron's wallet when the funds were withdrawn (the rest out of the
  -- venue's revenue), so that reinstated funds go back where they came from.
  from_wallet bigint not null check (from_wallet between 0 and amount),
  reason text not null default '',
  withdrawn_at timestamptz not null default now(),
  reinstated_at timestamptz,
  primary key (tenant_id, id),
  foreign key (tenant_id, payment_id) references payment (tenant_id, id),
  constraint payment_dispute_provider_ref unique (tenant_id, provider_ref)
);
create index payment_dispute_payment_idx on payment_dispute (tenant_id, payment_id);
select confine_to_tenant('payment_dispute');
grant select, insert, update on payment_dispute to switchyard_app;

-- The payment a provider reference (an intent) names, whichever tenant made it: the dispute webhook's routing.
create index payment_provider_ref_idx on payment (provider_ref);
grant select (tenant_id, id, provider, provider_ref) on payment to switchyard_system;
create policy system_read on payment for select to switchyard_system using (true);
create function sys_payment_by_reference(p_provider text, p_ref text)
returns table (tenant_id uuid, payment_id uuid)
language sql stable security definer set search_path = public, pg_temp as $$
  select tenant_id, id from payment where provider_ref = p_ref and provider = p_provider limit 1
$$;
alter function sys_payment_by_reference(text, text) owner to switchyard_system;
revoke all on function sys_payment_by_reference(text, text) from public;
grant execute on function sys_payment_by_reference(text, text) to switchyard_app;

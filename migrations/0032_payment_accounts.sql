-- A tenant's own payment provider account (issue 13): the venue owner's Stripe keys, so its patrons' money goes to
-- its own Stripe account instead of the platform's. The secret key and the webhook signing secret are sealed with
-- the deployment's SECRETS_KEY (AES-256-GCM, bound to the tenant), never stored or shown in clear; the console shows
-- a hint of the key (`sk_live_…abcd`).
create table payment_account (
  tenant_id uuid primary key references tenant (id),
  provider text not null check (provider = 'stripe'),
  publishable_key text check (publishable_key ~ '^pk_(test|live)_[A-Za-z0-9]{1,200}$'),
  secret_key_sealed bytea not null,
  secret_key_hint text not null check (length(secret_key_hint) between 1 and 40),
  webhook_secret_sealed bytea,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create trigger payment_account_updated_at before update on payment_account for each row execute function set_updated_at();
select confine_to_tenant('payment_account');
grant select, insert, update, delete on payment_account to switchyard_app;

-- Payments and saved cards made through a tenant's own account are recorded as provider `stripe:tenant`, so they are
-- only ever refreshed, refunded or charged through that account (the platform's are `stripe` or `dev`).
alter table payment drop constraint payment_provider_check,
  add constraint payment_provider_check check (provider in ('dev', 'stripe', 'stripe:tenant'));
alter table patron_card drop constraint patron_card_provider_check,
  add constraint patron_card_provider_check check (provider in ('dev', 'stripe', 'stripe:tenant'));

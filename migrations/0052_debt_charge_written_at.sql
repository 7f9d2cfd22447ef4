-- When a debt charge was written down. A pass that finds one still written down first looks for it among the
-- customer's intents created since then (by the `payment_id` in their metadata) and records what it finds; only a
-- charge that never reached the provider is sent again. Stripe forgets idempotency keys after 24 hours, so a
-- resend alone would charge the card twice once a charge had been out that long. A charge written down before this
-- column existed is dated by its row's creation, which came first.
alter table debt_collection add column sending_at timestamptz;
update debt_collection set sending_at = created_at where sending_amount is not null;
alter table debt_collection add constraint debt_collection_sending_at
  check ((sending_amount is null) = (sending_at is null));

-- A collection's row is deleted when its debt is paid, and a later debt starts a new one whose charges are counted
-- from 0 again: the charge keys (and the payment ids made from them) repeated the first debt's, so the new charge
-- was answered with the old intent, or refused by the payment table as a payment already recorded. Each row now
-- has its own series, part of its charges' keys. Rows from before keep none (their keys as they were: a charge
-- written down under one is sent and found under the same).
alter table debt_collection add column series uuid;
alter table debt_collection alter column series set default gen_random_uuid();
-- Rows with no charge out take a series now (their next charge is keyed apart from any earlier debt's); one with
-- a charge out takes one when that charge is recorded. A charge out whose key an earlier debt's payment already
-- holds (the repeated key) can never be recorded: it is cleared, and left for an operator to reconcile with
-- Stripe (`last_error`; the collection is due again and charges under its new series).
update debt_collection set series = gen_random_uuid() where sending_amount is null;
update debt_collection d set sending_amount = null, sending_customer = null, sending_method = null,
    sending_provider = null, sending_at = null, series = gen_random_uuid(), next_attempt_at = now(),
    last_error = 'a charge sent under a key an earlier debt had used: reconcile it with the provider'
  where sending_amount is not null
    and exists (select 1 from payment p where p.tenant_id = d.tenant_id
                  and p.idempotency_key = d.tenant_id || ' debt ' || d.patron_id || ' ' || d.currency || ' ' || d.charges);

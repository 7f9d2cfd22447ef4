-- When a debt charge was written down. A pass that finds one still written down first looks for it among the
-- customer's intents created since then (by the `payment_id` in their metadata) and records what it finds; only a
-- charge that never reached the provider is sent again. Stripe forgets idempotency keys after 24 hours, so a
-- resend alone would charge the card twice once a charge had been out that long.
--
-- A collection's row is deleted when its debt is paid, and a later debt starts a new one whose charges are counted
-- from 0 again: the charge keys (and the payment ids made from them) repeated the first debt's, so the new charge
-- was answered with the old intent, or refused by the payment table as a payment already recorded. Each row now
-- has its own series, part of its charges' keys: new rows get one when inserted, rows without a charge out get one
-- here, and a row with a charge out keeps its old keys (the charge is found and sent under the same) until that
-- charge is recorded, when it gets one.
alter table debt_collection add column sending_at timestamptz;
alter table debt_collection add column series uuid;
alter table debt_collection alter column series set default gen_random_uuid();

-- The rows of every tenant: the owner running this migration is confined like everyone else (row-level security
-- is forced), so the two tables let their owner through for these statements, inside the migration's transaction.
alter table debt_collection no force row level security;
alter table payment no force row level security;
alter table audit_log no force row level security;

-- A charge out whose key an earlier debt's payment already holds (the repeated key) can never be recorded, and
-- Stripe may have taken it (a key is forgotten after 24 hours): it is cleared, collection stops (`exhausted`: a
-- new card starts it again), and an audit entry tells an operator to reconcile it with the provider.
with stuck as (
  update debt_collection d set sending_amount = null, sending_customer = null, sending_method = null,
      sending_provider = null, series = gen_random_uuid(), status = 'exhausted', next_attempt_at = null,
      last_error = 'a charge sent under a key an earlier debt had used: reconcile it with the provider'
    where sending_amount is not null
      and exists (select 1 from payment p where p.tenant_id = d.tenant_id
                    and p.idempotency_key = d.tenant_id || ' debt ' || d.patron_id || ' ' || d.currency || ' '
                                            || d.charges)
    returning d.tenant_id, d.patron_id, d.currency, d.charges
)
insert into audit_log (tenant_id, id, action, object_type, object_id, detail)
select tenant_id, gen_random_uuid(), 'debt.charge_to_reconcile', 'patron', patron_id,
       jsonb_build_object('currency', currency, 'charge', charges,
                          'key', tenant_id || ' debt ' || patron_id || ' ' || currency || ' ' || charges)
from stuck;
update debt_collection set series = gen_random_uuid() where sending_amount is null and series is null;
-- A charge written down before this column existed is dated by its row's creation, which came first.
update debt_collection set sending_at = created_at where sending_amount is not null;

alter table debt_collection force row level security;
alter table payment force row level security;
alter table audit_log force row level security;

alter table debt_collection add constraint debt_collection_sending_at
  check ((sending_amount is null) = (sending_at is null));

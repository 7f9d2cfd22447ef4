-- When a debt charge was written down. A pass that finds one still written down first looks for it among the
-- customer's intents created since then (by the `payment_id` in their metadata) and records what it finds; only a
-- charge that never reached the provider is sent again. Stripe forgets idempotency keys after 24 hours, so a
-- resend alone would charge the card twice once a charge had been out that long. Null for charges written down
-- before this column existed: the search then covers the customer's latest intents.
alter table debt_collection add column sending_at timestamptz;

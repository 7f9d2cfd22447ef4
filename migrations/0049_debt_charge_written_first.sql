-- A debt charge is written down (amount, card, and the account it goes through) and committed before the provider
-- is asked for it, and cleared when its answer is recorded. A pass undone in between (a crash, a lost connection)
-- leaves it written down, and the next pass sends the very same request again under the same idempotency key,
-- through the same account, whatever the patron owes or which card is saved by then: the provider answers it as the
-- first (Stripe refuses a key used again with other parameters), so money it took is recorded, once.
alter table debt_collection
  add column sending_amount bigint check (sending_amount > 0),
  add column sending_customer text,
  add column sending_method text,
  add column sending_provider text,
  add constraint debt_collection_sending check (
    (sending_amount is null) = (sending_customer is null) and (sending_amount is null) = (sending_method is null)
    and (sending_amount is null) = (sending_provider is null));

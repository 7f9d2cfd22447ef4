-- A charger's running transactions, found by connector or by id without reading its finished ones (a reading names
-- its transaction or its connector; a charger keeps years of finished transactions).
create index charging_transaction_running_idx on charging_transaction (tenant_id, charger_id, connector)
  where stopped_at is null;

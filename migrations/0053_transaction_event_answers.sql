-- A repeated OCPP 2.0.1 TransactionEvent (a `seqNo` seen before: the charger lost the answer) is answered with the
-- answer it got the first time, kept here. It was answered anew, so a token refused the first time (a busy
-- connector, no credit) could be heard as accepted on the repeat, with the transaction billed to no one.
alter table charging_transaction_event add column answer jsonb;
grant update (answer) on charging_transaction_event to switchyard_app;

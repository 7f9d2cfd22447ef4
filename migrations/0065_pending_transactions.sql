-- A 2.0.1 charger may start a transaction before anyone is authorized (its TxStartPoint is the cable plugged in):
-- `TransactionEvent(Started)` without an `idToken`, the token coming in a later event. Such a start was answered but
-- not stored, so the EVSE it named was lost and the token's event opened the transaction on connector 1. It is now
-- kept at once, as `Pending`, with no tag; the first accepted token bills it from that event's reading on.
alter table charging_transaction drop constraint charging_transaction_free_vend;
alter table charging_transaction add constraint charging_transaction_free_vend
  check ((id_tag is null) = (auth_status in ('FreeVend', 'Pending')));

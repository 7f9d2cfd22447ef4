-- An OCPP 2.0.1 transaction may start without an energy reading (a charger not set to send
-- `SampledDataTxStartedMeasurands`). Its baseline was taken as 0 Wh, so the first reading (the meter's lifetime
-- register) became the transaction's energy and was billed to the patron. Now a start without a reading leaves
-- `meter_start_wh` null (it stays what the charger reported: it is part of the start's key) and the first reading
-- taken, `meter_first_wh`, is the baseline; `meter_last_wh` is null until a reading arrives.
alter table charging_transaction alter column meter_start_wh drop not null;
alter table charging_transaction alter column meter_last_wh drop not null;
alter table charging_transaction add column meter_first_wh bigint check (meter_first_wh >= 0);

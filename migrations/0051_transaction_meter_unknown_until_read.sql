-- An OCPP 2.0.1 transaction may start without an energy reading (a charger not set to send
-- `SampledDataTxStartedMeasurands`). Its baseline was taken as 0 Wh, so the first reading (the meter's lifetime
-- register) became the transaction's energy and was billed to the patron. Now the meter is unknown (null) until
-- the first reading, which becomes the baseline.
alter table charging_transaction alter column meter_start_wh drop not null;
alter table charging_transaction alter column meter_last_wh drop not null;

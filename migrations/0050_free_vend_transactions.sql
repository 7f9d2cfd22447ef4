-- Free vend (OCPP 2.0.1 `NoAuthorization`: a charger set to charge without asking anyone) made transactions that
-- were answered but never stored, so an operator saw neither the energy nor the time. They are now kept, billed to
-- no one: no tag (none was presented) and the judgement `FreeVend`.
alter table charging_transaction alter column id_tag drop not null;
alter table charging_transaction add constraint charging_transaction_free_vend
  check ((id_tag is null) = (auth_status = 'FreeVend'));

-- A pending charger an operator refuses (`rejectCharger`) becomes `rejected` and, like a pending one, has no
-- station; only an accepted charger has one. (Before, `rejected` was allowed only with a station, and nothing set
-- it, so no row changes.)
alter table charger drop constraint charger_check;
alter table charger add constraint charger_station_when_accepted
  check ((station_id is null) = (registration <> 'accepted'));

-- A refused charger may be forgotten (`forgetCharger`): its row goes, with the calls made to it (never on a
-- station, it has no transactions nor reservations).
grant delete on ocpp_call to switchyard_app;

-- When the station's device was actually switched off at the end of a session, as its edge bridge reported it
-- (by the cloud's clock). A bridge that ended a session on time while offline reports it here after reconnecting;
-- billing then takes that moment as the session's end.
alter table session add column switched_off_at timestamptz;

-- A tenant's chargers may be set, at each accepted boot, to send the energy readings billing needs: the start
-- reading (a 2.0.1 charger may leave it out unless told), and energy and power in every update. Off by default:
-- it replaces the chargers' own lists of measurands.
alter table tenant add column charger_meter_setup boolean not null default false;

-- A tenant's chargers may be set, at each accepted boot, to send the energy readings billing needs: its start
-- reading (2.0.1 sends none unless told), and energy and power in every update. Off by default: it overwrites the
-- chargers' own lists of measurands.
alter table tenant add column charger_meter_setup boolean not null default false;

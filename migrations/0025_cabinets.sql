-- Powerbank cabinets driven by the edge bridge over the venue's MQTT broker (the open cabinet protocol in the
-- README). `cabinet` is a control of its own rather than a setting of `manual`: the bridge's schedule carries every
-- non-manual station, and "manual" means that no bridge controls the station (a bridge's report about a manual
-- station is refused). The new value is not used in this migration (Postgres refuses that in the same transaction).
alter type station_control add value if not exists 'cabinet';

-- A slot as its cabinet last reported it: which powerbank it holds (by label), that powerbank's charge, whether it
-- is charging, and a fault (a jammed latch, say). `reported_at` is the report's time, so an older report that
-- arrives late changes nothing.
alter table connector
  add column reported_asset text check (length(reported_asset) between 1 and 64),
  add column battery_pct smallint check (battery_pct between 0 and 100),
  add column charging boolean,
  add column fault text check (length(fault) between 1 and 100),
  add column reported_at timestamptz;

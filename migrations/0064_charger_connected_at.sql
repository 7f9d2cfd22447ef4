-- A stop a directly connected charger queued while its link was down (a 4G charger out of coverage when the driver
-- unplugged) came in after it reconnected, when its `last_seen_at` had just been set to the reconnection: the
-- session was taken as ended no earlier than that, and billed for the whole outage. A charger now keeps when its
-- current connection began and when it was last heard before it, so a stop stamped before the connection began
-- counts from its own time (not before the charger was last heard).
alter table charger
  add column connected_at timestamptz,
  add column seen_before_connect_at timestamptz;

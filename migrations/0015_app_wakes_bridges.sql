-- The application wakes a venue's bridge tunnel itself (`Signals`: Postgres notify in the transaction, or Redis
-- pub/sub after the commit when REDIS_URL is set), so the insert trigger of 0013 goes.
drop trigger device_command_notify on device_command;
drop function notify_command();

-- A tunnel looks for undelivered commands at each heartbeat: keep that lookup on the few undelivered rows.
create index device_command_undelivered_idx on device_command (tenant_id, station_id) where delivered_at is null;

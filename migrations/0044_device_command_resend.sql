-- A tunnel that opens sends again the commands a recent tunnel took but whose acknowledgement never came (the API
-- process died after taking them, or the write failed). This finds them by age without reading the whole outbox.
create index device_command_unacked_idx on device_command (tenant_id, created_at) where acked_at is null and delivered_at is not null;

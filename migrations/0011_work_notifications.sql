-- Wake the workers when work becomes due now (a debt to collect, a card hold to settle) instead of waiting for
-- their next poll: `notify switchyard_work` on commit. Polling every WORKER_POLL_MS stays as the fallback.
create function notify_work() returns trigger
language plpgsql as $$
begin
  perform pg_notify('switchyard_work', tg_table_name);
  return null;
end
$$;

create trigger debt_collection_due after insert or update of next_attempt_at on debt_collection
  for each row when (new.next_attempt_at is not null and new.next_attempt_at <= now())
  execute function notify_work();

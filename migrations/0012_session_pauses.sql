-- Pausing a session: the station is switched off and the time is not billed. `paused_at` is the open pause;
-- `pauses` holds the closed ones as [[from, to], ...] (pricing excludes them); resuming moves the planned end later
-- by the pause.
alter table session
  add column paused_at timestamptz,
  add column pauses jsonb not null default '[]'::jsonb,
  add constraint session_paused_state check ((status = 'paused') = (paused_at is not null));

alter table device_command
  drop constraint device_command_command_check,
  add constraint device_command_command_check
    check (command in ('switch_on', 'switch_off', 'extend', 'warn', 'eject', 'accept_return', 'pause', 'resume'));

-- An eject's answer: what became of the powerbank. `acked_at` and `result` say only that the bridge passed the
-- command on (it acknowledges an eject when it publishes it to the cabinet); the cabinet's report (or the bridge's
-- on its behalf after a timeout), the workers closing it unsent, or staff who looked at the cabinet answer it.
alter table device_command
  add column answered_at timestamptz,
  add column outcome text check (outcome in ('ejected', 'not_ejected', 'expired', 'staff_ejected', 'staff_not_ejected')),
  add constraint device_command_outcome_answered check ((outcome is null) = (answered_at is null));

-- Ejects answered before this migration: by their cabinet's report, or closed unsent by the workers.
update device_command c
   set answered_at = e.received_at,
       outcome = case when (e.body->>'ok')::boolean then 'ejected' else 'not_ejected' end
  from bridge_event e
 where e.tenant_id = c.tenant_id and e.station_id = c.station_id and e.kind = 'cabinet_ejected'
   and e.body->>'request_id' = c.id::text and c.command = 'eject';
update device_command set answered_at = acked_at, outcome = 'expired'
 where command = 'eject' and result = 'expired' and answered_at is null;

-- The ejects a cabinet has not answered yet (bridge-driven cabinets only: a manual cabinet's eject has no deadline
-- and is only a record), so the list of those waiting for staff stays as small as the ejects in flight.
create index device_command_unanswered_idx on device_command (tenant_id, created_at)
  where command = 'eject' and answered_at is null and deadline_at is not null;

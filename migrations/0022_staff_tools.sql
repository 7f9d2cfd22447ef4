-- Staff tools (seed 001): venue-scoped memberships, SOS, tasks, shifts, the safety log and patron flags, and an
-- audit log that records where a request came from.

-- Venue scope. A staff or manager membership is for all venues (all_venues) or for the venues listed in
-- member_venue. Owners always see every venue, whatever is stored.
alter table membership add column all_venues boolean not null default true;

create table member_venue (
  tenant_id uuid not null,
  user_id uuid not null,
  venue_id uuid not null,
  created_at timestamptz not null default now(),
  primary key (tenant_id, user_id, venue_id),
  foreign key (tenant_id, user_id) references membership (tenant_id, user_id) on delete cascade,
  foreign key (tenant_id, venue_id) references venue (tenant_id, id)
);
create index member_venue_venue_idx on member_venue (tenant_id, venue_id);
select confine_to_tenant('member_venue');

-- The venues an invitation grants (null: all). Checked against the tenant's venues when the invitation is made;
-- copied into member_venue when it is accepted.
alter table invitation add column venue_ids uuid[];

create type staff_severity as enum ('low', 'medium', 'high', 'critical');
create type sos_status as enum ('raised', 'acknowledged', 'resolved');

-- An SOS: raised by a member or a patron at a venue; the timestamps give the response times.
create table sos (
  tenant_id uuid not null,
  id uuid not null,
  venue_id uuid not null,
  station_id uuid,
  location text not null default '' check (length(location) <= 200),
  severity staff_severity not null,
  note text not null default '' check (length(note) <= 2000),
  status sos_status not null default 'raised',
  raised_by_user uuid,
  raised_by_patron uuid,
  raised_at timestamptz not null default now(),
  acknowledged_at timestamptz,
  acknowledged_by uuid,
  responded_at timestamptz,
  responded_by uuid,
  response_note text check (length(response_note) <= 2000),
  resolved_at timestamptz,
  resolved_by uuid,
  resolution_note text check (length(resolution_note) <= 2000),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (tenant_id, id),
  foreign key (tenant_id, venue_id) references venue (tenant_id, id),
  foreign key (tenant_id, station_id) references station (tenant_id, id),
  foreign key (tenant_id, raised_by_patron) references patron (tenant_id, id),
  check ((raised_by_user is null) <> (raised_by_patron is null)),
  check (status <> 'resolved' or resolved_at is not null)
);
create index sos_venue_raised_idx on sos (tenant_id, venue_id, raised_at desc);
create index sos_raised_idx on sos (tenant_id, raised_at desc);
create trigger sos_updated_at before update on sos for each row execute function set_updated_at();
select confine_to_tenant('sos');

create type staff_task_status as enum ('open', 'done', 'cancelled');

-- A task for the floor. The assignee is a member's login (not a foreign key: removing a member must not be blocked
-- by their tasks; the code checks the assignee is a member when assigning).
create table staff_task (
  tenant_id uuid not null,
  id uuid not null,
  venue_id uuid not null,
  station_id uuid,
  title text not null check (length(title) between 1 and 200),
  note text not null default '' check (length(note) <= 2000),
  assignee_user_id uuid,
  due_at timestamptz,
  status staff_task_status not null default 'open',
  created_by uuid not null,
  completed_at timestamptz,
  completed_by uuid,
  cancelled_at timestamptz,
  cancelled_by uuid,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (tenant_id, id),
  foreign key (tenant_id, venue_id) references venue (tenant_id, id),
  foreign key (tenant_id, station_id) references station (tenant_id, id)
);
create index staff_task_venue_idx on staff_task (tenant_id, venue_id, status);
create index staff_task_assignee_idx on staff_task (tenant_id, assignee_user_id, status);
create trigger staff_task_updated_at before update on staff_task for each row execute function set_updated_at();
select confine_to_tenant('staff_task');

-- Clock in / clock out. One open shift per member at a time.
create table staff_shift (
  tenant_id uuid not null,
  id uuid not null,
  user_id uuid not null,
  venue_id uuid not null,
  started_at timestamptz not null default now(),
  ended_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (tenant_id, id),
  foreign key (tenant_id, venue_id) references venue (tenant_id, id),
  check (ended_at is null or ended_at >= started_at)
);
create unique index staff_shift_open_key on staff_shift (tenant_id, user_id) where ended_at is null;
create index staff_shift_venue_idx on staff_shift (tenant_id, venue_id, started_at desc);
create trigger staff_shift_updated_at before update on staff_shift for each row execute function set_updated_at();
select confine_to_tenant('staff_shift');

-- The safety log: an intervention about a patron or a station, at a venue.
create table safety_entry (
  tenant_id uuid not null,
  id uuid not null,
  venue_id uuid not null,
  patron_id uuid,
  station_id uuid,
  kind text not null check (kind ~ '^[a-z_]{1,40}$'),
  note text not null default '' check (length(note) <= 2000),
  severity staff_severity not null,
  recorded_by uuid not null,
  created_at timestamptz not null default now(),
  primary key (tenant_id, id),
  foreign key (tenant_id, venue_id) references venue (tenant_id, id),
  foreign key (tenant_id, patron_id) references patron (tenant_id, id),
  foreign key (tenant_id, station_id) references station (tenant_id, id),
  check (patron_id is not null or station_id is not null)
);
create index safety_entry_venue_idx on safety_entry (tenant_id, venue_id, created_at desc);
create index safety_entry_patron_idx on safety_entry (tenant_id, patron_id);
select confine_to_tenant('safety_entry');

-- A flagged patron: staff are warned when they start a session.
alter table patron
  add column flagged_at timestamptz,
  add column flag_reason text check (length(flag_reason) <= 500),
  add column flagged_by uuid;

-- Where a request came from, and the venue an entry concerns (managers scoped to venues read those entries).
alter table audit_log
  add column ip inet,
  add column user_agent text check (length(user_agent) <= 500),
  add column venue_id uuid;
create index audit_log_actor_idx on audit_log (tenant_id, actor_user_id, created_at desc);
create index audit_log_object_idx on audit_log (tenant_id, object_type, object_id);

grant select, insert, delete on member_venue to switchyard_app;
grant select, insert, update on sos, staff_task, staff_shift to switchyard_app;
grant select, insert on safety_entry to switchyard_app;

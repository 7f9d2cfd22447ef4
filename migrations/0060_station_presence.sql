-- A station out of a session and out of maintenance is `online` when it can be reached and `offline` when not; it
-- used to stay as created (`offline`) until its first session ended, and `online` ever after. Reachable means: a
-- manual station always (staff switch it); an OCPP station while its charger is connected; a station behind the
-- venue's edge bridge (plug, router, PC agent, cabinet) while a bridge of its venue is online and its device
-- answered its last reading. That answer is kept here (null: not read yet, taken as answering).

-- Locked first, before anything here takes a lock of its own: a charger or a bridge, then the station, as a
-- charger connecting or a bridge going offline takes them.
lock table charger, bridge, station in access exclusive mode;

alter table station add column device_reachable boolean;

-- Every tenant's idle stations follow the rule from now: the owner running this migration is confined like
-- everyone else (row-level security is forced), so the tables it reads and writes let it through for these
-- statements, inside the migration's transaction.
alter table charger no force row level security;
alter table bridge no force row level security;
alter table station no force row level security;

update station set status = case
    when case control
           when 'manual' then true
           when 'ocpp' then exists (select 1 from charger c
                                     where c.tenant_id = station.tenant_id and c.station_id = station.id and c.online)
           else exists (select 1 from bridge b
                         where b.tenant_id = station.tenant_id and b.venue_id = station.venue_id and b.online
                           and b.revoked_at is null)
         end
    then 'online' else 'offline' end::station_status
  where status in ('online', 'offline') and archived_at is null and not expected_on;

-- A station whose session still runs is in session (ending maintenance during a session used to leave it offline).
update station set status = 'in_session'
  where status in ('online', 'offline') and archived_at is null and expected_on;

alter table charger force row level security;
alter table bridge force row level security;
alter table station force row level security;

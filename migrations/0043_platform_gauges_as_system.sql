-- `sys_platform_gauges` (migration 0033) was left owned by whoever ran the migrations. Where that is a superuser it
-- read across tenants as meant; where it is an ordinary owner, forced row-level security confined it to no tenant
-- at all, and every gauge read zero. Like every other cross-tenant function it now runs as the system role, which
-- may read exactly the columns the gauges count (counts and ages only ever leave the function).
grant select (asset_id) on session to switchyard_system;
grant select (online, last_seen_at) on bridge to switchyard_system;
grant select (station_id, online, last_seen_at) on charger to switchyard_system;
grant select (tenant_id, id, control, archived_at) on station to switchyard_system;
create policy system_gauges_read on station for select to switchyard_system using (true);
grant select (station_id, kind, body, occurred_at) on bridge_event to switchyard_system;
alter function sys_platform_gauges(timestamptz) owner to switchyard_system;

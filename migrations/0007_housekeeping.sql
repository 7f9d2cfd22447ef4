-- Housekeeping across tenants, run by the workers: forget idempotency keys past their window and quotes that
-- expired unused a day ago. One security-definer function, owned by the system role, allowed only these deletes.
grant select (tenant_id, scope, key, expires_at), delete on idempotency_key to switchyard_system;
grant select (tenant_id, id, expires_at, consumed_at), delete on quote to switchyard_system;
grant select (quote_id) on session to switchyard_system;
create policy system_purge_read on idempotency_key for select to switchyard_system using (true);
create policy system_purge on idempotency_key for delete to switchyard_system using (true);
create policy system_purge_read on quote for select to switchyard_system using (true);
create policy system_purge on quote for delete to switchyard_system using (true);

create function sys_purge_expired(p_now timestamptz, out keys bigint, out quotes bigint)
language plpgsql volatile security definer set search_path = public, pg_temp as $$
begin
  delete from idempotency_key where expires_at < p_now;
  get diagnostics keys = row_count;
  -- A quote that started a rental is kept: the rental references it.
  delete from quote q where q.consumed_at is null and q.expires_at < p_now - interval '1 day'
    and not exists (select 1 from session s where s.tenant_id = q.tenant_id and s.quote_id = q.id);
  get diagnostics quotes = row_count;
end
$$;
alter function sys_purge_expired(timestamptz) owner to switchyard_system;
revoke all on function sys_purge_expired(timestamptz) from public;
grant execute on function sys_purge_expired(timestamptz) to switchyard_app;

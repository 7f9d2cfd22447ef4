-- A charger's new password is sent to it over its connection (1.6 ChangeConfiguration AuthorizationKey, 2.0.1
-- SetVariables SecurityCtrlr.BasicAuthPassword). Until the charger is known to use it, the passwords it may still
-- be using stay valid: a charger that dropped before the call reached it, or whose answer was lost, must not be
-- locked out. `previous_password_hashes` are their SHA-256s (the one it last logged in with, and any sent since and
-- not confirmed), emptied once the charger accepts the new one or logs in with it.
alter table charger add column previous_password_hashes bytea[] not null default '{}';

-- The SHA-256 of the password a call sends (kept after the password itself is hidden), so that its answer and
-- the charger's next login say which password the charger has.
alter table ocpp_call add column password_hash bytea;

grant select (previous_password_hashes) on charger to switchyard_system;

-- A connecting charger: its tenant, charger and the hashes of the passwords it may present.
drop function sys_charger_identity(text);
create function sys_charger_identity(p_charge_point_id text)
returns table (tenant_id uuid, charger_id uuid, password_hash bytea, previous_password_hashes bytea[])
language sql stable security definer set search_path = public, pg_temp as $$
  select c.tenant_id, c.id, c.password_hash, c.previous_password_hashes
  from charge_point_directory d join charger c on c.tenant_id = d.holder_tenant_id and c.id = d.charger_id
  where d.charge_point_id = p_charge_point_id
$$;
alter function sys_charger_identity(text) owner to switchyard_system;
revoke all on function sys_charger_identity(text) from public;
grant execute on function sys_charger_identity(text) to switchyard_app;

-- Every authenticated request re-reads what its token's subject is now (a member's role and venue scope, or that
-- a patron still exists with a password), so that a removed member or a demoted manager loses access at once. That
-- read took a tenant transaction of its own: begin and confine, the role, the venue scope, roll back. It is now one
-- statement outside any transaction, through this function, for the tenant named in the (verified) token only.
-- Returns one row — the member's role and venue scope (null: every venue), or for a patron a null role — or none
-- when the subject no longer belongs to the tenant.
grant select (all_venues) on membership to switchyard_system;
grant select (tenant_id, user_id, venue_id) on member_venue to switchyard_system;
create policy system_read on member_venue for select to switchyard_system using (true);
grant select (tenant_id, id, password_hash) on patron to switchyard_system;
create policy system_read on patron for select to switchyard_system using (true);

-- PL/pgSQL, not SQL: a security-definer SQL function is never inlined, so its body would be planned again on every
-- call (a quarter of a millisecond, more than the read itself); PL/pgSQL keeps its plans per connection.
create function sys_token_principal(p_tenant uuid, p_subject uuid, p_patron boolean)
returns table (role member_role, venues uuid[])
language plpgsql stable security definer set search_path = public, pg_temp as $$
begin
  if p_patron then
    return query
      select null::member_role, null::uuid[]
      from patron p
      where p.tenant_id = p_tenant and p.id = p_subject and p.password_hash is not null;
  else
    return query
      select m.role,
             case when m.role = 'owner' or m.all_venues then null
                  else array(select mv.venue_id from member_venue mv
                             where mv.tenant_id = m.tenant_id and mv.user_id = m.user_id order by mv.venue_id) end
      from membership m
      where m.tenant_id = p_tenant and m.user_id = p_subject;
  end if;
end
$$;
alter function sys_token_principal(uuid, uuid, boolean) owner to switchyard_system;
revoke all on function sys_token_principal(uuid, uuid, boolean) from public;
grant execute on function sys_token_principal(uuid, uuid, boolean) to switchyard_app;

-- `sys_token_principal` (migration 0037) asks whether a patron still has a password, and for that the system role
-- was granted the patrons' password hashes of every tenant. It needs only the yes or no: a generated column says
-- it, and the system role reads that column instead of the hashes.
alter table patron add column has_login boolean generated always as (password_hash is not null) stored;
revoke select (password_hash) on patron from switchyard_system;
grant select (has_login) on patron to switchyard_system;

create or replace function sys_token_principal(p_tenant uuid, p_subject uuid, p_patron boolean)
returns table (role member_role, venues uuid[])
language plpgsql stable security definer set search_path = public, pg_temp as $$
begin
  if p_patron then
    return query
      select null::member_role, null::uuid[]
      from patron p
      where p.tenant_id = p_tenant and p.id = p_subject and p.has_login;
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

create type member_role as enum ('owner', 'manager', 'staff');

create table tenant (
  id uuid primary key,
  name text not null check (length(name) between 1 and 200),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create trigger tenant_updated_at before update on tenant for each row execute function set_updated_at();
select confine_to_tenant('tenant', 'id');

-- A login. Not tenant-owned: one person can belong to several tenants. Emails are stored lower-cased.
create table app_user (
  id uuid primary key,
  email text not null check (email = lower(email) and length(email) between 3 and 254),
  password_hash text not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint app_user_email_key unique (email)
);
create trigger app_user_updated_at before update on app_user for each row execute function set_updated_at();

create table membership (
  tenant_id uuid not null references tenant (id),
  user_id uuid not null references app_user (id),
  role member_role not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (tenant_id, user_id)
);
create index membership_user_idx on membership (user_id);
create trigger membership_updated_at before update on membership for each row execute function set_updated_at();
select confine_to_tenant('membership');

-- Refresh tokens are opaque; only their SHA-256 is stored. Tokens of one login chain share a family: presenting a
-- spent token revokes the whole family.
create table refresh_token (
  tenant_id uuid not null references tenant (id),
  id uuid not null,
  user_id uuid not null,
  family_id uuid not null,
  token_hash bytea not null,
  expires_at timestamptz not null,
  spent_at timestamptz,
  revoked_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (tenant_id, id),
  foreign key (tenant_id, user_id) references membership (tenant_id, user_id) on delete cascade
);
create index refresh_token_hash_idx on refresh_token (token_hash);
create index refresh_token_family_idx on refresh_token (tenant_id, family_id);
create trigger refresh_token_updated_at before update on refresh_token for each row execute function set_updated_at();
select confine_to_tenant('refresh_token');

create table invitation (
  tenant_id uuid not null references tenant (id),
  id uuid not null,
  email text not null check (email = lower(email)),
  role member_role not null,
  token_hash bytea not null,
  invited_by uuid not null,
  expires_at timestamptz not null,
  accepted_at timestamptz,
  revoked_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (tenant_id, id)
);
create unique index invitation_pending_email_key on invitation (tenant_id, email)
  where accepted_at is null and revoked_at is null;
create index invitation_hash_idx on invitation (token_hash);
create trigger invitation_updated_at before update on invitation for each row execute function set_updated_at();
select confine_to_tenant('invitation');

grant select, insert, update on app_user to switchyard_app;
grant select, insert, update, delete on tenant, membership, refresh_token, invitation to switchyard_app;

-- The reviewed cross-tenant reads. Each is a security-definer function owned by switchyard_system, which may read
-- only the columns granted below, through policies that apply to that role alone.
grant select (id, name) on tenant to switchyard_system;
grant select (tenant_id, user_id, role) on membership to switchyard_system;
grant select (tenant_id, token_hash) on refresh_token to switchyard_system;
grant select (tenant_id, token_hash) on invitation to switchyard_system;
create policy system_read on tenant for select to switchyard_system using (true);
create policy system_read on membership for select to switchyard_system using (true);
create policy system_read on refresh_token for select to switchyard_system using (true);
create policy system_read on invitation for select to switchyard_system using (true);

-- Login: which tenants a user belongs to, before any tenant is chosen.
create function sys_user_memberships(p_user_id uuid)
returns table (tenant_id uuid, tenant_name text, role member_role)
language sql stable security definer set search_path = public, pg_temp as $$
  select m.tenant_id, t.name, m.role
  from membership m join tenant t on t.id = m.tenant_id
  where m.user_id = p_user_id
  order by t.name, t.id
$$;

-- Refresh: which tenant a presented refresh token belongs to; the rest happens inside that tenant.
create function sys_refresh_token_tenant(p_token_hash bytea)
returns uuid
language sql stable security definer set search_path = public, pg_temp as $$
  select tenant_id from refresh_token where token_hash = p_token_hash limit 1
$$;

-- Invitation acceptance: which tenant an invitation token belongs to.
create function sys_invitation_tenant(p_token_hash bytea)
returns uuid
language sql stable security definer set search_path = public, pg_temp as $$
  select tenant_id from invitation where token_hash = p_token_hash limit 1
$$;

alter function sys_user_memberships(uuid) owner to switchyard_system;
alter function sys_refresh_token_tenant(bytea) owner to switchyard_system;
alter function sys_invitation_tenant(bytea) owner to switchyard_system;
revoke all on function sys_user_memberships(uuid), sys_refresh_token_tenant(bytea), sys_invitation_tenant(bytea)
  from public;
grant execute on function sys_user_memberships(uuid), sys_refresh_token_tenant(bytea), sys_invitation_tenant(bytea)
  to switchyard_app;

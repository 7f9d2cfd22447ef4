-- A login created by accepting an invitation has not proved it owns its email address: whoever invited the address
-- chose who sets its password. Until the email is verified (with the messaging work) such a login reaches only the
-- tenant that invited it: login lists no other tenant, it cannot accept another tenant's invitation, and sign-up
-- never creates a tenant under it. Null means the login is not confined (sign-up logins, and every login before
-- this). No foreign key: app_user is not tenant-owned, and this is only read by the login flow.
alter table app_user add column unverified_tenant_id uuid;

-- Refresh-token families have an absolute lifetime as well as the sliding one: every token of a family carries the
-- family's deadline, copied from the token it was refreshed from. Families issued before this migration get 30
-- days from now (the default is computed once, when the column is added; forced row-level security would hide the
-- rows from an update here).
alter table refresh_token add column family_expires_at timestamptz not null default now() + interval '30 days';
alter table refresh_token alter column family_expires_at drop default;

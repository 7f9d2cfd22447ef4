-- Patron logins: a patron may sign up and log in to its operator (tenant) with email and password, and gets
-- refresh tokens like a member.
alter table patron add column password_hash text;

alter table refresh_token
  alter column user_id drop not null,
  add column patron_id uuid,
  add constraint refresh_token_patron_fk foreign key (tenant_id, patron_id)
    references patron (tenant_id, id) on delete cascade,
  add constraint refresh_token_one_subject check ((user_id is null) <> (patron_id is null));

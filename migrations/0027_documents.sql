-- Documents in object storage (issue 12): receipts per session, invoices over several sessions (seed 002), kiosk
-- reports (seed 003). The PDFs live in an S3-compatible bucket under keys that start with the tenant's id; these
-- tables hold what was generated, where it is, and what it said.

-- What a receipt or invoice prints about its issuer.
alter table tenant
  add column legal_name text check (length(legal_name) between 1 and 200),
  add column legal_address text check (length(legal_address) between 1 and 500),
  add column tax_id text check (length(tax_id) between 1 and 50);

-- The tax included in a venue's prices, in basis points (1900 = 19 %). Prices are gross: the tax is taken out of
-- the total, never added on top.
alter table venue
  add column tax_rate_bp integer not null default 0 check (tax_rate_bp between 0 and 10000),
  add column tax_label text not null default 'VAT' check (length(tax_label) between 1 and 20);

-- How a session was paid, for its receipt: the wallet (the default, and every device-started session), cash taken
-- by staff for a walk-in, or the patron's saved card charged at the start.
alter table session
  add column payment_method text not null default 'wallet' check (payment_method in ('wallet', 'cash', 'card')),
  -- Seed 003: a kiosk session's contact and free-form metadata.
  add column contact_email text check (length(contact_email) between 3 and 254),
  add column contact_phone text check (length(contact_phone) between 3 and 32),
  add column metadata jsonb not null default '{}'::jsonb check (jsonb_typeof(metadata) = 'object');

-- One receipt per session, made on first request (or when delivery asks for it); asking again returns it.
create table receipt (
  tenant_id uuid not null references tenant (id),
  id uuid not null,
  session_id uuid not null,
  object_key text not null,
  byte_size integer not null check (byte_size > 0),
  currency char(3) not null,
  total bigint not null,
  tax bigint not null,
  created_at timestamptz not null default now(),
  primary key (tenant_id, id),
  constraint receipt_session_key unique (tenant_id, session_id),
  foreign key (tenant_id, session_id) references session (tenant_id, id)
);
select confine_to_tenant('receipt');

-- Invoices: a patron's ended sessions on one document. A draft has no number; issuing takes the next number of the
-- tenant's year from invoice_counter in the issuing transaction (its row lock orders concurrent issues, and a
-- rolled-back issue gives its number back), so numbers are gap-free per tenant and year.
create table invoice (
  tenant_id uuid not null references tenant (id),
  id uuid not null,
  patron_id uuid not null,
  status text not null default 'draft' check (status in ('draft', 'issued', 'paid', 'void')),
  currency char(3) not null,
  year integer,
  number integer check (number > 0),
  total bigint not null default 0,
  tax bigint not null default 0,
  object_key text,
  byte_size integer,
  issued_at timestamptz,
  paid_at timestamptz,
  voided_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (tenant_id, id),
  foreign key (tenant_id, patron_id) references patron (tenant_id, id),
  constraint invoice_number_key unique (tenant_id, year, number),
  -- Issued and paid invoices have a number, drafts none; a void one has one if it was issued before.
  constraint invoice_numbered check ((number is null) = (year is null)
                                     and (status not in ('issued', 'paid') or number is not null)
                                     and (status <> 'draft' or number is null)),
  constraint invoice_paid check ((status = 'paid') = (paid_at is not null))
);
create index invoice_patron_idx on invoice (tenant_id, patron_id, created_at desc);
create trigger invoice_updated_at before update on invoice for each row execute function set_updated_at();
select confine_to_tenant('invoice');

-- A session is on at most one invoice that is not void (voiding removes its links).
create table invoice_session (
  tenant_id uuid not null,
  invoice_id uuid not null,
  session_id uuid not null,
  primary key (tenant_id, invoice_id, session_id),
  constraint invoice_session_once unique (tenant_id, session_id),
  foreign key (tenant_id, invoice_id) references invoice (tenant_id, id),
  foreign key (tenant_id, session_id) references session (tenant_id, id)
);
select confine_to_tenant('invoice_session');

create table invoice_counter (
  tenant_id uuid not null references tenant (id),
  year integer not null,
  last integer not null check (last >= 0),
  primary key (tenant_id, year)
);
select confine_to_tenant('invoice_counter');

-- Seed 003 report kinds, per tenant: a key used in the URL (`diagnostics`, `thickness`), a title, and a template
-- (blocks of headings, fields and tables read from the report's data; see core/src/documents/reports.rs).
create table report_kind (
  tenant_id uuid not null references tenant (id),
  id uuid not null,
  key text not null check (key ~ '^[a-z][a-z0-9_-]{0,39}$'),
  title text not null check (length(title) between 1 and 200),
  template jsonb not null check (jsonb_typeof(template) = 'array'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (tenant_id, id),
  constraint report_kind_key unique (tenant_id, key)
);
create trigger report_kind_updated_at before update on report_kind for each row execute function set_updated_at();
select confine_to_tenant('report_kind');

create table report (
  tenant_id uuid not null references tenant (id),
  id uuid not null,
  session_id uuid not null,
  kind_id uuid not null,
  data jsonb not null,
  object_key text not null,
  byte_size integer not null check (byte_size > 0),
  -- Where it is to be delivered (seed 003's sent_to_*), and how far that went: `none` (nowhere asked), `pending`
  -- (waiting for the messaging outbox), `sent`, `failed`.
  sent_to_email text,
  sent_to_phone text,
  delivery text not null default 'none' check (delivery in ('none', 'pending', 'sent', 'failed')),
  sent_at timestamptz,
  created_at timestamptz not null default now(),
  primary key (tenant_id, id),
  foreign key (tenant_id, session_id) references session (tenant_id, id),
  foreign key (tenant_id, kind_id) references report_kind (tenant_id, id)
);
create index report_session_idx on report (tenant_id, session_id, created_at);
create index report_pending_idx on report (tenant_id, created_at) where delivery = 'pending';
select confine_to_tenant('report');

grant select, insert on receipt to switchyard_app;
grant select, insert, update on invoice, invoice_counter, report_kind, report to switchyard_app;
grant select, insert, delete on invoice_session to switchyard_app;

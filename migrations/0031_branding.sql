-- A tenant's branding (issue 13): the logo its messages and console show, and its accent colour. The logo is an
-- https URL the operator hosts (mail clients fetch it from there); the colour a `#rrggbb` hex.
alter table tenant
  add column brand_logo_url text check (brand_logo_url ~ '^https://[^\s"<>]+$' and length(brand_logo_url) <= 500),
  add column brand_color text check (brand_color ~ '^#[0-9a-f]{6}$');

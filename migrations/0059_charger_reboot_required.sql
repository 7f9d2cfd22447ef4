-- A charger that accepted a configuration change for after a reboot (`RebootRequired`) shows it until its next boot
-- (`Charger.rebootRequired`), so an operator knows the change is not in effect yet. Adding a column with a constant
-- default rewrites nothing.
alter table charger add column reboot_required boolean not null default false;

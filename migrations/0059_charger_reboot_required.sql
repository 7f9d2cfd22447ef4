-- A charger that accepted a configuration change for after a reboot (`RebootRequired`) shows it until it reboots
-- (`Charger.rebootRequired`), so an operator knows the change is not in effect yet. The column names the connection
-- the answer came on: a reboot always drops the connection, so a boot on that same connection (one the central
-- system triggered, say) is none. Adding a column without a default rewrites nothing.
alter table charger add column reboot_required_on uuid;

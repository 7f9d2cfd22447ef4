-- Per-tenant settings. `billing_tick_sec` overrides the deployment's BILLING_TICK_SEC for this tenant's sessions.
alter table tenant add column billing_tick_sec integer check (billing_tick_sec between 1 and 3600);

-- Migration 0036 numbered live events after the commit, through `sys_number_live_events`, and left the app role its
-- grants to write `live_event` and `live_event_counter` directly for one release, so that the previous release's
-- processes kept working during a rollout. That release is gone: only the numbering writes them now. The app role
-- keeps reading them (a subscription starts from the counter; a resume reads the events).
revoke insert on live_event from switchyard_app;
revoke insert, update on live_event_counter from switchyard_app;

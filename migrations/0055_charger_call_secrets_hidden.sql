-- A call that carried a charger's password to it (1.6 ChangeConfiguration AuthorizationKey, 2.0.1 SetVariables
-- SecurityCtrlr.BasicAuthPassword) kept the password in its payload after it was sent, and showed it: only a hash
-- is meant to be kept. Calls are now written without it once sent (or expired); this hides it in the calls kept
-- before. A call still pending keeps it until it is sent.

-- The rows of every tenant: the owner running this migration is confined like everyone else (row-level security
-- is forced), so the table lets its owner through for these statements, inside the migration's transaction.
alter table ocpp_call no force row level security;

-- Names are not case-sensitive in OCPP.
update ocpp_call set payload = jsonb_set(payload, '{value}', '"(hidden)"')
  where action = 'ChangeConfiguration' and status <> 'pending' and lower(payload->>'key') = 'authorizationkey';

update ocpp_call set payload = jsonb_set(payload, '{setVariableData}', (
    select jsonb_agg(case when lower(e->'variable'->>'name') = 'basicauthpassword'
                          then jsonb_set(e, '{attributeValue}', '"(hidden)"') else e end order by n)
    from jsonb_array_elements(payload->'setVariableData') with ordinality as x(e, n)))
  where action = 'SetVariables' and status <> 'pending'
    and case when jsonb_typeof(payload->'setVariableData') = 'array'
             then exists (select 1 from jsonb_array_elements(payload->'setVariableData') e
                          where lower(e->'variable'->>'name') = 'basicauthpassword')
             else false end;

alter table ocpp_call force row level security;

-- A configuration read's answer may report the charger's password: a 1.6 charger may answer AuthorizationKey
-- (which the specification makes write-only), a 2.0.1 charger asked for SecurityCtrlr.BasicAuthPassword answers
-- it. Answers are now kept with it hidden, in the call and in the charger's configuration; this hides it in those
-- kept before. Names are not case-sensitive in OCPP.

-- Both tables locked first, in the order the central system takes them (a charger, then its calls), so that a
-- charger's answer arriving meanwhile waits instead of deadlocking. A `charger.call` live event kept from before
-- (within its window) is not rewritten: it expires with its window.
lock table charger, ocpp_call in access exclusive mode;

-- The rows of every tenant: the owner running this migration is confined like everyone else (row-level security
-- is forced), so the tables let their owner through for these statements, inside the migration's transaction.
alter table ocpp_call no force row level security;
alter table charger no force row level security;

update ocpp_call set response = jsonb_set(response, '{configurationKey}', (
    select jsonb_agg(case when lower(e->>'key') = 'authorizationkey' and e->'value' is not null
                          then jsonb_set(e, '{value}', '"(hidden)"') else e end order by n)
    from jsonb_array_elements(response->'configurationKey') with ordinality as x(e, n)))
  where action = 'GetConfiguration'
    and case when jsonb_typeof(response->'configurationKey') = 'array'
             then exists (select 1 from jsonb_array_elements(response->'configurationKey') e
                          where lower(e->>'key') = 'authorizationkey' and e->'value' is not null)
             else false end;

update ocpp_call set response = jsonb_set(response, '{getVariableResult}', (
    select jsonb_agg(case when lower(e->'variable'->>'name') = 'basicauthpassword' and e->'attributeValue' is not null
                          then jsonb_set(e, '{attributeValue}', '"(hidden)"') else e end order by n)
    from jsonb_array_elements(response->'getVariableResult') with ordinality as x(e, n)))
  where action = 'GetVariables'
    and case when jsonb_typeof(response->'getVariableResult') = 'array'
             then exists (select 1 from jsonb_array_elements(response->'getVariableResult') e
                          where lower(e->'variable'->>'name') = 'basicauthpassword'
                            and e->'attributeValue' is not null)
             else false end;

update charger set configuration = jsonb_set(configuration, '{configurationKey}', (
    select jsonb_agg(case when lower(e->>'key') = 'authorizationkey' and e->'value' is not null
                          then jsonb_set(e, '{value}', '"(hidden)"') else e end order by n)
    from jsonb_array_elements(configuration->'configurationKey') with ordinality as x(e, n)))
  where case when jsonb_typeof(configuration->'configurationKey') = 'array'
             then exists (select 1 from jsonb_array_elements(configuration->'configurationKey') e
                          where lower(e->>'key') = 'authorizationkey' and e->'value' is not null)
             else false end;

update charger set configuration = jsonb_set(configuration, '{getVariableResult}', (
    select jsonb_agg(case when lower(e->'variable'->>'name') = 'basicauthpassword' and e->'attributeValue' is not null
                          then jsonb_set(e, '{attributeValue}', '"(hidden)"') else e end order by n)
    from jsonb_array_elements(configuration->'getVariableResult') with ordinality as x(e, n)))
  where case when jsonb_typeof(configuration->'getVariableResult') = 'array'
             then exists (select 1 from jsonb_array_elements(configuration->'getVariableResult') e
                          where lower(e->'variable'->>'name') = 'basicauthpassword'
                            and e->'attributeValue' is not null)
             else false end;

alter table ocpp_call force row level security;
alter table charger force row level security;

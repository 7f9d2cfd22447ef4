//! The schema's tenancy guarantees, checked in the catalogue and through the app role's own connections.

use switchyard_core::{Db, TenantId};
use switchyard_tests::{env_url, spawn_app};

#[tokio::test]
async fn every_security_definer_function_runs_as_the_system_role_with_a_fixed_search_path() {
    let app = spawn_app().await;
    // Owned by the migrating role instead, a function reads as that role: everything when it is a superuser,
    // nothing under forced row-level security when it is not (migration 0043 mended one such).
    let functions: Vec<(String, String, bool)> = sqlx::query_as(
        "select p.proname::text, pg_get_userbyid(p.proowner)::text,
                coalesce(array_to_string(p.proconfig, ',') like '%search_path=%', false)
         from pg_proc p join pg_namespace n on n.oid = p.pronamespace
         where n.nspname = 'public' and p.prosecdef order by 1",
    )
    .fetch_all(&app.owner)
    .await
    .unwrap();
    assert!(functions.len() >= 20, "{functions:?}");
    for (name, owner, pinned) in &functions {
        assert_eq!(owner, "switchyard_system", "{name} is owned by {owner}");
        assert!(pinned, "{name} runs with the caller's search_path");
    }
}

#[tokio::test]
async fn every_tenant_table_has_forced_rls_a_policy_and_tenant_leading_keys() {
    let app = spawn_app().await;
    let tables: Vec<(String, bool, bool, i64)> = sqlx::query_as(
        "select c.relname::text, c.relrowsecurity, c.relforcerowsecurity,
                (select count(*) from pg_policy p where p.polrelid = c.oid
                   and pg_get_expr(p.polqual, p.polrelid) like '%current_setting(''app.tenant_id''%')
         from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = 'public' and c.relkind = 'r'
           and exists (select 1 from pg_attribute a where a.attrelid = c.oid and a.attname = 'tenant_id')
         order by 1",
    )
    .fetch_all(&app.owner)
    .await
    .unwrap();
    let names: Vec<&str> = tables.iter().map(|t| t.0.as_str()).collect();
    for expected in [
        "audit_log",
        "connector",
        "invitation",
        "membership",
        "refresh_token",
        "station",
        "venue",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    for (table, enabled, forced, policies) in &tables {
        assert!(
            *enabled && *forced,
            "{table}: row level security must be enabled and forced"
        );
        assert_eq!(*policies, 1, "{table}: needs exactly one tenant policy");
    }

    // Every primary key, unique constraint or index on these tables, and every foreign key between them, includes
    // tenant_id. (References to the global app_user table cannot.)
    let offenders: Vec<(String, String)> = sqlx::query_as(
        "select c.conrelid::regclass::text, c.conname::text from pg_constraint c
         where c.contype in ('p', 'u', 'f') and c.connamespace = 'public'::regnamespace
           and (c.contype <> 'f' or exists (select 1 from pg_attribute a where a.attrelid = c.confrelid
                                              and a.attname = 'tenant_id'))
           and exists (select 1 from pg_attribute a where a.attrelid = c.conrelid and a.attname = 'tenant_id')
           and not exists (select 1 from pg_attribute a where a.attrelid = c.conrelid and a.attname = 'tenant_id'
                             and a.attnum = any(c.conkey))
         union all
         select i.indrelid::regclass::text, ic.relname::text from pg_index i join pg_class ic on ic.oid = i.indexrelid
         where i.indisunique and ic.relnamespace = 'public'::regnamespace
           and exists (select 1 from pg_attribute a where a.attrelid = i.indrelid and a.attname = 'tenant_id')
           and not exists (select 1 from pg_attribute a where a.attrelid = i.indrelid and a.attname = 'tenant_id'
                             and a.attnum = any(i.indkey::int2[]))",
    )
    .fetch_all(&app.owner)
    .await
    .unwrap();
    assert_eq!(offenders, vec![], "keys without tenant_id");

    // The tenant table itself is confined by its id.
    let tenant: (bool, bool) =
        sqlx::query_as("select relrowsecurity, relforcerowsecurity from pg_class where oid = 'public.tenant'::regclass")
            .fetch_one(&app.owner)
            .await
            .unwrap();
    assert_eq!(tenant, (true, true));
}

#[tokio::test]
async fn the_app_role_is_not_an_owner_and_cannot_bypass_rls() {
    let app = spawn_app().await;
    let role: (bool, bool, bool, bool) = sqlx::query_as(
        "select rolsuper, rolbypassrls, rolcanlogin, rolcreaterole from pg_roles where rolname = 'switchyard_app'",
    )
    .fetch_one(&app.owner)
    .await
    .unwrap();
    assert_eq!(role, (false, false, true, false));
    let owned: i64 = sqlx::query_scalar(
        "select count(*) from pg_class c join pg_roles r on r.oid = c.relowner
         where r.rolname in ('switchyard_app') and c.relnamespace = 'public'::regnamespace",
    )
    .fetch_one(&app.owner)
    .await
    .unwrap();
    assert_eq!(owned, 0, "the app role owns no table");
    let whoami: String = sqlx::query_scalar("select current_user::text")
        .fetch_one(
            Db::connect_lazy(&env_url("TEST_APP_DATABASE_URL"), 1)
                .unwrap()
                .pool(),
        )
        .await
        .unwrap();
    assert_eq!(
        whoami, "switchyard_app",
        "the tests talk to the API as the app role"
    );
}

#[tokio::test]
async fn a_pooled_connection_used_for_one_tenant_then_without_one_sees_nothing() {
    let app = spawn_app().await;
    let a = app.signup().await;
    let venue = app.create_venue(&a.access, "Visible to A only").await;
    app.create_station(&a.access, venue, "S").await;

    // One connection in the pool, so the second use is certainly the same connection.
    let db = Db::connect_lazy(&env_url("TEST_APP_DATABASE_URL"), 1).unwrap();
    let mut tx = db.begin_tenant(TenantId(a.id)).await.unwrap();
    let seen: i64 = sqlx::query_scalar("select count(*) from venue")
        .fetch_one(tx.conn())
        .await
        .unwrap();
    assert_eq!(seen, 1);
    tx.commit().await.unwrap();

    let pid_rows: (i32, Option<String>) = sqlx::query_as(
        "select pg_backend_pid(), nullif(current_setting('app.tenant_id', true), '')",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(pid_rows.1, None, "no tenant carried over");
    for table in [
        "venue",
        "station",
        "connector",
        "membership",
        "refresh_token",
        "invitation",
        "audit_log",
        "tenant",
    ] {
        let n: i64 = sqlx::query_scalar(&format!("select count(*) from {table}"))
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(n, 0, "{table} visible without a tenant");
    }

    // A rolled-back tenant transaction carries nothing over either.
    let tx = db.begin_tenant(TenantId(a.id)).await.unwrap();
    drop(tx);
    let n: i64 = sqlx::query_scalar("select count(*) from venue")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(n, 0);

    // Writing another tenant's id is refused by the policy's check, not just filtered.
    let b = app.signup().await;
    let mut tx = db.begin_tenant(TenantId(b.id)).await.unwrap();
    let err = sqlx::query("insert into venue (tenant_id, id, name, timezone, currency) values ($1, gen_random_uuid(), 'x', 'UTC', 'EUR')")
        .bind(a.id)
        .execute(tx.conn())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
}

#[tokio::test]
async fn the_audit_log_is_append_only_for_the_app_role() {
    let app = spawn_app().await;
    let a = app.signup().await;
    app.create_venue(&a.access, "V").await;
    let db = Db::connect_lazy(&env_url("TEST_APP_DATABASE_URL"), 1).unwrap();
    let mut tx = db.begin_tenant(TenantId(a.id)).await.unwrap();
    let err = sqlx::query("delete from audit_log")
        .execute(tx.conn())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
}

#[tokio::test]
async fn the_database_refuses_a_journal_that_does_not_balance() {
    let app = spawn_app().await;
    let a = app.signup().await;
    let venue = app.create_venue(&a.access, "V").await;
    let db = Db::connect_lazy(&env_url("TEST_APP_DATABASE_URL"), 1).unwrap();
    let mut tx = db.begin_tenant(TenantId(a.id)).await.unwrap();
    let account: uuid::Uuid = sqlx::query_scalar(
        "insert into ledger_account (tenant_id, id, owner_kind, owner_id, purpose, currency)
         values ($1, gen_random_uuid(), 'venue', $2, 'revenue', 'EUR') returning id",
    )
    .bind(a.id)
    .bind(venue)
    .fetch_one(tx.conn())
    .await
    .unwrap();
    let journal: uuid::Uuid = sqlx::query_scalar(
        "insert into journal (tenant_id, id, idempotency_key, kind) values ($1, gen_random_uuid(), 'x', 'test') returning id",
    )
    .bind(a.id)
    .fetch_one(tx.conn())
    .await
    .unwrap();
    let err = sqlx::query(
        "insert into journal_entry (tenant_id, journal_id, line, account_id, amount, currency) values ($1, $2, 1, $3, 100, 'EUR')",
    )
    .bind(a.id)
    .bind(journal)
    .bind(account)
    .execute(tx.conn())
    .await
    .unwrap_err();
    assert!(err.to_string().contains("does not balance"), "{err}");
}

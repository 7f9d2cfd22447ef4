//! Backups: a logical dump (`pg_dump -Fc`, the manual's procedure) of a database with money in it is restored
//! into a new database after the original is dropped; the ledger still balances to the unit, and the app (under
//! row-level security, with its grants restored) serves the same wallets from it.

use serde_json::json;
use switchyard_tests::{fresh_database, spawn_app_in, with_database};
use tokio::process::Command;
use uuid::Uuid;

use crate::sessions::{floor, top_up, wallet, wallet_session};

/// A client program of the test cluster's Postgres (`dev.sh` points TEST_PG_BIN at its bin folder).
fn pg_program(name: &str) -> String {
    match std::env::var("TEST_PG_BIN") {
        Ok(dir) if !dir.is_empty() => format!("{dir}/{name}"),
        _ => name.to_owned(),
    }
}

/// Every account's balance, and the journals that do not sum to zero.
async fn ledger(owner: &sqlx::PgPool) -> (Vec<(Uuid, Uuid, i64)>, i64, i64) {
    let balances = sqlx::query_as(
        "select tenant_id, account_id, sum(amount)::bigint from journal_entry
         group by tenant_id, account_id order by tenant_id, account_id",
    )
    .fetch_all(owner)
    .await
    .unwrap();
    let (journals, unbalanced): (i64, i64) = sqlx::query_as(
        "select (select count(*) from journal),
                (select count(*) from (select 1 from journal_entry group by tenant_id, journal_id
                                       having sum(amount) <> 0) u)",
    )
    .fetch_one(owner)
    .await
    .unwrap();
    (balances, journals, unbalanced)
}

#[tokio::test]
async fn a_dump_restored_after_the_database_is_dropped_keeps_every_balance_and_serves_the_app() {
    let database = fresh_database().await;
    let app = spawn_app_in(&database).await;
    // Money in two tenants: top-ups, a session charged and stopped.
    let mut patrons = Vec::new();
    for name in ["Backup Bea", "Backup Ben"] {
        let f = floor(&app).await;
        let patron = app.create_patron(&f.t.access, name, None).await;
        top_up(&app, &f, patron, 2_500, &Uuid::new_v4().to_string()).await;
        let session = wallet_session(&app, &f.t.access, f.station, patron, Some(30)).await;
        app.gql_ok(
            &f.t.access,
            "mutation($id: UUID!) { stopSession(id: $id) { status } }",
            json!({"id": session}),
        )
        .await;
        let before = wallet(&app, &f.t.access, patron).await;
        patrons.push((f, patron, before));
    }
    let owner = sqlx::PgPool::connect(&database.owner_url).await.unwrap();
    let before = ledger(&owner).await;
    assert!(
        before.1 >= 4,
        "top-ups and charges were booked: {}",
        before.1
    );
    assert_eq!(before.2, 0);
    owner.close().await;
    drop(app);

    let dump = std::env::temp_dir().join(format!("switchyard-backup-{}.dump", Uuid::new_v4()));
    let out = Command::new(pg_program("pg_dump"))
        .args(["--format=custom", "--file"])
        .arg(&dump)
        .arg(&database.owner_url)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The disaster: the database is gone.
    let name = database.owner_url.rsplit('/').next().unwrap().to_owned();
    let admin_url = with_database(&database.owner_url, "postgres");
    let admin = sqlx::PgPool::connect(&admin_url).await.unwrap();
    sqlx::query(&format!("drop database {name} with (force)"))
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query(&format!("create database {name}"))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let out = Command::new(pg_program("pg_restore"))
        .args(["--exit-on-error", "--dbname"])
        .arg(&database.owner_url)
        .arg(&dump)
        .output()
        .await
        .unwrap();
    let _ = std::fs::remove_file(&dump);
    assert!(
        out.status.success(),
        "pg_restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let owner = sqlx::PgPool::connect(&database.owner_url).await.unwrap();
    assert_eq!(
        ledger(&owner).await,
        before,
        "every balance and journal came back"
    );
    owner.close().await;
    // The app serves the restored database as before: the same wallets, each tenant seeing only its own.
    let app = spawn_app_in(&database).await;
    for (f, patron, wallet_before) in &patrons {
        assert_eq!(&wallet(&app, &f.t.access, *patron).await, wallet_before);
    }
    let (first, _, _) = &patrons[0];
    let (_, other_patron, _) = &patrons[1];
    let foreign = app
        .gql(
            Some(&first.t.access),
            "query($p: UUID!) { patron(id: $p) { id } }",
            json!({"p": other_patron}),
        )
        .await;
    assert_eq!(
        switchyard_tests::gql_code(&foreign),
        "not_found",
        "{foreign}"
    );
}

//! The billing tick with several workers at once: every (session, tick) is charged exactly once.

use chrono::{DateTime, Duration, Utc};
use switchyard_core::Db;
use switchyard_tests::{fresh_database, spawn_app_in, TestApp};
use switchyard_workers::billing::{self, Billing};
use uuid::Uuid;

const TENANTS: usize = 10;
const SESSIONS_PER_TENANT: i64 = 500;

/// A tenant with a 10-per-minute tariff and `n` open-ended sessions started at `t0`, first tick due at t0 + 30 s.
async fn tenant_with_sessions(app: &TestApp, n: i64, t0: DateTime<Utc>) -> Uuid {
    let t = app.signup().await;
    let venue = app.create_venue(&t.access, "V").await;
    let tariff = app
        .create_tariff(&t.access, "T", r#"currency: "EUR", perMinute: 10"#)
        .await;
    let patron = app.create_patron(&t.access, "P", None).await;
    let mut tx = app.tenant_tx(t.id).await;
    sqlx::query(
        "insert into station (tenant_id, id, venue_id, name, kind, control)
         select $1, gen_random_uuid(), $2, 'PC-' || n, 'pc', 'manual' from generate_series(1, $3) n",
    )
    .bind(t.id)
    .bind(venue)
    .bind(n)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "insert into session (tenant_id, id, station_id, venue_id, patron_id, origin, tariff_id, tariff_version,
                              terms, timezone, tier, currency, started_at, next_tick_at)
         select $1, gen_random_uuid(), s.id, $2, $3, 'staff', $4, 1, v.terms, 'Europe/Berlin', 'standard', 'EUR',
                $5, $5 + interval '30 seconds'
         from station s, tariff_version v
         where s.tenant_id = $1 and v.tenant_id = $1 and v.tariff_id = $4",
    )
    .bind(t.id)
    .bind(venue)
    .bind(patron)
    .bind(tariff)
    .bind(t0)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    t.id
}

/// Four workers, each with its own pool, drain everything due at `now`.
async fn four_workers(url: &str, now: DateTime<Utc>) -> usize {
    let billing = Billing {
        tick: Duration::seconds(30),
        batch: 37,
        concurrency: 3,
    };
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let url = url.to_owned();
            tokio::spawn(async move {
                let db = Db::connect_lazy(&url, 3).unwrap();
                let mut billed = 0;
                loop {
                    let pass = billing::run_once(&db, billing, now).await.unwrap();
                    assert_eq!(pass.failed, 0);
                    billed += pass.billed;
                    if pass.due == 0 {
                        return billed;
                    }
                }
            })
        })
        .collect();
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap();
    }
    total
}

#[tokio::test]
async fn four_workers_charge_every_session_tick_exactly_once() {
    let database = fresh_database().await;
    let app = spawn_app_in(&database).await;
    let t0: DateTime<Utc> = "2001-01-01T12:00:00Z".parse().unwrap();
    let mut tenants = Vec::new();
    for _ in 0..TENANTS {
        tenants.push(tenant_with_sessions(&app, SESSIONS_PER_TENANT, t0).await);
    }
    let total = TENANTS * SESSIONS_PER_TENANT as usize;
    for tick in 1..=3 {
        let billed = four_workers(&database.app_url, t0 + Duration::seconds(30 * tick)).await;
        assert_eq!(billed, total, "tick {tick}: every session billed once");
    }
    for tenant in tenants {
        let mut tx = app.tenant_tx(tenant).await;
        // 90 s at 10/min in 1-minute steps = 20; tick 1 (30 s) charged 10, tick 2 (60 s) nothing, tick 3 (90 s) 10.
        let rows: Vec<(i32, i64, i64, i64)> = sqlx::query_as(
            "select s.ticks, s.charged_amount,
                    (select count(*) from journal j where j.tenant_id = s.tenant_id and j.session_id = s.id),
                    (select coalesce(sum(e.amount), 0)::bigint from journal j join journal_entry e
                       on e.tenant_id = j.tenant_id and e.journal_id = j.id
                     where j.tenant_id = s.tenant_id and j.session_id = s.id and e.amount > 0)
             from session s where s.tenant_id = $1",
        )
        .bind(tenant)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        assert_eq!(rows.len(), SESSIONS_PER_TENANT as usize);
        for (ticks, charged, journals, credited) in rows {
            assert_eq!((ticks, charged, journals, credited), (3, 20, 2, 20));
        }
        let unbalanced: i64 = sqlx::query_scalar(
            "select count(*) from (select 1 from journal_entry where tenant_id = $1
                                   group by journal_id, currency having sum(amount) <> 0) j",
        )
        .bind(tenant)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        assert_eq!(unbalanced, 0);
        // The ticks' live events (wallet changes) were numbered in their own transactions: none is left pending,
        // and the tenant's numbers run without a gap.
        let (events, first, last, pending): (i64, Option<i64>, Option<i64>, i64) = sqlx::query_as(
            "select count(*), min(seq), max(seq),
                    (select count(*) from live_event_pending where tenant_id = $1)
             from live_event where tenant_id = $1",
        )
        .bind(tenant)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        assert!(events > 0);
        assert_eq!((first, last, pending), (Some(1), Some(events), 0));
        // One wallet.changed per batch for the tenant's one patron, not one per journal: together they name every
        // charge journal once, and their changes add up to what the journals took from the patron.
        let changed: Vec<serde_json::Value> = sqlx::query_scalar(
            "select data from live_event where tenant_id = $1 and kind = 'wallet.changed' order by seq",
        )
        .bind(tenant)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        let journals: Vec<Uuid> = sqlx::query_scalar(
            "select id from journal where tenant_id = $1 and kind = 'session_charge' order by id",
        )
        .bind(tenant)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        assert_eq!(journals.len(), 2 * SESSIONS_PER_TENANT as usize);
        assert!(
            changed.len() * 10 <= journals.len(),
            "{} wallet.changed events for {} journals",
            changed.len(),
            journals.len()
        );
        let mut named: Vec<Uuid> = changed
            .iter()
            .flat_map(|d| d["journalIds"].as_array().unwrap().clone())
            .map(|id| id.as_str().unwrap().parse().unwrap())
            .collect();
        named.sort();
        assert_eq!(named, journals);
        let taken: i64 = changed
            .iter()
            .map(|d| {
                assert_eq!(
                    (d["kind"].as_str(), d["currency"].as_str()),
                    (Some("session_charge"), Some("EUR")),
                    "{d}"
                );
                let several = d["journalIds"].as_array().unwrap().len() > 1;
                assert_eq!(d["journalId"].is_null(), several, "{d}");
                d["changes"]["wallet"].as_i64().unwrap_or(0)
                    + d["changes"]["debt"].as_i64().unwrap_or(0)
            })
            .sum();
        assert_eq!(taken, -20 * SESSIONS_PER_TENANT);
    }
}

#[tokio::test]
async fn a_tenant_being_billed_is_left_to_its_worker_and_a_worker_that_dies_leaves_nothing_behind()
{
    let database = fresh_database().await;
    let app = spawn_app_in(&database).await;
    let t0: DateTime<Utc> = "2002-02-02T12:00:00Z".parse().unwrap();
    let tenant = tenant_with_sessions(&app, 20, t0).await;
    let other = tenant_with_sessions(&app, 5, t0).await;
    let db = Db::connect_lazy(&database.app_url, 4).unwrap();
    let now = t0 + Duration::seconds(30);
    let billing = Billing {
        tick: Duration::seconds(30),
        batch: 1000,
        concurrency: 2,
    };

    // A worker is billing the first tenant (it holds the tenant's billing lock and has charged one session so
    // far): another worker leaves that tenant to it, bills the other tenant, and finds the same 25 sessions due
    // (it wrote nothing to them).
    let mut busy = db
        .begin_tenant(switchyard_core::TenantId(tenant))
        .await
        .unwrap();
    assert!(billing::lock_tenant(&mut busy, false).await.unwrap());
    let one: Uuid = sqlx::query_scalar("select id from session order by id limit 1")
        .fetch_one(busy.conn())
        .await
        .unwrap();
    switchyard_core::sessions::bill_tick(&mut busy, one, now, Duration::seconds(30))
        .await
        .unwrap();
    let pass = billing::run_once(&db, billing, now).await.unwrap();
    assert_eq!(
        (pass.due, pass.billed, pass.busy, pass.failed),
        (25, 5, 20, 0),
        "the busy tenant is skipped, the other billed"
    );
    assert!(!pass.more(billing.batch));
    let billed_other: i64 =
        sqlx::query_scalar("select count(*) from session where tenant_id = $1 and ticks = 1")
            .bind(other)
            .fetch_one(&app.owner)
            .await
            .unwrap();
    assert_eq!(billed_other, 5);

    // That worker dies before committing (its transaction ends without a commit): its charge and its lock go
    // with it, and the next pass bills all 20, each once.
    busy.rollback().await.unwrap();
    let pass = billing::run_once(&db, billing, now).await.unwrap();
    assert_eq!((pass.due, pass.billed, pass.busy), (20, 20, 0));
    let pass = billing::run_once(&db, billing, now).await.unwrap();
    assert_eq!(pass, billing::Pass::default(), "nothing is due twice");

    let mut tx = app.tenant_tx(tenant).await;
    let keys: Vec<String> =
        sqlx::query_scalar("select split_part(idempotency_key, ':', 3) || ':' || split_part(idempotency_key, ':', 4) from journal where tenant_id = $1 and session_id is not null")
            .bind(tenant)
            .fetch_all(&mut *tx)
            .await
            .unwrap();
    assert_eq!(keys.len(), 20);
    assert!(keys.iter().all(|k| k == "tick:1"), "{keys:?}");
}

#[tokio::test]
async fn housekeeping_forgets_expired_idempotency_keys_and_stale_quotes_only() {
    let database = fresh_database().await;
    let app = spawn_app_in(&database).await;
    let t = app.signup().await;
    let venue = app.create_venue(&t.access, "V").await;
    let station = app.create_station(&t.access, venue, "S").await;
    let patron: Uuid = app.create_patron(&t.access, "P", None).await;
    let tariff = app
        .create_tariff(&t.access, "T", r#"currency: "EUR", perMinute: 1"#)
        .await;
    let mut tx = app.tenant_tx(t.id).await;
    sqlx::query(
        "insert into idempotency_key (tenant_id, key, scope, request_hash, expires_at) values
           ($1, 'old', 's', '\\x00', now() - interval '1 hour'), ($1, 'new', 's', '\\x00', now() + interval '1 hour')",
    )
    .bind(t.id)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "insert into quote (tenant_id, id, patron_id, station_id, tariff_id, tariff_version, expires_at) values
           ($1, gen_random_uuid(), $2, $3, $4, 1, now() - interval '2 days'),
           ($1, gen_random_uuid(), $2, $3, $4, 1, now() - interval '1 hour')",
    )
    .bind(t.id)
    .bind(patron)
    .bind(station)
    .bind(tariff)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let db = Db::connect_lazy(&database.app_url, 1).unwrap();
    // A cutoff in the future is clamped to now: the live key and the quote that expired an hour ago stay.
    assert_eq!(
        db.system()
            .purge_expired(Utc::now() + chrono::Duration::days(2))
            .await
            .unwrap(),
        (1, 1)
    );
    assert_eq!(db.system().purge_expired(Utc::now()).await.unwrap(), (0, 0));
    let mut tx = app.tenant_tx(t.id).await;
    let keys: Vec<String> = sqlx::query_scalar("select key from idempotency_key")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(keys, ["new"]);
    let quotes: i64 = sqlx::query_scalar("select count(*) from quote")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(quotes, 1, "the recently expired quote is kept for a day");
}

/// Every session's (ticks, next tick) as the owner sees them.
async fn tick_state(owner: &sqlx::PgPool) -> std::collections::HashMap<Uuid, (i32, DateTime<Utc>)> {
    let rows: Vec<(Uuid, i32, DateTime<Utc>)> =
        sqlx::query_as("select id, ticks, next_tick_at from session")
            .fetch_all(owner)
            .await
            .unwrap();
    rows.into_iter().map(|(id, t, n)| (id, (t, n))).collect()
}

#[tokio::test]
async fn an_overloaded_worker_serves_the_longest_waiting_session_next_and_starves_no_tenant() {
    let database = fresh_database().await;
    let app = spawn_app_in(&database).await;
    let t0: DateTime<Utc> = "2003-03-03T12:00:00Z".parse().unwrap();
    let mut tenants = Vec::new();
    for _ in 0..3 {
        tenants.push(tenant_with_sessions(&app, 20, t0).await);
    }
    // First ticks due one after another, 100 ms apart, the tenants interleaved: the tenant whose id sorts last
    // holds the oldest due session, so an order by tenant would pass it over.
    sqlx::query(
        "update session s set next_tick_at = $1 + o.n * interval '100 ms'
         from (select tenant_id, id, row_number() over (order by k, tenant_id desc) as n
               from (select tenant_id, id, row_number() over (partition by tenant_id order by id) as k
                     from session) r) o
         where s.tenant_id = o.tenant_id and s.id = o.id",
    )
    .bind(t0)
    .execute(&app.owner)
    .await
    .unwrap();

    // One worker that bills 3 sessions a second, while 60 sessions with a 10 s tick want 6 a second.
    let db = Db::connect_lazy(&database.app_url, 2).unwrap();
    let billing = Billing {
        tick: Duration::seconds(10),
        batch: 3,
        concurrency: 2,
    };
    let mut longest_wait = Duration::zero();
    for second in 0..100 {
        let now = t0 + Duration::seconds(10 + second);
        let before = tick_state(&app.owner).await;
        let pass = billing::run_once(&db, billing, now).await.unwrap();
        assert_eq!(
            (pass.due, pass.billed),
            (3, 3),
            "more is due than one pass bills"
        );
        let after = tick_state(&app.owner).await;
        let (served, waiting): (Vec<_>, Vec<_>) = before
            .iter()
            .filter(|(_, (_, next))| *next <= now)
            .partition(|(id, (ticks, _))| after[*id].0 == ticks + 1);
        assert_eq!(served.len(), 3);
        // The longest-waiting due sessions were served: none left waiting was due earlier than one served.
        let newest_served = served.iter().map(|(_, (_, next))| *next).max().unwrap();
        let oldest_left = waiting.iter().map(|(_, (_, next))| *next).min();
        assert!(
            oldest_left.is_none_or(|left| left >= newest_served),
            "second {second}: a session due at {oldest_left:?} was passed over for one due at {newest_served}"
        );
        for (_, (_, next)) in &served {
            longest_wait = longest_wait.max(now - *next);
        }
    }
    // Overload spreads evenly: 60 sessions at 3 a second is one round every 20 s, so no session waits longer
    // than a round plus the 10 s by which the first pass came after the first due time; every tenant is billed.
    assert!(longest_wait <= Duration::seconds(30), "{longest_wait}");
    let ticks = tick_state(&app.owner).await;
    let least = ticks.values().map(|(t, _)| *t).min().unwrap();
    assert!(
        least >= 4,
        "some session was billed only {least} times in 100 s"
    );
    for tenant in tenants {
        let billed: i64 =
            sqlx::query_scalar("select count(*) from session where tenant_id = $1 and ticks >= 4")
                .bind(tenant)
                .fetch_one(&app.owner)
                .await
                .unwrap();
        assert_eq!(billed, 20, "every session of tenant {tenant}");
    }
}

#[tokio::test]
async fn a_replayed_tick_is_charged_once_by_its_journal_key() {
    let database = fresh_database().await;
    let app = spawn_app_in(&database).await;
    let t0: DateTime<Utc> = "2004-04-04T12:00:00Z".parse().unwrap();
    let tenant = tenant_with_sessions(&app, 1, t0).await;
    let db = Db::connect_lazy(&database.app_url, 2).unwrap();
    let now = t0 + Duration::seconds(30);
    let tick = |db: Db| async move {
        let mut tx = db
            .begin_tenant(switchyard_core::TenantId(tenant))
            .await
            .unwrap();
        let ids: Vec<Uuid> = sqlx::query_scalar("select id from session")
            .fetch_all(tx.conn())
            .await
            .unwrap();
        let billed =
            switchyard_core::sessions::bill_batch(&mut tx, &ids, now, Duration::seconds(30))
                .await
                .unwrap();
        tx.commit().await.unwrap();
        billed.charged
    };
    assert_eq!(
        tick(db.clone()).await,
        10,
        "tick 1: the first minute at 10/min"
    );

    // The same tick again, as a worker holding a stale copy of the session would bill it (the row's counter and
    // charged amount as they were before tick 1): only the journal key `session:<id>:tick:1` stands in its way.
    sqlx::query("update session set ticks = 0, charged_amount = 0, next_tick_at = $1")
        .bind(now)
        .execute(&app.owner)
        .await
        .unwrap();
    assert_eq!(
        tick(db.clone()).await,
        0,
        "the replayed tick charges nothing"
    );

    let mut tx = app.tenant_tx(tenant).await;
    let journals: Vec<(String, i64)> = sqlx::query_as(
        "select j.idempotency_key, sum(e.amount) filter (where e.amount > 0)::bigint
         from journal j join journal_entry e on e.tenant_id = j.tenant_id and e.journal_id = j.id
         where j.tenant_id = $1 and j.kind = 'session_charge' group by j.idempotency_key",
    )
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    assert_eq!(journals.len(), 1, "{journals:?}");
    assert!(journals[0].0.ends_with(":tick:1"), "{journals:?}");
    assert_eq!(journals[0].1, 10, "the patron paid the first minute once");
}

/// The SQLSTATE and message of a statement the database refuses, run in a fresh transaction of `tenant`.
async fn refused(app: &TestApp, tenant: Uuid, statements: &[String]) -> (String, String) {
    let mut tx = app.tenant_tx(tenant).await;
    let (last, before) = statements.split_last().unwrap();
    for sql in before {
        sqlx::query(sql).execute(&mut *tx).await.unwrap();
    }
    let err = sqlx::query(last).execute(&mut *tx).await.unwrap_err();
    let Some(db) = err.as_database_error() else {
        panic!("not a database error: {err}")
    };
    (
        db.code().unwrap_or_default().into_owned(),
        db.message().to_owned(),
    )
}

#[tokio::test]
async fn the_ledger_checks_every_reference_once_per_statement_and_is_never_rewritten() {
    let database = fresh_database().await;
    let app = spawn_app_in(&database).await;
    let t0: DateTime<Utc> = "2002-02-02T12:00:00Z".parse().unwrap();
    let (a, b) = (
        tenant_with_sessions(&app, 1, t0).await,
        tenant_with_sessions(&app, 1, t0).await,
    );
    let mut ids = Vec::new();
    for tenant in [a, b] {
        let mut tx = app.tenant_tx(tenant).await;
        let (session, venue): (Uuid, Uuid) =
            sqlx::query_as("select id, venue_id from session where tenant_id = $1")
                .bind(tenant)
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        let accounts: Vec<Uuid> = sqlx::query_scalar(
            "insert into ledger_account (tenant_id, id, owner_kind, owner_id, purpose, currency)
             select $1, gen_random_uuid(), 'venue', $2, p, 'EUR' from unnest(array['revenue', 'cash_drawer']) p
             returning id",
        )
        .bind(tenant)
        .bind(venue)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        ids.push((session, accounts[0], accounts[1]));
    }
    let [(session, revenue, drawer), (their_session, their_account, _)] = ids[..] else {
        unreachable!()
    };
    let journal = |id: Uuid, session: &str| {
        format!("insert into journal (tenant_id, id, idempotency_key, kind, session_id) values ('{a}', '{id}', '{id}', 'test', {session})")
    };
    let entries = |journal: Uuid, lines: &[(Uuid, i64, &str)]| {
        let values: Vec<String> = lines
            .iter()
            .enumerate()
            .map(|(n, (account, amount, currency))| {
                format!(
                    "('{a}', '{journal}', {}, '{account}', {amount}, '{currency}')",
                    n + 1
                )
            })
            .collect();
        format!(
            "insert into journal_entry (tenant_id, journal_id, line, account_id, amount, currency) values {}",
            values.join(", ")
        )
    };
    let j = Uuid::new_v4();

    // A journal's session must exist in its tenant.
    let (code, message) = refused(&app, a, &[journal(j, &format!("'{}'", Uuid::new_v4()))]).await;
    assert_eq!(code, "23503", "{message}");
    assert!(message.contains("does not exist"), "{message}");
    let (code, _) = refused(&app, a, &[journal(j, &format!("'{their_session}'"))]).await;
    assert_eq!(code, "23503");

    // Entries must belong to a journal of their tenant, to accounts of their tenant in their currency, and balance.
    let (code, message) = refused(
        &app,
        a,
        &[entries(
            Uuid::new_v4(),
            &[(revenue, 100, "EUR"), (drawer, -100, "EUR")],
        )],
    )
    .await;
    assert_eq!(code, "23503", "{message}");
    let (code, message) = refused(
        &app,
        a,
        &[
            journal(j, "null"),
            entries(j, &[(revenue, 100, "EUR"), (their_account, -100, "EUR")]),
        ],
    )
    .await;
    assert_eq!(code, "23503", "{message}");
    assert!(message.contains(&their_account.to_string()), "{message}");
    let (code, _) = refused(
        &app,
        a,
        &[
            journal(j, "null"),
            entries(j, &[(revenue, 100, "USD"), (drawer, -100, "USD")]),
        ],
    )
    .await;
    assert_eq!(code, "23503");
    let (code, message) = refused(
        &app,
        a,
        &[
            journal(j, "null"),
            entries(j, &[(revenue, 100, "EUR"), (drawer, -90, "EUR")]),
        ],
    )
    .await;
    assert_eq!(code, "23514");
    assert!(message.contains("does not balance"), "{message}");

    // A whole, valid journal goes in, with its entries.
    let mut tx = app.tenant_tx(a).await;
    sqlx::query(&journal(j, &format!("'{session}'")))
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(&entries(j, &[(revenue, 100, "EUR"), (drawer, -100, "EUR")]))
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = app.tenant_tx(a).await;
    let lines: Vec<(Uuid, i64)> = sqlx::query_as(
        "select account_id, amount from journal_entry where tenant_id = $1 and journal_id = $2 order by line",
    )
    .bind(a)
    .bind(j)
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    assert_eq!(lines, vec![(revenue, 100), (drawer, -100)]);
    drop(tx);

    // Nothing it refers to can go away or change its key afterwards, not even for the owner.
    for sql in [
        format!("update journal set memo = 'x' where id = '{j}'"),
        format!("delete from journal where id = '{j}'"),
        format!("update journal_entry set amount = 0 where journal_id = '{j}'"),
        format!("delete from journal_entry where journal_id = '{j}'"),
        "truncate journal_entry".to_owned(),
        format!("update ledger_account set currency = 'USD' where id = '{revenue}'"),
        format!("delete from ledger_account where id = '{drawer}'"),
        format!("delete from session where id = '{session}'"),
        format!("update session set id = gen_random_uuid() where id = '{session}'"),
    ] {
        let (code, message) = refused(&app, a, std::slice::from_ref(&sql)).await;
        assert_eq!(code, "23001", "{sql}: {message}");
    }
    // And the app role may not even try to delete a session.
    let db = Db::connect_lazy(&database.app_url, 1).unwrap();
    let mut tx = db.begin_tenant(switchyard_core::TenantId(a)).await.unwrap();
    let err = sqlx::query("delete from session")
        .execute(tx.conn())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
    drop(tx);

    // The session and its journal are still there.
    let mut tx = app.tenant_tx(a).await;
    let kept: i64 = sqlx::query_scalar(
        "select count(*) from journal j join session s on s.tenant_id = j.tenant_id and s.id = j.session_id
         where j.tenant_id = $1 and j.id = $2",
    )
    .bind(a)
    .bind(j)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!(kept, 1);
}

#[tokio::test]
async fn a_tenant_whose_billing_fails_is_retried_a_minute_later_and_holds_no_one_back() {
    let database = fresh_database().await;
    let app = spawn_app_in(&database).await;
    let t0: DateTime<Utc> = "2005-05-05T12:00:00Z".parse().unwrap();
    let failing = tenant_with_sessions(&app, 10, t0).await;
    let healthy = tenant_with_sessions(&app, 5, t0 + Duration::seconds(1)).await;
    // The failing tenant's journals are refused (as a fault in its data would be); its sessions are the oldest due.
    sqlx::query(&format!(
        "create function refuse_for_test() returns trigger language plpgsql as $$
         begin
           if new.tenant_id = '{failing}' then raise exception 'refused for the test'; end if;
           return new;
         end $$"
    ))
    .execute(&app.owner)
    .await
    .unwrap();
    sqlx::query(
        "create trigger refuse_for_test before insert on journal for each row execute function refuse_for_test()",
    )
    .execute(&app.owner)
    .await
    .unwrap();

    let db = Db::connect_lazy(&database.app_url, 2).unwrap();
    let billing = Billing {
        tick: Duration::seconds(30),
        batch: 5,
        concurrency: 2,
    };
    let now = t0 + Duration::seconds(40);
    let mut passes = Vec::new();
    for _ in 0..3 {
        let pass = billing::run_once(&db, billing, now).await.unwrap();
        passes.push((pass.due, pass.billed, pass.failed));
    }
    // Five failing sessions, the other five, then the healthy tenant: a batch never sees the same failure twice.
    assert_eq!(passes, [(5, 0, 5), (5, 0, 5), (5, 5, 0)]);
    let state = |tenant: Uuid| {
        let owner = app.owner.clone();
        async move {
            sqlx::query_as::<_, (i32, DateTime<Utc>, i64)>(
                "select ticks, next_tick_at, charged_amount from session where tenant_id = $1",
            )
            .bind(tenant)
            .fetch_all(&owner)
            .await
            .unwrap()
        }
    };
    for (ticks, next, charged) in state(failing).await {
        assert_eq!((ticks, next, charged), (0, now + Duration::seconds(60), 0));
    }
    for (ticks, _, charged) in state(healthy).await {
        assert_eq!((ticks, charged), (1, 10));
    }
    assert_eq!(
        billing::run_once(&db, billing, now).await.unwrap(),
        billing::Pass::default()
    );

    // Once the fault is gone, a minute later, they are billed for all the time since they started.
    sqlx::query("drop trigger refuse_for_test on journal")
        .execute(&app.owner)
        .await
        .unwrap();
    let later = now + Duration::seconds(60);
    let mut billed = 0;
    loop {
        let pass = billing::run_once(&db, billing, later).await.unwrap();
        assert_eq!(pass.failed, 0);
        if pass.due == 0 {
            break;
        }
        billed += pass.billed;
    }
    assert_eq!(billed, 15);
    for (ticks, _, charged) in state(failing).await {
        // 100 s at 10/min in whole minutes.
        assert_eq!((ticks, charged), (1, 20));
    }
}

//! `bench-analytics`: the analytics queries over `--sessions` (1,000,000) ended sessions of one tenant. It creates a
//! database `switchyard_bench_analytics` next to `DATABASE_URL`'s (a superuser), migrates it and loads, with
//! set-based SQL, one tenant with `--venues` venues, `--stations` stations (PCs, consoles and EV chargers), 10,000
//! patrons and the sessions spread over the last 365 days, each with its charge journal (wallet, cash or card;
//! one in twenty partly booked as debt) — through the real triggers, so the rollup queues fill as they do in
//! production. Then it runs the workers' rollup pass (`analytics::rollup::run_once`, app role, row-level security)
//! until the queues are empty, checks the rollups against the ledger, and times every analytics query `--runs`
//! times (each in its own tenant transaction, as a GraphQL resolver runs it) over the last 28 days and over a
//! whole year, printing p50 and p99.

use std::time::{Duration, Instant};

use chrono::Utc;
use sqlx::migrate::MigrateDatabase;
use switchyard_core::analytics::{queries, rollup, Scope};
use switchyard_core::{Actor, Db, RequestClient, Role, TenantId};
use switchyard_tests::{bench_arg as arg, with_database};
use uuid::Uuid;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn timed(label: &str, sql: &str, pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let started = Instant::now();
    let done = sqlx::query(sql).execute(pool).await?;
    println!(
        "  {label}: {} rows in {:.1} s",
        done.rows_affected(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sessions = arg("sessions", 1_000_000) as i64;
    let venues = arg("venues", 5) as i64;
    let stations = arg("stations", 500) as i64;
    let runs = arg("runs", 200) as usize;
    let patrons: i64 = 10_000;

    let owner_url = with_database(
        &std::env::var("DATABASE_URL")?,
        "switchyard_bench_analytics",
    );
    let app_url = with_database(
        &std::env::var("APP_DATABASE_URL")?,
        "switchyard_bench_analytics",
    );
    if sqlx::Postgres::database_exists(&owner_url).await? {
        sqlx::Postgres::drop_database(&owner_url).await?;
    }
    sqlx::Postgres::create_database(&owner_url).await?;
    let owner = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&owner_url)
        .await?;
    switchyard_core::db::migrate(&owner).await?;

    let tenant = Uuid::now_v7();
    println!(
        "loading {sessions} sessions: 1 tenant, {venues} venues, {stations} stations, {patrons} patrons, 365 days"
    );
    let loading = Instant::now();
    // Ids derived from numbers (md5 → uuid) so that every statement can find the rows of the ones before.
    let id = |kind: &str, n: &str| format!("md5('{kind}' || {n})::uuid");
    timed(
        "tenant, venues, stations, tariff, patrons",
        &format!(
            "with t as (insert into tenant (id, name) values ('{tenant}'::uuid, 'Bench Arcades') returning id),
                  v as (insert into venue (tenant_id, id, name, timezone, currency)
                        select '{tenant}'::uuid, {venue}, 'Venue ' || i, 'Europe/Berlin', 'EUR'
                          from generate_series(0, {venues} - 1) i returning 1),
                  tf as (insert into tariff (tenant_id, id, name) values ('{tenant}'::uuid, {tariff}, 'Standard') returning 1)
             select 1",
            venue = id("venue", "i"),
            tariff = id("tariff", "0"),
        ),
        &owner,
    )
    .await?;
    timed(
        "stations",
        &format!(
            "insert into station (tenant_id, id, venue_id, name, kind, control)
             select '{tenant}'::uuid, {station}, {venue}, 'Station ' || i,
                    (array['pc', 'console', 'ev_charger'])[i % 3 + 1]::station_kind, 'manual'
               from generate_series(0, {stations} - 1) i",
            station = id("station", "i"),
            venue = id("venue", &format!("(i % {venues})")),
        ),
        &owner,
    )
    .await?;
    timed(
        "tariff version, patrons",
        &format!(
            "with tv as (insert into tariff_version (tenant_id, tariff_id, version, terms)
                         values ('{tenant}'::uuid, {tariff}, 1, '{{\"currency\": \"EUR\", \"per_minute\": 10}}') returning 1)
             insert into patron (tenant_id, id, display_name)
             select '{tenant}'::uuid, {patron}, 'Patron ' || i from generate_series(0, {patrons} - 1) i",
            tariff = id("tariff", "0"),
            patron = id("patron", "i"),
        ),
        &owner,
    )
    .await?;
    timed(
        "ledger accounts",
        &format!(
            "insert into ledger_account (tenant_id, id, owner_kind, owner_id, purpose, currency)
             select '{tenant}'::uuid, {wallet}, 'patron', {patron}, 'wallet', 'EUR' from generate_series(0, {patrons} - 1) i
             union all
             select '{tenant}'::uuid, {debt}, 'patron', {patron}, 'debt', 'EUR' from generate_series(0, {patrons} - 1) i
             union all
             select '{tenant}'::uuid, {revenue}, 'venue', {venue}, 'revenue', 'EUR' from generate_series(0, {venues} - 1) i
             union all
             select '{tenant}'::uuid, {drawer}, 'venue', {venue}, 'cash_drawer', 'EUR' from generate_series(0, {venues} - 1) i",
            wallet = id("wallet", "i"),
            debt = id("debt", "i"),
            revenue = id("revenue", "i"),
            drawer = id("drawer", "i"),
            patron = id("patron", "i"),
            venue = id("venue", "i"),
        ),
        &owner,
    )
    .await?;
    // Session i: station i mod stations (its venue is i mod venues), patron i mod patrons, ended d = i mod 365 days
    // ago at a minute of the day spread by a prime, 10 to 179 minutes long, 10 per minute; wallet, cash or card;
    // EV chargers deliver energy.
    timed(
        "sessions",
        &format!(
            "insert into session (tenant_id, id, station_id, venue_id, patron_id, origin, status, tariff_id,
                                  tariff_version, terms, timezone, tier, currency, started_at, planned_end_at,
                                  ended_at, energy_wh, charged_amount, payment_method)
             select '{tenant}'::uuid, {session}, {station}, {venue}, {patron}, 'staff', 'ended', {tariff}, 1,
                    '{{\"currency\": \"EUR\", \"per_minute\": 10}}', 'Europe/Berlin', 'standard', 'EUR',
                    s.start, s.start + s.len, s.start + s.len,
                    case when (i % {stations}) % 3 = 2 then (i % 50) * 1000 else 0 end,
                    extract(epoch from s.len)::bigint / 6,
                    (array['wallet', 'wallet', 'wallet', 'wallet', 'wallet', 'wallet', 'wallet', 'cash', 'cash',
                           'card'])[i % 10 + 1]
               from generate_series(0::bigint, {sessions} - 1) i,
                    lateral (select date_trunc('day', now()) - make_interval(days => (i % 365)::int)
                                    + make_interval(mins => ((i * 7919) % 1260)::int) as start,
                                    make_interval(mins => (10 + (i * 31) % 170)::int) as len) s",
            session = id("session", "i"),
            station = id("station", &format!("(i % {stations})")),
            venue = id("venue", &format!("(i % {venues})")),
            patron = id("patron", &format!("(i % {patrons})")),
            tariff = id("tariff", "0"),
        ),
        &owner,
    )
    .await?;
    timed(
        "journals",
        &format!(
            "insert into journal (tenant_id, id, idempotency_key, kind, memo, session_id, created_at)
             select s.tenant_id, {journal}, 'session:' || s.id || ':final', 'session_charge', 'session charge (final)',
                    s.id, s.ended_at
               from generate_series(0::bigint, {sessions} - 1) i
               join session s on s.tenant_id = '{tenant}'::uuid and s.id = {session}",
            journal = id("journal", "i"),
            session = id("session", "i"),
        ),
        &owner,
    )
    .await?;
    // Wallet and card sessions take from the wallet (one in twenty half as debt), cash from the venue's drawer;
    // the venue's revenue gets the whole charge. One statement: whole journals, balanced.
    timed(
        "journal entries",
        &format!(
            "insert into journal_entry (tenant_id, journal_id, line, account_id, amount, currency)
             select '{tenant}'::uuid, {journal}, e.line, e.account, e.amount, 'EUR'
               from generate_series(0::bigint, {sessions} - 1) i
               join session s on s.tenant_id = '{tenant}'::uuid and s.id = {session},
               lateral (values
                 (1::smallint, case when s.payment_method = 'cash' then {drawer} else {wallet} end,
                  -(s.charged_amount - case when i % 20 = 0 and s.payment_method <> 'cash' then s.charged_amount / 2 else 0 end)),
                 (2::smallint, {debt}, -(case when i % 20 = 0 and s.payment_method <> 'cash' then s.charged_amount / 2 else 0 end)),
                 (3::smallint, {revenue}, s.charged_amount)) as e (line, account, amount)
              where e.amount <> 0",
            journal = id("journal", "i"),
            session = id("session", "i"),
            drawer = id("drawer", &format!("(i % {venues})")),
            wallet = id("wallet", &format!("(i % {patrons})")),
            debt = id("debt", &format!("(i % {patrons})")),
            revenue = id("revenue", &format!("(i % {venues})")),
        ),
        &owner,
    )
    .await?;
    timed("analyze", "analyze", &owner).await?;
    let queued: (i64, i64) = sqlx::query_as(
        "select (select count(*) from analytics_journal_queue), (select count(*) from analytics_session_queue)",
    )
    .fetch_one(&owner)
    .await?;
    println!(
        "loaded in {:.1} s; queued for the rollup: {} journals, {} sessions",
        loading.elapsed().as_secs_f64(),
        queued.0,
        queued.1
    );

    // The workers' pass, as the app role under row-level security.
    let db = Db::connect_lazy(&app_url, 4)?;
    let settings = rollup::Settings {
        batch: arg("batch", 20_000) as i64,
        tenants: 100,
    };
    let rolling = Instant::now();
    let mut total = rollup::Pass::default();
    loop {
        let pass = rollup::run_once(&db, settings).await?;
        total.journals += pass.journals;
        total.sessions += pass.sessions;
        if pass.journals + pass.sessions == 0 {
            break;
        }
    }
    let secs = rolling.elapsed().as_secs_f64();
    println!(
        "rollup: {} journals and {} sessions in {secs:.1} s ({:.0} rows/s, batches of {})",
        total.journals,
        total.sessions,
        (total.journals + total.sessions) as f64 / secs,
        settings.batch
    );
    // What autovacuum does in production: the visibility map lets the covering indexes answer alone.
    timed("vacuum analyze", "vacuum analyze", &owner).await?;
    let (rolled, ledger): (i64, i64) = sqlx::query_as(
        "select (select sum(amount)::bigint from analytics_revenue_day),
                (select sum(e.amount)::bigint from journal_entry e
                   join ledger_account a on a.tenant_id = e.tenant_id and a.id = e.account_id and a.purpose = 'revenue')",
    )
    .fetch_one(&owner)
    .await?;
    assert_eq!(rolled, ledger, "the rollups must equal the ledger");
    let (count, secs_sum): (i64, i64) = sqlx::query_as(
        "select sum(sessions)::bigint, sum(duration_secs)::bigint from analytics_session_day",
    )
    .fetch_one(&owner)
    .await?;
    let busy: i64 = sqlx::query_scalar("select sum(busy_secs)::bigint from analytics_busy_hour")
        .fetch_one(&owner)
        .await?;
    assert_eq!(count, sessions, "every session counted once");
    assert_eq!(busy, secs_sum, "busy hours add up to the durations");
    let rows: (i64, i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from analytics_revenue_day), (select count(*) from analytics_session_day),
                (select count(*) from analytics_busy_hour), (select count(*) from analytics_patron)",
    )
    .fetch_one(&owner)
    .await?;
    println!(
        "checked: revenue {rolled} = the ledger's; {count} sessions; busy seconds = durations. Rollup rows: \
         revenue {}, sessions {}, busy hours {}, patrons {}",
        rows.0, rows.1, rows.2, rows.3
    );

    let actor = Actor {
        tenant: TenantId(tenant),
        user_id: Uuid::now_v7(),
        role: Role::Owner,
        request_id: None,
        venues: None,
        client: RequestClient::default(),
    };
    let today = Utc::now().date_naive();
    println!("each query {runs} times, one tenant transaction each (p50 / p99 / max, ms):");
    let mut worst: f64 = 0.0;
    for (period, days) in [("28 days", 28), ("365 days", 365)] {
        let scope = Scope {
            venues: None,
            from: today - chrono::Duration::days(days - 1),
            to: today,
        };
        for name in [
            "revenueByDay",
            "revenueByVenue",
            "revenueByStationKind",
            "revenueByPaymentMethod",
            "sessions",
            "utilisation",
            "dailyMetrics",
            "topPatrons",
            "debtsOutstanding",
            "revenueProjection",
        ] {
            let mut times = Vec::with_capacity(runs);
            for _ in 0..runs {
                let started = Instant::now();
                let mut tx = db.begin_tenant(actor.tenant).await?;
                let n = match name {
                    "revenueByDay" => queries::revenue_by_day(&mut tx, &scope).await?.len(),
                    "revenueByVenue" => queries::revenue_by_venue(&mut tx, &scope).await?.len(),
                    "revenueByStationKind" => queries::revenue_by_station_kind(&mut tx, &scope)
                        .await?
                        .len(),
                    "revenueByPaymentMethod" => queries::revenue_by_payment_method(&mut tx, &scope)
                        .await?
                        .len(),
                    "sessions" => queries::session_stats(&mut tx, &scope).await?.sessions as usize,
                    "utilisation" => queries::utilisation(&mut tx, &scope).await?.len(),
                    "dailyMetrics" => queries::daily_metrics(&mut tx, &scope).await?.len(),
                    "topPatrons" => queries::top_patrons(&mut tx, &scope, 10).await?.len(),
                    "debtsOutstanding" => {
                        queries::debts_outstanding(&mut tx, &actor, 10).await?.len()
                    }
                    _ => queries::projection(&mut tx, &actor, None, today, 7)
                        .await?
                        .days
                        .len(),
                };
                tx.commit().await?;
                times.push(started.elapsed());
                assert!(n > 0, "{name} answered nothing");
            }
            times.sort_unstable();
            let p99 = percentile(&times, 0.99);
            worst = worst.max(p99);
            println!(
                "  {period:>8}  {name:<24} p50 {:>7.2}  p99 {:>7.2}  max {:>7.2}",
                percentile(&times, 0.50),
                p99,
                times.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0)
            );
        }
    }
    println!(
        "worst p99: {worst:.2} ms (bound 200 ms: {})",
        if worst <= 200.0 { "met" } else { "NOT met" }
    );
    db.pool().close().await;
    owner.close().await;
    Ok(())
}

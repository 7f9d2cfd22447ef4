//! `switchyard-workers bench-billing`: one billing tick over many running sessions across many tenants, timed
//! against the bare limit — one set-based SQL statement doing the same writes (a journal and two entries per
//! session, and the session update) on the same database in the same run.
//!
//! It creates (and afterwards keeps, for inspection) a database `switchyard_bench` next to `DATABASE_URL`'s, which
//! must be a superuser's URL: the setup and the bare statement write across tenants.

use std::time::{Duration as StdDuration, Instant};

use anyhow::Context;
use chrono::{DateTime, Duration, Utc};
use sqlx::migrate::MigrateDatabase;
use sqlx::{Executor, PgPool};
use switchyard_core::Db;

use crate::billing::{self, Billing};

pub struct BenchArgs {
    pub sessions: i64,
    pub tenants: i64,
    pub batch: i32,
    pub workers: usize,
    pub concurrency: usize,
    /// Entries in each patron's wallet before the tick.
    pub history: i64,
}

fn with_database(url: &str, db: &str) -> String {
    format!(
        "{}/{db}",
        url.rsplit_once('/').map_or(url, |(base, _)| base)
    )
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let owner_url = with_database(
        &std::env::var("DATABASE_URL").context("DATABASE_URL (a superuser) is required")?,
        "switchyard_bench",
    );
    let app_url = with_database(
        &std::env::var("APP_DATABASE_URL").context("APP_DATABASE_URL is required")?,
        "switchyard_bench",
    );
    if sqlx::Postgres::database_exists(&owner_url).await? {
        sqlx::Postgres::drop_database(&owner_url).await?;
    }
    sqlx::Postgres::create_database(&owner_url).await?;
    let owner = PgPool::connect(&owner_url).await?;
    switchyard_core::db::migrate(&owner).await?;
    let t0: DateTime<Utc> = "2030-01-01T00:00:00Z".parse()?;
    let now = t0 + Duration::seconds(30);
    let per_tenant = (args.sessions / args.tenants).max(1);
    let total = per_tenant * args.tenants;

    eprintln!(
        "setting up {total} sessions across {} tenants ...",
        args.tenants
    );
    let started = Instant::now();
    setup(&owner, args.tenants, per_tenant, t0).await?;
    if args.history > 0 {
        history(&owner, args.history).await?;
    }
    eprintln!("  done in {:.1} s", started.elapsed().as_secs_f64());

    eprintln!("bare limit: one set-based SQL statement ...");
    let started = Instant::now();
    let mut tx = owner.begin().await?;
    let written = tx
        .execute(sqlx::query(BARE).bind(now))
        .await?
        .rows_affected();
    tx.commit().await?;
    let bare = started.elapsed();
    anyhow::ensure!(
        written == total as u64,
        "the bare statement updated {written} sessions, not {total}"
    );
    check(&owner, total).await?;
    reset(&owner, t0).await?;

    eprintln!(
        "switchyard billing tick: {} worker(s), batches of {}, {} tenants at once in each ...",
        args.workers, args.batch, args.concurrency
    );
    let billing = Billing {
        tick: Duration::seconds(30),
        batch: args.batch,
        concurrency: args.concurrency,
    };
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..args.workers {
        let db = Db::connect_lazy(&app_url, 4)?;
        handles.push(tokio::spawn(async move {
            let mut batches: Vec<StdDuration> = Vec::new();
            loop {
                let at = Instant::now();
                let pass = billing::run_once(&db, billing, now).await?;
                if pass.due == 0 {
                    return anyhow::Ok((batches, 0usize));
                }
                anyhow::ensure!(pass.failed == 0, "a batch failed");
                if pass.billed > 0 {
                    batches.push(at.elapsed());
                }
            }
        }));
    }
    let mut batches = Vec::new();
    for h in handles {
        batches.extend(h.await??.0);
    }
    let ours = started.elapsed();
    check(&owner, total).await?;

    batches.sort();
    let ms = |d: StdDuration| d.as_secs_f64() * 1000.0;
    let avg = batches.iter().map(|d| ms(*d)).sum::<f64>() / batches.len().max(1) as f64;
    println!(
        "sessions           {total} across {} tenants, {} earlier entries in each wallet",
        args.tenants,
        args.history + 1
    );
    println!("bare SQL statement {:.2} s", bare.as_secs_f64());
    println!(
        "switchyard tick    {:.2} s ({} workers, batch {}, {} tenants at once in each)",
        ours.as_secs_f64(),
        args.workers,
        args.batch,
        args.concurrency
    );
    println!(
        "ratio              {:.2}x",
        ours.as_secs_f64() / bare.as_secs_f64()
    );
    println!(
        "per batch          {} batches: min {:.1} ms, avg {:.1} ms, p50 {:.1} ms, max {:.1} ms",
        batches.len(),
        batches.first().map_or(0.0, |d| ms(*d)),
        avg,
        batches.get(batches.len() / 2).map_or(0.0, |d| ms(*d)),
        batches.last().map_or(0.0, |d| ms(*d)),
    );
    Ok(())
}

/// Tenants with a venue, a 10-per-minute tariff, a funded patron, and `per_tenant` stations each with a session
/// started at `t0` (first tick due 30 s later). Runs as a superuser: it writes across tenants.
pub async fn setup(
    owner: &PgPool,
    tenants: i64,
    per_tenant: i64,
    t0: DateTime<Utc>,
) -> anyhow::Result<()> {
    let terms = serde_json::json!({
        "currency": "EUR", "per_minute": 10, "per_kwh": 0, "free_minutes": 0, "billing_step_secs": 60,
        "minimum_charge": 0, "daily_cap": null, "deposit": 0, "buyout_threshold": null,
        "tier_discounts_bp": {}, "bands": []
    });
    let statements = [
        "create temporary table bench_tenant as
           select gen_random_uuid() as tenant, gen_random_uuid() as venue, gen_random_uuid() as tariff,
                  gen_random_uuid() as patron, gen_random_uuid() as wallet, gen_random_uuid() as drawer,
                  gen_random_uuid() as revenue
           from generate_series(1, $1)",
        "insert into tenant (id, name) select tenant, 'bench ' || tenant from bench_tenant",
        "insert into venue (tenant_id, id, name, timezone, currency) select tenant, venue, 'V', 'Europe/Berlin', 'EUR' from bench_tenant",
        "insert into tariff (tenant_id, id, name) select tenant, tariff, 'T' from bench_tenant",
        "insert into tariff_version (tenant_id, tariff_id, version, terms) select tenant, tariff, 1, $3 from bench_tenant",
        "insert into patron (tenant_id, id, display_name) select tenant, patron, 'P' from bench_tenant",
        "insert into ledger_account (tenant_id, id, owner_kind, owner_id, purpose, currency)
           select tenant, wallet, 'patron', patron, 'wallet', 'EUR' from bench_tenant
           union all select tenant, drawer, 'venue', venue, 'cash_drawer', 'EUR' from bench_tenant
           union all select tenant, revenue, 'venue', venue, 'revenue', 'EUR' from bench_tenant",
        "create temporary table bench_topup as select tenant, wallet, drawer, gen_random_uuid() as journal from bench_tenant",
        "insert into journal (tenant_id, id, idempotency_key, kind) select tenant, journal, 'bench:topup', 'top_up_cash' from bench_topup",
        "insert into journal_entry (tenant_id, journal_id, line, account_id, amount, currency)
           select tenant, journal, 1, wallet, 1000000000, 'EUR' from bench_topup
           union all select tenant, journal, 2, drawer, -1000000000, 'EUR' from bench_topup",
        "create temporary table bench_station as
           select b.tenant, b.venue, b.patron, b.tariff, gen_random_uuid() as station, n
           from bench_tenant b, generate_series(1, $2) n",
        "insert into station (tenant_id, id, venue_id, name, kind, control) select tenant, station, venue, 'PC-' || n, 'pc', 'manual' from bench_station",
        "insert into session (tenant_id, id, station_id, venue_id, patron_id, origin, tariff_id, tariff_version, terms,
                              timezone, tier, currency, started_at, next_tick_at)
           select tenant, gen_random_uuid(), station, venue, patron, 'staff', tariff, 1, $3, 'Europe/Berlin', 'standard', 'EUR',
                  $4, $4 + interval '30 seconds' from bench_station",
    ];
    let mut conn = owner.acquire().await?;
    for sql in statements {
        let query = sqlx::query(sql);
        // Each statement takes the parameters it names; binding all four to each keeps the list readable.
        let query = if sql.contains("$4") {
            query.bind(tenants).bind(per_tenant).bind(&terms).bind(t0)
        } else if sql.contains("$3") {
            query.bind(tenants).bind(per_tenant).bind(&terms)
        } else if sql.contains("$2") {
            query.bind(tenants).bind(per_tenant)
        } else if sql.contains("$1") {
            query.bind(tenants)
        } else {
            query
        };
        conn.execute(query)
            .await
            .with_context(|| format!("setup: {sql}"))?;
    }
    conn.execute("analyze").await?;
    Ok(())
}

/// `entries` earlier movements in each tenant's wallet (top-ups of one cent, as a regular's history of charges
/// and top-ups would be), written before the tick so that the tick reads wallets with a history.
async fn history(owner: &PgPool, entries: i64) -> anyhow::Result<()> {
    let mut conn = owner.acquire().await?;
    for sql in [
        "create temporary table bench_history as
           select w.tenant_id as tenant, w.id as wallet, d.id as drawer, gen_random_uuid() as journal, n
           from ledger_account w
           join ledger_account d on d.tenant_id = w.tenant_id and d.purpose = 'cash_drawer'
           cross join generate_series(1, $1) n
           where w.purpose = 'wallet'",
        "insert into journal (tenant_id, id, idempotency_key, kind)
           select tenant, journal, 'bench:history:' || n, 'top_up_cash' from bench_history",
        "insert into journal_entry (tenant_id, journal_id, line, account_id, amount, currency)
           select tenant, journal, 1, wallet, 1, 'EUR' from bench_history
           union all select tenant, journal, 2, drawer, -1, 'EUR' from bench_history",
        "drop table bench_history",
    ] {
        let query = if sql.contains("$1") {
            sqlx::query(sql).bind(entries)
        } else {
            sqlx::query(sql)
        };
        conn.execute(query)
            .await
            .with_context(|| format!("history: {sql}"))?;
    }
    conn.execute("analyze").await?;
    Ok(())
}

/// The bare limit: price every due session in SQL (10 per started minute), write its journal and two entries, and
/// update it — one statement, across tenants, no row-level security in the way.
const BARE: &str = "
with due as (
  select s.tenant_id, s.id, s.patron_id, s.venue_id, s.ticks + 1 as n,
         (ceil(extract(epoch from ($1 - s.started_at)) / 60) * (s.terms ->> 'per_minute')::bigint)::bigint
           - s.charged_amount as amount
  from session s where s.status = 'active' and s.next_tick_at <= $1
), journals as (
  insert into journal (tenant_id, id, idempotency_key, kind, memo, session_id)
  select tenant_id, gen_random_uuid(), 'session:' || id || ':tick:' || n, 'session_charge', 'session charge', id
  from due where amount > 0
  returning tenant_id, id, session_id
), entries as (
  insert into journal_entry (tenant_id, journal_id, line, account_id, amount, currency)
  select j.tenant_id, j.id, x.line, x.account, x.amount, 'EUR'
  from journals j
  join due d on d.tenant_id = j.tenant_id and d.id = j.session_id
  join ledger_account w on w.tenant_id = d.tenant_id and w.owner_kind = 'patron' and w.owner_id = d.patron_id
                       and w.purpose = 'wallet' and w.currency = 'EUR'
  join ledger_account r on r.tenant_id = d.tenant_id and r.owner_kind = 'venue' and r.owner_id = d.venue_id
                       and r.purpose = 'revenue' and r.currency = 'EUR'
  cross join lateral (values (1::smallint, w.id, -d.amount), (2::smallint, r.id, d.amount)) as x (line, account, amount)
)
update session s set charged_amount = s.charged_amount + d.amount, ticks = d.n, next_tick_at = $1 + interval '30 seconds'
from due d where s.tenant_id = d.tenant_id and s.id = d.id";

/// Every session was charged once: one journal each, all balanced.
async fn check(owner: &PgPool, total: i64) -> anyhow::Result<()> {
    let (journals, unbalanced): (i64, i64) = sqlx::query_as(
        "select (select count(*) from journal where kind = 'session_charge'),
                (select count(*) from (select 1 from journal_entry group by tenant_id, journal_id having sum(amount) <> 0) u)",
    )
    .fetch_one(owner)
    .await?;
    anyhow::ensure!(
        journals == total && unbalanced == 0,
        "{journals} charge journals for {total} sessions, {unbalanced} unbalanced"
    );
    // Each patron account's kept balance is the sum of its entries.
    let drifted: i64 = sqlx::query_scalar(
        "select count(*) from ledger_account a
         left join ledger_balance b on b.tenant_id = a.tenant_id and b.account_id = a.id
         where a.owner_kind = 'patron' and coalesce(b.balance, 0) <>
           (select coalesce(sum(e.amount), 0) from journal_entry e where e.tenant_id = a.tenant_id and e.account_id = a.id)",
    )
    .fetch_one(owner)
    .await?;
    anyhow::ensure!(
        drifted == 0,
        "{drifted} patron balances differ from their entries"
    );
    Ok(())
}

async fn reset(owner: &PgPool, t0: DateTime<Utc>) -> anyhow::Result<()> {
    let mut conn = owner.acquire().await?;
    // The ledger refuses deletes (it is append-only, by triggers); the bench, as a superuser, turns its triggers
    // off to take back the bare statement's charges.
    conn.execute("set session_replication_role = replica")
        .await?;
    conn.execute("delete from analytics_journal_queue").await?;
    conn.execute("delete from journal_entry e using journal j where e.tenant_id = j.tenant_id and e.journal_id = j.id and j.kind = 'session_charge'").await?;
    conn.execute("delete from journal where kind = 'session_charge'")
        .await?;
    // The kept balances follow inserts only (the ledger is append-only): count them again.
    conn.execute("delete from ledger_balance").await?;
    conn.execute(
        "insert into ledger_balance (tenant_id, account_id, balance)
         select e.tenant_id, e.account_id, sum(e.amount)::bigint from journal_entry e
         join ledger_account a on a.tenant_id = e.tenant_id and a.id = e.account_id
         where a.owner_kind = 'patron' group by e.tenant_id, e.account_id",
    )
    .await?;
    // The venues' kept balances hold every entry now that the queue is empty.
    conn.execute("delete from ledger_venue_balance").await?;
    conn.execute(
        "insert into ledger_venue_balance (tenant_id, account_id, balance)
         select e.tenant_id, e.account_id, sum(e.amount)::bigint from journal_entry e
         join ledger_account a on a.tenant_id = e.tenant_id and a.id = e.account_id
         where a.owner_kind = 'venue' group by e.tenant_id, e.account_id",
    )
    .await?;
    conn.execute(
        sqlx::query("update session set charged_amount = 0, ticks = 0, next_tick_at = $1 + interval '30 seconds'").bind(t0),
    )
    .await?;
    conn.execute("set session_replication_role = origin")
        .await?;
    conn.execute("vacuum analyze").await?;
    Ok(())
}

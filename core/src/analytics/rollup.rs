//! The rollup pass: adds what the queues hold to the rollup tables, per tenant, in batches.
//!
//! **Exactly once.** The database queues a journal that moved a venue's money or a debt (`analytics_journal_queue`, a
//! statement trigger on `journal_entry`) and a session that reached an end (`analytics_session_queue`, a row trigger
//! on `session`) in the transaction that writes them, so a rolled-back change queues nothing and a committed one is
//! queued exactly once. A pass takes one tenant at a time in a [`TenantTx`]: a transaction-scoped advisory lock on
//! the tenant (a second worker skips a tenant that is being rolled up rather than wait), then `delete … returning`
//! of the oldest queued rows (`for update skip locked`), the rollup upserts for exactly those rows, and the commit.
//! The deletion and the additions commit together or not at all: two overlapping workers cannot both take a row,
//! and a worker that dies mid-batch leaves its rows queued for the next pass, counted by nobody.
//!
//! The ledger is append-only and sessions end once (the row trigger fires only on the change from running to
//! ended), so nothing already counted changes afterwards; a correction is a new journal and is counted as one.

use std::time::Instant;

use uuid::Uuid;

use crate::db::{Db, TenantId, TenantTx};
use crate::error::Result;

/// Settings of the pass (`ANALYTICS_BATCH`, `ANALYTICS_TENANTS`).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Queued rows of each kind taken in one transaction.
    pub batch: i64,
    /// Tenants looked at in one pass.
    pub tenants: i32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            batch: 5_000,
            tenants: 100,
        }
    }
}

/// What a pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Tenants rolled up (not counting those another worker held).
    pub tenants: usize,
    /// Tenants skipped because another worker was rolling them up.
    pub busy: usize,
    pub journals: usize,
    pub sessions: usize,
}

/// One pass over the tenants with queued rows (the longest-waiting first): each is rolled up until its queues are
/// empty, a batch per transaction.
pub async fn run_once(db: &Db, settings: Settings) -> Result<Pass> {
    let started = Instant::now();
    let tenants = db
        .system()
        .analytics_pending_tenants(settings.tenants)
        .await?;
    let mut pass = Pass::default();
    for tenant in tenants {
        match drain_tenant(db, tenant, settings.batch).await {
            Ok(Some((journals, sessions))) => {
                pass.tenants += 1;
                pass.journals += journals;
                pass.sessions += sessions;
            }
            Ok(None) => pass.busy += 1,
            Err(e) => {
                // Its rows stay queued; the next pass tries again.
                tracing::error!(tenant.id = %tenant, error = ?e, "analytics rollup failed");
            }
        }
    }
    if pass.journals + pass.sessions > 0 {
        tracing::info!(
            tenants = pass.tenants,
            journals = pass.journals,
            sessions = pass.sessions,
            "analytics rolled up"
        );
    }
    metrics::histogram!("analytics_rollup_pass_seconds").record(started.elapsed().as_secs_f64());
    Ok(pass)
}

/// Rolls `tenant` up batch by batch until its queues are empty. `None` when another worker holds the tenant.
pub async fn drain_tenant(db: &Db, tenant: TenantId, batch: i64) -> Result<Option<(usize, usize)>> {
    let (mut journals, mut sessions) = (0, 0);
    loop {
        match roll_up_batch(db, tenant, batch).await? {
            None => return Ok((journals + sessions > 0).then_some((journals, sessions))),
            Some((j, s)) => {
                journals += j;
                sessions += s;
                if (j as i64) < batch && (s as i64) < batch {
                    return Ok(Some((journals, sessions)));
                }
            }
        }
    }
}

/// One transaction: up to `batch` queued journals and `batch` queued sessions of `tenant` added to the rollups and
/// taken off the queues. `None` when another worker holds the tenant.
pub async fn roll_up_batch(
    db: &Db,
    tenant: TenantId,
    batch: i64,
) -> Result<Option<(usize, usize)>> {
    let mut tx = db.begin_tenant(tenant).await?;
    let mine: bool = sqlx::query_scalar(
        "select pg_try_advisory_xact_lock(hashtextextended('switchyard.analytics:' || $1::text, 0))",
    )
    .bind(tenant)
    .fetch_one(tx.conn())
    .await?;
    if !mine {
        tx.rollback().await?;
        return Ok(None);
    }
    let journals: Vec<Uuid> = sqlx::query_scalar(
        "delete from analytics_journal_queue
          where tenant_id = $1 and journal_id in (
            select journal_id from analytics_journal_queue where tenant_id = $1
             order by queued_at, journal_id limit $2 for update skip locked)
         returning journal_id",
    )
    .bind(tenant)
    .bind(batch)
    .fetch_all(tx.conn())
    .await?;
    if !journals.is_empty() {
        journals_into_rollups(&mut tx, &journals).await?;
    }
    let sessions: Vec<Uuid> = sqlx::query_scalar(
        "delete from analytics_session_queue
          where tenant_id = $1 and session_id in (
            select session_id from analytics_session_queue where tenant_id = $1
             order by queued_at, session_id limit $2 for update skip locked)
         returning session_id",
    )
    .bind(tenant)
    .bind(batch)
    .fetch_all(tx.conn())
    .await?;
    if !sessions.is_empty() {
        sessions_into_rollups(&mut tx, &sessions).await?;
    }
    tx.commit().await?;
    metrics::counter!("analytics_rolled_up_total", "source" => "journal")
        .increment(journals.len() as u64);
    metrics::counter!("analytics_rolled_up_total", "source" => "session")
        .increment(sessions.len() as u64);
    Ok(Some((journals.len(), sessions.len())))
}

/// Revenue by venue-local day, station kind and payment method; what each patron's sessions earned; what each patron
/// owes. Entries are summed exactly as they stand in the ledger. (The venue accounts' kept balances follow the
/// deletion from the queue itself: a database trigger, migration 0042.)
async fn journals_into_rollups(tx: &mut TenantTx, journals: &[Uuid]) -> Result<()> {
    let tenant = tx.tenant();
    sqlx::query(
        "insert into analytics_revenue_day as r
           (tenant_id, venue_id, day, station_kind, payment_method, currency, amount)
         select e.tenant_id, v.id, (j.created_at at time zone v.timezone)::date,
                coalesce(st.kind::text, 'other'), coalesce(s.payment_method, 'other'), e.currency,
                sum(e.amount)::bigint
           from journal_entry e
           join ledger_account a on a.tenant_id = e.tenant_id and a.id = e.account_id
                                and a.purpose = 'revenue' and a.owner_kind = 'venue'
           join venue v on v.tenant_id = a.tenant_id and v.id = a.owner_id
           join journal j on j.tenant_id = e.tenant_id and j.id = e.journal_id
           left join session s on s.tenant_id = j.tenant_id and s.id = j.session_id
           left join station st on st.tenant_id = s.tenant_id and st.id = s.station_id
          where e.tenant_id = $1 and e.journal_id = any($2)
          group by 1, 2, 3, 4, 5, 6
          order by 2, 3, 4, 5, 6
         on conflict (tenant_id, venue_id, day, station_kind, payment_method, currency)
         do update set amount = r.amount + excluded.amount, updated_at = now()",
    )
    .bind(tenant)
    .bind(journals)
    .execute(tx.conn())
    .await?;
    sqlx::query(
        "insert into analytics_patron as p (tenant_id, patron_id, venue_id, currency, spent)
         select e.tenant_id, s.patron_id, a.owner_id, e.currency, sum(e.amount)::bigint
           from journal_entry e
           join ledger_account a on a.tenant_id = e.tenant_id and a.id = e.account_id
                                and a.purpose = 'revenue' and a.owner_kind = 'venue'
           join journal j on j.tenant_id = e.tenant_id and j.id = e.journal_id
           join session s on s.tenant_id = j.tenant_id and s.id = j.session_id
          where e.tenant_id = $1 and e.journal_id = any($2)
          group by 1, 2, 3, 4
          order by 2, 3, 4
         on conflict (tenant_id, patron_id, venue_id, currency)
         do update set spent = p.spent + excluded.spent, updated_at = now()",
    )
    .bind(tenant)
    .bind(journals)
    .execute(tx.conn())
    .await?;
    // A debt account's balance is negative while the patron owes.
    sqlx::query(
        "insert into analytics_debt as d (tenant_id, patron_id, currency, owed)
         select e.tenant_id, a.owner_id, e.currency, -sum(e.amount)::bigint
           from journal_entry e
           join ledger_account a on a.tenant_id = e.tenant_id and a.id = e.account_id
                                and a.purpose = 'debt' and a.owner_kind = 'patron'
          where e.tenant_id = $1 and e.journal_id = any($2)
          group by 1, 2, 3
          order by 2, 3
         on conflict (tenant_id, patron_id, currency)
         do update set owed = d.owed + excluded.owed, updated_at = now()",
    )
    .bind(tenant)
    .bind(journals)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// The ended sessions: counts, durations and energy by venue-local day and station kind; busy seconds split over
/// the hours they fell in; each patron's sessions. Durations are whole seconds from start to end (pauses included:
/// the station was taken), and the hour pieces of a session add up to its duration exactly.
async fn sessions_into_rollups(tx: &mut TenantTx, sessions: &[Uuid]) -> Result<()> {
    let tenant = tx.tenant();
    const ENDED: &str = "select s.tenant_id, s.venue_id, s.patron_id, s.currency, v.timezone,
                                st.kind::text as kind, s.energy_wh, s.ended_at,
                                floor(extract(epoch from s.started_at))::bigint as start_s,
                                greatest(floor(extract(epoch from s.ended_at))::bigint,
                                         floor(extract(epoch from s.started_at))::bigint) as end_s
                           from session s
                           join station st on st.tenant_id = s.tenant_id and st.id = s.station_id
                           join venue v on v.tenant_id = s.tenant_id and v.id = s.venue_id
                          where s.tenant_id = $1 and s.id = any($2) and s.ended_at is not null";
    sqlx::query(&format!(
        "insert into analytics_session_day as d
           (tenant_id, venue_id, day, station_kind, sessions, duration_secs, energy_wh)
         select x.tenant_id, x.venue_id, (x.ended_at at time zone x.timezone)::date, x.kind, count(*),
                sum(x.end_s - x.start_s)::bigint, sum(x.energy_wh)::bigint
           from ({ENDED}) x
          group by 1, 2, 3, 4
          order by 2, 3, 4
         on conflict (tenant_id, venue_id, day, station_kind)
         do update set sessions = d.sessions + excluded.sessions,
                       duration_secs = d.duration_secs + excluded.duration_secs,
                       energy_wh = d.energy_wh + excluded.energy_wh, updated_at = now()"
    ))
    .bind(tenant)
    .bind(sessions)
    .execute(tx.conn())
    .await?;
    // Each session's seconds over the (UTC) hours it spans, each piece under the venue-local day and hour that
    // hour starts in.
    sqlx::query(&format!(
        "insert into analytics_busy_hour as b (tenant_id, venue_id, day, hour, station_kind, busy_secs)
         select x.tenant_id, x.venue_id, (to_timestamp(h * 3600) at time zone x.timezone)::date,
                extract(hour from to_timestamp(h * 3600) at time zone x.timezone)::smallint, x.kind,
                sum(least(x.end_s, (h + 1) * 3600) - greatest(x.start_s, h * 3600))::bigint
           from ({ENDED}) x
           cross join lateral generate_series(x.start_s / 3600, (x.end_s - 1) / 3600) as h
          where x.end_s > x.start_s
          group by 1, 2, 3, 4, 5
          order by 2, 3, 4, 5
         on conflict (tenant_id, venue_id, day, hour, station_kind)
         do update set busy_secs = b.busy_secs + excluded.busy_secs"
    ))
    .bind(tenant)
    .bind(sessions)
    .execute(tx.conn())
    .await?;
    sqlx::query(&format!(
        "insert into analytics_patron as p (tenant_id, patron_id, venue_id, currency, sessions, duration_secs)
         select x.tenant_id, x.patron_id, x.venue_id, x.currency, count(*), sum(x.end_s - x.start_s)::bigint
           from ({ENDED}) x
          group by 1, 2, 3, 4
          order by 2, 3, 4
         on conflict (tenant_id, patron_id, venue_id, currency)
         do update set sessions = p.sessions + excluded.sessions,
                       duration_secs = p.duration_secs + excluded.duration_secs, updated_at = now()"
    ))
    .bind(tenant)
    .bind(sessions)
    .execute(tx.conn())
    .await?;
    Ok(())
}

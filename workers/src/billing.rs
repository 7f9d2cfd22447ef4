//! The billing tick: find the sessions due across tenants, longest-waiting first, then bill each tenant's share in
//! one set-based tenant transaction. Any number of workers can run it at once: a worker bills a tenant under a
//! transaction-scoped advisory lock and skips a tenant another worker holds; it locks only the sessions still due
//! (one billed meanwhile is passed over); and every charge is a journal with a per-(session, tick) key, so a tick
//! is charged exactly once whatever crashes or overlaps. A worker that dies mid-tick leaves nothing behind: its
//! transaction and its locks go with it.

use chrono::{DateTime, Duration, Utc};
use futures_util::StreamExt;
use switchyard_core::{sessions, Db, TenantId, TenantTx};
use uuid::Uuid;

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Sessions found due (at most the batch).
    pub due: usize,
    pub billed: usize,
    /// Billed sessions that were charged something (one journal each).
    pub charges: usize,
    /// Due sessions of tenants another worker was billing (it bills them).
    pub busy: usize,
    pub failed: usize,
    /// Minor units charged (mixed currencies; for progress logs only).
    pub charged: i64,
}

impl Pass {
    fn add(&mut self, billed: sessions::Billed) {
        self.billed += billed.sessions;
        self.charges += billed.charges;
        self.charged += billed.charged;
    }

    fn record_failure(&mut self, tenant: TenantId, sessions: usize, e: anyhow::Error) {
        self.failed += sessions;
        tracing::error!(tenant.id = %tenant, sessions, error = ?e, "billing a tenant's batch failed");
    }

    /// Whether another pass straight away would find more to do: the batch was full and this pass got on with
    /// it (a worker that found every tenant taken waits for its next wake-up instead of spinning).
    pub fn more(&self, batch: i32) -> bool {
        self.due as i64 >= i64::from(batch) && self.billed > 0
    }
}

/// Settings of the tick.
#[derive(Debug, Clone, Copy)]
pub struct Billing {
    pub tick: Duration,
    pub batch: i32,
    /// How many tenants' transactions of a pass run at once (each holds a database connection meanwhile): while
    /// one waits for the database, the next is priced.
    pub concurrency: usize,
}

/// Bills one batch of the sessions due at `now`.
pub async fn run_once(db: &Db, billing: Billing, now: DateTime<Utc>) -> anyhow::Result<Pass> {
    let started = std::time::Instant::now();
    let due = db.system().due_sessions(now, billing.batch).await?;
    // Grouped by tenant, the tenant of the longest-waiting session first.
    let mut by_tenant: Vec<(TenantId, Vec<Uuid>)> = Vec::new();
    let mut position = std::collections::HashMap::new();
    for (tenant, session) in &due {
        let at = *position.entry(*tenant).or_insert_with(|| {
            by_tenant.push((*tenant, Vec::new()));
            by_tenant.len() - 1
        });
        by_tenant[at].1.push(*session);
    }
    let mut pass = Pass {
        due: due.len(),
        ..Pass::default()
    };
    // One set-based transaction per tenant, `concurrency` of them at once. If one fails, its sessions are tried
    // again a minute later; other tenants are not held back.
    // Unordered, so that a slow tenant does not keep the next ones from starting; put back in order after.
    let mut outcomes: Vec<(usize, anyhow::Result<Option<sessions::Billed>>)> =
        futures_util::stream::iter(0..by_tenant.len())
            .map(|i| {
                let (tenant, ids) = &by_tenant[i];
                async move {
                    (
                        i,
                        bill_tenant(db, *tenant, ids, now, billing.tick, false).await,
                    )
                }
            })
            .buffer_unordered(billing.concurrency.max(1))
            .collect()
            .await;
    outcomes.sort_by_key(|(i, _)| *i);
    let mut first_busy = None;
    for ((tenant, ids), (_, outcome)) in by_tenant.iter().zip(outcomes) {
        match outcome {
            Ok(Some(billed)) => pass.add(billed),
            Ok(None) => {
                pass.busy += ids.len();
                first_busy = first_busy.or(Some((*tenant, ids)));
            }
            Err(e) => {
                pass.record_failure(*tenant, ids.len(), e);
                defer(db, *tenant, ids, now).await;
            }
        }
    }
    // Every tenant found due was being billed by another worker: rather than read the same list again at once,
    // wait for the first of them to be done and bill what it left.
    if let (0, Some((tenant, ids))) = (pass.billed, first_busy) {
        match bill_tenant(db, tenant, ids, now, billing.tick, true).await {
            Ok(billed) => pass.add(billed.unwrap_or_default()),
            Err(e) => {
                pass.record_failure(tenant, ids.len(), e);
                defer(db, tenant, ids, now).await;
            }
        }
    }
    metrics::counter!("billing_sessions_total", "outcome" => "billed")
        .increment(pass.billed as u64);
    metrics::counter!("billing_sessions_total", "outcome" => "failed")
        .increment(pass.failed as u64);
    metrics::counter!("billing_charges_total").increment(pass.charges as u64);
    metrics::histogram!("billing_pass_seconds").record(started.elapsed().as_secs_f64());
    if pass.billed + pass.failed > 0 {
        tracing::info!(
            due = pass.due,
            billed = pass.billed,
            busy = pass.busy,
            failed = pass.failed,
            "billing pass"
        );
    }
    Ok(pass)
}

/// Takes this tenant's billing lock for the rest of the transaction: false when another worker holds it (or, with
/// `wait`, once that worker is done). A worker cut off from the database mid-tick (its host gone, the connection
/// still open) holds it at most [`HELD_IDLE_SECS`]: the server ends a transaction left idle that long, and its
/// locks with it.
pub async fn lock_tenant(tx: &mut TenantTx, wait: bool) -> anyhow::Result<bool> {
    let lock = if wait {
        "pg_advisory_xact_lock(hashtextextended('switchyard.billing:' || $1::text, 0)) is not null"
    } else {
        "pg_try_advisory_xact_lock(hashtextextended('switchyard.billing:' || $1::text, 0))"
    };
    let (_, locked): (String, bool) = sqlx::query_as(&format!(
        "select set_config('idle_in_transaction_session_timeout', $2, true), {lock}"
    ))
    .bind(tx.tenant())
    .bind(format!("{HELD_IDLE_SECS}s"))
    .fetch_one(tx.conn())
    .await?;
    Ok(locked)
}

/// How long a tenant's billing transaction may sit idle before the server ends it.
pub const HELD_IDLE_SECS: u32 = 60;

/// How long sessions whose billing failed wait before they are tried again.
pub const RETRY_FAILED_SECS: i64 = 60;

/// Moves the next tick of sessions whose billing failed [`RETRY_FAILED_SECS`] ahead, so that they do not stay at
/// the head of the due list and hold every other tenant back. Nothing is lost: the next tick charges everything
/// from the start up to then.
async fn defer(db: &Db, tenant: TenantId, ids: &[Uuid], now: DateTime<Utc>) {
    let until = now + Duration::seconds(RETRY_FAILED_SECS);
    let deferred = async {
        let mut tx = db.begin_tenant(tenant).await?;
        sqlx::query(
            "update session set next_tick_at = $3
             where tenant_id = $1 and id = any($2) and status = 'active' and next_tick_at < $3",
        )
        .bind(tenant)
        .bind(ids)
        .bind(until)
        .execute(tx.conn())
        .await?;
        tx.commit().await?;
        anyhow::Ok(())
    };
    if let Err(e) = deferred.await {
        tracing::error!(tenant.id = %tenant, error = ?e, "deferring a failed billing batch failed");
    }
}

/// Bills those of `ids` still due, unless another worker is billing this tenant (`None`; with `wait`, once it is
/// done).
async fn bill_tenant(
    db: &Db,
    tenant: TenantId,
    ids: &[Uuid],
    now: DateTime<Utc>,
    tick: Duration,
    wait: bool,
) -> anyhow::Result<Option<sessions::Billed>> {
    let mut tx = db.begin_tenant(tenant).await?;
    if !lock_tenant(&mut tx, wait).await? {
        tx.rollback().await?;
        return Ok(None);
    }
    let billed = sessions::bill_due(&mut tx, ids, now, tick).await?;
    // The tick is the tenant's only biller (its lock): one commit per batch, the events numbered inside it.
    tx.number_events_before_commit();
    tx.commit().await?;
    Ok(Some(billed))
}

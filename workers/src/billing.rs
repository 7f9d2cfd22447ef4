//! The billing tick: claim due sessions across tenants, then bill each tenant's share in one set-based transaction. Any number of
//! workers can run it at once: claims skip locked rows and lease what they take, and every charge is a journal
//! with a per-(session, tick) key, so a tick is charged exactly once whatever crashes or overlaps.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use switchyard_core::{sessions, Db, TenantId};
use uuid::Uuid;

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub claimed: usize,
    pub billed: usize,
    /// Billed sessions that were charged something (one journal each).
    pub charges: usize,
    pub failed: usize,
    /// Minor units charged (mixed currencies; for progress logs only).
    pub charged: i64,
}

/// Settings of the tick.
#[derive(Debug, Clone, Copy)]
pub struct Billing {
    pub tick: Duration,
    pub batch: i32,
    pub lease_secs: i32,
}

/// Claims and bills one batch of sessions due at `now`.
pub async fn run_once(db: &Db, billing: Billing, now: DateTime<Utc>) -> anyhow::Result<Pass> {
    let started = Instant::now();
    let claimed = db
        .system()
        .claim_due_sessions(now, billing.batch, billing.lease_secs)
        .await?;
    let mut by_tenant: BTreeMap<TenantId, Vec<Uuid>> = BTreeMap::new();
    for (tenant, session) in &claimed {
        by_tenant.entry(*tenant).or_default().push(*session);
    }
    let mut pass = Pass {
        claimed: claimed.len(),
        ..Pass::default()
    };
    for (tenant, ids) in by_tenant {
        // One set-based transaction per tenant. If it fails, its sessions stay leased and are retried after the
        // lease; other tenants are not held back.
        match bill_tenant(db, tenant, &ids, now, billing.tick).await {
            Ok(billed) => {
                pass.billed += billed.sessions;
                pass.charges += billed.charges;
                pass.charged += billed.charged;
            }
            Err(e) => {
                pass.failed += ids.len();
                tracing::error!(tenant.id = %tenant, sessions = ids.len(), error = ?e, "billing a tenant's batch failed");
            }
        }
    }
    metrics::counter!("billing_sessions_total", "outcome" => "billed")
        .increment(pass.billed as u64);
    metrics::counter!("billing_sessions_total", "outcome" => "failed")
        .increment(pass.failed as u64);
    metrics::counter!("billing_charges_total").increment(pass.charges as u64);
    metrics::histogram!("billing_pass_seconds").record(started.elapsed().as_secs_f64());
    if pass.claimed > 0 {
        tracing::info!(
            claimed = pass.claimed,
            billed = pass.billed,
            failed = pass.failed,
            "billing pass"
        );
    }
    Ok(pass)
}

async fn bill_tenant(
    db: &Db,
    tenant: TenantId,
    ids: &[Uuid],
    now: DateTime<Utc>,
    tick: Duration,
) -> anyhow::Result<sessions::Billed> {
    let mut tx = db.begin_tenant(tenant).await?;
    let billed = sessions::bill_batch(&mut tx, ids, now, tick).await?;
    tx.commit().await?;
    Ok(billed)
}

//! Debt collection: claim due (patron, currency) pairs across tenants, then run one collection pass for each in
//! its own tenant transaction (see `switchyard_core::payments::collect`). Claims are leased like the billing
//! tick's, so any number of workers can run it; provider calls carry idempotency keys, so a pass retried after a
//! crash makes no second charge.

use chrono::{DateTime, Utc};
use switchyard_core::payments::accounts::Providers;
use switchyard_core::payments::collect::{self, Outcome, Policy};
use switchyard_core::Db;

/// Settings of the job.
#[derive(Debug, Clone, Copy)]
pub struct Debts {
    pub policy: Policy,
    pub batch: i32,
    pub lease_secs: i32,
}

/// Claims and works one batch of due debts; returns how many were claimed.
pub async fn run_once(
    db: &Db,
    providers: &Providers,
    debts: Debts,
    now: DateTime<Utc>,
) -> anyhow::Result<usize> {
    let claimed = db
        .system()
        .claim_due_debts(now, debts.batch, debts.lease_secs)
        .await?;
    for (tenant, patron, currency) in &claimed {
        let result = async {
            let mut tx = db.begin_tenant(*tenant).await?;
            // Through the tenant's own account when it has one: its patrons' cards were saved there.
            let provider = providers.current(&mut tx).await?;
            let outcome = collect::collect(
                &mut tx,
                provider.as_ref(),
                debts.policy,
                *patron,
                currency,
                now,
            )
            .await?;
            tx.commit().await?;
            Ok::<_, switchyard_core::Error>(outcome)
        }
        .await;
        match result {
            Ok(outcome) => {
                metrics::counter!("debt_collection_passes_total", "outcome" => outcome.label())
                    .increment(1);
                if let Outcome::Collected(amount) = outcome {
                    metrics::counter!("debt_collected_minor_units_total").increment(amount as u64);
                }
                tracing::info!(tenant.id = %tenant, patron.id = %patron, currency, outcome = ?outcome, "debt collection");
            }
            Err(e) => {
                // The pair stays leased and is retried after the lease.
                metrics::counter!("debt_collection_passes_total", "outcome" => "error")
                    .increment(1);
                tracing::error!(tenant.id = %tenant, patron.id = %patron, error = ?e, "debt collection failed");
            }
        }
    }
    Ok(claimed.len())
}

//! Debt collection: claim due (patron, currency) pairs across tenants, then run one collection pass for each in
//! its own tenant transaction (see `switchyard_core::payments::collect`). Claims are leased like the billing
//! tick's, so any number of workers can run it; provider calls carry idempotency keys, so a pass retried after a
//! crash makes no second charge. A pass is two transactions: the charge is written down and committed, sent, and
//! its answer recorded.

use std::collections::VecDeque;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use switchyard_core::payments::accounts::Providers;
use switchyard_core::payments::collect::{self, Outcome, Policy, Step};
use switchyard_core::Db;

/// Settings of the job.
#[derive(Debug, Clone, Copy)]
pub struct Debts {
    pub policy: Policy,
    pub batch: i32,
    pub lease_secs: i32,
}

/// How many of the latest charge attempts `debt_collection_success_rate` is taken over.
const RATE_WINDOW: usize = 100;

/// The outcomes of this process's latest charge attempts (true: collected), newest last.
static RECENT: Mutex<VecDeque<bool>> = Mutex::new(VecDeque::new());

/// Records a charge attempt's outcome and sets `debt_collection_success_rate`: the share of the latest
/// [`RATE_WINDOW`] attempts (collected, declined or failed) that collected; 1 before any attempt.
pub fn record_attempt(collected: Option<bool>) {
    let mut recent = RECENT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(collected) = collected {
        recent.push_back(collected);
        while recent.len() > RATE_WINDOW {
            recent.pop_front();
        }
    }
    let rate = if recent.is_empty() {
        1.0
    } else {
        recent.iter().filter(|ok| **ok).count() as f64 / recent.len() as f64
    };
    metrics::gauge!("debt_collection_success_rate").set(rate);
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
            let step = collect::prepare(
                &mut tx,
                provider.as_ref(),
                debts.policy,
                *patron,
                currency,
                now,
            )
            .await?;
            let charge = match step {
                Step::Done(outcome) => {
                    tx.commit().await?;
                    return Ok(outcome);
                }
                Step::Send(charge) => charge,
            };
            // Through the account it was written down for (a resend after the tenant's keys changed).
            let provider = if charge.provider == provider.name() {
                provider
            } else {
                providers.named(&mut tx, &charge.provider).await?
            };
            // The charge is written down before it is sent (see `collect`).
            tx.commit().await?;
            let answer = match collect::send(provider.as_ref(), *tenant, &charge).await {
                Ok(intent) => Ok(intent),
                Err(switchyard_core::Error::CardDeclined(reason)) => Err(reason),
                Err(e) => return Err(e),
            };
            let mut tx = db.begin_tenant(*tenant).await?;
            let outcome = collect::record(
                &mut tx,
                provider.as_ref(),
                debts.policy,
                &charge,
                answer,
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
                match outcome {
                    Outcome::Collected(amount) => {
                        metrics::counter!("debt_collected_minor_units_total")
                            .increment(amount as u64);
                        record_attempt(Some(true));
                    }
                    Outcome::Declined { .. } => record_attempt(Some(false)),
                    _ => {}
                }
                tracing::info!(tenant.id = %tenant, patron.id = %patron, currency, outcome = ?outcome, "debt collection");
            }
            Err(e) => {
                // The pair stays leased and is retried after the lease.
                metrics::counter!("debt_collection_passes_total", "outcome" => "error")
                    .increment(1);
                record_attempt(Some(false));
                tracing::error!(tenant.id = %tenant, patron.id = %patron, error = ?e, "debt collection failed");
            }
        }
    }
    Ok(claimed.len())
}

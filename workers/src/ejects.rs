//! Ejects past their deadline: an eject at a bridge-driven cabinet that no tunnel took by its deadline
//! ([`switchyard_core::rentals::EJECT_DEADLINE_SECS`] after it was written) is never sent (it would hand a
//! powerbank to nobody). This pass finds such ejects across tenants, closes each unsent (`result` `expired`) and
//! voids its rental like a failed eject — charges given back, deposit released, the powerbank still docked — one
//! rental per tenant transaction, the rental locked first as a billing tick locks it. Voiding is idempotent (an
//! eject already closed is left alone), so workers running the pass at once, or a pass retried, void a rental once.
//!
//! A second pass announces the ejects a tunnel did take that nothing has answered by their deadline while the rental
//! runs (they wait for staff to look at the cabinet): once each, as a live event and a message to the venue's owners
//! and managers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use switchyard_core::rentals;
use switchyard_core::{Db, TenantId, TenantTx};
use uuid::Uuid;

/// How long an eject this process failed to void (or announce) is left out of its passes, so that a few that keep
/// failing do not hold up the ones behind them.
const RETRY_FAILED: Duration = Duration::from_secs(60);

/// The ejects this process failed to void or announce, and when.
static FAILED: Mutex<Option<HashMap<Uuid, Instant>>> = Mutex::new(None);

fn failed() -> std::sync::MutexGuard<'static, Option<HashMap<Uuid, Instant>>> {
    FAILED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The ejects this process failed to void or announce within the last [`RETRY_FAILED`].
fn skipped() -> Vec<Uuid> {
    let mut failed = failed();
    let failed = failed.get_or_insert_with(HashMap::new);
    failed.retain(|_, at| at.elapsed() < RETRY_FAILED);
    failed.keys().copied().collect()
}

/// Voids the rentals of at most `limit` overdue ejects; returns whether a full batch was closed (more may wait).
/// An eject that cannot be voided now is logged and tried again after [`RETRY_FAILED`].
pub async fn run_once(db: &Db, limit: i32) -> anyhow::Result<bool> {
    let overdue = db.system().overdue_ejects(limit, &skipped()).await?;
    let (voided, failures) = each_in_its_tenant(
        db,
        &overdue,
        rentals::expire_eject,
        "an overdue eject could not be expired; tried again in a minute",
    )
    .await;
    for (tenant, command, rental) in voided {
        tracing::warn!(tenant.id = %tenant, rental.id = %rental, command.id = %command,
            "an eject no bridge took in time: rental voided");
        metrics::counter!("edge_ejects_expired_total").increment(1);
    }
    Ok(overdue.len() == limit as usize && failures == 0)
}

/// Announces at most `limit` ejects that have come to wait for staff — taken by a tunnel, unanswered, past their
/// deadline, the rental still running ([`rentals::alert_unanswered`]): a live event and a message to the venue's
/// owners and managers, once per eject. Returns whether a full batch was announced (more may wait). An eject that
/// cannot be announced now is logged and left out for [`RETRY_FAILED`], as in [`run_once`].
pub async fn alert_once(db: &Db, limit: i32) -> anyhow::Result<bool> {
    let waiting = db.system().unalerted_ejects(limit, &skipped()).await?;
    let (alerted, failures) = each_in_its_tenant(
        db,
        &waiting,
        rentals::alert_unanswered,
        "an unanswered eject could not be announced; tried again in a minute",
    )
    .await;
    for (tenant, command, eject) in alerted {
        tracing::warn!(tenant.id = %tenant, rental.id = %eject.rental_id, command.id = %command,
            venue.id = %eject.venue_id, "an eject nothing answered waits for staff: owners and managers told");
        metrics::counter!("edge_ejects_alerted_total").increment(1);
    }
    Ok(waiting.len() == limit as usize && failures == 0)
}

/// Runs `step` on each eject in a transaction of its own tenant, committed when the step succeeds. What the steps
/// did (those that did something), and how many failed: each failure is logged with `failure` and the eject left
/// out of this process's passes for [`RETRY_FAILED`].
async fn each_in_its_tenant<T>(
    db: &Db,
    ejects: &[(TenantId, Uuid)],
    step: impl AsyncFn(&mut TenantTx, Uuid) -> switchyard_core::Result<Option<T>>,
    failure: &str,
) -> (Vec<(TenantId, Uuid, T)>, usize) {
    let (mut done, mut failures) = (Vec::new(), 0);
    for &(tenant, command) in ejects {
        let outcome = async {
            let mut tx = db.begin_tenant(tenant).await?;
            let outcome = step(&mut tx, command).await?;
            tx.commit().await?;
            Ok::<_, switchyard_core::Error>(outcome)
        }
        .await;
        match outcome {
            Ok(Some(t)) => done.push((tenant, command, t)),
            Ok(None) => {}
            Err(e) => {
                failures += 1;
                failed()
                    .get_or_insert_with(HashMap::new)
                    .insert(command, Instant::now());
                tracing::error!(tenant.id = %tenant, command.id = %command, error = ?e, "{failure}");
            }
        }
    }
    (done, failures)
}

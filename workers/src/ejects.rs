//! Ejects past their deadline: an eject at a bridge-driven cabinet that no tunnel took within
//! [`EJECT_DEADLINE_SECS`] is never sent (it would hand a powerbank to nobody). This pass finds such ejects across
//! tenants, closes each unsent (`result` `expired`) and voids its rental like a failed eject — charges given back,
//! deposit released, the powerbank still docked — one rental per tenant transaction, the rental locked first as a
//! billing tick locks it. Voiding is idempotent (an eject already closed is left alone), so workers running the
//! pass at once, or a pass retried, void a rental once.

use switchyard_core::rentals::{self, EJECT_DEADLINE_SECS};
use switchyard_core::Db;

/// Voids the rentals of at most `limit` overdue ejects; returns whether a full batch was closed (more may wait).
/// A rental that cannot be voided now is logged and found again by the next wake-up's pass.
pub async fn run_once(db: &Db, limit: i32) -> anyhow::Result<bool> {
    let overdue = db
        .system()
        .overdue_ejects(EJECT_DEADLINE_SECS, limit)
        .await?;
    let mut failed = 0;
    for (tenant, command) in &overdue {
        let voided = async {
            let mut tx = db.begin_tenant(*tenant).await?;
            let voided = rentals::expire_eject(&mut tx, *command).await?;
            tx.commit().await?;
            Ok::<_, switchyard_core::Error>(voided)
        }
        .await;
        match voided {
            Ok(Some(rental)) => {
                tracing::warn!(tenant.id = %tenant, rental.id = %rental, command.id = %command,
                    "an eject no bridge took in time: rental voided");
                metrics::counter!("edge_ejects_expired_total").increment(1);
            }
            Ok(None) => {}
            Err(e) => {
                failed += 1;
                tracing::error!(tenant.id = %tenant, command.id = %command, error = ?e,
                    "an overdue eject could not be expired")
            }
        }
    }
    Ok(overdue.len() == limit as usize && failed == 0)
}

//! Money a provider moved without Switchyard asking: a refund made in Stripe's dashboard, and a card dispute
//! (chargeback) whose funds Stripe withdrew and may reinstate. Each is booked once, from the provider's webhook.
//!
//! The venue's clearing gives the money back. It comes out of the patron's wallet as far as the wallet holds it,
//! and beyond that out of the venue's revenue: money already spent, which the venue returned (a refund) or lost (a
//! dispute). A dispute's patron is not put in debt: collecting it would charge the card they disputed. Reinstated
//! funds go back where they were taken from.

use uuid::Uuid;

use super::Payment;
use crate::audit::{self, Entry};
use crate::db::TenantTx;
use crate::error::Result;
use crate::ledger::{self, Journal, Owner, Purpose};

/// What a payment took, that a refund or a dispute can give back.
fn taken(payment: &Payment) -> i64 {
    match payment.kind.as_str() {
        "top_up" | "debt" => payment.amount,
        _ => payment.captured_amount,
    }
}

/// Books `amount` going back to the payment's card: the venue's clearing gives it, the wallet as far as it holds
/// it, the venue's revenue the rest. Returns what came out of the wallet.
async fn give_back(
    tx: &mut TenantTx,
    payment: &Payment,
    amount: i64,
    key: String,
    kind: &'static str,
    memo: String,
) -> Result<i64> {
    let owner = Owner::Patron(payment.patron_id);
    let wallet = ledger::account(tx, owner, Purpose::Wallet, &payment.currency).await?;
    ledger::lock(tx, &[wallet]).await?;
    let held = ledger::balance(tx, owner, Purpose::Wallet, &payment.currency).await?;
    let from_wallet = amount.min(held.max(0));
    move_money(tx, payment, amount, from_wallet, key, kind, memo).await?;
    Ok(from_wallet)
}

/// Posts `amount` into the venue's clearing (negative: out of it), `from_wallet` of it out of the patron's wallet
/// and the rest out of the venue's revenue (the signs reversed with a negative amount).
async fn move_money(
    tx: &mut TenantTx,
    payment: &Payment,
    amount: i64,
    from_wallet: i64,
    key: String,
    kind: &'static str,
    memo: String,
) -> Result<()> {
    let venue = Owner::Venue(payment.venue_id);
    let clearing = ledger::account(tx, venue, Purpose::Clearing, &payment.currency).await?;
    let mut entries = vec![(clearing, amount)];
    if from_wallet != 0 {
        let patron = Owner::Patron(payment.patron_id);
        let wallet = ledger::account(tx, patron, Purpose::Wallet, &payment.currency).await?;
        entries.push((wallet, -from_wallet));
    }
    if amount != from_wallet {
        let revenue = ledger::account(tx, venue, Purpose::Revenue, &payment.currency).await?;
        entries.push((revenue, from_wallet - amount));
    }
    ledger::post(
        tx,
        Journal {
            key,
            kind,
            memo,
            session_id: None,
            currency: &payment.currency,
            entries,
        },
    )
    .await?;
    Ok(())
}

/// A refund of `amount` the provider made, `reference` naming it there (`re_…`): ours (made by
/// [`super::refund`], recorded under the same reference with the payment locked, before its event can be read here)
/// books nothing; one made in Stripe's dashboard is booked once, as a refund no member made. Returns the amount
/// booked.
pub(crate) async fn refunded(
    tx: &mut TenantTx,
    payment_id: Uuid,
    reference: &str,
    amount: i64,
) -> Result<i64> {
    let payment = super::lock(tx, payment_id).await?;
    let known: bool = sqlx::query_scalar(
        "select exists (select 1 from refund where tenant_id = $1 and provider_ref = $2)",
    )
    .bind(tx.tenant())
    .bind(reference)
    .fetch_one(tx.conn())
    .await?;
    let amount = amount.min(taken(&payment) - payment.refunded_amount);
    if known || amount <= 0 {
        return Ok(0);
    }
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into refund (tenant_id, id, payment_id, amount, provider_ref, idempotency_key)
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(tx.tenant())
    .bind(id)
    .bind(payment_id)
    .bind(amount)
    .bind(reference)
    .bind(format!("provider:{reference}"))
    .execute(tx.conn())
    .await?;
    sqlx::query(
        "update payment set refunded_amount = refunded_amount + $3 where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(payment_id)
    .bind(amount)
    .execute(tx.conn())
    .await?;
    let memo = format!("refund made at the provider ({})", payment.provider);
    let from_wallet =
        give_back(tx, &payment, amount, format!("refund:{id}"), "refund", memo).await?;
    audit::record_system_in(
        tx,
        Some(payment.venue_id),
        Entry {
            action: "payment.refunded_at_provider",
            object_type: "payment",
            object_id: Some(payment_id),
            detail: serde_json::json!({
                "refund_id": id, "amount": amount, "from_wallet": from_wallet,
                "from_revenue": amount - from_wallet, "reference": reference,
            }),
        },
    )
    .await?;
    metrics::counter!("payments_refunds_at_provider_total", "provider" => payment.provider)
        .increment(1);
    Ok(amount)
}

/// The provider withdrew `amount` of a payment for a dispute `reference` (`du_…`): booked once per dispute. Returns
/// the amount booked (0 for a dispute booked before).
pub(crate) async fn dispute_withdrawn(
    tx: &mut TenantTx,
    payment_id: Uuid,
    reference: &str,
    amount: i64,
    reason: &str,
) -> Result<i64> {
    let payment = super::lock(tx, payment_id).await?;
    let known: bool = sqlx::query_scalar(
        "select exists (select 1 from payment_dispute where tenant_id = $1 and provider_ref = $2)",
    )
    .bind(tx.tenant())
    .bind(reference)
    .fetch_one(tx.conn())
    .await?;
    let amount = amount.min(taken(&payment));
    if known || amount <= 0 {
        return Ok(0);
    }
    let id = Uuid::now_v7();
    let memo = format!("card dispute ({}): {reason}", payment.provider);
    let from_wallet = give_back(
        tx,
        &payment,
        amount,
        format!("dispute:{id}"),
        "dispute",
        memo,
    )
    .await?;
    sqlx::query(
        "insert into payment_dispute (tenant_id, id, payment_id, provider_ref, amount, from_wallet, reason)
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(tx.tenant())
    .bind(id)
    .bind(payment_id)
    .bind(reference)
    .bind(amount)
    .bind(from_wallet)
    .bind(reason)
    .execute(tx.conn())
    .await?;
    audit::record_system_in(
        tx,
        Some(payment.venue_id),
        Entry {
            action: "payment.dispute_withdrawn",
            object_type: "payment",
            object_id: Some(payment_id),
            detail: serde_json::json!({
                "dispute_id": id, "amount": amount, "from_wallet": from_wallet,
                "from_revenue": amount - from_wallet, "reference": reference, "reason": reason,
            }),
        },
    )
    .await?;
    metrics::counter!("payments_disputes_total", "outcome" => "withdrawn").increment(1);
    Ok(amount)
}

/// The provider reinstated a dispute's funds (the venue won it): what was taken goes back where it came from, once.
/// Returns the amount booked (0 for a dispute reinstated before), `None` for a dispute not withdrawn here yet.
pub(crate) async fn dispute_reinstated(
    tx: &mut TenantTx,
    payment_id: Uuid,
    reference: &str,
) -> Result<Option<i64>> {
    let payment = super::lock(tx, payment_id).await?;
    let dispute: Option<(Uuid, i64, i64)> = sqlx::query_as(
        "update payment_dispute set reinstated_at = now()
         where tenant_id = $1 and provider_ref = $2 and payment_id = $3 and reinstated_at is null
         returning id, amount, from_wallet",
    )
    .bind(tx.tenant())
    .bind(reference)
    .bind(payment_id)
    .fetch_optional(tx.conn())
    .await?;
    let Some((id, amount, from_wallet)) = dispute else {
        let withdrawn: bool = sqlx::query_scalar(
            "select exists (select 1 from payment_dispute where tenant_id = $1 and provider_ref = $2)",
        )
        .bind(tx.tenant())
        .bind(reference)
        .fetch_one(tx.conn())
        .await?;
        return Ok(withdrawn.then_some(0));
    };
    let memo = format!("card dispute won ({})", payment.provider);
    move_money(
        tx,
        &payment,
        -amount,
        -from_wallet,
        format!("dispute:{id}:reinstated"),
        "dispute",
        memo,
    )
    .await?;
    audit::record_system_in(
        tx,
        Some(payment.venue_id),
        Entry {
            action: "payment.dispute_reinstated",
            object_type: "payment",
            object_id: Some(payment_id),
            detail: serde_json::json!({ "dispute_id": id, "amount": amount, "reference": reference }),
        },
    )
    .await?;
    metrics::counter!("payments_disputes_total", "outcome" => "reinstated").increment(1);
    Ok(Some(amount))
}

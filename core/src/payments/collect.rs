//! Debt collection and card deposit settlement, run by the workers for one (patron, currency) at a time.
//!
//! When a charge books debt, or a rental held on a card ends, the pair gets a `debt_collection` row due now. The
//! collector then (1) settles the card holds of ended rentals: captures what the patron owes from each hold and
//! releases the rest; (2) charges the saved card off-session for what is still owed, `step` at a time. A
//! declined charge is retried after `retry_base`, doubling each time, until `max_attempts` declines in a row
//! mark the debt `exhausted` (saving a new card starts over). Every provider call carries an idempotency key
//! derived from the row's charge counter, so a collector that dies mid-call and is retried makes no second charge.

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::{
    apply, cards, insert, IntentRequest, NewPayment, Payment, PaymentProvider, ProviderStatus,
};
use crate::db::TenantTx;
use crate::error::{Error, Result};
use crate::ledger::{self, Owner, Purpose};
use crate::sessions::Session;

/// How debts are collected.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// The most one charge takes (`DEBT_CHARGE_STEP`, minor units).
    pub step: i64,
    /// The wait after the first declined charge; it doubles with each further decline.
    pub retry_base: Duration,
    /// Declines in a row after which collection stops until a new card is saved.
    pub max_attempts: i32,
}

/// What one collection pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing is owed any more; the row is gone.
    Settled,
    Collected(i64),
    Declined {
        reason: String,
        attempts: i32,
    },
    /// Declined `max_attempts` times in a row: stopped.
    Exhausted,
    /// A charge is still pending at the provider.
    Waiting,
    /// The patron has no saved card: nothing to charge until one is saved.
    NoCard,
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Settled => "settled",
            Self::Collected(_) => "collected",
            Self::Declined { .. } => "declined",
            Self::Exhausted => "exhausted",
            Self::Waiting => "waiting",
            Self::NoCard => "no_card",
        }
    }
}

/// Debt was booked for these (patron, venue, currency): collection becomes due unless it is already scheduled,
/// stopped for want of a card, or exhausted.
pub(crate) async fn arm(tx: &mut TenantTx, debts: &[(Uuid, Uuid, String)]) -> Result<()> {
    let mut debts = debts.to_vec();
    debts.sort();
    debts.dedup_by(|a, b| a.0 == b.0 && a.2 == b.2);
    if debts.is_empty() {
        return Ok(());
    }
    let patrons: Vec<Uuid> = debts.iter().map(|d| d.0).collect();
    let venues: Vec<Uuid> = debts.iter().map(|d| d.1).collect();
    let currencies: Vec<&str> = debts.iter().map(|d| d.2.as_str()).collect();
    sqlx::query(
        "insert into debt_collection (tenant_id, patron_id, venue_id, currency, next_attempt_at)
         select $1, t.patron, t.venue, t.currency, now()
         from unnest($2::uuid[], $3::uuid[], $4::text[]) as t (patron, venue, currency)
         on conflict (tenant_id, patron_id, currency) do update
           set venue_id = excluded.venue_id,
               next_attempt_at = coalesce(debt_collection.next_attempt_at, excluded.next_attempt_at)
           where debt_collection.status = 'due'",
    )
    .bind(tx.tenant())
    .bind(&patrons)
    .bind(&venues)
    .bind(&currencies)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// A rental held on a card ended: its hold is to be settled now, whatever the collection's state.
pub(crate) async fn arm_settlement(
    tx: &mut TenantTx,
    patron: Uuid,
    venue: Uuid,
    currency: &str,
) -> Result<()> {
    sqlx::query(
        "insert into debt_collection (tenant_id, patron_id, venue_id, currency, next_attempt_at)
         values ($1, $2, $3, $4, now())
         on conflict (tenant_id, patron_id, currency) do update set next_attempt_at = now()",
    )
    .bind(tx.tenant())
    .bind(patron)
    .bind(venue)
    .bind(currency)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Places a manual-capture hold of the rental's deposit on the patron's saved card.
pub(crate) async fn hold_deposit(
    tx: &mut TenantTx,
    provider: &dyn PaymentProvider,
    card: &cards::Card,
    rental: &Session,
) -> Result<Payment> {
    // Keyed by the quote (used once), so a start retried after a failure finds the same hold at the provider.
    let key = format!(
        "{} deposit {}",
        tx.tenant(),
        rental.quote_id.unwrap_or(rental.id)
    );
    let id = super::payment_id_for(&key);
    let intent = provider
        .create_intent(IntentRequest {
            payment_id: id,
            tenant_id: tx.tenant().0,
            amount: rental.deposit_amount,
            currency: &rental.currency,
            idempotency_key: &key,
            off_session: Some(card.on_file()),
            manual_capture: true,
        })
        .await?;
    insert(
        tx,
        NewPayment {
            id,
            kind: "deposit",
            patron_id: card.patron_id,
            venue_id: rental.venue_id,
            session_id: Some(rental.id),
            amount: rental.deposit_amount,
            currency: &rental.currency,
            provider: provider.name(),
            reference: &intent.reference,
            key: &key,
        },
    )
    .await?;
    match intent.status {
        ProviderStatus::Authorized => apply(tx, id, ProviderStatus::Authorized).await,
        ProviderStatus::Failed(reason) => Err(Error::CardDeclined(reason)),
        _ => {
            // Not usable as a hold (it would need the patron to act): release it.
            provider.cancel(&intent.reference).await?;
            Err(Error::CardDeclined("authentication_required".into()))
        }
    }
}

/// The card hold of a rental, if its deposit was held on a card.
pub(crate) async fn deposit_hold(tx: &mut TenantTx, session: Uuid) -> Result<Option<Uuid>> {
    Ok(sqlx::query_scalar(
        "select id from payment where tenant_id = $1 and session_id = $2 and kind = 'deposit'",
    )
    .bind(tx.tenant())
    .bind(session)
    .fetch_optional(tx.conn())
    .await?)
}

/// A patron's debt collection in one currency, as shown to staff.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct DebtStatus {
    pub currency: String,
    pub status: String,
    pub attempts: i32,
    pub collected: i64,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

pub async fn status_of(tx: &mut TenantTx, patron: Uuid) -> Result<Vec<DebtStatus>> {
    Ok(sqlx::query_as(
        "select currency::text as currency, status, attempts, collected, next_attempt_at, last_error
         from debt_collection where tenant_id = $1 and patron_id = $2 order by currency",
    )
    .bind(tx.tenant())
    .bind(patron)
    .fetch_all(tx.conn())
    .await?)
}

#[derive(sqlx::FromRow)]
struct Row {
    status: String,
    attempts: i32,
    charges: i32,
    venue_id: Uuid,
}

/// One collection pass for (patron, currency); see the module documentation.
pub async fn collect(
    tx: &mut TenantTx,
    provider: &dyn PaymentProvider,
    policy: Policy,
    patron: Uuid,
    currency: &str,
    now: DateTime<Utc>,
) -> Result<Outcome> {
    let row: Option<Row> = sqlx::query_as(
        "select status, attempts, charges, venue_id from debt_collection
         where tenant_id = $1 and patron_id = $2 and currency = $3 for update",
    )
    .bind(tx.tenant())
    .bind(patron)
    .bind(currency)
    .fetch_optional(tx.conn())
    .await?;
    let Some(row) = row else {
        return Ok(Outcome::Settled);
    };
    settle_holds(tx, provider, patron, currency).await?;

    let pending: Vec<Uuid> = sqlx::query_scalar(
        "select id from payment where tenant_id = $1 and patron_id = $2 and currency = $3 and kind = 'debt'
           and status = 'pending'",
    )
    .bind(tx.tenant())
    .bind(patron)
    .bind(currency)
    .fetch_all(tx.conn())
    .await?;
    let mut waiting = false;
    for id in pending {
        waiting |= super::refresh(tx, provider, id).await?.status == "pending";
    }
    let owed = -ledger::balance(tx, Owner::Patron(patron), Purpose::Debt, currency).await?;
    if owed <= 0 {
        sqlx::query(
            "delete from debt_collection where tenant_id = $1 and patron_id = $2 and currency = $3",
        )
        .bind(tx.tenant())
        .bind(patron)
        .bind(currency)
        .execute(tx.conn())
        .await?;
        return Ok(Outcome::Settled);
    }
    if waiting {
        schedule(tx, patron, currency, Some(now + policy.retry_base)).await?;
        return Ok(Outcome::Waiting);
    }
    if row.status == "exhausted" {
        schedule(tx, patron, currency, None).await?;
        return Ok(Outcome::Exhausted);
    }
    let Some(card) = cards::get(tx, patron, provider.name()).await? else {
        sqlx::query(
            "update debt_collection set status = 'no_card', next_attempt_at = null
             where tenant_id = $1 and patron_id = $2 and currency = $3",
        )
        .bind(tx.tenant())
        .bind(patron)
        .bind(currency)
        .execute(tx.conn())
        .await?;
        return Ok(Outcome::NoCard);
    };

    let amount = owed.min(policy.step.max(1));
    // The key counts the charges committed; a pass undone after the provider's answer tries the same one again.
    let key = format!("{} debt {patron} {currency} {}", tx.tenant(), row.charges);
    let id = super::payment_id_for(&key);
    let intent = provider
        .create_intent(IntentRequest {
            payment_id: id,
            tenant_id: tx.tenant().0,
            amount,
            currency,
            idempotency_key: &key,
            off_session: Some(card.on_file()),
            manual_capture: false,
        })
        .await?;
    insert(
        tx,
        NewPayment {
            id,
            kind: "debt",
            patron_id: patron,
            venue_id: row.venue_id,
            session_id: None,
            amount,
            currency,
            provider: provider.name(),
            reference: &intent.reference,
            key: &key,
        },
    )
    .await?;
    let payment = apply(tx, id, intent.status).await?;
    let (outcome, attempts, status, next, error) = match payment.status.as_str() {
        "confirmed" => (Outcome::Collected(amount), 0, "due", Some(now), None),
        "failed" => {
            let attempts = row.attempts + 1;
            let reason = payment.failure_reason.unwrap_or_else(|| "declined".into());
            if attempts >= policy.max_attempts {
                (
                    Outcome::Exhausted,
                    attempts,
                    "exhausted",
                    None,
                    Some(reason),
                )
            } else {
                let wait = policy.retry_base * 2i32.pow((attempts - 1).clamp(0, 16) as u32);
                let outcome = Outcome::Declined {
                    reason: reason.clone(),
                    attempts,
                };
                (outcome, attempts, "due", Some(now + wait), Some(reason))
            }
        }
        _ => (
            Outcome::Waiting,
            row.attempts,
            "due",
            Some(now + policy.retry_base),
            None,
        ),
    };
    sqlx::query(
        "update debt_collection set charges = charges + 1, attempts = $4, status = $5, next_attempt_at = $6,
           last_error = $7
         where tenant_id = $1 and patron_id = $2 and currency = $3",
    )
    .bind(tx.tenant())
    .bind(patron)
    .bind(currency)
    .bind(attempts)
    .bind(status)
    .bind(next)
    .bind(error)
    .execute(tx.conn())
    .await?;
    Ok(outcome)
}

async fn schedule(
    tx: &mut TenantTx,
    patron: Uuid,
    currency: &str,
    next: Option<DateTime<Utc>>,
) -> Result<()> {
    sqlx::query(
        "update debt_collection set next_attempt_at = $4 where tenant_id = $1 and patron_id = $2 and currency = $3",
    )
    .bind(tx.tenant())
    .bind(patron)
    .bind(currency)
    .bind(next)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Card holds of ended rentals: each captures what the patron owes (up to the hold) and releases the rest.
async fn settle_holds(
    tx: &mut TenantTx,
    provider: &dyn PaymentProvider,
    patron: Uuid,
    currency: &str,
) -> Result<()> {
    let holds: Vec<(Uuid, String, i64)> = sqlx::query_as(
        "select p.id, p.provider_ref, p.amount from payment p
         join session s on s.tenant_id = p.tenant_id and s.id = p.session_id
         where p.tenant_id = $1 and p.patron_id = $2 and p.currency = $3 and p.kind = 'deposit'
           and p.status = 'authorized' and p.provider = $4 and s.status not in ('active', 'paused')
         order by p.created_at for update of p",
    )
    .bind(tx.tenant())
    .bind(patron)
    .bind(currency)
    .bind(provider.name())
    .fetch_all(tx.conn())
    .await?;
    for (id, reference, amount) in holds {
        let owed = -ledger::balance(tx, Owner::Patron(patron), Purpose::Debt, currency).await?;
        let capture = owed.clamp(0, amount);
        if capture > 0 {
            sqlx::query("update payment set captured_amount = $3 where tenant_id = $1 and id = $2")
                .bind(tx.tenant())
                .bind(id)
                .bind(capture)
                .execute(tx.conn())
                .await?;
            let key = format!("{} capture {id}", tx.tenant());
            provider.capture(&reference, capture, &key).await?;
            apply(tx, id, ProviderStatus::Succeeded).await?;
        } else {
            provider.cancel(&reference).await?;
            apply(tx, id, ProviderStatus::Canceled).await?;
        }
        metrics::counter!("payments_deposit_holds_settled_total",
            "outcome" => if capture > 0 { "captured" } else { "released" })
        .increment(1);
    }
    Ok(())
}

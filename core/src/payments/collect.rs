//! Debt collection and card deposit settlement, run by the workers for one (patron, currency) at a time.
//!
//! When a charge books debt, or a rental held on a card ends, the pair gets a `debt_collection` row due now. The
//! collector then (1) settles the card holds of ended rentals: captures what the patron owes from each hold and
//! releases the rest; (2) charges the saved card off-session for what is still owed, `step` at a time. A
//! declined charge is retried after `retry_base`, doubling each time, until `max_attempts` declines in a row
//! mark the debt `exhausted` (saving a new card starts over). Every provider call carries an idempotency key
//! derived from the row's charge counter, so a collector that dies mid-call and is retried makes no second charge.
//!
//! A charge is written down on the row (amount, card, account, time) and committed before it is sent ([`prepare`],
//! [`send`], [`record`]): a pass undone after that first looks for the charge at the provider (the customer's
//! intents since then, by the payment id in their metadata) and records what it finds; only one that never
//! arrived is sent again, as the very same request, whatever the patron owes or which card is saved by then.

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::{
    apply, cards, insert, IntentRequest, NewPayment, Payment, PaymentProvider, ProviderIntent,
    ProviderStatus,
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
    /// Another pass recorded this charge first (its lease had run out): nothing was changed.
    Recorded,
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
            Self::Recorded => "recorded",
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
    hold_key: Option<&str>,
) -> Result<Payment> {
    // Keyed by the caller's idempotency key where it gives one (the patron's, whose every try makes a new quote),
    // else by the quote (used once), so a start retried after a failure finds the same hold at the provider; and by
    // the card, so a start tried again after a declined hold with another card saved asks that card.
    let key = match hold_key {
        Some(k) => format!(
            "{} deposit patron:{}:{} {}",
            tx.tenant(),
            rental.patron_id,
            crate::idempotency::hex_sha256(k),
            card.payment_method_ref
        ),
        None => format!(
            "{} deposit {} {}",
            tx.tenant(),
            rental.quote_id.unwrap_or(rental.id),
            card.payment_method_ref
        ),
    };
    let id = super::payment_id_for(&key);
    // A patron's key used again for another rental once its answer was forgotten (24 h): its hold is recorded
    // already, and Stripe, which forgets keys as well, would place a second one.
    let held: bool = sqlx::query_scalar(
        "select exists (select 1 from payment where tenant_id = $1 and id = $2)",
    )
    .bind(tx.tenant())
    .bind(id)
    .fetch_one(tx.conn())
    .await?;
    if held {
        return Err(Error::IdempotencyKeyReused);
    }
    // Rounded up to what the provider takes (KWD in tens): the hold covers the deposit, and a capture takes only
    // what is owed.
    let amount = super::round_up(provider, rental.deposit_amount, &rental.currency);
    let intent = provider
        .create_intent(IntentRequest {
            payment_id: id,
            tenant_id: tx.tenant().0,
            amount,
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
            amount,
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
    next_attempt_at: Option<DateTime<Utc>>,
    sending_amount: Option<i64>,
    sending_customer: Option<String>,
    sending_method: Option<String>,
    sending_provider: Option<String>,
    sending_at: Option<DateTime<Utc>>,
    series: Option<Uuid>,
}

async fn lock_row(tx: &mut TenantTx, patron: Uuid, currency: &str) -> Result<Option<Row>> {
    Ok(sqlx::query_as(
        "select status, attempts, charges, venue_id, next_attempt_at, sending_amount, sending_customer,
           sending_method, sending_provider, sending_at, series
         from debt_collection where tenant_id = $1 and patron_id = $2 and currency = $3 for update",
    )
    .bind(tx.tenant())
    .bind(patron)
    .bind(currency)
    .fetch_optional(tx.conn())
    .await?)
}

/// What the first part of a pass ([`prepare`]) leaves to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The pass is over.
    Done(Outcome),
    /// A charge is written down: commit, [`send`] it, then [`record`] the answer in a new transaction.
    Send(Charge),
}

/// A debt charge, written down on the collection's row before it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub patron: Uuid,
    pub currency: String,
    /// The row's series (a new row's charges are counted from 0 again) and the charge's number in it
    /// (`charges`): the idempotency key.
    series: Option<Uuid>,
    pub number: i32,
    pub amount: i64,
    /// The provider (account) it goes through: [`PaymentProvider::name`].
    pub provider: String,
    customer_ref: String,
    payment_method_ref: String,
    /// When the row was due again as the pass began (its lease): a different time at [`record`] means something
    /// made it due meanwhile (a rental's card hold to settle, a new card), which the recorded answer must not undo.
    due_at: Option<DateTime<Utc>>,
    /// Written down at this time by an earlier pass, undone before its answer was recorded: the provider may have
    /// it already.
    again: Option<DateTime<Utc>>,
}

impl Charge {
    fn key(&self, tenant: crate::TenantId) -> String {
        match self.series {
            Some(series) => format!(
                "{tenant} debt {} {} {series} {}",
                self.patron, self.currency, self.number
            ),
            // A row from before series (migration 0052): its keys as they were.
            None => format!(
                "{tenant} debt {} {} {}",
                self.patron, self.currency, self.number
            ),
        }
    }
}

/// The first part of a collection pass for (patron, currency); see the module documentation. Settles card holds,
/// refreshes pending charges, then either ends the pass or writes down the charge to send, which the caller
/// commits before it is sent: a charge written down earlier and never recorded is sent again as it was.
pub async fn prepare(
    tx: &mut TenantTx,
    provider: &dyn PaymentProvider,
    policy: Policy,
    patron: Uuid,
    currency: &str,
    now: DateTime<Utc>,
) -> Result<Step> {
    let Some(row) = lock_row(tx, patron, currency).await? else {
        return Ok(Step::Done(Outcome::Settled));
    };
    if let (Some(amount), Some(customer_ref), Some(payment_method_ref), Some(provider), Some(at)) = (
        row.sending_amount,
        row.sending_customer,
        row.sending_method,
        row.sending_provider,
        row.sending_at,
    ) {
        // A pass was undone after writing it down: the provider may have taken it. [`send`] looks for it there
        // first; the same request again (same key, amount, card and account) makes it if it never arrived.
        return Ok(Step::Send(Charge {
            patron,
            currency: currency.to_owned(),
            series: row.series,
            number: row.charges,
            amount,
            provider,
            customer_ref,
            payment_method_ref,
            // Whatever made it due since it was written down (a hold to settle, a new card) is not known here:
            // it stays due after this answer (a pass settles holds before it stops).
            due_at: None,
            again: Some(at),
        }));
    }
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
        return Ok(Step::Done(Outcome::Settled));
    }
    if waiting {
        schedule(tx, patron, currency, Some(now + policy.retry_base)).await?;
        return Ok(Step::Done(Outcome::Waiting));
    }
    if row.status == "exhausted" {
        schedule(tx, patron, currency, None).await?;
        return Ok(Step::Done(Outcome::Exhausted));
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
        return Ok(Step::Done(Outcome::NoCard));
    };

    let charge = Charge {
        patron,
        currency: currency.to_owned(),
        series: row.series,
        number: row.charges,
        // Rounded up to what the provider takes (KWD in tens): what a charge takes beyond the debt goes to the
        // wallet.
        amount: super::round_up(provider, owed.min(policy.step.max(1)), currency),
        provider: provider.name().to_owned(),
        customer_ref: card.customer_ref,
        payment_method_ref: card.payment_method_ref,
        due_at: row.next_attempt_at,
        again: None,
    };
    sqlx::query(
        "update debt_collection set sending_amount = $4, sending_customer = $5, sending_method = $6,
           sending_provider = $7, sending_at = now()
         where tenant_id = $1 and patron_id = $2 and currency = $3",
    )
    .bind(tx.tenant())
    .bind(patron)
    .bind(currency)
    .bind(charge.amount)
    .bind(&charge.customer_ref)
    .bind(&charge.payment_method_ref)
    .bind(&charge.provider)
    .execute(tx.conn())
    .await?;
    Ok(Step::Send(charge))
}

/// How long before a charge was written down the search for it at the provider begins: clocks differ.
const WRITTEN_DOWN_SLACK: Duration = Duration::hours(1);

/// Asks the provider for a charge [`prepare`] wrote down (and its caller committed); no transaction is open. One
/// written down by an undone pass is looked for first (an idempotency key alone does not do: Stripe forgets keys
/// after 24 hours), and what the provider has is the answer.
pub async fn send(
    provider: &dyn PaymentProvider,
    tenant: crate::TenantId,
    charge: &Charge,
) -> Result<ProviderIntent> {
    let key = charge.key(tenant);
    let payment_id = super::payment_id_for(&key);
    if let Some(written_at) = charge.again {
        let since = written_at - WRITTEN_DOWN_SLACK;
        let found = provider
            .find_intent(&charge.customer_ref, payment_id, since)
            .await?;
        if let Some(intent) = found {
            metrics::counter!("debt_charges_found_total").increment(1);
            return Ok(intent);
        }
    }
    provider
        .create_intent(IntentRequest {
            payment_id,
            tenant_id: tenant.0,
            amount: charge.amount,
            currency: &charge.currency,
            idempotency_key: &key,
            off_session: Some(super::CardOnFile {
                customer_ref: &charge.customer_ref,
                payment_method_ref: &charge.payment_method_ref,
            }),
            manual_capture: false,
        })
        .await
}

/// Records the provider's answer to a charge [`send`] sent: the payment (once), the collection's next attempt.
/// `Err(reason)`: the card was declined without an intent to show for it. A pass that finds the charge recorded
/// already (another collector's, after the lease ran out) changes nothing.
pub async fn record(
    tx: &mut TenantTx,
    provider: &dyn PaymentProvider,
    policy: Policy,
    charge: &Charge,
    answer: std::result::Result<ProviderIntent, String>,
    now: DateTime<Utc>,
) -> Result<Outcome> {
    let row = lock_row(tx, charge.patron, &charge.currency).await?;
    let Some(row) = row.filter(|r| {
        r.charges == charge.number && r.series == charge.series && r.sending_amount.is_some()
    }) else {
        return Ok(Outcome::Recorded);
    };
    let (patron, currency, amount) = (charge.patron, charge.currency.as_str(), charge.amount);
    let taken = match answer {
        Ok(intent) => {
            let key = charge.key(tx.tenant());
            let id = super::payment_id_for(&key);
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
            match payment.status.as_str() {
                "confirmed" => Ok(true),
                "failed" => Err(payment.failure_reason.unwrap_or_else(|| "declined".into())),
                // Neither taken nor refused yet.
                _ => Ok(false),
            }
        }
        Err(reason) => Err(reason),
    };
    let (outcome, attempts, status, next, error) = match taken {
        Ok(true) => (Outcome::Collected(amount), 0, "due", Some(now), None),
        Ok(false) => (
            Outcome::Waiting,
            row.attempts,
            "due",
            Some(now + policy.retry_base),
            None,
        ),
        Err(reason) => {
            let attempts = row.attempts + 1;
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
    };
    // Made due meanwhile (a rental's card hold to settle, a new card saved): it stays due then, whatever this
    // answer says; a pass that finds it exhausted settles the holds first, then stops.
    let next = match (row.next_attempt_at, next) {
        (Some(due), next) if Some(due) != charge.due_at => Some(next.map_or(due, |n| n.min(due))),
        (_, next) => next,
    };
    sqlx::query(
        "update debt_collection set charges = charges + 1, attempts = $4, status = $5, next_attempt_at = $6,
           last_error = $7, sending_amount = null, sending_customer = null, sending_method = null,
           sending_provider = null, sending_at = null, series = coalesce(series, gen_random_uuid())
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
        // Rounded up to what the provider takes, within the hold (a multiple itself): the wallet gets the rest.
        let capture = super::round_up(provider, owed.clamp(0, amount), currency).min(amount);
        // The key names the amount: a pass undone after its capture went out, retried owing more, is not refused
        // as a key reused with other parameters.
        let key = format!("{} capture {id} {capture}", tx.tenant());
        let settled = match capture {
            0 => provider.cancel(&reference).await.map(|()| 0),
            _ => provider.capture(&reference, capture, currency, &key).await,
        };
        // The provider refuses to settle a hold settled before: by a pass that captured or released it and was
        // undone before it recorded so (a capture's webhook finds nothing to book), or by the provider itself (an
        // authorization expires uncaptured after some days). What the provider received is what was taken.
        let captured = match settled {
            Ok(captured) => captured,
            Err(e) => match provider.received(&reference).await {
                Ok(Some(received)) => {
                    tracing::warn!(tenant.id = %tx.tenant(), payment = %id, received,
                        "a deposit hold was settled at the provider before; recorded as it received it");
                    received
                }
                _ => return Err(e),
            },
        };
        if captured > 0 {
            sqlx::query("update payment set captured_amount = $3 where tenant_id = $1 and id = $2")
                .bind(tx.tenant())
                .bind(id)
                .bind(captured)
                .execute(tx.conn())
                .await?;
            apply(tx, id, ProviderStatus::Succeeded).await?;
        } else {
            apply(tx, id, ProviderStatus::Canceled).await?;
        }
        metrics::counter!("payments_deposit_holds_settled_total",
            "outcome" => if captured > 0 { "captured" } else { "released" })
        .increment(1);
    }
    Ok(())
}

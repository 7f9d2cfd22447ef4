//! Card payments through a [`PaymentProvider`]: the dev emulator (default) or Stripe. A payment is a wallet
//! top-up (`pending` until the provider confirms it: a webhook, a status poll, or the dev emulator's delay), an
//! off-session debt charge on a saved card, or a manual-capture deposit hold for a rental (`authorized`, then
//! captured or canceled). Confirming books the money exactly once; the terminal states never move back.

pub mod accounts;
pub mod cards;
pub mod collect;
pub mod dev;
pub mod outside;
pub mod stripe;
pub mod webhook;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::audit::{self, Entry};
use crate::db::TenantTx;
use crate::error::{Error, Result};
use crate::ledger::{self, Journal, Owner, Purpose};
use crate::model::Actor;
use crate::{patrons, venues};

/// What a provider says of a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderStatus {
    Pending,
    /// Authorized and waiting to be captured (a deposit hold).
    Authorized,
    Succeeded,
    Failed(String),
    Canceled,
}

/// A patron's saved card at the provider.
#[derive(Debug, Clone, Copy)]
pub struct CardOnFile<'a> {
    pub customer_ref: &'a str,
    pub payment_method_ref: &'a str,
}

/// The id of the payment made under the provider idempotency key `key`: the same for every try. A try whose
/// transaction was undone after the provider took the request (a crash, a lost connection) is sent again with the
/// same key, and a provider that compares a retried request's parameters (Stripe does, `metadata[payment_id]`
/// among them) then answers it as the first try instead of refusing it, so the money it took is recorded.
pub(crate) fn payment_id_for(key: &str) -> Uuid {
    Uuid::new_v5(&PAYMENT_IDS, key.as_bytes())
}

/// The namespace of [`payment_id_for`]'s name-based ids.
const PAYMENT_IDS: Uuid = Uuid::from_u128(0x5e1f_0c1d_7a3b_4c8e_9d2f_6b1a_0e4c_7d3a);

/// A new payment at the provider.
#[derive(Debug, Clone)]
pub struct IntentRequest<'a> {
    pub payment_id: Uuid,
    pub tenant_id: Uuid,
    pub amount: i64,
    pub currency: &'a str,
    /// Sent to the provider as its idempotency key, so a retried create makes one intent.
    pub idempotency_key: &'a str,
    /// Charge this saved card now, without the patron present (debts, deposit holds). Without it the intent waits
    /// for the patron's app to confirm it.
    pub off_session: Option<CardOnFile<'a>>,
    /// Authorize only; [`PaymentProvider::capture`] takes the money later.
    pub manual_capture: bool,
}

/// The provider's side of a payment.
#[derive(Debug, Clone)]
pub struct ProviderIntent {
    pub reference: String,
    pub status: ProviderStatus,
}

/// Saving a card (a payment method the patron's app tokenised at the provider) for later off-session charges.
#[derive(Debug, Clone)]
pub struct SaveCardRequest<'a> {
    pub tenant_id: Uuid,
    pub patron_id: Uuid,
    pub patron_name: &'a str,
    pub email: Option<&'a str>,
    /// The patron's customer at the provider, if one exists already.
    pub customer_ref: Option<&'a str>,
    pub payment_method: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedCard {
    pub customer_ref: String,
    pub payment_method_ref: String,
    pub brand: String,
    pub last4: String,
}

/// A payment service provider. Errors: [`Error::CardDeclined`] when the card network says no,
/// [`Error::ProviderUnavailable`] when the provider cannot be reached or fails.
#[async_trait::async_trait]
pub trait PaymentProvider: Send + Sync {
    fn name(&self) -> &'static str;
    async fn save_card(&self, request: SaveCardRequest<'_>) -> Result<SavedCard>;
    /// Creates an intent. A declined off-session charge is not an error: it comes back `Failed`.
    async fn create_intent(&self, request: IntentRequest<'_>) -> Result<ProviderIntent>;
    /// The off-session intent made for `payment_id` (in its metadata) on the customer's card, created at or after
    /// `created_since`, if the provider has one: a charge whose answer was lost is found rather than made again.
    /// An error when it cannot tell (never "none" for a search it did not finish).
    async fn find_intent(
        &self,
        customer_ref: &str,
        payment_id: Uuid,
        created_since: DateTime<Utc>,
    ) -> Result<Option<ProviderIntent>>;
    /// The provider's current status of an intent created at `created_at`.
    async fn status(
        &self,
        reference: &str,
        amount: i64,
        created_at: DateTime<Utc>,
    ) -> Result<ProviderStatus>;
    /// The smallest amount, in minor units of `currency`, the provider takes: every amount it is asked to charge,
    /// hold, capture or refund is a multiple (Stripe takes three-decimal currencies only in tens).
    fn step(&self, _currency: &str) -> i64 {
        1
    }
    /// Captures `amount` of an authorized intent and releases the rest; returns the amount the intent now holds as
    /// received.
    async fn capture(
        &self,
        reference: &str,
        amount: i64,
        currency: &str,
        idempotency_key: &str,
    ) -> Result<i64>;
    /// What a settled intent received: the amount, if it succeeded (a hold captured already), or 0 if it was
    /// canceled (a hold released, or expired uncaptured); none while it is not settled.
    async fn received(&self, reference: &str) -> Result<Option<i64>>;
    /// Cancels a pending or authorized intent (releasing a hold).
    async fn cancel(&self, reference: &str) -> Result<()>;
    /// Refunds `amount` of a succeeded intent; returns the refund's reference.
    async fn refund(
        &self,
        reference: &str,
        amount: i64,
        currency: &str,
        idempotency_key: &str,
    ) -> Result<String>;
}

/// Refuses an amount `provider` cannot take in `currency` (see [`PaymentProvider::step`]), naming the step.
pub(crate) fn check_step(
    provider: &dyn PaymentProvider,
    amount: i64,
    currency: &str,
) -> Result<()> {
    multiple_of(provider.step(currency), amount, currency)
}

/// Refuses an amount that is not a multiple of `step` (minor units of `currency`), naming the step.
pub(crate) fn multiple_of(step: i64, amount: i64, currency: &str) -> Result<()> {
    if amount % step != 0 {
        return Err(Error::validation(
            "amount",
            format!(
                "must be a multiple of {} {currency}: the card processor takes {currency} only in such steps",
                crate::money::format(step, currency)
            ),
        ));
    }
    Ok(())
}

/// `amount` (not negative) rounded up to what `provider` can take in `currency`.
pub(crate) fn round_up(provider: &dyn PaymentProvider, amount: i64, currency: &str) -> i64 {
    let step = provider.step(currency);
    (amount + step - 1) / step * step
}

/// Which provider the API and the workers use: `PAYMENT_PROVIDER=dev` (the default) with `DEV_PAYMENT_CONFIRM_MS`,
/// or `stripe` with `STRIPE_SECRET_KEY`, `STRIPE_API_BASE` and `STRIPE_TIMEOUT_MS`.
#[derive(Debug, Clone)]
pub enum ProviderSettings {
    Dev {
        confirm_after: chrono::Duration,
    },
    Stripe {
        secret_key: secrecy::SecretString,
        api_base: String,
        timeout: std::time::Duration,
    },
}

impl ProviderSettings {
    /// Reads the settings through `var` (trimmed, empty = unset); the error names the variable.
    /// A production deployment must name the provider that takes the money: the dev emulator confirms any top-up
    /// by itself, so `PAYMENT_PROVIDER` unset or `dev` stops the start with this error.
    pub fn check_production(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        match var("PAYMENT_PROVIDER").as_deref() {
            None => {
                anyhow::bail!("APP_ENV=production needs PAYMENT_PROVIDER set explicitly (stripe)")
            }
            Some("dev") => anyhow::bail!(
                "PAYMENT_PROVIDER=dev is the development emulator; APP_ENV=production needs stripe"
            ),
            Some(_) => Ok(()),
        }
    }

    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let millis = |key: &str, default: u64| -> anyhow::Result<u64> {
            var(key).map_or(Ok(default), |v| {
                v.parse()
                    .map_err(|_| anyhow::anyhow!("{key} must be a whole number of milliseconds"))
            })
        };
        match var("PAYMENT_PROVIDER").as_deref() {
            None | Some("dev") => Ok(Self::Dev {
                confirm_after: chrono::Duration::milliseconds(
                    millis("DEV_PAYMENT_CONFIRM_MS", 2000)?.min(86_400_000) as i64,
                ),
            }),
            Some("stripe") => {
                let secret_key = var("STRIPE_SECRET_KEY").ok_or_else(|| {
                    anyhow::anyhow!("STRIPE_SECRET_KEY is required with PAYMENT_PROVIDER=stripe")
                })?;
                let api_base =
                    var("STRIPE_API_BASE").unwrap_or_else(|| "https://api.stripe.com/".into());
                if !(api_base.starts_with("https://") || api_base.starts_with("http://")) {
                    anyhow::bail!("STRIPE_API_BASE must be an http(s) URL, not {api_base:?}");
                }
                Ok(Self::Stripe {
                    secret_key: secret_key.into(),
                    api_base,
                    timeout: std::time::Duration::from_millis(
                        millis("STRIPE_TIMEOUT_MS", 10_000)?.max(1),
                    ),
                })
            }
            Some(other) => anyhow::bail!("PAYMENT_PROVIDER must be dev or stripe, not {other:?}"),
        }
    }

    pub fn build(&self) -> Result<std::sync::Arc<dyn PaymentProvider>> {
        use secrecy::ExposeSecret;
        Ok(match self {
            Self::Dev { confirm_after } => std::sync::Arc::new(dev::DevProvider {
                confirm_after: *confirm_after,
            }),
            Self::Stripe {
                secret_key,
                api_base,
                timeout,
            } => std::sync::Arc::new(stripe::StripeProvider::new(
                secret_key.expose_secret(),
                api_base,
                *timeout,
            )?),
        })
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Payment {
    pub id: Uuid,
    /// `top_up`, `debt` or `deposit`.
    pub kind: String,
    pub patron_id: Uuid,
    pub venue_id: Uuid,
    /// The rental a deposit hold is for.
    pub session_id: Option<Uuid>,
    pub amount: i64,
    /// What a deposit hold's capture took.
    pub captured_amount: i64,
    pub refunded_amount: i64,
    pub currency: String,
    /// `pending`, `authorized` (a hold), `confirmed`, `failed`, `canceled`.
    pub status: String,
    pub provider: String,
    pub provider_ref: String,
    pub failure_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub confirmed_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str =
    "id, kind, patron_id, venue_id, session_id, amount, captured_amount, refunded_amount, currency::text as currency,
    status, provider, provider_ref, failure_reason, created_at, confirmed_at";

pub async fn get(tx: &mut TenantTx, id: Uuid) -> Result<Payment> {
    let sql = format!("select {COLUMNS} from payment where tenant_id = $1 and id = $2");
    let p: Option<Payment> = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
    p.ok_or(Error::NotFound("payment"))
}

pub(crate) async fn lock(tx: &mut TenantTx, id: Uuid) -> Result<Payment> {
    let sql = format!("select {COLUMNS} from payment where tenant_id = $1 and id = $2 for update");
    let p: Option<Payment> = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
    p.ok_or(Error::NotFound("payment"))
}

/// Creates a top-up payment for a patron at a venue (in the venue's currency). `key` makes a retried create return
/// the same payment.
pub async fn create_intent(
    tx: &mut TenantTx,
    actor: &Actor,
    provider: &dyn PaymentProvider,
    patron_id: Uuid,
    venue_id: Uuid,
    amount: i64,
    key: &str,
) -> Result<Payment> {
    let key = crate::idempotency::check_key(key)?;
    if !(1..=crate::pricing::MAX_AMOUNT).contains(&amount) {
        return Err(Error::validation(
            "amount",
            "must be a positive amount in minor units",
        ));
    }
    let existing: Option<Uuid> =
        sqlx::query_scalar("select id from payment where tenant_id = $1 and idempotency_key = $2")
            .bind(tx.tenant())
            .bind(key)
            .fetch_optional(tx.conn())
            .await?;
    if let Some(id) = existing {
        let payment = get(tx, id).await?;
        if payment.patron_id != patron_id
            || payment.venue_id != venue_id
            || payment.amount != amount
        {
            return Err(Error::IdempotencyKeyReused);
        }
        return Ok(payment);
    }
    patrons::get(tx, patron_id).await?;
    let venue = venues::get(tx, venue_id).await?;
    check_step(provider, amount, &venue.currency)?;
    let provider_key = format!("{}:{key}", tx.tenant());
    let id = payment_id_for(&provider_key);
    let intent = provider
        .create_intent(IntentRequest {
            payment_id: id,
            tenant_id: tx.tenant().0,
            amount,
            currency: &venue.currency,
            idempotency_key: &provider_key,
            off_session: None,
            manual_capture: false,
        })
        .await?;
    insert(
        tx,
        NewPayment {
            id,
            kind: "top_up",
            patron_id,
            venue_id: venue.id,
            session_id: None,
            amount,
            currency: &venue.currency,
            provider: provider.name(),
            reference: &intent.reference,
            key,
        },
    )
    .await?;
    let detail = serde_json::json!({ "amount": amount, "currency": venue.currency, "provider": provider.name() });
    audit::record(
        tx,
        actor,
        Entry {
            action: "payment.create",
            object_type: "payment",
            object_id: Some(id),
            detail,
        },
    )
    .await?;
    metrics::counter!("payments_intents_total", "provider" => provider.name()).increment(1);
    apply(tx, id, intent.status).await
}

pub(crate) struct NewPayment<'a> {
    pub id: Uuid,
    pub kind: &'static str,
    pub patron_id: Uuid,
    pub venue_id: Uuid,
    pub session_id: Option<Uuid>,
    pub amount: i64,
    pub currency: &'a str,
    pub provider: &'static str,
    pub reference: &'a str,
    pub key: &'a str,
}

pub(crate) async fn insert(tx: &mut TenantTx, p: NewPayment<'_>) -> Result<()> {
    let sql = format!(
        "insert into payment (tenant_id, id, kind, patron_id, venue_id, session_id, amount, currency, provider,
           provider_ref, idempotency_key)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) returning {COLUMNS}"
    );
    let payment: Payment = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(p.id)
        .bind(p.kind)
        .bind(p.patron_id)
        .bind(p.venue_id)
        .bind(p.session_id)
        .bind(p.amount)
        .bind(p.currency)
        .bind(p.provider)
        .bind(p.reference)
        .bind(p.key)
        .fetch_one(tx.conn())
        .await?;
    announce(tx, &payment, "payment.created");
    Ok(())
}

/// Tells live subscribers (the patron's app among them) that a payment was created or changed state.
fn announce(tx: &mut TenantTx, payment: &Payment, kind: &'static str) {
    tx.emit(
        crate::events::NewEvent::new(
            kind,
            serde_json::json!({
                "kind": payment.kind, "status": payment.status, "amount": payment.amount,
                "currency": payment.currency, "sessionId": payment.session_id,
                "failureReason": payment.failure_reason,
            }),
        )
        .venue(payment.venue_id)
        .subject(payment.id)
        .patron(Some(payment.patron_id)),
    );
}

/// Whether a payment in `current` state may move to what the provider now reports. The states form a lattice that
/// only climbs, so events delivered in any order converge: `confirmed` and `canceled` are final; `authorized`
/// (money held) moves only on to `confirmed` (captured) or `canceled` (released) — a late `failed` cannot take a
/// hold or a confirmed payment back; `failed` is not final, because the customer may retry the same intent and
/// succeed; `pending` is never reported over anything.
pub fn may_move(current: &str, reported: &ProviderStatus) -> bool {
    match (current, reported) {
        ("confirmed" | "canceled", _) | (_, ProviderStatus::Pending) => false,
        ("authorized", ProviderStatus::Failed(_) | ProviderStatus::Authorized) => false,
        ("pending" | "failed" | "authorized", _) => true,
        _ => false,
    }
}

/// Moves a payment to what the provider reports, as far as [`may_move`] allows (otherwise it changes nothing).
/// Confirming credits the wallet once.
pub async fn apply(tx: &mut TenantTx, id: Uuid, status: ProviderStatus) -> Result<Payment> {
    let payment = lock(tx, id).await?;
    if !may_move(&payment.status, &status) {
        if matches!(status, ProviderStatus::Failed(_)) && payment.status == "authorized" {
            tracing::info!(payment = %id, "a late failure does not undo an authorized hold");
        }
        return Ok(payment);
    }
    match status {
        ProviderStatus::Pending => return Ok(payment),
        ProviderStatus::Authorized => {
            sqlx::query(
                "update payment set status = 'authorized' where tenant_id = $1 and id = $2",
            )
            .bind(tx.tenant())
            .bind(id)
            .execute(tx.conn())
            .await?;
        }
        ProviderStatus::Succeeded => {
            // A top-up credits the wallet; a debt charge or a captured deposit pays the debt.
            let (purpose, amount, kind, memo) = match payment.kind.as_str() {
                "top_up" => (
                    Purpose::Wallet,
                    payment.amount,
                    "top_up_card",
                    "card top-up",
                ),
                "debt" => (
                    Purpose::Debt,
                    payment.amount,
                    "debt_payment",
                    "debt charged to the saved card",
                ),
                _ => (
                    Purpose::Debt,
                    payment.captured_amount,
                    "debt_payment",
                    "debt paid from the deposit hold",
                ),
            };
            if amount == 0 {
                // A hold succeeds only through our capture, which sets the amount first.
                return Ok(payment);
            }
            let patron = Owner::Patron(payment.patron_id);
            let clearing = ledger::account(
                tx,
                Owner::Venue(payment.venue_id),
                Purpose::Clearing,
                &payment.currency,
            )
            .await?;
            let mut entries = vec![(clearing, -amount)];
            if purpose == Purpose::Wallet {
                let wallet = ledger::account(tx, patron, purpose, &payment.currency).await?;
                entries.push((wallet, amount));
            } else {
                // The debt may have been paid since this charge was written (a released deposit, a give-back, a
                // hold captured meanwhile): it pays what is still owed, and the rest goes to the wallet rather
                // than leave the debt above zero, where nothing would ever spend it.
                let (to_debt, debt, wallet) =
                    ledger::debt_share(tx, payment.patron_id, &payment.currency, amount).await?;
                entries.push((debt, to_debt));
                entries.push((wallet, amount - to_debt));
            }
            ledger::post(
                tx,
                Journal {
                    key: format!("payment:{}:confirmed", payment.id),
                    kind,
                    memo: format!("{memo} ({})", payment.provider),
                    session_id: payment.session_id,
                    currency: &payment.currency,
                    entries,
                },
            )
            .await?;
            sqlx::query(
                "update payment set status = 'confirmed', confirmed_at = now(), failure_reason = null
                 where tenant_id = $1 and id = $2",
            )
                .bind(tx.tenant())
                .bind(id)
                .execute(tx.conn())
                .await?;
            if payment.kind == "debt" {
                sqlx::query(
                    "update debt_collection set collected = collected + $4
                     where tenant_id = $1 and patron_id = $2 and currency = $3",
                )
                .bind(tx.tenant())
                .bind(payment.patron_id)
                .bind(&payment.currency)
                .bind(amount)
                .execute(tx.conn())
                .await?;
            }
            metrics::counter!("payments_confirmed_total", "kind" => payment.kind.clone())
                .increment(1);
        }
        ProviderStatus::Failed(reason) => {
            sqlx::query("update payment set status = 'failed', failure_reason = $3 where tenant_id = $1 and id = $2")
                .bind(tx.tenant())
                .bind(id)
                .bind(&reason)
                .execute(tx.conn())
                .await?;
            metrics::counter!("payments_failed_total", "reason" => reason).increment(1);
        }
        ProviderStatus::Canceled => {
            sqlx::query("update payment set status = 'canceled' where tenant_id = $1 and id = $2")
                .bind(tx.tenant())
                .bind(id)
                .execute(tx.conn())
                .await?;
        }
    }
    let payment = get(tx, id).await?;
    announce(tx, &payment, "payment.changed");
    Ok(payment)
}

/// [`refresh`] for a member: one scoped to other venues than the payment's is told it does not exist.
pub async fn refresh_for(
    tx: &mut TenantTx,
    actor: &Actor,
    provider: &dyn PaymentProvider,
    id: Uuid,
) -> Result<Payment> {
    actor.check_venue(get(tx, id).await?.venue_id, "payment")?;
    refresh(tx, provider, id).await
}

/// The payment, after asking the provider about it if it is still pending.
pub async fn refresh(
    tx: &mut TenantTx,
    provider: &dyn PaymentProvider,
    id: Uuid,
) -> Result<Payment> {
    let payment = get(tx, id).await?;
    if payment.status != "pending" || payment.provider != provider.name() {
        return Ok(payment);
    }
    let status = provider
        .status(&payment.provider_ref, payment.amount, payment.created_at)
        .await?;
    apply(tx, id, status).await
}

/// Cancels a pending payment at the provider. A confirmed payment cannot be canceled (refund it instead).
pub async fn cancel(
    tx: &mut TenantTx,
    actor: &Actor,
    provider: &dyn PaymentProvider,
    id: Uuid,
) -> Result<Payment> {
    let payment = refresh_for(tx, actor, provider, id).await?;
    match payment.status.as_str() {
        "pending" => {
            provider.cancel(&payment.provider_ref).await?;
            let payment = apply(tx, id, ProviderStatus::Canceled).await?;
            audit::record(
                tx,
                actor,
                Entry {
                    action: "payment.cancel",
                    object_type: "payment",
                    object_id: Some(id),
                    detail: serde_json::json!({}),
                },
            )
            .await?;
            Ok(payment)
        }
        "canceled" => Ok(payment),
        other => Err(Error::Conflict(format!(
            "this payment is {other} and can no longer be canceled"
        ))),
    }
}

/// A refund of (part of) a confirmed card top-up.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Refund {
    pub id: Uuid,
    pub payment_id: Uuid,
    pub amount: i64,
    pub provider_ref: String,
    pub created_at: DateTime<Utc>,
}

/// Refunds `amount` of a confirmed top-up to the card, taking it back out of the wallet. `key` makes a retry
/// return the same refund; the wallet must still hold the amount.
pub async fn refund(
    tx: &mut TenantTx,
    actor: &Actor,
    provider: &dyn PaymentProvider,
    payment_id: Uuid,
    amount: i64,
    key: &str,
) -> Result<Refund> {
    let key = crate::idempotency::check_key(key)?;
    // Locked first, so a concurrent retry with the same key waits here and then finds the refund the first made.
    let payment = lock(tx, payment_id).await?;
    actor.check_venue(payment.venue_id, "payment")?;
    let existing: Option<Refund> = sqlx::query_as(
        "select id, payment_id, amount, provider_ref, created_at from refund
         where tenant_id = $1 and idempotency_key = $2",
    )
    .bind(tx.tenant())
    .bind(key)
    .fetch_optional(tx.conn())
    .await?;
    if let Some(done) = existing {
        if done.payment_id != payment_id || done.amount != amount {
            return Err(Error::IdempotencyKeyReused);
        }
        return Ok(done);
    }
    if payment.kind != "top_up" || payment.status != "confirmed" {
        return Err(Error::Conflict(
            "only a confirmed card top-up can be refunded".into(),
        ));
    }
    let disputed: bool = sqlx::query_scalar(
        "select exists (select 1 from payment_dispute
                        where tenant_id = $1 and payment_id = $2 and reinstated_at is null)",
    )
    .bind(tx.tenant())
    .bind(payment_id)
    .fetch_one(tx.conn())
    .await?;
    if disputed {
        return Err(Error::Conflict(
            "this payment is disputed: the card network returns the money, not a refund".into(),
        ));
    }
    let left = payment.amount - payment.refunded_amount;
    if !(1..=left).contains(&amount) {
        return Err(Error::validation(
            "amount",
            format!(
                "must be between 1 and the {} not yet refunded",
                crate::money::format(left, &payment.currency)
            ),
        ));
    }
    check_step(provider, amount, &payment.currency)?;
    let owner = Owner::Patron(payment.patron_id);
    let wallet = ledger::account(tx, owner, Purpose::Wallet, &payment.currency).await?;
    // Two refunds of two top-ups share the wallet: without the lock both could read the same balance and take it
    // twice. The payment row lock above only serialises refunds of one payment.
    ledger::lock(tx, &[wallet]).await?;
    let wallet_balance = ledger::balance(tx, owner, Purpose::Wallet, &payment.currency).await?;
    if wallet_balance < amount {
        return Err(Error::InsufficientFunds(format!(
            "the wallet holds only {}; a refund cannot take back money already spent",
            crate::money::format(wallet_balance, &payment.currency)
        )));
    }
    if provider.name() != payment.provider {
        return Err(Error::Conflict(format!(
            "this payment was made with the {} provider, which is not configured now",
            payment.provider
        )));
    }
    let id = Uuid::now_v7();
    let reference = provider
        .refund(
            &payment.provider_ref,
            amount,
            &payment.currency,
            &format!("{}:refund:{key}", tx.tenant()),
        )
        .await?;
    // The provider answers a retry under the same key with the refund it made the first time. If that try was
    // undone after the provider refunded, the refund's webhook may have booked it since: it is that refund.
    let booked: Option<Refund> = sqlx::query_as(
        "select id, payment_id, amount, provider_ref, created_at from refund
         where tenant_id = $1 and provider_ref = $2",
    )
    .bind(tx.tenant())
    .bind(&reference)
    .fetch_optional(tx.conn())
    .await?;
    if let Some(booked) = booked {
        return Ok(booked);
    }
    sqlx::query(
        "insert into refund (tenant_id, id, payment_id, amount, provider_ref, idempotency_key, created_by)
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(tx.tenant())
    .bind(id)
    .bind(payment_id)
    .bind(amount)
    .bind(&reference)
    .bind(key)
    .bind(actor.user_id)
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
    let clearing = ledger::account(
        tx,
        Owner::Venue(payment.venue_id),
        Purpose::Clearing,
        &payment.currency,
    )
    .await?;
    ledger::post(
        tx,
        Journal {
            key: format!("refund:{id}"),
            kind: "refund",
            memo: format!("refund to the card ({})", payment.provider),
            session_id: None,
            currency: &payment.currency,
            entries: vec![(wallet, -amount), (clearing, amount)],
        },
    )
    .await?;
    audit::record(
        tx,
        actor,
        Entry {
            action: "payment.refund",
            object_type: "payment",
            object_id: Some(payment_id),
            detail: serde_json::json!({ "refund_id": id, "amount": amount }),
        },
    )
    .await?;
    metrics::counter!("payments_refunds_total", "provider" => provider.name()).increment(1);
    sqlx::query_as(
        "select id, payment_id, amount, provider_ref, created_at from refund where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(id)
    .fetch_one(tx.conn())
    .await
    .map_err(Into::into)
}

/// The patron's payments, newest first: those made at `venues` when given (a member confined to some venues).
pub async fn list_for_patron(
    tx: &mut TenantTx,
    patron_id: Uuid,
    venues: Option<&[Uuid]>,
    limit: i64,
) -> Result<Vec<Payment>> {
    let sql = format!(
        "select {COLUMNS} from payment where tenant_id = $1 and patron_id = $2
           and ($4::uuid[] is null or venue_id = any($4))
         order by created_at desc, id desc limit $3"
    );
    Ok(sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(patron_id)
        .bind(limit.clamp(1, 500))
        .bind(venues)
        .fetch_all(tx.conn())
        .await?)
}

#[cfg(test)]
mod tests {
    use super::{may_move, ProviderStatus};

    #[test]
    fn payment_states_only_climb_whatever_order_the_provider_reports_in() {
        let failed = || ProviderStatus::Failed("card_declined".into());
        for final_state in ["confirmed", "canceled"] {
            for reported in [
                ProviderStatus::Pending,
                ProviderStatus::Authorized,
                ProviderStatus::Succeeded,
                failed(),
                ProviderStatus::Canceled,
            ] {
                assert!(
                    !may_move(final_state, &reported),
                    "{final_state} {reported:?}"
                );
            }
        }
        assert!(
            !may_move("authorized", &failed()),
            "a late failure keeps the hold"
        );
        assert!(!may_move("authorized", &ProviderStatus::Pending));
        assert!(may_move("authorized", &ProviderStatus::Succeeded));
        assert!(may_move("authorized", &ProviderStatus::Canceled));
        assert!(
            may_move("failed", &ProviderStatus::Succeeded),
            "a retried card"
        );
        assert!(may_move("pending", &failed()));
        assert!(may_move("pending", &ProviderStatus::Authorized));
        assert!(!may_move("pending", &ProviderStatus::Pending));
    }
}

//! Card payments that top up a patron's wallet, through a [`PaymentProvider`]: the dev emulator (default) or
//! Stripe. A payment is `pending` until the provider confirms it (a webhook, a status poll, or the dev emulator's
//! delay); confirming credits the wallet exactly once, and the terminal states never move back.

pub mod dev;
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
    Succeeded,
    Failed(String),
    Canceled,
}

/// A new payment at the provider.
#[derive(Debug, Clone)]
pub struct IntentRequest<'a> {
    pub payment_id: Uuid,
    pub tenant_id: Uuid,
    pub amount: i64,
    pub currency: &'a str,
    /// Sent to the provider as its idempotency key, so a retried create makes one intent.
    pub idempotency_key: &'a str,
}

/// The provider's side of a payment.
#[derive(Debug, Clone)]
pub struct ProviderIntent {
    pub reference: String,
    pub status: ProviderStatus,
}

/// A payment service provider.
#[async_trait::async_trait]
pub trait PaymentProvider: Send + Sync {
    fn name(&self) -> &'static str;
    async fn create_intent(&self, request: IntentRequest<'_>) -> Result<ProviderIntent>;
    /// The provider's current status of an intent created at `created_at`.
    async fn status(
        &self,
        reference: &str,
        amount: i64,
        created_at: DateTime<Utc>,
    ) -> Result<ProviderStatus>;
    async fn cancel(&self, reference: &str) -> Result<()>;
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Payment {
    pub id: Uuid,
    pub patron_id: Uuid,
    pub venue_id: Uuid,
    pub amount: i64,
    pub currency: String,
    /// `pending`, `confirmed`, `failed`, `canceled`.
    pub status: String,
    pub provider: String,
    pub provider_ref: String,
    pub failure_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub confirmed_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str =
    "id, patron_id, venue_id, amount, currency::text as currency, status, provider, provider_ref,
    failure_reason, created_at, confirmed_at";

pub async fn get(tx: &mut TenantTx, id: Uuid) -> Result<Payment> {
    let sql = format!("select {COLUMNS} from payment where tenant_id = $1 and id = $2");
    let p: Option<Payment> = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
    p.ok_or(Error::NotFound("payment"))
}

async fn lock(tx: &mut TenantTx, id: Uuid) -> Result<Payment> {
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
    let id = Uuid::now_v7();
    let intent = provider
        .create_intent(IntentRequest {
            payment_id: id,
            tenant_id: tx.tenant().0,
            amount,
            currency: &venue.currency,
            idempotency_key: &format!("{}:{key}", tx.tenant()),
        })
        .await?;
    sqlx::query(
        "insert into payment (tenant_id, id, patron_id, venue_id, amount, currency, provider, provider_ref, idempotency_key)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(tx.tenant())
    .bind(id)
    .bind(patron_id)
    .bind(venue.id)
    .bind(amount)
    .bind(&venue.currency)
    .bind(provider.name())
    .bind(&intent.reference)
    .bind(key)
    .execute(tx.conn())
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

/// Moves a payment to what the provider reports. `confirmed` and `canceled` are final: a late `failed` after
/// `confirmed` (events out of order) changes nothing. `failed` is not final, because the customer may retry the
/// same intent and succeed. Confirming credits the wallet once.
pub async fn apply(tx: &mut TenantTx, id: Uuid, status: ProviderStatus) -> Result<Payment> {
    let payment = lock(tx, id).await?;
    if matches!(payment.status.as_str(), "confirmed" | "canceled") {
        return Ok(payment);
    }
    match status {
        ProviderStatus::Pending => return Ok(payment),
        ProviderStatus::Succeeded => {
            let wallet = ledger::account(
                tx,
                Owner::Patron(payment.patron_id),
                Purpose::Wallet,
                &payment.currency,
            )
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
                    key: format!("payment:{}:confirmed", payment.id),
                    kind: "top_up_card",
                    memo: format!("card top-up ({})", payment.provider),
                    session_id: None,
                    currency: &payment.currency,
                    entries: vec![(wallet, payment.amount), (clearing, -payment.amount)],
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
            metrics::counter!("payments_confirmed_total").increment(1);
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
    get(tx, id).await
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
    let payment = refresh(tx, provider, id).await?;
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

//! A patron's saved card: what off-session debt charges, rental deposit holds and the patron app's card payments
//! (a start paid by card, a top-up) use.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{
    apply, insert, CardOnFile, IntentRequest, NewPayment, Payment, PaymentProvider, ProviderStatus,
    SaveCardRequest,
};
use crate::audit::{self, By, Entry};
use crate::db::TenantTx;
use crate::error::{Error, Result};
use crate::{patrons, venues};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Card {
    pub patron_id: Uuid,
    pub provider: String,
    pub customer_ref: String,
    pub payment_method_ref: String,
    pub brand: String,
    pub last4: String,
    pub created_at: DateTime<Utc>,
}

impl Card {
    pub fn on_file(&self) -> CardOnFile<'_> {
        CardOnFile {
            customer_ref: &self.customer_ref,
            payment_method_ref: &self.payment_method_ref,
        }
    }
}

/// The patron's saved card at `provider`, if any.
pub async fn get(tx: &mut TenantTx, patron_id: Uuid, provider: &str) -> Result<Option<Card>> {
    Ok(sqlx::query_as(
        "select patron_id, provider, customer_ref, payment_method_ref, brand, last4, created_at from patron_card
         where tenant_id = $1 and patron_id = $2 and provider = $3",
    )
    .bind(tx.tenant())
    .bind(patron_id)
    .bind(provider)
    .fetch_optional(tx.conn())
    .await?)
}

/// Saves `payment_method` (a token the patron's app got from the provider) as the patron's card, replacing any
/// other, and schedules collection of what the patron owes.
pub async fn save(
    tx: &mut TenantTx,
    by: impl Into<By<'_>>,
    provider: &dyn PaymentProvider,
    patron_id: Uuid,
    payment_method: &str,
) -> Result<Card> {
    let payment_method = payment_method.trim();
    if payment_method.is_empty() || payment_method.len() > 255 {
        return Err(Error::validation(
            "paymentMethod",
            "must be the payment method token from the provider",
        ));
    }
    let patron = patrons::get(tx, patron_id).await?;
    let existing = get(tx, patron_id, provider.name()).await?;
    let saved = provider
        .save_card(SaveCardRequest {
            tenant_id: tx.tenant().0,
            patron_id,
            patron_name: &patron.display_name,
            email: patron.email.as_deref(),
            customer_ref: existing.as_ref().map(|c| c.customer_ref.as_str()),
            payment_method,
        })
        .await?;
    sqlx::query(
        "insert into patron_card (tenant_id, patron_id, provider, customer_ref, payment_method_ref, brand, last4)
         values ($1, $2, $3, $4, $5, $6, $7)
         on conflict (tenant_id, patron_id) do update set provider = excluded.provider,
           customer_ref = excluded.customer_ref, payment_method_ref = excluded.payment_method_ref,
           brand = excluded.brand, last4 = excluded.last4, created_at = now()",
    )
    .bind(tx.tenant())
    .bind(patron_id)
    .bind(provider.name())
    .bind(&saved.customer_ref)
    .bind(&saved.payment_method_ref)
    .bind(&saved.brand)
    .bind(&saved.last4)
    .execute(tx.conn())
    .await?;
    // A new card gets a fresh set of attempts at whatever is owed.
    sqlx::query(
        "update debt_collection set status = 'due', attempts = 0, last_error = null, next_attempt_at = now()
         where tenant_id = $1 and patron_id = $2",
    )
    .bind(tx.tenant())
    .bind(patron_id)
    .execute(tx.conn())
    .await?;
    audit::record_by(
        tx,
        by.into(),
        Entry {
            action: "patron.save_card",
            object_type: "patron",
            object_id: Some(patron_id),
            detail: serde_json::json!({ "brand": saved.brand, "last4": saved.last4 }),
        },
    )
    .await?;
    get(tx, patron_id, provider.name())
        .await?
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("saved card not found")))
}

fn charge_key(key: &str) -> String {
    format!("card-charge:{key}")
}

/// Whether a card charge under `key` (as given to [`charge_to_wallet`]) is recorded.
pub(crate) async fn charged(tx: &mut TenantTx, key: &str) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "select exists (select 1 from payment where tenant_id = $1 and idempotency_key = $2)",
    )
    .bind(tx.tenant())
    .bind(charge_key(key))
    .fetch_one(tx.conn())
    .await?)
}

/// Charges `amount` to the patron's saved card now (off-session) and credits it to the wallet at `venue`: a card
/// top-up that needs no confirmation from the app. `key` names the charge at the provider and here, so a retry
/// makes no second charge and finds the same payment; the same key with another patron, venue or amount is
/// refused. A declined card answers `card_declined`.
pub async fn charge_to_wallet(
    tx: &mut TenantTx,
    by: By<'_>,
    provider: &dyn PaymentProvider,
    patron_id: Uuid,
    venue_id: Uuid,
    amount: i64,
    key: &str,
) -> Result<Payment> {
    if !(1..=crate::pricing::MAX_AMOUNT).contains(&amount) {
        return Err(Error::validation(
            "amount",
            "must be a positive amount in minor units",
        ));
    }
    let key = charge_key(key);
    let existing: Option<Uuid> =
        sqlx::query_scalar("select id from payment where tenant_id = $1 and idempotency_key = $2")
            .bind(tx.tenant())
            .bind(&key)
            .fetch_optional(tx.conn())
            .await?;
    if let Some(id) = existing {
        let payment = super::get(tx, id).await?;
        if (payment.patron_id, payment.venue_id, payment.amount) != (patron_id, venue_id, amount) {
            return Err(Error::IdempotencyKeyReused);
        }
        return settled(payment);
    }
    let venue = venues::get(tx, venue_id).await?;
    super::check_step(provider, amount, &venue.currency)?;
    let card = get(tx, patron_id, provider.name()).await?.ok_or_else(|| {
        Error::validation(
            "payWith",
            "no card is saved for this patron; save one first (saveMyCard)",
        )
    })?;
    // Hashed: our key may be longer than a provider accepts (Stripe: 255 characters).
    let provider_key = format!(
        "{}:card:{}",
        tx.tenant(),
        crate::idempotency::hex_sha256(&key)
    );
    let id = super::payment_id_for(&provider_key);
    let intent = provider
        .create_intent(IntentRequest {
            payment_id: id,
            tenant_id: tx.tenant().0,
            amount,
            currency: &venue.currency,
            idempotency_key: &provider_key,
            off_session: Some(card.on_file()),
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
            key: &key,
        },
    )
    .await?;
    let detail =
        serde_json::json!({ "amount": amount, "currency": venue.currency, "off_session": true });
    audit::record_by(
        tx,
        by,
        Entry {
            action: "payment.charge_card",
            object_type: "payment",
            object_id: Some(id),
            detail,
        },
    )
    .await?;
    let status = match intent.status {
        ProviderStatus::Pending => {
            // It would need the patron to confirm it in the app: not what an instant charge is for.
            provider.cancel(&intent.reference).await?;
            ProviderStatus::Failed("authentication_required".into())
        }
        other => other,
    };
    settled(apply(tx, id, status).await?)
}

/// A confirmed charge, or why it is not one.
fn settled(payment: Payment) -> Result<Payment> {
    match payment.status.as_str() {
        "confirmed" => Ok(payment),
        _ => Err(Error::CardDeclined(
            payment
                .failure_reason
                .unwrap_or_else(|| payment.status.clone()),
        )),
    }
}

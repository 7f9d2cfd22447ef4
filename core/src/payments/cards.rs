//! A patron's saved card: what off-session debt charges and rental deposit holds use.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{CardOnFile, PaymentProvider, SaveCardRequest};
use crate::audit::{self, Entry};
use crate::db::TenantTx;
use crate::error::{Error, Result};
use crate::model::Actor;
use crate::patrons;

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
    actor: &Actor,
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
    audit::record(
        tx,
        actor,
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

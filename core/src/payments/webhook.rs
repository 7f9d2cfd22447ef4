//! Stripe webhooks: the signature is checked over the raw body before anything is parsed; the event id is recorded
//! (in the tenant the payment belongs to) before any effect, so redeliveries are no-ops; effects go through
//! [`super::apply`], whose transitions make any delivery order converge.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use uuid::Uuid;

use super::ProviderStatus;
use crate::db::{Db, TenantId};
use crate::error::{Error, Result};

/// How old a signed timestamp may be (Stripe's default).
pub const TOLERANCE_SECS: i64 = 300;

/// Checks `Stripe-Signature: t=<unix>,v1=<hex hmac>[,v1=…]` against `HMAC-SHA256(secret, "<t>.<payload>")`.
pub fn verify(payload: &[u8], header: &str, secret: &str, now: i64) -> Result<()> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", s)) => signatures.extend(hex::decode(s).ok()),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(Error::InvalidSignature(
        "the Stripe-Signature header has no timestamp",
    ))?;
    if (now - timestamp).abs() > TOLERANCE_SECS {
        return Err(Error::InvalidSignature(
            "the signature's timestamp is outside the 300 s tolerance",
        ));
    }
    let valid = signatures.iter().any(|signature| {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
            return false;
        };
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(payload);
        mac.verify_slice(signature).is_ok()
    });
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidSignature("no v1 signature matches this body"))
    }
}

/// Signs a payload as Stripe does (for tests and tools that replay events).
pub fn sign(payload: &[u8], secret: &str, timestamp: i64) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

#[derive(Debug, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub data: EventData,
}

#[derive(Debug, Deserialize)]
pub struct EventData {
    pub object: EventObject,
}

#[derive(Debug, Deserialize)]
pub struct EventObject {
    #[serde(default)]
    pub metadata: std::collections::HashMap<String, String>,
    #[serde(default)]
    pub last_payment_error: Option<PaymentError>,
}

#[derive(Debug, Deserialize)]
pub struct PaymentError {
    pub code: Option<String>,
}

/// What handling an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Duplicate,
    /// Not a payment event of ours (another type, or no routing metadata); acknowledged so Stripe stops retrying.
    Ignored,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::Ignored => "ignored",
        }
    }
}

/// Routes a verified event to its tenant (from the metadata we set on the intent), records it, and applies it.
pub async fn handle(db: &Db, event: Event) -> Result<Outcome> {
    let status = match event.kind.as_str() {
        "payment_intent.succeeded" => ProviderStatus::Succeeded,
        "payment_intent.payment_failed" => ProviderStatus::Failed(
            event
                .data
                .object
                .last_payment_error
                .as_ref()
                .and_then(|e| e.code.clone())
                .unwrap_or_else(|| "payment_failed".into()),
        ),
        "payment_intent.canceled" => ProviderStatus::Canceled,
        "payment_intent.amount_capturable_updated" => ProviderStatus::Authorized,
        _ => return Ok(Outcome::Ignored),
    };
    let metadata = &event.data.object.metadata;
    let (Some(tenant), Some(payment)) = (
        metadata
            .get("tenant_id")
            .and_then(|t| t.parse::<Uuid>().ok()),
        metadata
            .get("payment_id")
            .and_then(|p| p.parse::<Uuid>().ok()),
    ) else {
        tracing::warn!(event = %event.id, "stripe event without our metadata");
        return Ok(Outcome::Ignored);
    };
    let mut tx = db.begin_tenant(TenantId(tenant)).await?;
    if super::get(&mut tx, payment).await.is_err() {
        tracing::warn!(event = %event.id, "stripe event for an unknown payment");
        return Ok(Outcome::Ignored);
    }
    let recorded: Option<String> = sqlx::query_scalar(
        "insert into webhook_event (tenant_id, provider, event_id, event_type) values ($1, 'stripe', $2, $3)
         on conflict do nothing returning event_id",
    )
    .bind(tenant)
    .bind(&event.id)
    .bind(&event.kind)
    .fetch_optional(tx.conn())
    .await?;
    if recorded.is_none() {
        return Ok(Outcome::Duplicate);
    }
    super::apply(&mut tx, payment, status).await?;
    tx.commit().await?;
    metrics::counter!("payments_webhook_received_total", "type" => event.kind).increment(1);
    Ok(Outcome::Applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_made_with_the_secret_verifies_and_anything_else_does_not() {
        let body = br#"{"id":"evt_1"}"#;
        let header = sign(body, "whsec_test", 1_700_000_000);
        assert!(verify(body, &header, "whsec_test", 1_700_000_100).is_ok());
        assert!(
            verify(body, &header, "whsec_other", 1_700_000_100).is_err(),
            "wrong secret"
        );
        assert!(
            verify(br#"{"id":"evt_2"}"#, &header, "whsec_test", 1_700_000_100).is_err(),
            "tampered body"
        );
        assert!(
            verify(body, &header, "whsec_test", 1_700_000_301).is_err(),
            "stale"
        );
        assert!(
            verify(body, "v1=00", "whsec_test", 1_700_000_000).is_err(),
            "no timestamp"
        );
        let two = format!("{header},v1=deadbeef");
        assert!(
            verify(body, &two, "whsec_test", 1_700_000_000).is_ok(),
            "any matching v1 counts"
        );
    }
}

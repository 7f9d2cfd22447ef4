//! Stripe webhooks: the signature is checked over the raw body before anything is parsed; the event id is recorded
//! (in the tenant the payment belongs to) before any effect, so redeliveries are no-ops; effects go through
//! [`super::apply`], whose transitions make any delivery order converge.

use chrono::Utc;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use uuid::Uuid;

use super::ProviderStatus;
use crate::db::{Db, TenantId};
use crate::error::{Error, Result};

/// The `v1` signatures of one header that are checked; more are ignored.
const MAX_SIGNATURES: usize = 4;

/// How old a signed timestamp may be (Stripe's default).
pub const TOLERANCE_SECS: i64 = 300;

/// Checks `Stripe-Signature: t=<unix>,v1=<hex hmac>[,v1=…]` against `HMAC-SHA256(secret, "<t>.<payload>")`.
pub fn verify(payload: &[u8], header: &str, secret: &str, now: i64) -> Result<()> {
    let mut timestamp = None;
    let mut signatures: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            // A SHA-256 MAC is 32 bytes; Stripe sends one or two (while a secret is rolled). Anything else, and any
            // beyond the first few, cannot be one of ours: the body is hashed once, however long the header.
            Some(("v1", s)) if s.len() == 64 && signatures.len() < MAX_SIGNATURES => {
                signatures.extend(hex::decode(s).ok())
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(Error::InvalidSignature(
        "the Stripe-Signature header has no timestamp",
    ))?;
    if now.abs_diff(timestamp) > TOLERANCE_SECS.unsigned_abs() {
        return Err(Error::InvalidSignature(
            "the signature's timestamp is outside the 300 s tolerance",
        ));
    }
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return Err(Error::InvalidSignature("no v1 signature matches this body"));
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    let expected = mac.finalize();
    // Compared in constant time (`CtOutput`'s equality).
    let valid = signatures.iter().any(|signature| {
        hmac::digest::CtOutput::<Hmac<Sha256>>::new(
            hmac::digest::generic_array::GenericArray::clone_from_slice(signature),
        ) == expected
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
    /// The intent's id at Stripe (`pi_…`), compared with the payment's stored reference (a refund's `re_…`, a
    /// dispute's `du_…`).
    #[serde(default)]
    pub id: Option<String>,
    /// Stripe's units and a lowercase ISO code, compared with the stored payment.
    #[serde(default)]
    pub amount: Option<i64>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub metadata: std::collections::HashMap<String, String>,
    #[serde(default)]
    pub last_payment_error: Option<PaymentError>,
    /// A refund's or a dispute's intent.
    #[serde(default)]
    pub payment_intent: Option<String>,
    /// A dispute's reason (`fraudulent`, `product_not_received`, …).
    #[serde(default)]
    pub reason: Option<String>,
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
    /// Not a payment event of ours (another type, no routing metadata, an unknown tenant, or a payment that was
    /// never recorded); acknowledged so Stripe stops retrying.
    Ignored,
    /// The event's intent id, amount or currency is not the stored payment's: nothing changed, the mismatch is
    /// logged and counted (`payments_webhook_mismatch_total`). Acknowledged: a redelivery would not match either.
    Mismatch,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::Ignored => "ignored",
            Self::Mismatch => "mismatch",
        }
    }
}

/// How long an event may name a payment we have not recorded before it is ignored rather than retried. Stripe
/// can announce an intent (an off-session charge succeeds at once) before the transaction that creates it
/// commits; answering `503` makes Stripe deliver it again. A UUIDv7 payment id tells its age: one that is still
/// missing an hour after it was made belongs to a transaction that rolled back and will never exist.
pub const UNKNOWN_PAYMENT_RETRY_SECS: u64 = 3600;

/// The first field in which `object` differs from the stored payment, if any.
fn mismatch(object: &EventObject, payment: &super::Payment) -> Option<&'static str> {
    if object.id.as_deref() != Some(payment.provider_ref.as_str()) {
        Some("id")
    } else if object.amount != super::stripe::to_stripe(payment.amount, &payment.currency).ok() {
        Some("amount")
    } else if !object
        .currency
        .as_deref()
        .is_some_and(|c| c.eq_ignore_ascii_case(&payment.currency))
    {
        Some("currency")
    } else {
        None
    }
}

/// Whether a payment's row may still be on its way (see [`UNKNOWN_PAYMENT_RETRY_SECS`]). A UUIDv7 id made within
/// that time may. A name-based id ([`super::payment_id_for`]: the payments made under a provider idempotency key)
/// always may: the try that made it was undone, and the next try makes the same payment under the same id, so
/// Stripe's redeliveries (for up to three days) find it. Other ids are never ours.
fn may_still_appear(payment: Uuid) -> bool {
    if payment.get_version() == Some(uuid::Version::Sha1) {
        return true;
    }
    let Some(made) = payment.get_timestamp() else {
        return false;
    };
    let (secs, _) = made.to_unix();
    let now = Utc::now().timestamp().max(0) as u64;
    now.saturating_sub(secs) < UNKNOWN_PAYMENT_RETRY_SECS
}

/// Which Stripe account sent a verified event: the platform's (`/webhooks/stripe`), or one tenant's own
/// (`/webhooks/stripe/{tenant id}`, verified with that tenant's signing secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    Platform,
    Tenant(Uuid),
}

/// Routes a verified event to its tenant (from the metadata we set on the intent), records it, and applies it. An
/// event moves only payments its sender made: the platform's endpoint the platform's payments, a tenant's endpoint
/// that tenant's `stripe:tenant` ones — so a tenant holding its own signing secret cannot confirm a payment the
/// platform's account was to take, nor another tenant's.
pub async fn handle(db: &Db, event: Event, sender: Sender) -> Result<Outcome> {
    let outside = match event.kind.as_str() {
        "refund.created" => Some(Outside::Refund),
        "charge.dispute.funds_withdrawn" => Some(Outside::DisputeWithdrawn),
        "charge.dispute.funds_reinstated" => Some(Outside::DisputeReinstated),
        _ => None,
    };
    if let Some(change) = outside {
        return by_intent(db, event, sender, change).await;
    }
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
    // Whether the sender's account made a payment recorded as made by `provider`.
    let tenant_made = |provider: &str| provider == super::accounts::TENANT_PROVIDER;
    let from_tenant = match sender {
        Sender::Platform => false,
        Sender::Tenant(own) if own == tenant => true,
        Sender::Tenant(_) => {
            tracing::warn!(event = %event.id, "stripe event at a tenant's endpoint names another tenant");
            return Ok(Outcome::Ignored);
        }
    };
    let mut tx = db.begin_tenant(TenantId(tenant)).await?;
    let stored = match super::get(&mut tx, payment).await {
        Ok(stored) => stored,
        Err(Error::NotFound(_)) => {
            let known_tenant: bool =
                sqlx::query_scalar("select exists (select 1 from tenant where id = $1)")
                    .bind(tenant)
                    .fetch_one(tx.conn())
                    .await?;
            if known_tenant && may_still_appear(payment) {
                tracing::warn!(event = %event.id, %payment, "stripe event for a payment not recorded yet; asking for a retry");
                metrics::counter!("payments_webhook_retry_total").increment(1);
                return Err(Error::RetryLater(
                    "the payment this event names is not recorded yet; deliver it again later",
                ));
            }
            tracing::warn!(event = %event.id, %payment, "stripe event for an unknown payment");
            return Ok(Outcome::Ignored);
        }
        Err(other) => return Err(other),
    };
    if tenant_made(&stored.provider) != from_tenant {
        tracing::warn!(event = %event.id, %payment, provider = stored.provider, "stripe event from an account that did not make the payment");
        metrics::counter!("payments_webhook_mismatch_total", "field" => "account").increment(1);
        return Ok(Outcome::Mismatch);
    }
    if let Some(field) = mismatch(&event.data.object, &stored) {
        // Nothing is recorded or changed: an event that does not describe the payment it names must not move it.
        tracing::error!(event = %event.id, %payment, field, "stripe event does not match the stored payment");
        metrics::counter!("payments_webhook_mismatch_total", "field" => field).increment(1);
        return Ok(Outcome::Mismatch);
    }
    if !first_delivery(&mut tx, &event).await? {
        return Ok(Outcome::Duplicate);
    }
    super::apply(&mut tx, payment, status).await?;
    tx.commit().await?;
    metrics::counter!("payments_webhook_received_total", "type" => event.kind).increment(1);
    Ok(Outcome::Applied)
}

/// Records the event's id in the transaction's tenant; false if it was recorded before (a redelivery).
async fn first_delivery(tx: &mut crate::db::TenantTx, event: &Event) -> Result<bool> {
    let recorded: Option<String> = sqlx::query_scalar(
        "insert into webhook_event (tenant_id, provider, event_id, event_type) values ($1, 'stripe', $2, $3)
         on conflict do nothing returning event_id",
    )
    .bind(tx.tenant())
    .bind(&event.id)
    .bind(&event.kind)
    .fetch_optional(tx.conn())
    .await?;
    Ok(recorded.is_some())
}

/// Money Stripe moved on a payment without an intent event: a refund (ours, or one made in Stripe's dashboard), a
/// dispute's funds withdrawn or reinstated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outside {
    Refund,
    DisputeWithdrawn,
    DisputeReinstated,
}

/// A refund or a dispute. It names the intent but carries none of our metadata: the payment is found by its
/// reference among those the sender's account made (the platform's, or the sending tenant's own), then handled in
/// its tenant like any event (recorded once, amounts in Stripe's units). An event about a payment not confirmed here
/// yet, or a reinstatement before its withdrawal, asks Stripe to deliver it again later.
async fn by_intent(db: &Db, event: Event, sender: Sender, change: Outside) -> Result<Outcome> {
    let object = &event.data.object;
    let (Some(reference), Some(intent)) = (object.id.as_deref(), object.payment_intent.as_deref())
    else {
        tracing::warn!(event = %event.id, "stripe refund or dispute event without its id or intent");
        return Ok(Outcome::Ignored);
    };
    let provider = match sender {
        Sender::Platform => "stripe",
        Sender::Tenant(_) => super::accounts::TENANT_PROVIDER,
    };
    let Some((tenant, payment)) = db.system().payment_by_reference(provider, intent).await? else {
        tracing::warn!(event = %event.id, intent, "stripe refund or dispute of an intent that is not ours");
        return Ok(Outcome::Ignored);
    };
    if matches!(sender, Sender::Tenant(own) if own != tenant.0) {
        tracing::warn!(event = %event.id, "stripe event at a tenant's endpoint about another tenant's payment");
        return Ok(Outcome::Ignored);
    }
    let mut tx = db.begin_tenant(tenant).await?;
    let stored = super::get(&mut tx, payment).await?;
    if !object
        .currency
        .as_deref()
        .is_some_and(|c| c.eq_ignore_ascii_case(&stored.currency))
    {
        tracing::error!(event = %event.id, %payment, "stripe refund or dispute in another currency than its payment");
        metrics::counter!("payments_webhook_mismatch_total", "field" => "currency").increment(1);
        return Ok(Outcome::Mismatch);
    }
    let amount = super::stripe::from_stripe(object.amount.unwrap_or(0), &stored.currency);
    if change != Outside::DisputeReinstated && amount <= 0 {
        tracing::warn!(event = %event.id, %payment, "stripe refund or dispute without an amount");
        return Ok(Outcome::Ignored);
    }
    if stored.status != "confirmed" {
        // Stripe refunds or disputes only what it took: the payment's success is on its way here.
        return Err(Error::RetryLater(
            "the payment this event is about is not confirmed here yet; deliver it again later",
        ));
    }
    if !first_delivery(&mut tx, &event).await? {
        return Ok(Outcome::Duplicate);
    }
    let booked = match change {
        Outside::Refund => super::outside::refunded(&mut tx, payment, reference, amount).await?,
        Outside::DisputeWithdrawn => {
            let reason: String = object
                .reason
                .as_deref()
                .unwrap_or("unknown")
                .chars()
                .take(100)
                .collect();
            super::outside::dispute_withdrawn(&mut tx, payment, reference, amount, &reason).await?
        }
        Outside::DisputeReinstated => {
            match super::outside::dispute_reinstated(&mut tx, payment, reference).await? {
                Some(booked) => booked,
                None => {
                    return Err(Error::RetryLater(
                        "the dispute whose funds were reinstated has no withdrawal here yet; deliver it again later",
                    ))
                }
            }
        }
    };
    tx.commit().await?;
    tracing::info!(event = %event.id, %payment, booked, ?change, "stripe moved money on a payment");
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
        let rolled = format!("t=1700000000,v1={},{}", "ab".repeat(32), &header[13..]);
        assert!(
            verify(body, &rolled, "whsec_test", 1_700_000_000).is_ok(),
            "the second of two (a secret being rolled) counts: {rolled}"
        );
        assert!(
            verify(body, &header, "whsec_test", i64::MIN).is_err(),
            "a timestamp far away is refused, not overflowed"
        );
    }

    #[test]
    fn a_header_of_many_signatures_checks_only_the_first_few_well_formed_ones() {
        let body = br#"{"id":"evt_1"}"#;
        let good = sign(body, "whsec_test", 1_700_000_000);
        let junk = format!(",v1={}", "0".repeat(64)).repeat(50_000);
        let empties = ",v1=".repeat(50_000);
        // Empty and malformed entries are skipped and do not take a place; the good one after them still counts.
        assert!(verify(
            body,
            &format!("{good}{empties}"),
            "whsec_test",
            1_700_000_000
        )
        .is_ok());
        assert!(verify(
            body,
            &format!("t=1700000000{empties},{}", &good[13..]),
            "whsec_test",
            1_700_000_000
        )
        .is_ok());
        // A good one behind thousands of well-formed wrong ones is not looked at.
        assert!(verify(
            body,
            &format!("t=1700000000{junk},{}", &good[13..]),
            "whsec_test",
            1_700_000_000
        )
        .is_err());
    }
}

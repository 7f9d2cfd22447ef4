//! The Stripe provider, on async-stripe. Every intent carries our `tenant_id` and `payment_id` in its metadata
//! (the webhook routes on them) and every creating call sends an idempotency key, so a retried step never makes a
//! second intent, capture or refund. The API base URL is a setting: tests run this code against a local fake.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use stripe::{Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_core::customer::CreateCustomer;
use stripe_core::payment_intent::{
    CancelPaymentIntent, CapturePaymentIntent, CreatePaymentIntent, CreatePaymentIntentOffSession,
    ListPaymentIntent, RetrievePaymentIntent,
};
use stripe_core::refund::CreateRefund;
use stripe_core::{PaymentIntent, PaymentIntentCaptureMethod, PaymentIntentStatus};
use stripe_payment::payment_method::AttachPaymentMethod;
use stripe_types::RangeQueryTs;
use uuid::Uuid;

use super::{
    IntentRequest, PaymentProvider, ProviderIntent, ProviderStatus, SaveCardRequest, SavedCard,
};
use crate::error::{Error, Result};

pub struct StripeProvider {
    client: Client,
    /// `stripe` for the platform's account, `stripe:tenant` for a tenant's own (see [`super::accounts`]).
    name: &'static str,
}

impl StripeProvider {
    /// `base_url` is Stripe's (`https://api.stripe.com/`) or a fake's.
    pub fn new(secret_key: &str, base_url: &str, timeout: Duration) -> Result<Self> {
        let client = ClientBuilder::new(secret_key)
            .url(base_url)
            .timeout(timeout)
            .app_info("switchyard", Some(env!("CARGO_PKG_VERSION").into()), None)
            .build()
            .map_err(|e| Error::Internal(anyhow::anyhow!("stripe client: {e}")))?;
        Ok(Self {
            client,
            name: "stripe",
        })
    }

    /// The same, speaking for a tenant's own Stripe account: its payments and cards are recorded as
    /// `stripe:tenant`, so they are never looked up, refreshed or refunded through another account.
    pub fn for_tenant(mut self) -> Self {
        self.name = super::accounts::TENANT_PROVIDER;
        self
    }
}

/// Pages of 100 intents [`PaymentProvider::find_intent`] reads at most before it gives up (an error, not "none").
const PAGES_SEARCHED: usize = 50;

fn key(value: &str) -> Result<RequestStrategy> {
    IdempotencyKey::new(value)
        .map(RequestStrategy::Idempotent)
        .map_err(|e| Error::Internal(anyhow::anyhow!("idempotency key: {e}")))
}

/// A card error is the card network's answer; an idempotency error says the key was used before for another
/// request (a declined top-up tried again with the same key after the patron saved another card: Stripe keeps the
/// key with its first answer, so the retry needs a new key, as `idempotency_key_reused` tells the client); anything
/// else means Stripe could not do it now.
fn failure(e: StripeError) -> Error {
    match e {
        StripeError::Stripe(api, _) if api.type_.as_str() == "card_error" => {
            Error::CardDeclined(decline_reason(&api))
        }
        StripeError::Stripe(api, _) if api.type_.as_str() == "idempotency_error" => {
            tracing::warn!(message = ?api.message, "stripe refused a key used before with other parameters");
            Error::IdempotencyKeyReused
        }
        other => Error::ProviderUnavailable(anyhow::anyhow!("stripe: {other}")),
    }
}

fn decline_reason(api: &stripe::ApiErrors) -> String {
    api.decline_code
        .clone()
        .or_else(|| api.code.as_ref().map(|c| c.as_str().to_owned()))
        .unwrap_or_else(|| "card_declined".into())
}

fn status_of(intent: &PaymentIntent) -> ProviderStatus {
    match &intent.status {
        PaymentIntentStatus::Succeeded => ProviderStatus::Succeeded,
        PaymentIntentStatus::RequiresCapture => ProviderStatus::Authorized,
        PaymentIntentStatus::Canceled => ProviderStatus::Canceled,
        // A failed attempt returns the intent to `requires_payment_method` with the error attached.
        PaymentIntentStatus::RequiresPaymentMethod => match &intent.last_payment_error {
            Some(error) => ProviderStatus::Failed(decline_reason(error)),
            None => ProviderStatus::Pending,
        },
        _ => ProviderStatus::Pending,
    }
}

/// Currencies Stripe writes in whole units, whatever ISO 4217 says (it gives MGA two minor digits).
const WHOLE_UNITS: &[&str] = &[
    "BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV",
    "XAF", "XOF", "XPF",
];

/// How Stripe writes amounts of a currency: its number of decimals, and the step its amounts must be multiples
/// of. Stripe keeps two decimals for ISK (ISO has none) but takes only whole krona, and takes three-decimal
/// currencies only in tens.
fn stripe_units(code: &str) -> (u32, i64) {
    let code = code.to_ascii_uppercase();
    let code = code.as_str();
    if WHOLE_UNITS.contains(&code) {
        (0, 1)
    } else if code == "ISK" {
        (2, 100)
    } else if crate::money::minor_units(code) == Some(3) {
        (3, 10)
    } else {
        (2, 1)
    }
}

/// The platform's minor-unit digits of a currency (ISO 4217; `code` in either case).
fn iso_digits(code: &str) -> u32 {
    u32::from(crate::money::minor_units(&code.to_ascii_uppercase()).unwrap_or(2))
}

/// The smallest amount, in the platform's minor units of `code`, that Stripe charges, holds, captures or refunds:
/// every amount sent is a multiple (100 for MGA, 10 for KWD, 1 for EUR, JPY or ISK).
pub(crate) fn step(code: &str) -> i64 {
    let (digits, step) = stripe_units(code);
    (step * 10i64.pow(iso_digits(code)) / 10i64.pow(digits)).max(1)
}

/// An amount in the platform's minor units (ISO 4217; `code` in either case) as Stripe writes it: `1500` ISK is `150000`, `100000` MGA
/// (1,000.00 ariary) is `1000`. An amount that is not a multiple of [`step`] is refused.
pub(crate) fn to_stripe(amount: i64, code: &str) -> Result<i64> {
    super::multiple_of(step(code), amount, code)?;
    let (digits, iso) = (stripe_units(code).0, iso_digits(code));
    Ok(if digits >= iso {
        amount * 10i64.pow(digits - iso)
    } else {
        amount / 10i64.pow(iso - digits)
    })
}

/// An amount as Stripe writes it, in the platform's minor units (a fraction of a minor unit, which Stripe does not
/// take, is dropped; an amount beyond `i64` is the largest one).
pub(crate) fn from_stripe(amount: i64, code: &str) -> i64 {
    let (digits, iso) = (stripe_units(code).0, iso_digits(code));
    if digits >= iso {
        amount / 10i64.pow(digits - iso)
    } else {
        amount.saturating_mul(10i64.pow(iso - digits))
    }
}

fn currency(code: &str) -> Result<stripe_types::Currency> {
    code.to_ascii_lowercase()
        .parse()
        .map_err(|_| Error::validation("currency", "is not a currency Stripe knows"))
}

#[async_trait::async_trait]
impl PaymentProvider for StripeProvider {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn save_card(&self, request: SaveCardRequest<'_>) -> Result<SavedCard> {
        let customer = match request.customer_ref {
            Some(customer) => customer.to_owned(),
            None => {
                let metadata = HashMap::from([
                    ("tenant_id".to_owned(), request.tenant_id.to_string()),
                    ("patron_id".to_owned(), request.patron_id.to_string()),
                ]);
                let mut create = CreateCustomer::new()
                    .name(request.patron_name)
                    .metadata(metadata);
                if let Some(email) = request.email {
                    create = create.email(email);
                }
                let strategy = key(&format!(
                    "customer:{}:{}",
                    request.tenant_id, request.patron_id
                ))?;
                let customer = create
                    .customize()
                    .request_strategy(strategy)
                    .send(&self.client)
                    .await
                    .map_err(failure)?;
                customer.id.to_string()
            }
        };
        let method = AttachPaymentMethod::new(request.payment_method)
            .customer(customer.as_str())
            .send(&self.client)
            .await
            .map_err(failure)?;
        let (brand, last4) = method
            .card
            .map(|c| (c.brand, c.last4))
            .unwrap_or_else(|| ("card".into(), String::new()));
        Ok(SavedCard {
            customer_ref: customer,
            payment_method_ref: method.id.to_string(),
            brand,
            last4,
        })
    }

    async fn create_intent(&self, request: IntentRequest<'_>) -> Result<ProviderIntent> {
        let metadata = HashMap::from([
            ("tenant_id".to_owned(), request.tenant_id.to_string()),
            ("payment_id".to_owned(), request.payment_id.to_string()),
        ]);
        let amount = to_stripe(request.amount, request.currency)?;
        let mut create =
            CreatePaymentIntent::new(amount, currency(request.currency)?).metadata(metadata);
        if request.manual_capture {
            create = create.capture_method(PaymentIntentCaptureMethod::Manual);
        }
        if let Some(card) = request.off_session {
            create = create
                .customer(card.customer_ref)
                .payment_method(card.payment_method_ref)
                .off_session(CreatePaymentIntentOffSession::Bool(true))
                .confirm(true);
        }
        let sent = create
            .customize()
            .request_strategy(key(request.idempotency_key)?)
            .send(&self.client)
            .await;
        match sent {
            Ok(intent) => Ok(ProviderIntent {
                reference: intent.id.to_string(),
                status: status_of(&intent),
            }),
            // An off-session charge the card network declines: Stripe answers 402 with the failed intent.
            Err(StripeError::Stripe(api, _)) if api.type_.as_str() == "card_error" => {
                let reason = decline_reason(&api);
                match &api.payment_intent {
                    Some(intent) => Ok(ProviderIntent {
                        reference: intent.id.to_string(),
                        status: ProviderStatus::Failed(reason),
                    }),
                    None => Err(Error::CardDeclined(reason)),
                }
            }
            Err(other) => Err(failure(other)),
        }
    }

    async fn find_intent(
        &self,
        customer_ref: &str,
        payment_id: Uuid,
        created_since: DateTime<Utc>,
    ) -> Result<Option<ProviderIntent>> {
        let payment_id = payment_id.to_string();
        let mut list = ListPaymentIntent::new()
            .customer(customer_ref)
            .created(RangeQueryTs::gte(created_since.timestamp()))
            .limit(100);
        // Newest first; a customer's intents since one charge are a page or a few. Never "none" for a search not
        // finished: that would send the charge again.
        for _ in 0..PAGES_SEARCHED {
            let page = list.send(&self.client).await.map_err(failure)?;
            let found = page
                .data
                .iter()
                .find(|i| i.metadata.get("payment_id") == Some(&payment_id));
            if let Some(intent) = found {
                return Ok(Some(ProviderIntent {
                    reference: intent.id.to_string(),
                    status: status_of(intent),
                }));
            }
            match page.data.last() {
                Some(last) if page.has_more => list = list.starting_after(last.id.to_string()),
                _ => return Ok(None),
            }
        }
        Err(Error::ProviderUnavailable(anyhow::anyhow!(
            "stripe: more than {} intents of customer {customer_ref} to search for payment {payment_id}",
            PAGES_SEARCHED * 100
        )))
    }

    async fn status(
        &self,
        reference: &str,
        _amount: i64,
        _created_at: DateTime<Utc>,
    ) -> Result<ProviderStatus> {
        let intent = RetrievePaymentIntent::new(reference)
            .send(&self.client)
            .await
            .map_err(failure)?;
        Ok(status_of(&intent))
    }

    fn step(&self, currency: &str) -> i64 {
        step(currency)
    }

    async fn capture(
        &self,
        reference: &str,
        amount: i64,
        currency: &str,
        idempotency_key: &str,
    ) -> Result<i64> {
        let intent = CapturePaymentIntent::new(reference)
            .amount_to_capture(to_stripe(amount, currency)?)
            .customize()
            .request_strategy(key(idempotency_key)?)
            .send(&self.client)
            .await
            .map_err(failure)?;
        Ok(from_stripe(
            intent.amount_received,
            &intent.currency.to_string(),
        ))
    }

    async fn received(&self, reference: &str) -> Result<Option<i64>> {
        let intent = RetrievePaymentIntent::new(reference)
            .send(&self.client)
            .await
            .map_err(failure)?;
        Ok(match intent.status {
            PaymentIntentStatus::Succeeded => Some(from_stripe(
                intent.amount_received,
                &intent.currency.to_string(),
            )),
            PaymentIntentStatus::Canceled => Some(0),
            _ => None,
        })
    }

    async fn cancel(&self, reference: &str) -> Result<()> {
        CancelPaymentIntent::new(reference)
            .send(&self.client)
            .await
            .map_err(failure)?;
        Ok(())
    }

    async fn refund(
        &self,
        reference: &str,
        amount: i64,
        currency: &str,
        idempotency_key: &str,
    ) -> Result<String> {
        let refund = CreateRefund::new()
            .payment_intent(reference)
            .amount(to_stripe(amount, currency)?)
            .customize()
            .request_strategy(key(idempotency_key)?)
            .send(&self.client)
            .await
            .map_err(failure)?;
        Ok(refund.id.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_written_as_stripe_writes_them() {
        assert_eq!(to_stripe(1250, "EUR").ok(), Some(1250));
        assert_eq!(to_stripe(500, "JPY").ok(), Some(500));
        // ISK: no minor unit in ISO, two decimals at Stripe.
        assert_eq!(to_stripe(1500, "ISK").ok(), Some(150_000));
        assert_eq!(from_stripe(150_000, "isk"), 1500);
        // MGA: two minor digits in ISO, whole ariary at Stripe.
        assert_eq!(to_stripe(100_000, "MGA").ok(), Some(1000));
        assert_eq!(from_stripe(1000, "mga"), 100_000);
        assert!(to_stripe(100_050, "MGA").is_err());
        // Three decimals, in tens.
        assert_eq!(to_stripe(1240, "KWD").ok(), Some(1240));
        assert!(to_stripe(1235, "KWD").is_err());
        assert_eq!(from_stripe(1240, "kwd"), 1240);
        assert_eq!(to_stripe(1500, "isk").ok(), Some(150_000));
        assert_eq!(step("kwd"), 10);
    }

    #[test]
    fn steps_are_in_the_platforms_minor_units() {
        assert_eq!(step("EUR"), 1);
        assert_eq!(step("ISK"), 1);
        assert_eq!(step("JPY"), 1);
        assert_eq!(step("MGA"), 100);
        assert_eq!(step("KWD"), 10);
        assert_eq!(step("BHD"), 10);
    }

    #[test]
    fn a_refused_step_names_the_step() {
        let e = to_stripe(1235, "KWD").unwrap_err().to_string();
        assert!(e.contains("0.010 KWD"), "{e}");
    }
}

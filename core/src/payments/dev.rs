//! The dev payment provider (the default): an emulator that needs no network. It confirms a payment once
//! `confirm_after` has passed since it was created (seed 003: "auto-confirmation after 2 seconds"), and declines
//! documented test amounts at once, like a card network would:
//!
//! | amount ends in | outcome |
//! |---|---|
//! | `…02` (e.g. 1002) | `card_declined` |
//! | `…95` (e.g. 995) | `insufficient_funds` |
//! | anything else | confirmed after the delay |
//!
//! Saved cards are the payment-method tokens a patron's app would get from the provider:
//!
//! | token | card |
//! |---|---|
//! | `pm_card_chargeDeclined` | saves, but every charge and hold on it is declined (`card_declined`) |
//! | any other `pm_…` (e.g. `pm_card_visa`) | saves as a Visa ending 4242; off-session charges and holds succeed at once (the amount rules above still apply) |

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::{
    IntentRequest, PaymentProvider, ProviderIntent, ProviderStatus, SaveCardRequest, SavedCard,
};
use crate::error::{Error, Result};

/// The test card whose charges are all declined.
pub const DECLINING_CARD: &str = "pm_card_chargeDeclined";

pub struct DevProvider {
    pub confirm_after: Duration,
}

impl DevProvider {
    fn outcome(amount: i64) -> Option<&'static str> {
        match amount % 100 {
            2 => Some("card_declined"),
            95 => Some("insufficient_funds"),
            _ => None,
        }
    }
}

#[async_trait::async_trait]
impl PaymentProvider for DevProvider {
    fn name(&self) -> &'static str {
        "dev"
    }

    async fn save_card(&self, request: SaveCardRequest<'_>) -> Result<SavedCard> {
        if !request.payment_method.starts_with("pm_") {
            return Err(Error::CardDeclined("invalid_payment_method".into()));
        }
        Ok(SavedCard {
            customer_ref: request
                .customer_ref
                .map(str::to_owned)
                .unwrap_or_else(|| format!("dev_cus_{}", request.patron_id.simple())),
            payment_method_ref: request.payment_method.to_owned(),
            brand: "visa".into(),
            last4: "4242".into(),
        })
    }

    async fn create_intent(&self, request: IntentRequest<'_>) -> Result<ProviderIntent> {
        let declined = request
            .off_session
            .is_some_and(|card| card.payment_method_ref == DECLINING_CARD);
        let status = match Self::outcome(request.amount) {
            _ if declined => ProviderStatus::Failed("card_declined".into()),
            Some(reason) => ProviderStatus::Failed(reason.into()),
            None if request.manual_capture => ProviderStatus::Authorized,
            None if request.off_session.is_some() => ProviderStatus::Succeeded,
            None if self.confirm_after <= Duration::zero() => ProviderStatus::Succeeded,
            None => ProviderStatus::Pending,
        };
        Ok(ProviderIntent {
            reference: format!("dev_{}", Uuid::new_v4().simple()),
            status,
        })
    }

    /// The emulator keeps no intents: a charge sent again is made again (as its amount says).
    async fn find_intent(
        &self,
        _customer_ref: &str,
        _payment_id: Uuid,
        _created_since: DateTime<Utc>,
    ) -> Result<Option<ProviderIntent>> {
        Ok(None)
    }

    async fn status(
        &self,
        _reference: &str,
        amount: i64,
        created_at: DateTime<Utc>,
    ) -> Result<ProviderStatus> {
        Ok(match Self::outcome(amount) {
            Some(reason) => ProviderStatus::Failed(reason.into()),
            None if Utc::now() >= created_at + self.confirm_after => ProviderStatus::Succeeded,
            None => ProviderStatus::Pending,
        })
    }

    async fn capture(
        &self,
        _reference: &str,
        amount: i64,
        _currency: &str,
        _key: &str,
    ) -> Result<i64> {
        Ok(amount)
    }

    async fn received(&self, _reference: &str) -> Result<Option<i64>> {
        // The emulator keeps no intents: a capture it was asked for is the one the database records.
        Ok(None)
    }

    async fn cancel(&self, _reference: &str) -> Result<()> {
        Ok(())
    }

    async fn refund(
        &self,
        _reference: &str,
        _amount: i64,
        _currency: &str,
        _key: &str,
    ) -> Result<String> {
        Ok(format!("dev_re_{}", Uuid::new_v4().simple()))
    }
}

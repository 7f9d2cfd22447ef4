//! The dev payment provider (the default): an emulator that needs no network. It confirms a payment once
//! `confirm_after` has passed since it was created (seed 003: "auto-confirmation after 2 seconds"), and declines
//! documented test amounts at once, like a card network would:
//!
//! | amount ends in | outcome |
//! |---|---|
//! | `…02` (e.g. 1002) | `card_declined` |
//! | `…95` (e.g. 995) | `insufficient_funds` |
//! | anything else | confirmed after the delay |

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::{IntentRequest, PaymentProvider, ProviderIntent, ProviderStatus};
use crate::error::Result;

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

    async fn create_intent(&self, request: IntentRequest<'_>) -> Result<ProviderIntent> {
        let status = match Self::outcome(request.amount) {
            Some(reason) => ProviderStatus::Failed(reason.into()),
            None if self.confirm_after <= Duration::zero() => ProviderStatus::Succeeded,
            None => ProviderStatus::Pending,
        };
        Ok(ProviderIntent {
            reference: format!("dev_{}", Uuid::new_v4().simple()),
            status,
        })
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

    async fn cancel(&self, _reference: &str) -> Result<()> {
        Ok(())
    }
}

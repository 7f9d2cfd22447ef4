//! A tenant's own payment provider account: an owner stores the venue business's Stripe keys (server-side, sealed
//! with `SECRETS_KEY`, see [`crate::secrets`]) and from then on its patrons' top-ups, saved cards, deposit holds
//! and debt charges go through that account instead of the platform's. [`Providers`] picks the provider for a
//! tenant; payments and cards made through a tenant's account are recorded as provider [`TENANT_PROVIDER`], so
//! earlier ones stay with the account that made them (a saved card of the platform's account is not charged
//! through the tenant's, and is saved again by the patron).
//!
//! The tenant's webhook endpoint is `/webhooks/stripe/{tenant id}`, verified with its own signing secret.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::stripe::StripeProvider;
use super::PaymentProvider;
use crate::db::TenantTx;
use crate::error::{Error, Result};
use crate::model::{Actor, Role};
use crate::secrets::Sealer;

/// How payments and cards made through a tenant's own Stripe account are recorded.
pub const TENANT_PROVIDER: &str = "stripe:tenant";

/// Where tenants' own accounts are reached, and the key that seals their secrets.
#[derive(Debug, Clone)]
pub struct AccountSettings {
    /// `STRIPE_API_BASE` (Stripe's, or a fake's in tests).
    pub api_base: String,
    /// `STRIPE_TIMEOUT_MS`.
    pub timeout: Duration,
    /// `SECRETS_KEY`; without it no tenant can store keys (and none stored can be used).
    pub sealer: Option<Arc<Sealer>>,
}

impl Default for AccountSettings {
    fn default() -> Self {
        Self {
            api_base: "https://api.stripe.com/".into(),
            timeout: Duration::from_secs(10),
            sealer: None,
        }
    }
}

impl AccountSettings {
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let api_base = var("STRIPE_API_BASE").unwrap_or_else(|| "https://api.stripe.com/".into());
        let timeout = match var("STRIPE_TIMEOUT_MS") {
            None => Duration::from_secs(10),
            Some(v) => Duration::from_millis(
                v.parse::<u64>()
                    .map_err(|_| {
                        anyhow::anyhow!("STRIPE_TIMEOUT_MS must be a whole number of milliseconds")
                    })?
                    .max(1),
            ),
        };
        let sealer = var("SECRETS_KEY")
            .map(|k| Sealer::from_base64(&k).map(Arc::new))
            .transpose()?;
        Ok(Self {
            api_base,
            timeout,
            sealer,
        })
    }
}

/// A tenant's account client, with the `updated_at` of the keys it was made from.
type Client = (DateTime<Utc>, Arc<dyn PaymentProvider>);

/// The providers of a deployment: the platform's (`PAYMENT_PROVIDER`), and each tenant's own Stripe account where
/// it stored its keys. Clients for tenants' accounts are kept while their keys do not change.
#[derive(Clone)]
pub struct Providers {
    platform: Arc<dyn PaymentProvider>,
    settings: AccountSettings,
    clients: Arc<Mutex<HashMap<uuid::Uuid, Client>>>,
}

impl Providers {
    pub fn new(platform: Arc<dyn PaymentProvider>, settings: AccountSettings) -> Self {
        Self {
            platform,
            settings,
            clients: Arc::default(),
        }
    }

    /// The platform's provider (`PAYMENT_PROVIDER`).
    pub fn platform(&self) -> &Arc<dyn PaymentProvider> {
        &self.platform
    }

    pub fn sealer(&self) -> Option<&Sealer> {
        self.settings.sealer.as_deref()
    }

    /// The provider the tenant's new payments and cards go through: its own Stripe account when it stored keys,
    /// else the platform's.
    pub async fn current(&self, tx: &mut TenantTx) -> Result<Arc<dyn PaymentProvider>> {
        let row: Option<(Vec<u8>, DateTime<Utc>)> = sqlx::query_as(
            "select secret_key_sealed, updated_at from payment_account where tenant_id = $1",
        )
        .bind(tx.tenant())
        .fetch_optional(tx.conn())
        .await?;
        let Some((sealed, updated_at)) = row else {
            return Ok(self.platform.clone());
        };
        let tenant = tx.tenant().0;
        if let Some((at, client)) = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&tenant)
        {
            if *at == updated_at {
                return Ok(client.clone());
            }
        }
        let sealer = self.sealer().ok_or_else(|| {
            Error::Internal(anyhow::anyhow!(
                "a tenant's payment keys are stored but SECRETS_KEY is not set"
            ))
        })?;
        let key = sealer.open(tenant, &sealed)?;
        let client: Arc<dyn PaymentProvider> = Arc::new(
            StripeProvider::new(&key, &self.settings.api_base, self.settings.timeout)?.for_tenant(),
        );
        self.clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(tenant, (updated_at, client.clone()));
        Ok(client)
    }

    /// The provider that made payment `id` (the tenant's own account, or the platform's), to refresh, cancel or
    /// refund it through. An unknown id gets the current one (the caller's lookup then answers `not_found`).
    pub async fn for_payment(
        &self,
        tx: &mut TenantTx,
        id: uuid::Uuid,
    ) -> Result<Arc<dyn PaymentProvider>> {
        let made_by: Option<String> =
            sqlx::query_scalar("select provider from payment where tenant_id = $1 and id = $2")
                .bind(tx.tenant())
                .bind(id)
                .fetch_optional(tx.conn())
                .await?;
        match made_by {
            Some(name) => self.named(tx, &name).await,
            None => self.current(tx).await,
        }
    }

    /// The provider recorded by that [`PaymentProvider::name`]: the tenant's account (as it is now) or the
    /// platform's.
    pub async fn named(&self, tx: &mut TenantTx, name: &str) -> Result<Arc<dyn PaymentProvider>> {
        if name == TENANT_PROVIDER {
            self.current(tx).await
        } else {
            Ok(self.platform.clone())
        }
    }

    /// The tenant's webhook signing secret, when it stored one.
    pub async fn webhook_secret(&self, tx: &mut TenantTx) -> Result<Option<String>> {
        let sealed: Option<Option<Vec<u8>>> = sqlx::query_scalar(
            "select webhook_secret_sealed from payment_account where tenant_id = $1",
        )
        .bind(tx.tenant())
        .fetch_optional(tx.conn())
        .await?;
        match (sealed.flatten(), self.sealer()) {
            (Some(sealed), Some(sealer)) => Ok(Some(sealer.open(tx.tenant().0, &sealed)?)),
            _ => Ok(None),
        }
    }
}

/// What an owner sees of its account: never a secret, only a hint of the key.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Account {
    pub provider: String,
    pub publishable_key: Option<String>,
    /// The secret key's kind and last four characters (`sk_live_…abcd`).
    pub secret_key_hint: String,
    pub webhook_secret_set: bool,
    pub updated_at: DateTime<Utc>,
}

pub async fn get(tx: &mut TenantTx) -> Result<Option<Account>> {
    Ok(sqlx::query_as(
        "select provider, publishable_key, secret_key_hint, webhook_secret_sealed is not null as webhook_secret_set,
                updated_at
         from payment_account where tenant_id = $1",
    )
    .bind(tx.tenant())
    .fetch_optional(tx.conn())
    .await?)
}

fn owner_only(actor: &Actor) -> Result<()> {
    if actor.role == Role::Owner {
        Ok(())
    } else {
        Err(Error::Forbidden(
            "only an owner can change the payment provider account",
        ))
    }
}

/// A publishable key: `pk_test_` or `pk_live_` and 1 to 200 letters and digits (as Stripe issues them, and as the
/// column's check wants).
fn publishable(value: &str) -> Result<&str> {
    let value = stripe_key("publishableKey", value, &["pk_test_", "pk_live_"])?;
    let rest = &value[8..];
    if rest.len() <= 200 && rest.chars().all(|c| c.is_ascii_alphanumeric()) {
        Ok(value)
    } else {
        Err(Error::validation(
            "publishableKey",
            "must be pk_test_ or pk_live_ followed by letters and digits only (copy it from the Stripe dashboard)",
        ))
    }
}

/// A Stripe key of `prefixes` (`sk_`, `rk_`, `pk_`, `whsec_`): its shape checked, nothing more (Stripe says
/// whether it works, on the first payment).
fn stripe_key<'a>(field: &'static str, value: &'a str, prefixes: &[&str]) -> Result<&'a str> {
    let value = value.trim();
    let shaped = prefixes.iter().any(|p| value.starts_with(p))
        && (12..=255).contains(&value.len())
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if shaped {
        Ok(value)
    } else {
        Err(Error::validation(
            field,
            format!(
                "must be a Stripe key starting with {} (copy it from the Stripe dashboard)",
                prefixes.join(" or ")
            ),
        ))
    }
}

/// `sk_live_…abcd`: which kind of key, and its last four characters.
fn hint(key: &str) -> String {
    let kind = key
        .match_indices('_')
        .nth(1)
        .map_or("", |(i, _)| &key[..=i]);
    format!("{kind}…{}", &key[key.len() - 4..])
}

/// Stores (or replaces) the tenant's Stripe keys. Owners only; needs `SECRETS_KEY` on the deployment. A webhook
/// secret left out keeps the one stored.
pub async fn set(
    tx: &mut TenantTx,
    actor: &Actor,
    sealer: Option<&Sealer>,
    secret_key: &str,
    publishable_key: Option<&str>,
    webhook_secret: Option<&str>,
) -> Result<Account> {
    owner_only(actor)?;
    let sealer = sealer.ok_or_else(|| {
        Error::Conflict(
            "this deployment cannot store payment keys: its operator has not set SECRETS_KEY"
                .into(),
        )
    })?;
    let secret_key = stripe_key(
        "secretKey",
        secret_key,
        &["sk_test_", "sk_live_", "rk_test_", "rk_live_"],
    )?;
    let publishable_key = publishable_key
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(publishable)
        .transpose()?;
    let webhook_secret = webhook_secret
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|k| stripe_key("webhookSecret", k, &["whsec_"]))
        .transpose()?;
    let had_account: bool =
        sqlx::query_scalar("select exists (select 1 from payment_account where tenant_id = $1)")
            .bind(tx.tenant())
            .fetch_one(tx.conn())
            .await?;
    if !had_account {
        still_open(tx, false).await?;
    }
    let tenant = tx.tenant().0;
    let sealed_key = sealer.seal(tenant, secret_key)?;
    let sealed_webhook = webhook_secret.map(|w| sealer.seal(tenant, w)).transpose()?;
    sqlx::query(
        "insert into payment_account (tenant_id, provider, publishable_key, secret_key_sealed, secret_key_hint,
           webhook_secret_sealed)
         values ($1, 'stripe', $2, $3, $4, $5)
         on conflict (tenant_id) do update set publishable_key = excluded.publishable_key,
           secret_key_sealed = excluded.secret_key_sealed, secret_key_hint = excluded.secret_key_hint,
           webhook_secret_sealed = coalesce(excluded.webhook_secret_sealed, payment_account.webhook_secret_sealed)",
    )
    .bind(tenant)
    .bind(publishable_key)
    .bind(&sealed_key)
    .bind(hint(secret_key))
    .bind(&sealed_webhook)
    .execute(tx.conn())
    .await?;
    // Never the keys: which kind, and whether a webhook secret came with it.
    let detail = serde_json::json!({
        "secret_key": hint(secret_key),
        "webhook_secret": webhook_secret.is_some(),
    });
    crate::tenants::record_change(tx, actor, "tenant.set_payment_account", detail).await?;
    get(tx).await?.ok_or(Error::NotFound("payment account"))
}

/// Forgets the tenant's keys: its new payments go through the platform's provider again. Answers whether there
/// were keys. Owners only.
pub async fn remove(tx: &mut TenantTx, actor: &Actor) -> Result<bool> {
    owner_only(actor)?;
    still_open(tx, true).await?;
    let removed = sqlx::query("delete from payment_account where tenant_id = $1")
        .bind(tx.tenant())
        .execute(tx.conn())
        .await?
        .rows_affected()
        > 0;
    if removed {
        crate::tenants::record_change(
            tx,
            actor,
            "tenant.remove_payment_account",
            serde_json::json!({}),
        )
        .await?;
    }
    Ok(removed)
}

/// Refused while card holds or debt charges are open on the account about to stop being the tenant's (its own,
/// `own`, or the platform's): only that account can capture, release or answer them, and a hold left behind would
/// be neither captured for what its rental owes nor released. Replacing the tenant's keys (a rotated key of the
/// same account) is not checked.
async fn still_open(tx: &mut TenantTx, own: bool) -> Result<()> {
    let open: i64 = sqlx::query_scalar(
        "select count(*) from payment where tenant_id = $1 and (provider = $2) = $3
           and ((kind = 'deposit' and status = 'authorized') or (kind = 'debt' and status = 'pending'))",
    )
    .bind(tx.tenant())
    .bind(TENANT_PROVIDER)
    .bind(own)
    .fetch_one(tx.conn())
    .await?;
    if open > 0 {
        return Err(Error::Conflict(format!(
            "{open} card deposit hold(s) or debt charge(s) are still open on the current payment account, and only \
             it can settle them: change the account once their rentals have ended and they are settled"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_for_their_shape_and_hinted_by_kind_and_last_four() {
        assert_eq!(hint("sk_live_51Habcdefgh1234"), "sk_live_…1234");
        assert_eq!(hint("rk_test_abcdefWXYZ"), "rk_test_…WXYZ");
        assert!(stripe_key("secretKey", "sk_test_abc123456789", &["sk_test_"]).is_ok());
        for bad in [
            "pk_test_abc123456789",
            "sk_test_",
            "sk_test_abc 123456",
            "sk_test_abc\"1234567",
        ] {
            assert!(
                stripe_key("secretKey", bad, &["sk_test_", "sk_live_"]).is_err(),
                "{bad}"
            );
        }
        assert!(publishable("pk_live_51Habc123").is_ok());
        for bad in ["pk_test_51H_abc123", "sk_test_51Habc123", "pk_test_"] {
            assert!(publishable(bad).is_err(), "{bad}");
        }
    }
}

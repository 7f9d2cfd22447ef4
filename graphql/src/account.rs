//! `me` and `tenant`.

use async_graphql::{Context, Object, SimpleObject};
use switchyard_core::{tenants, Role};
use uuid::Uuid;

use crate::{begin, GqlResult};

#[derive(Default)]
pub struct AccountQuery;

/// The signed-in member.
#[derive(SimpleObject)]
pub struct Me {
    pub user_id: Uuid,
    pub email: String,
    pub role: Role,
    pub tenant: Tenant,
}

#[derive(SimpleObject)]
pub struct Tenant {
    pub id: Uuid,
    pub name: String,
    /// Seconds between billing ticks for this tenant, when it overrides the deployment's default.
    pub billing_tick_sec: Option<i32>,
    /// The most a STAFF member may top up in cash at once (minor units of the venue's currency); more needs a
    /// manager or an owner.
    pub staff_cash_top_up_cap: i64,
    /// Whether each accepted boot of a charger sets it to send the energy readings billing needs: 1.6
    /// `MeterValuesSampledData`, 2.0.1 `SampledDataCtrlr.TxStartedMeasurands`, `TxUpdatedMeasurands` and
    /// `TxEndedMeasurands` (the charger's own lists are replaced), and a sampling interval of 60 s where the boot's
    /// read finds it 0 and writable (1.6 `MeterValueSampleInterval`, 2.0.1 `SampledDataCtrlr.TxUpdatedInterval`)
    /// and no operator's change of it is on its way. Off by default.
    pub charger_meter_setup: bool,
    /// Whether a charger with an identity nobody registered may join as pending (for an operator to adopt) by
    /// presenting the onboarding key as its password (`setChargerOnboarding`).
    pub accept_pending_chargers: bool,
    /// Whether the tenant has an onboarding key (it is shown once, when made; only its SHA-256 is kept).
    pub has_charger_onboarding_key: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl From<tenants::Tenant> for Tenant {
    fn from(t: tenants::Tenant) -> Self {
        Self {
            id: t.id,
            name: t.name,
            billing_tick_sec: t.billing_tick_sec,
            staff_cash_top_up_cap: t.staff_cash_top_up_cap,
            charger_meter_setup: t.charger_meter_setup,
            accept_pending_chargers: t.accept_pending_chargers,
            has_charger_onboarding_key: t.has_charger_onboarding_key,
            created_at: t.created_at,
        }
    }
}

/// The tenant's own payment provider account, as an owner sees it: never a secret.
#[derive(SimpleObject)]
pub struct PaymentAccount {
    /// `stripe`.
    pub provider: String,
    pub publishable_key: Option<String>,
    /// The secret key's kind and last four characters (`sk_live_…abcd`).
    pub secret_key_hint: String,
    /// Whether a webhook signing secret is stored (then Stripe's events go to `webhookPath`).
    pub webhook_secret_set: bool,
    /// Where to point the account's Stripe webhook, under the API's address: `/webhooks/stripe/{tenant id}`.
    pub webhook_path: String,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl PaymentAccount {
    fn of(tenant: Uuid, a: switchyard_core::payments::accounts::Account) -> Self {
        Self {
            provider: a.provider,
            publishable_key: a.publishable_key,
            secret_key_hint: a.secret_key_hint,
            webhook_secret_set: a.webhook_secret_set,
            webhook_path: format!("/webhooks/stripe/{tenant}"),
            updated_at: a.updated_at,
        }
    }
}

fn owner(actor: &switchyard_core::Actor) -> async_graphql::Result<()> {
    if actor.role == Role::Owner {
        Ok(())
    } else {
        Err(switchyard_core::Error::Forbidden(
            "only an owner sees the payment provider account",
        ))
        .gql()
    }
}

/// How the tenant's messages and console look.
#[derive(SimpleObject)]
pub struct Branding {
    /// The logo (an https address the tenant hosts), shown in its emails' heading and the console's header.
    pub logo_url: Option<String>,
    /// The accent colour (`#rrggbb`) of emails and the console; `null` is Switchyard's blue.
    pub color: Option<String>,
}

impl From<tenants::Branding> for Branding {
    fn from(b: tenants::Branding) -> Self {
        Self {
            logo_url: b.logo_url,
            color: b.color,
        }
    }
}

/// A currency amounts may be in, and how many of its minor units make one (10 to the power `minorUnits`).
#[derive(async_graphql::SimpleObject)]
pub struct Currency {
    /// ISO 4217 code, e.g. `EUR`.
    pub code: &'static str,
    /// Digits after the decimal point: 2 for EUR (amounts in cents), 0 for JPY, 3 for KWD. Clients convert with
    /// these, not with their own locale data, which differs for some currencies (HUF, IDR, COP …).
    pub minor_units: u8,
}

#[Object]
impl AccountQuery {
    /// Every currency amounts may be in, by code.
    async fn currencies(&self) -> Vec<Currency> {
        switchyard_core::money::all()
            .map(|(code, minor_units)| Currency { code, minor_units })
            .collect()
    }

    /// Who is signed in, in which tenant, with which role.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<Me> {
        let (actor, mut tx) = begin(ctx).await?;
        let tenant = tenants::current(&mut tx).await.gql()?;
        let email = tenants::user_email(&mut tx, actor.user_id).await.gql()?;
        Ok(Me {
            user_id: actor.user_id,
            email,
            role: actor.role,
            tenant: tenant.into(),
        })
    }

    /// The signed-in member's tenant.
    async fn tenant(&self, ctx: &Context<'_>) -> async_graphql::Result<Tenant> {
        let (_, mut tx) = begin(ctx).await?;
        Ok(tenants::current(&mut tx).await.gql()?.into())
    }

    /// The tenant's own payment provider account (`null`: its patrons pay through the platform's). Owners only.
    async fn payment_account(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<PaymentAccount>> {
        let (actor, mut tx) = begin(ctx).await?;
        owner(actor)?;
        let account = switchyard_core::payments::accounts::get(&mut tx)
            .await
            .gql()?;
        Ok(account.map(|a| PaymentAccount::of(actor.tenant.0, a)))
    }

    /// The tenant's logo and accent colour. Every member.
    async fn branding(&self, ctx: &Context<'_>) -> async_graphql::Result<Branding> {
        let (_, mut tx) = begin(ctx).await?;
        Ok(tenants::branding(&mut tx).await.gql()?.into())
    }
}

#[derive(Default)]
pub struct AccountMutation;

#[async_graphql::Object]
impl AccountMutation {
    /// Overrides how often this tenant's running sessions are billed (1–3600 s); `null` restores the default.
    /// Owners only.
    async fn set_billing_tick(
        &self,
        ctx: &Context<'_>,
        seconds: Option<i32>,
    ) -> async_graphql::Result<Tenant> {
        let (actor, mut tx) = begin(ctx).await?;
        let tenant = tenants::set_billing_tick(&mut tx, actor, seconds)
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(tenant.into())
    }

    /// Turns on or off the set-up of chargers' meter readings at each accepted boot (`Tenant.chargerMeterSetup`).
    /// Owners only.
    async fn set_charger_meter_setup(
        &self,
        ctx: &Context<'_>,
        enabled: bool,
    ) -> async_graphql::Result<Tenant> {
        let (actor, mut tx) = begin(ctx).await?;
        let tenant = tenants::set_charger_meter_setup(&mut tx, actor, enabled)
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(tenant.into())
    }

    /// Sets the most a STAFF member may top up in cash at once (minor units, default 20000); managers and owners
    /// are not capped. Owners only.
    async fn set_staff_cash_top_up_cap(
        &self,
        ctx: &Context<'_>,
        amount: i64,
    ) -> async_graphql::Result<Tenant> {
        let (actor, mut tx) = begin(ctx).await?;
        let tenant = tenants::set_staff_cash_top_up_cap(&mut tx, actor, amount)
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(tenant.into())
    }

    /// Sets the tenant's logo (an https address, at most 500 characters) and accent colour (`#rrggbb`); an empty
    /// or missing value clears one. Owners only.
    async fn set_branding(
        &self,
        ctx: &Context<'_>,
        logo_url: Option<String>,
        color: Option<String>,
    ) -> async_graphql::Result<Branding> {
        let (actor, mut tx) = begin(ctx).await?;
        let branding = tenants::set_branding(&mut tx, actor, logo_url.as_deref(), color.as_deref())
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(branding.into())
    }

    /// Stores the tenant's own Stripe keys, so its patrons' top-ups, saved cards, deposit holds and debt charges go
    /// to its own Stripe account: the secret (or restricted) key, optionally the publishable key for its apps and
    /// the webhook signing secret (left out: the stored one stays). Kept server-side, sealed; never shown again.
    /// Owners only; `conflict` when the deployment has no `SECRETS_KEY`.
    async fn set_payment_account(
        &self,
        ctx: &Context<'_>,
        secret_key: String,
        publishable_key: Option<String>,
        webhook_secret: Option<String>,
    ) -> async_graphql::Result<PaymentAccount> {
        let (actor, mut tx) = begin(ctx).await?;
        let providers = ctx.data::<switchyard_core::payments::accounts::Providers>()?;
        let account = switchyard_core::payments::accounts::set(
            &mut tx,
            actor,
            providers.sealer(),
            &secret_key,
            publishable_key.as_deref(),
            webhook_secret.as_deref(),
        )
        .await
        .gql()?;
        tx.commit().await.gql()?;
        Ok(PaymentAccount::of(actor.tenant.0, account))
    }

    /// Forgets the tenant's Stripe keys: new payments go through the platform's provider again (earlier ones stay
    /// with the account that made them). Answers whether keys were stored. Owners only.
    async fn remove_payment_account(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        let (actor, mut tx) = begin(ctx).await?;
        let removed = switchyard_core::payments::accounts::remove(&mut tx, actor)
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(removed)
    }
}

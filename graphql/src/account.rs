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
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl From<tenants::Tenant> for Tenant {
    fn from(t: tenants::Tenant) -> Self {
        Self {
            id: t.id,
            name: t.name,
            billing_tick_sec: t.billing_tick_sec,
            staff_cash_top_up_cap: t.staff_cash_top_up_cap,
            created_at: t.created_at,
        }
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

#[Object]
impl AccountQuery {
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
}

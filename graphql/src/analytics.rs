//! Analytics for owners and managers (a venue-scoped member sees its venues only), read from the workers' rollups
//! (`switchyard_core::analytics`).

use async_graphql::{Context, Object};
use chrono::NaiveDate;
use switchyard_core::analytics::queries::{
    self, DailyMetric, DebtsOutstanding, Projection, RevenueByDay, RevenueByPaymentMethod,
    RevenueByStationKind, RevenueByVenue, SessionStats, TopPatron, UtilisationCell,
};
use switchyard_core::analytics::Scope;
use uuid::Uuid;

use crate::{begin, GqlResult, ManagerGuard};

#[derive(Default)]
pub struct AnalyticsQuery;

#[Object]
impl AnalyticsQuery {
    /// The figures of the venue-local days `from` to `to` (both included, at most 366 days) for one venue or every
    /// venue the member sees. Owners and managers; a venue outside the member's venues (or of another tenant)
    /// answers `not_found`.
    #[graphql(guard = "ManagerGuard")]
    async fn analytics(
        &self,
        ctx: &Context<'_>,
        from: NaiveDate,
        to: NaiveDate,
        venue_id: Option<Uuid>,
    ) -> async_graphql::Result<Analytics> {
        let (actor, mut tx) = begin(ctx).await?;
        let scope = Scope::new(&mut tx, actor, venue_id, from, to).await.gql()?;
        tx.commit().await.gql()?;
        Ok(Analytics { scope, venue_id })
    }

    /// Revenue for the next `days` days (1–90, default 7) from `today` (default: today in UTC), each day at the
    /// average revenue of the same weekday over the 28 days before `today`. Owners and managers.
    #[graphql(guard = "ManagerGuard")]
    async fn revenue_projection(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 7)] days: i64,
        venue_id: Option<Uuid>,
        today: Option<NaiveDate>,
    ) -> async_graphql::Result<Projection> {
        let (actor, mut tx) = begin(ctx).await?;
        let today = today.unwrap_or_else(|| chrono::Utc::now().date_naive());
        let projection = queries::projection(&mut tx, actor, venue_id, today, days)
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(projection)
    }
}

/// The analytics of a period and a set of venues.
pub struct Analytics {
    scope: Scope,
    venue_id: Option<Uuid>,
}

#[Object]
impl Analytics {
    async fn from(&self) -> NaiveDate {
        self.scope.from
    }

    async fn to(&self) -> NaiveDate {
        self.scope.to
    }

    /// The venue asked for; null: every venue the member sees.
    async fn venue_id(&self) -> Option<Uuid> {
        self.venue_id
    }

    /// Revenue (what the venues' revenue accounts took in the ledger) per venue-local day and currency.
    async fn revenue_by_day(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<RevenueByDay>> {
        let (_, mut tx) = begin(ctx).await?;
        queries::revenue_by_day(&mut tx, &self.scope).await.gql()
    }

    /// Revenue per venue and currency, largest first.
    async fn revenue_by_venue(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<RevenueByVenue>> {
        let (_, mut tx) = begin(ctx).await?;
        queries::revenue_by_venue(&mut tx, &self.scope).await.gql()
    }

    /// Revenue per station kind and currency.
    async fn revenue_by_station_kind(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<RevenueByStationKind>> {
        let (_, mut tx) = begin(ctx).await?;
        queries::revenue_by_station_kind(&mut tx, &self.scope)
            .await
            .gql()
    }

    /// Revenue per payment method (`wallet`, `cash`, `card`) and currency.
    async fn revenue_by_payment_method(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<RevenueByPaymentMethod>> {
        let (_, mut tx) = begin(ctx).await?;
        queries::revenue_by_payment_method(&mut tx, &self.scope)
            .await
            .gql()
    }

    /// Sessions that ended in the period: count, durations, energy delivered.
    async fn sessions(&self, ctx: &Context<'_>) -> async_graphql::Result<SessionStats> {
        let (_, mut tx) = begin(ctx).await?;
        queries::session_stats(&mut tx, &self.scope).await.gql()
    }

    /// Share of station time in session by hour of the week: 168 cells, Monday 00:00 first.
    async fn utilisation(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<UtilisationCell>> {
        let (_, mut tx) = begin(ctx).await?;
        queries::utilisation(&mut tx, &self.scope).await.gql()
    }

    /// Seed 001's daily metrics: one row per day of the period.
    async fn daily_metrics(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<DailyMetric>> {
        let (_, mut tx) = begin(ctx).await?;
        queries::daily_metrics(&mut tx, &self.scope).await.gql()
    }

    /// The patrons whose sessions earned the venues most, all time (the period does not apply); `limit` 1–100.
    async fn top_patrons(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 10)] limit: i64,
    ) -> async_graphql::Result<Vec<TopPatron>> {
        let (_, mut tx) = begin(ctx).await?;
        queries::top_patrons(&mut tx, &self.scope, limit)
            .await
            .gql()
    }

    /// What patrons owe now, per currency, with the `largest` (0–100) debts. Only for members who see every venue
    /// (a debt is a patron's, not a venue's); others get `forbidden`.
    async fn debts_outstanding(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 10)] largest: i64,
    ) -> async_graphql::Result<Vec<DebtsOutstanding>> {
        let (actor, mut tx) = begin(ctx).await?;
        queries::debts_outstanding(&mut tx, actor, largest)
            .await
            .gql()
    }
}

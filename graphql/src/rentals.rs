//! Powerbank assets and rentals (the seed 004 flow, also over REST).

use async_graphql::{Context, Enum, Object, SimpleObject};
use chrono::{DateTime, Utc};
use switchyard_core::rentals;
use switchyard_core::scope::{self, Named};
use uuid::Uuid;

use crate::sessions::{once, BillingTick, Session};
use crate::{begin, GqlResult, ManagerGuard};

/// How long a quote can be started.
const QUOTE_TTL_SECS: i64 = 60;

#[derive(SimpleObject)]
pub struct Asset {
    pub id: Uuid,
    pub label: String,
    /// `docked`, `rented`, `written_off`.
    pub status: String,
    pub station_id: Option<Uuid>,
    pub slot: Option<i32>,
    pub patron_id: Option<Uuid>,
}

impl From<rentals::Asset> for Asset {
    fn from(a: rentals::Asset) -> Self {
        Self {
            id: a.id,
            label: a.label,
            status: a.status,
            station_id: a.station_id,
            slot: a.slot,
            patron_id: a.patron_id,
        }
    }
}

/// A priced rental offer.
#[derive(SimpleObject)]
pub struct RentalQuote {
    pub id: Uuid,
    pub currency: String,
    pub price_per_hour: i64,
    pub free_period_min: u32,
    pub deposit: i64,
    pub expires_at: DateTime<Utc>,
}

/// What staff found at the cabinet for an unanswered eject.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum EjectFinding {
    /// The powerbank is gone from its slot: the patron has it and the rental goes on.
    Ejected,
    /// The powerbank is still in its slot: the rental is voided as for a failed eject (nothing charged, the deposit
    /// released, the powerbank docked).
    NotEjected,
}

#[derive(Default)]
pub struct RentalQuery;

#[Object]
impl RentalQuery {
    /// The powerbanks docked at a cabinet, by slot.
    async fn assets(
        &self,
        ctx: &Context<'_>,
        station_id: Uuid,
    ) -> async_graphql::Result<Vec<Asset>> {
        let (actor, mut tx) = begin(ctx).await?;
        switchyard_core::stations::get(&mut tx, station_id)
            .await
            .gql()?;
        switchyard_core::scope::station(&mut tx, actor, station_id)
            .await
            .gql()?;
        Ok(rentals::docked(&mut tx, station_id)
            .await
            .gql()?
            .into_iter()
            .map(Asset::from)
            .collect())
    }

    /// Ejects waiting for staff (`UnansweredEject`), oldest first: of one venue, or of every venue the member
    /// sees; at most `limit` (1–500).
    #[graphql(complexity = "crate::rows(limit, child_complexity)")]
    async fn unanswered_ejects(
        &self,
        ctx: &Context<'_>,
        venue_id: Option<Uuid>,
        #[graphql(default = 100)] limit: i64,
    ) -> async_graphql::Result<Vec<rentals::UnansweredEject>> {
        let (actor, mut tx) = begin(ctx).await?;
        let rows = rentals::unanswered_ejects(&mut tx, actor.venue_filter(), venue_id, limit)
            .await
            .gql()?;
        scope::listed(&mut tx, actor, rows, &[Named::Venue(venue_id)])
            .await
            .gql()
    }
}

#[derive(Default)]
pub struct RentalMutation;

#[Object]
impl RentalMutation {
    /// Puts a new powerbank in a cabinet slot.
    #[graphql(guard = "ManagerGuard")]
    async fn dock_asset(
        &self,
        ctx: &Context<'_>,
        station_id: Uuid,
        slot: i32,
        label: String,
    ) -> async_graphql::Result<Asset> {
        let (actor, mut tx) = begin(ctx).await?;
        switchyard_core::scope::station(&mut tx, actor, station_id)
            .await
            .gql()?;
        let asset = rentals::dock(&mut tx, actor, station_id, slot, &label)
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(asset.into())
    }

    /// Prices a rental for a patron at a cabinet; start it within 60 seconds.
    async fn quote(
        &self,
        ctx: &Context<'_>,
        patron_id: Uuid,
        station_id: Uuid,
    ) -> async_graphql::Result<RentalQuote> {
        let (actor, mut tx) = begin(ctx).await?;
        switchyard_core::scope::station(&mut tx, actor, station_id)
            .await
            .gql()?;
        let q = rentals::quote(&mut tx, actor, patron_id, station_id, QUOTE_TTL_SECS)
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(RentalQuote {
            id: q.id,
            currency: q.currency,
            price_per_hour: q.price_per_hour,
            free_period_min: q.free_period_min,
            deposit: q.deposit,
            expires_at: q.expires_at,
        })
    }

    /// Starts a rental from a quote. With `idempotencyKey`, a retry returns the same rental.
    async fn start_rental(
        &self,
        ctx: &Context<'_>,
        quote_id: Uuid,
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<Session> {
        let (actor, mut tx) = begin(ctx).await?;
        let tick = ctx.data::<BillingTick>()?.0;
        let provider = crate::provider(ctx, &mut tx).await?;
        let request = serde_json::json!({ "quote_id": quote_id });
        once(
            tx,
            actor,
            "graphql.startRental",
            idempotency_key,
            &request,
            |mut tx| async move {
                let (session, _) =
                    rentals::start(&mut tx, actor, provider.as_ref(), quote_id, tick, None).await?;
                Ok((tx, session))
            },
        )
        .await
    }

    /// Settles an unanswered eject (see `unansweredEjects`) by what was found at the cabinet; the rental as it is
    /// then (`FAILED` once voided). The same finding again returns the same rental; an eject still within its
    /// deadline, or answered otherwise, is a conflict. Owners and managers only: a void gives the patron's money back.
    #[graphql(guard = "ManagerGuard")]
    async fn settle_eject(
        &self,
        ctx: &Context<'_>,
        command_id: Uuid,
        finding: EjectFinding,
    ) -> async_graphql::Result<Session> {
        let (actor, mut tx) = begin(ctx).await?;
        let finding = match finding {
            EjectFinding::Ejected => rentals::EjectFinding::Ejected,
            EjectFinding::NotEjected => rentals::EjectFinding::NotEjected,
        };
        let session = rentals::settle_eject(&mut tx, actor, command_id, finding)
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(Session(session))
    }

    /// Ends a rental where its powerbank was returned.
    async fn stop_rental(
        &self,
        ctx: &Context<'_>,
        rental_id: Uuid,
        station_id: Uuid,
    ) -> async_graphql::Result<Session> {
        let (actor, mut tx) = begin(ctx).await?;
        // A powerbank may be returned to any cabinet: the cabinet must be one of the member's venues.
        switchyard_core::scope::station(&mut tx, actor, station_id)
            .await
            .gql()?;
        let session = rentals::stop(&mut tx, actor, rental_id, station_id)
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(Session(session))
    }
}

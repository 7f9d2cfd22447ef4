//! Venues.

use async_graphql::{Context, InputObject, Object};
use chrono::{DateTime, Utc};
use switchyard_core::ledger::{self, Owner, Purpose};
use switchyard_core::venues::{self, NewVenue, VenuePatch};
use uuid::Uuid;

use crate::loaders::Loaders;
use crate::stations::Station;
use crate::{begin, GqlResult, ManagerGuard};

pub struct Venue(pub venues::Venue);

/// A tariff assigned at a venue: to the whole venue (no kind, no station), to one kind of station, or to one station.
#[derive(async_graphql::SimpleObject)]
pub struct VenuePrice {
    pub tariff: crate::tariffs::Tariff,
    pub station_kind: Option<switchyard_core::StationKind>,
    pub station_id: Option<Uuid>,
}

/// A venue's ledger balances (minor units).
#[derive(async_graphql::SimpleObject)]
pub struct VenueBooks {
    pub currency: String,
    pub revenue: i64,
    pub cash_drawer: i64,
    pub card_clearing: i64,
}

#[Object]
impl Venue {
    async fn id(&self) -> Uuid {
        self.0.id
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// IANA time zone, e.g. `Europe/Berlin`.
    async fn timezone(&self) -> &str {
        &self.0.timezone
    }
    /// ISO 4217 code; amounts at this venue are integer minor units of it.
    async fn currency(&self) -> &str {
        &self.0.currency
    }
    async fn address(&self) -> &str {
        &self.0.address
    }
    /// Where the venue is (WGS 84 degrees), for check-in; set with `setVenueGeofence`.
    async fn latitude(&self) -> Option<f64> {
        self.0.latitude
    }
    async fn longitude(&self) -> Option<f64> {
        self.0.longitude
    }
    /// How far from the venue's point a patron may check in, in metres (none: check-in needs no location).
    async fn geofence_m(&self) -> Option<i32> {
        self.0.geofence_m
    }
    async fn archived_at(&self) -> Option<DateTime<Utc>> {
        self.0.archived_at
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// The venue's money in its currency, from the ledger (owners and managers): `revenue` earned from sessions
    /// and rentals, `cashDrawer` (negative: cash taken in, owed to the drawer), `cardClearing` (negative: card money
    /// the provider collected for the venue, less refunds).
    #[graphql(guard = "ManagerGuard")]
    async fn books(&self, ctx: &Context<'_>) -> async_graphql::Result<VenueBooks> {
        let (_, mut tx) = begin(ctx).await?;
        let owner = Owner::Venue(self.0.id);
        let currency = &self.0.currency;
        let mut books = [0i64; 3];
        for (slot, purpose) in
            books
                .iter_mut()
                .zip([Purpose::Revenue, Purpose::CashDrawer, Purpose::Clearing])
        {
            *slot = ledger::balance(&mut tx, owner, purpose, currency)
                .await
                .gql()?;
        }
        let [revenue, cash_drawer, card_clearing] = books;
        Ok(VenueBooks {
            currency: currency.clone(),
            revenue,
            cash_drawer,
            card_clearing,
        })
    }
    /// Where each tariff applies at the venue: the whole venue, a kind of station, or one station (the most
    /// specific wins for a station). The whole venue's first.
    async fn prices(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<VenuePrice>> {
        let (_, mut tx) = begin(ctx).await?;
        Ok(switchyard_core::tariffs::assignments(&mut tx, self.0.id)
            .await
            .gql()?
            .into_iter()
            .map(|a| VenuePrice {
                tariff: a.tariff.into(),
                station_kind: a.station_kind,
                station_id: a.station_id,
            })
            .collect())
    }
    /// The venue's unarchived stations.
    async fn stations(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Station>> {
        let loaders = ctx.data::<Loaders>()?;
        let stations = loaders
            .stations_by_venue
            .load_one(self.0.id)
            .await?
            .unwrap_or_default();
        Ok(stations.into_iter().map(Station).collect())
    }
}

#[derive(InputObject)]
pub struct CreateVenueInput {
    pub name: String,
    /// IANA time zone, e.g. `Europe/Berlin`.
    pub timezone: String,
    /// ISO 4217 code in capitals, e.g. `EUR`.
    pub currency: String,
    pub address: Option<String>,
}

/// Omitted fields keep their value. The currency is fixed once a venue exists.
#[derive(InputObject)]
pub struct UpdateVenueInput {
    pub name: Option<String>,
    pub timezone: Option<String>,
    pub address: Option<String>,
}

#[derive(Default)]
pub struct VenueQuery;

#[Object]
impl VenueQuery {
    /// The tenant's venues, by name. Archived ones only with `includeArchived`.
    async fn venues(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = false)] include_archived: bool,
    ) -> async_graphql::Result<Vec<Venue>> {
        let (actor, mut tx) = begin(ctx).await?;
        Ok(venues::list(&mut tx, include_archived)
            .await
            .gql()?
            .into_iter()
            .filter(|v| actor.sees_venue(v.id))
            .map(Venue)
            .collect())
    }

    /// One venue (archived ones too); `not_found` for unknown ids and other tenants' venues.
    async fn venue(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Venue> {
        let (actor, mut tx) = begin(ctx).await?;
        actor.check_venue(id, "venue").gql()?;
        Ok(Venue(venues::get(&mut tx, id).await.gql()?))
    }
}

#[derive(Default)]
pub struct VenueMutation;

#[Object]
impl VenueMutation {
    #[graphql(guard = "ManagerGuard")]
    async fn create_venue(
        &self,
        ctx: &Context<'_>,
        input: CreateVenueInput,
    ) -> async_graphql::Result<Venue> {
        let (actor, mut tx) = begin(ctx).await?;
        switchyard_core::scope::require_all_venues(actor).gql()?;
        let input = NewVenue {
            name: input.name,
            timezone: input.timezone,
            currency: input.currency,
            address: input.address,
        };
        let venue = venues::create(&mut tx, actor, input).await.gql()?;
        tx.commit().await.gql()?;
        Ok(Venue(venue))
    }

    #[graphql(guard = "ManagerGuard")]
    async fn update_venue(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        input: UpdateVenueInput,
    ) -> async_graphql::Result<Venue> {
        let (actor, mut tx) = begin(ctx).await?;
        actor.check_venue(id, "venue").gql()?;
        let patch = VenuePatch {
            name: input.name,
            timezone: input.timezone,
            address: input.address,
        };
        let venue = venues::update(&mut tx, actor, id, patch).await.gql()?;
        tx.commit().await.gql()?;
        Ok(Venue(venue))
    }

    /// Archives the venue and its stations.
    #[graphql(guard = "ManagerGuard")]
    async fn archive_venue(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Venue> {
        let (actor, mut tx) = begin(ctx).await?;
        actor.check_venue(id, "venue").gql()?;
        let venue = venues::archive(&mut tx, actor, id).await.gql()?;
        tx.commit().await.gql()?;
        Ok(Venue(venue))
    }
}

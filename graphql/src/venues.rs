//! Venues.

use async_graphql::{Context, InputObject, Object};
use chrono::{DateTime, Utc};
use switchyard_core::venues::{self, NewVenue, VenuePatch};
use uuid::Uuid;

use crate::loaders::Loaders;
use crate::stations::Station;
use crate::{begin, GqlResult, ManagerGuard};

pub struct Venue(pub venues::Venue);

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
    async fn archived_at(&self) -> Option<DateTime<Utc>> {
        self.0.archived_at
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
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
        let (_, mut tx) = begin(ctx).await?;
        Ok(venues::list(&mut tx, include_archived)
            .await
            .gql()?
            .into_iter()
            .map(Venue)
            .collect())
    }

    /// One venue (archived ones too); `not_found` for unknown ids and other tenants' venues.
    async fn venue(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Venue> {
        let (_, mut tx) = begin(ctx).await?;
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
        let venue = venues::archive(&mut tx, actor, id).await.gql()?;
        tx.commit().await.gql()?;
        Ok(Venue(venue))
    }
}

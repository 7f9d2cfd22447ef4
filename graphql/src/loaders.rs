//! Per-request DataLoaders: a list of venues with their stations, or stations with their connectors, costs one
//! query per level, not one per row.

use std::collections::HashMap;

use async_graphql::dataloader::{DataLoader, Loader};
use switchyard_core::stations::{self, Connector, Station};
use switchyard_core::venues::{self, Venue};
use switchyard_core::{Db, TenantId};
use uuid::Uuid;

use crate::GqlResult;

/// The loaders of one request, all confined to the actor's tenant.
pub struct Loaders {
    pub stations_by_venue: DataLoader<StationsByVenue>,
    pub connectors_by_station: DataLoader<ConnectorsByStation>,
    pub venues: DataLoader<VenueById>,
}

impl Loaders {
    pub fn new(db: Db, tenant: TenantId) -> Self {
        Self {
            stations_by_venue: DataLoader::new(
                StationsByVenue {
                    db: db.clone(),
                    tenant,
                },
                tokio_spawn,
            ),
            connectors_by_station: DataLoader::new(
                ConnectorsByStation {
                    db: db.clone(),
                    tenant,
                },
                tokio_spawn,
            ),
            venues: DataLoader::new(VenueById { db, tenant }, tokio_spawn),
        }
    }
}

fn tokio_spawn<F>(future: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(future);
}

pub struct StationsByVenue {
    db: Db,
    tenant: TenantId,
}

impl Loader<Uuid> for StationsByVenue {
    type Value = Vec<Station>;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        let mut tx = self.db.begin_tenant(self.tenant).await.gql()?;
        let mut out: HashMap<Uuid, Vec<Station>> = keys.iter().map(|k| (*k, Vec::new())).collect();
        for station in stations::list_for_venues(&mut tx, keys).await.gql()? {
            if let Some(list) = out.get_mut(&station.venue_id) {
                list.push(station);
            }
        }
        Ok(out)
    }
}

pub struct ConnectorsByStation {
    db: Db,
    tenant: TenantId,
}

impl Loader<Uuid> for ConnectorsByStation {
    type Value = Vec<Connector>;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        let mut tx = self.db.begin_tenant(self.tenant).await.gql()?;
        let mut out: HashMap<Uuid, Vec<Connector>> =
            keys.iter().map(|k| (*k, Vec::new())).collect();
        for connector in stations::connectors(&mut tx, keys).await.gql()? {
            if let Some(list) = out.get_mut(&connector.station_id) {
                list.push(connector);
            }
        }
        Ok(out)
    }
}

pub struct VenueById {
    db: Db,
    tenant: TenantId,
}

impl Loader<Uuid> for VenueById {
    type Value = Venue;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        let mut tx = self.db.begin_tenant(self.tenant).await.gql()?;
        Ok(venues::get_many(&mut tx, keys)
            .await
            .gql()?
            .into_iter()
            .map(|v| (v.id, v))
            .collect())
    }
}

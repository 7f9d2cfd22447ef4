//! Stations and their connectors.

use async_graphql::{Context, InputObject, Json, Object, SimpleObject};
use chrono::{DateTime, Utc};
use switchyard_core::scope::{self, Named};
use switchyard_core::stations::{self, NewStation, StationFilter, StationPatch};
use switchyard_core::{StationControl, StationKind, StationStatus};
use uuid::Uuid;

use crate::loaders::Loaders;
use crate::venues::Venue;
use crate::{begin, GqlResult, ManagerGuard};

pub struct Station(pub stations::Station);

/// A device report relayed by the edge bridge.
#[derive(SimpleObject)]
pub struct DeviceState {
    /// `switched` or `device_state`.
    pub kind: String,
    pub report: Json<serde_json::Value>,
    pub reported_at: DateTime<Utc>,
}

/// An EV connector or a powerbank slot.
#[derive(SimpleObject)]
pub struct Connector {
    pub id: Uuid,
    /// 1-based within the station.
    pub number: i32,
    pub status: StationStatus,
    /// A cabinet's slot as the cabinet last reported it (control `CABINET`): the powerbank's label ...
    pub reported_asset: Option<String>,
    /// ... its charge in percent ...
    pub battery: Option<i32>,
    /// ... whether it is charging ...
    pub charging: Option<bool>,
    /// ... and what is wrong with the slot (`jammed` ...), if anything.
    pub fault: Option<String>,
    pub reported_at: Option<DateTime<Utc>>,
}

#[Object]
impl Station {
    async fn id(&self) -> Uuid {
        self.0.id
    }
    async fn venue_id(&self) -> Uuid {
        self.0.venue_id
    }
    async fn venue(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Venue>> {
        Ok(ctx
            .data::<Loaders>()?
            .venues
            .load_one(self.0.venue_id)
            .await?
            .map(Venue))
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn kind(&self) -> StationKind {
        self.0.kind
    }
    async fn control(&self) -> StationControl {
        self.0.control
    }
    async fn status(&self) -> StationStatus {
        self.0.status
    }
    /// How the control reaches the device: `host`/`generation` (shelly), `topic` (tasmota), `host` with `mac` or
    /// `interface` (mikrotik), `charge_point_id` (ocpp), `cabinet_id` (cabinet: its id on the venue's MQTT broker). Secrets are referenced as `credentials_ref`.
    async fn control_settings(&self) -> Json<&serde_json::Value> {
        Json(&self.0.control_settings)
    }
    async fn location(&self) -> &str {
        &self.0.location
    }
    /// Patrons may start sessions on it themselves (patron app, QR code).
    async fn self_service(&self) -> bool {
        self.0.self_service
    }
    /// What the station's device last reported through the edge bridge (switched on/off, power, reachability).
    async fn device_state(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<DeviceState>> {
        let (_, mut tx) = begin(ctx).await?;
        let state = switchyard_core::bridges::device_state(&mut tx, self.0.id)
            .await
            .gql()?;
        Ok(state.map(|(kind, body, at)| DeviceState {
            kind,
            report: Json(body),
            reported_at: at,
        }))
    }

    async fn connectors(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Connector>> {
        let connectors = ctx
            .data::<Loaders>()?
            .connectors_by_station
            .load_one(self.0.id)
            .await?
            .unwrap_or_default();
        Ok(connectors
            .into_iter()
            .map(|c| Connector {
                id: c.id,
                number: c.number,
                status: c.status,
                reported_asset: c.reported_asset,
                battery: c.battery_pct.map(i32::from),
                charging: c.charging,
                fault: c.fault,
                reported_at: c.reported_at,
            })
            .collect())
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
}

#[derive(InputObject)]
pub struct CreateStationInput {
    pub venue_id: Uuid,
    pub name: String,
    pub kind: StationKind,
    pub control: StationControl,
    /// A JSON object; see `Station.controlSettings`.
    pub control_settings: Option<Json<serde_json::Value>>,
    pub location: Option<String>,
    /// EV connectors or powerbank slots: `ev_charger` defaults to 1, `powerbank_cabinet` to 0, others have none.
    pub connector_count: Option<i32>,
}

/// Omitted fields keep their value. `status` accepts `MAINTENANCE`, or `OFFLINE` to end maintenance.
#[derive(InputObject)]
pub struct UpdateStationInput {
    pub name: Option<String>,
    pub control: Option<StationControl>,
    pub control_settings: Option<Json<serde_json::Value>>,
    pub location: Option<String>,
    pub status: Option<StationStatus>,
    /// Let patrons start sessions on it themselves (patron app, QR code).
    pub self_service: Option<bool>,
}

#[derive(Default)]
pub struct StationQuery;

#[Object]
impl StationQuery {
    /// The tenant's stations, optionally of one venue, kind or status.
    async fn stations(
        &self,
        ctx: &Context<'_>,
        venue_id: Option<Uuid>,
        kind: Option<StationKind>,
        status: Option<StationStatus>,
        #[graphql(default = false)] include_archived: bool,
    ) -> async_graphql::Result<Vec<Station>> {
        let (actor, mut tx) = begin(ctx).await?;
        let filter = StationFilter {
            venue_id,
            kind,
            status,
            include_archived,
        };
        let rows = stations::list(&mut tx, &filter)
            .await
            .gql()?
            .into_iter()
            .filter(|s| actor.sees_venue(s.venue_id))
            .map(Station)
            .collect();
        scope::listed(&mut tx, actor, rows, &[Named::Venue(venue_id)])
            .await
            .gql()
    }

    /// One station (archived ones too); `not_found` for unknown ids and other tenants' stations.
    async fn station(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Station> {
        let (actor, mut tx) = begin(ctx).await?;
        let station = stations::get(&mut tx, id).await.gql()?;
        actor.check_venue(station.venue_id, "station").gql()?;
        Ok(Station(station))
    }
}

#[derive(Default)]
pub struct StationMutation;

#[Object]
impl StationMutation {
    #[graphql(guard = "ManagerGuard")]
    async fn create_station(
        &self,
        ctx: &Context<'_>,
        input: CreateStationInput,
    ) -> async_graphql::Result<Station> {
        let (actor, mut tx) = begin(ctx).await?;
        actor.check_venue(input.venue_id, "venue").gql()?;
        let input = NewStation {
            venue_id: input.venue_id,
            name: input.name,
            kind: input.kind,
            control: input.control,
            control_settings: input.control_settings.map(|j| j.0),
            location: input.location,
            connector_count: input.connector_count,
        };
        let station = stations::create(&mut tx, actor, input).await.gql()?;
        tx.commit().await.gql()?;
        Ok(Station(station))
    }

    #[graphql(guard = "ManagerGuard")]
    async fn update_station(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        input: UpdateStationInput,
    ) -> async_graphql::Result<Station> {
        let (actor, mut tx) = begin(ctx).await?;
        scope::station(&mut tx, actor, id).await.gql()?;
        let patch = StationPatch {
            name: input.name,
            control: input.control,
            control_settings: input.control_settings.map(|j| j.0),
            location: input.location,
            status: input.status,
            self_service: input.self_service,
        };
        let station = stations::update(&mut tx, actor, id, patch).await.gql()?;
        tx.commit().await.gql()?;
        Ok(Station(station))
    }

    #[graphql(guard = "ManagerGuard")]
    async fn archive_station(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Station> {
        let (actor, mut tx) = begin(ctx).await?;
        scope::station(&mut tx, actor, id).await.gql()?;
        let station = stations::archive(&mut tx, actor, id).await.gql()?;
        tx.commit().await.gql()?;
        Ok(Station(station))
    }
}

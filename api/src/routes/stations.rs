//! The seed 000 station reads: `GET /api/v1/stations` and `GET /api/v1/stations/{id}`.

use std::collections::HashMap;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use switchyard_core::scope::{self, Named};
use switchyard_core::stations::{self, Connector, Station, StationFilter};
use switchyard_core::{StationKind, StationStatus};
use uuid::Uuid;

use crate::app::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiPath, ApiQuery, AuthActor};

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StationQuery {
    venue_id: Option<Uuid>,
    kind: Option<StationKind>,
    status: Option<StationStatus>,
    #[serde(default)]
    include_archived: bool,
}

/// A station with its connectors or slots.
#[derive(Serialize, utoipa::ToSchema)]
pub struct StationView {
    #[serde(flatten)]
    station: Station,
    connectors: Vec<Connector>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct StationList {
    stations: Vec<StationView>,
}

/// The tenant's stations, by name, optionally of one venue, kind or status; `404 not_found` for a `venue_id` that
/// is not one of the caller's venues.
#[utoipa::path(get, path = "/api/v1/stations", tag = "stations", params(StationQuery),
    security(("bearer" = [])), responses((status = 200, body = StationList), (status = 404), (status = 401)))]
pub async fn list(
    State(state): State<AppState>,
    AuthActor(actor): AuthActor,
    ApiQuery(query): ApiQuery<StationQuery>,
) -> ApiResult<Json<StationList>> {
    let mut tx = state.db.begin_tenant(actor.tenant).await?;
    let filter = StationFilter {
        venue_id: query.venue_id,
        kind: query.kind,
        status: query.status,
        include_archived: query.include_archived,
    };
    let mut list = stations::list(&mut tx, &filter).await?;
    list.retain(|s| actor.sees_venue(s.venue_id));
    let list = scope::listed(&mut tx, &actor, list, &[Named::Venue(query.venue_id)]).await?;
    let ids: Vec<Uuid> = list.iter().map(|s| s.id).collect();
    let mut connectors: HashMap<Uuid, Vec<Connector>> = HashMap::new();
    for c in stations::connectors(&mut tx, &ids).await? {
        connectors.entry(c.station_id).or_default().push(c);
    }
    let stations = list
        .into_iter()
        .map(|station| StationView {
            connectors: connectors.remove(&station.id).unwrap_or_default(),
            station,
        })
        .collect();
    Ok(Json(StationList { stations }))
}

/// One station; `404 not_found` for unknown ids and other tenants' stations.
#[utoipa::path(get, path = "/api/v1/stations/{id}", tag = "stations", params(("id" = Uuid, Path)),
    security(("bearer" = [])), responses((status = 200, body = StationView), (status = 404), (status = 401)))]
pub async fn get(
    State(state): State<AppState>,
    AuthActor(actor): AuthActor,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<StationView>> {
    let mut tx = state.db.begin_tenant(actor.tenant).await?;
    let station = stations::get(&mut tx, id).await?;
    actor.check_venue(station.venue_id, "station")?;
    let connectors = stations::connectors(&mut tx, &[id]).await?;
    Ok(Json(StationView {
        station,
        connectors,
    }))
}

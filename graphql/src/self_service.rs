//! Venue check-in (patrons), the floor (who is in: staff), venue geofences and QR code rotation (managers).

use async_graphql::{Context, Object, SimpleObject};
use chrono::{DateTime, Utc};
use switchyard_core::patron_app::checkins::{self, CheckIn as CoreCheckIn};
use switchyard_core::patron_app::qr::{self, Target};
use switchyard_core::ErrorCode;
use uuid::Uuid;

use crate::venues::Venue;
use crate::{begin, begin_patron, coded, GqlResult, ManagerGuard};

/// A patron's presence at a venue, open until it checks out.
#[derive(SimpleObject)]
pub struct CheckIn {
    pub id: Uuid,
    pub venue_id: Uuid,
    pub patron_id: Uuid,
    /// Where the patron said it was when it checked in.
    pub latitude: f64,
    pub longitude: f64,
    /// How far from the venue that was, in metres (none when the venue has no geofence).
    pub distance_m: Option<i32>,
    pub checked_in_at: DateTime<Utc>,
    pub checked_out_at: Option<DateTime<Utc>>,
}

impl From<CoreCheckIn> for CheckIn {
    fn from(c: CoreCheckIn) -> Self {
        Self {
            id: c.id,
            venue_id: c.venue_id,
            patron_id: c.patron_id,
            latitude: c.latitude,
            longitude: c.longitude,
            distance_m: c.distance_m,
            checked_in_at: c.checked_in_at,
            checked_out_at: c.checked_out_at,
        }
    }
}

/// Who is in a venue now.
#[derive(SimpleObject)]
pub struct VenueFloor {
    pub venue_id: Uuid,
    /// The floor count: open check-ins.
    pub count: i64,
    /// The open check-ins, oldest first.
    pub check_ins: Vec<CheckIn>,
}

/// A QR code's payload: print it as a code (REST `GET /api/v1/stations/{id}/qr.svg`, `qr.png`).
#[derive(SimpleObject)]
pub struct QrCode {
    pub payload: String,
}

#[derive(Default)]
pub struct SelfServiceQuery;

#[Object]
impl SelfServiceQuery {
    /// The signed-in patron's check-ins, newest first.
    #[graphql(complexity = "crate::rows(limit, child_complexity)")]
    async fn my_check_ins(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] limit: i64,
    ) -> async_graphql::Result<Vec<CheckIn>> {
        let (me, mut tx) = begin_patron(ctx).await?;
        let list = checkins::list_for_patron(&mut tx, me.patron_id, limit)
            .await
            .gql()?;
        Ok(list.into_iter().map(CheckIn::from).collect())
    }

    /// Who is checked in at a venue now, and how many (staff).
    async fn venue_floor(
        &self,
        ctx: &Context<'_>,
        venue_id: Uuid,
    ) -> async_graphql::Result<VenueFloor> {
        let (actor, mut tx) = begin(ctx).await?;
        actor.check_venue(venue_id, "venue").gql()?;
        let open = checkins::floor(&mut tx, venue_id).await.gql()?;
        let count = checkins::floor_count(&mut tx, venue_id).await.gql()?;
        Ok(VenueFloor {
            venue_id,
            count,
            check_ins: open.into_iter().map(CheckIn::from).collect(),
        })
    }
}

#[derive(Default)]
pub struct SelfServiceMutation;

#[Object]
impl SelfServiceMutation {
    /// Checks the signed-in patron in to the venue whose entrance code it scanned (`qr`), from where it is now.
    /// Refused (`forbidden`) outside the venue's geofence and (`conflict`) while checked in at another venue;
    /// checking in again where it already is returns the open check-in.
    async fn check_in(
        &self,
        ctx: &Context<'_>,
        qr: String,
        latitude: f64,
        longitude: f64,
    ) -> async_graphql::Result<CheckIn> {
        let (me, mut tx) = begin_patron(ctx).await?;
        let venue = qr::venue(&mut tx, "qr", &qr).await.gql()?;
        let checkin = checkins::check_in(&mut tx, me, &venue, latitude, longitude)
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(checkin.into())
    }

    /// Checks the signed-in patron out of its check-in `id`. Checking out again returns it unchanged.
    async fn check_out(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<CheckIn> {
        let (me, mut tx) = begin_patron(ctx).await?;
        let checkin = checkins::check_out(&mut tx, me, id).await.gql()?;
        tx.commit().await.gql()?;
        Ok(checkin.into())
    }

    /// Sets where a venue is and the radius (metres, 10–100000) within which patrons may check in; all three
    /// omitted clears it (check-in then needs no location). Owners and managers.
    #[graphql(guard = "ManagerGuard")]
    async fn set_venue_geofence(
        &self,
        ctx: &Context<'_>,
        venue_id: Uuid,
        latitude: Option<f64>,
        longitude: Option<f64>,
        radius_m: Option<i32>,
    ) -> async_graphql::Result<Venue> {
        let fence =
            match (latitude, longitude, radius_m) {
                (Some(lat), Some(lon), Some(r)) => Some((lat, lon, r)),
                (None, None, None) => None,
                _ => return Err(coded(
                    ErrorCode::ValidationFailed,
                    "give latitude, longitude and radiusM together, or none to clear the geofence",
                )),
            };
        let (actor, mut tx) = begin(ctx).await?;
        let venue = checkins::set_geofence(&mut tx, actor, venue_id, fence)
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(Venue(venue))
    }

    /// Draws a new QR code for a station: printed copies of the old one stop working. Owners and managers.
    #[graphql(guard = "ManagerGuard")]
    async fn rotate_station_qr(
        &self,
        ctx: &Context<'_>,
        station_id: Uuid,
    ) -> async_graphql::Result<QrCode> {
        rotate(ctx, Target::Station, station_id).await
    }

    /// Draws a new QR code for a venue's entrance (check-in). Owners and managers.
    #[graphql(guard = "ManagerGuard")]
    async fn rotate_venue_qr(
        &self,
        ctx: &Context<'_>,
        venue_id: Uuid,
    ) -> async_graphql::Result<QrCode> {
        rotate(ctx, Target::Venue, venue_id).await
    }
}

async fn rotate(ctx: &Context<'_>, target: Target, id: Uuid) -> async_graphql::Result<QrCode> {
    let (actor, mut tx) = begin(ctx).await?;
    let payload = qr::rotate(&mut tx, actor, target, id).await.gql()?;
    tx.commit().await.gql()?;
    Ok(QrCode { payload })
}

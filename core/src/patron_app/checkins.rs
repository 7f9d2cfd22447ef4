//! Venue check-in (seed 001): a patron scans the venue's QR code and sends where it is; inside the venue's
//! geofence (when the venue has one) it is checked in until it checks out. One open check-in per patron in the
//! tenant. Staff read who is in (the floor).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use crate::audit::{self, By, Entry};
use crate::db::TenantTx;
use crate::error::{Error, Result};
use crate::events::NewEvent;
use crate::model::{Actor, PatronActor};
use crate::venues::{self, Venue};

/// Mean Earth radius (IUGG), metres.
const EARTH_RADIUS_M: f64 = 6_371_008.8;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct CheckIn {
    pub id: Uuid,
    pub venue_id: Uuid,
    pub patron_id: Uuid,
    pub latitude: f64,
    pub longitude: f64,
    /// How far from the venue the patron was, in metres (none when the venue has no geofence).
    pub distance_m: Option<i32>,
    pub checked_in_at: DateTime<Utc>,
    pub checked_out_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str =
    "id, venue_id, patron_id, latitude, longitude, distance_m, checked_in_at, checked_out_at";

/// The great-circle distance between two points (degrees), in metres: the haversine formula.
pub fn distance_m(from: (f64, f64), to: (f64, f64)) -> f64 {
    let (lat1, lat2) = (from.0.to_radians(), to.0.to_radians());
    let d_lat = lat2 - lat1;
    let d_lon = (to.1 - from.1).to_radians();
    let h = (d_lat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (d_lon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().min(1.0).asin()
}

fn check_point(latitude: f64, longitude: f64) -> Result<()> {
    if !(latitude.is_finite() && (-90.0..=90.0).contains(&latitude)) {
        return Err(Error::validation(
            "latitude",
            "must be between -90 and 90 degrees",
        ));
    }
    if !(longitude.is_finite() && (-180.0..=180.0).contains(&longitude)) {
        return Err(Error::validation(
            "longitude",
            "must be between -180 and 180 degrees",
        ));
    }
    Ok(())
}

/// Sets (all three) or clears (none) a venue's coordinates and geofence radius. Managers.
pub async fn set_geofence(
    tx: &mut TenantTx,
    actor: &Actor,
    venue_id: Uuid,
    fence: Option<(f64, f64, i32)>,
) -> Result<Venue> {
    actor.require_manager()?;
    actor.check_venue(venue_id, "venue")?;
    venues::get(tx, venue_id).await?;
    if let Some((latitude, longitude, radius)) = fence {
        check_point(latitude, longitude)?;
        if !(10..=100_000).contains(&radius) {
            return Err(Error::validation(
                "radiusM",
                "must be between 10 and 100000 metres",
            ));
        }
    }
    sqlx::query("update venue set latitude = $3, longitude = $4, geofence_m = $5 where tenant_id = $1 and id = $2")
        .bind(tx.tenant())
        .bind(venue_id)
        .bind(fence.map(|f| f.0))
        .bind(fence.map(|f| f.1))
        .bind(fence.map(|f| f.2))
        .execute(tx.conn())
        .await?;
    let detail = match fence {
        Some((lat, lon, r)) => json!({ "latitude": lat, "longitude": lon, "geofence_m": r }),
        None => json!({ "geofence_m": null }),
    };
    let entry = Entry {
        action: "venue.set_geofence",
        object_type: "venue",
        object_id: Some(venue_id),
        detail,
    };
    audit::record(tx, actor, entry).await?;
    venues::get(tx, venue_id).await
}

/// The patron checks in to `venue` from (`latitude`, `longitude`). Refused (`forbidden`) outside the venue's
/// geofence and (`conflict`) with an open check-in at another venue; checking in again where the patron already
/// is returns that check-in unchanged.
pub async fn check_in(
    tx: &mut TenantTx,
    me: &PatronActor,
    venue: &Venue,
    latitude: f64,
    longitude: f64,
) -> Result<CheckIn> {
    check_point(latitude, longitude)?;
    if venue.archived_at.is_some() {
        return Err(Error::Conflict("this venue is closed".into()));
    }
    let distance = match (venue.latitude, venue.longitude, venue.geofence_m) {
        (Some(lat), Some(lon), Some(radius)) => {
            let d = distance_m((lat, lon), (latitude, longitude));
            if d > f64::from(radius) {
                return Err(Error::ForbiddenOver(format!(
                    "you are {} m from {}; check in within {radius} m of it",
                    d.round(),
                    venue.name
                )));
            }
            Some(d.round() as i32)
        }
        _ => None,
    };
    // Locks the patron's row, so two check-ins of one patron take turns.
    sqlx::query("select 1 from patron where tenant_id = $1 and id = $2 for update")
        .bind(tx.tenant())
        .bind(me.patron_id)
        .execute(tx.conn())
        .await?;
    if let Some(open) = open_of(tx, me.patron_id).await? {
        if open.venue_id == venue.id {
            return Ok(open);
        }
        let elsewhere = venues::get(tx, open.venue_id).await?;
        return Err(Error::Conflict(format!(
            "you are still checked in at {}; check out there first",
            elsewhere.name
        )));
    }
    let sql = format!(
        "insert into venue_checkin (tenant_id, id, venue_id, patron_id, latitude, longitude, distance_m)
         values ($1, $2, $3, $4, $5, $6, $7) returning {COLUMNS}"
    );
    let checkin: CheckIn = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(Uuid::now_v7())
        .bind(venue.id)
        .bind(me.patron_id)
        .bind(latitude)
        .bind(longitude)
        .bind(distance)
        .fetch_one(tx.conn())
        .await?;
    let data = json!({ "venue_id": venue.id, "distance_m": distance, "checked_in_at": checkin.checked_in_at });
    tx.emit(
        NewEvent::new("checkin.opened", data.clone())
            .venue(venue.id)
            .patron(Some(me.patron_id))
            .subject(checkin.id),
    );
    crate::staff::safety::warn_if_flagged(
        tx,
        me.patron_id,
        venue.id,
        "safety.flagged_check_in",
        checkin.id,
    )
    .await?;
    audit::record_by(tx, By::Patron(me), entry("checkin.open", checkin.id, data)).await?;
    Ok(checkin)
}

/// Checks the patron out of its check-in `id` (`not_found` for anyone else's). Checking out again returns it
/// unchanged.
pub async fn check_out(tx: &mut TenantTx, me: &PatronActor, id: Uuid) -> Result<CheckIn> {
    let sql = format!(
        "select {COLUMNS} from venue_checkin where tenant_id = $1 and id = $2 and patron_id = $3 for update"
    );
    let current: Option<CheckIn> = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(id)
        .bind(me.patron_id)
        .fetch_optional(tx.conn())
        .await?;
    let current = current.ok_or(Error::NotFound("check-in"))?;
    if current.checked_out_at.is_some() {
        return Ok(current);
    }
    let sql = format!(
        "update venue_checkin set checked_out_at = greatest(now(), checked_in_at) where tenant_id = $1 and id = $2
         returning {COLUMNS}"
    );
    let closed: CheckIn = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(id)
        .fetch_one(tx.conn())
        .await?;
    let data = json!({ "venue_id": closed.venue_id, "checked_out_at": closed.checked_out_at });
    tx.emit(
        NewEvent::new("checkin.closed", data.clone())
            .venue(closed.venue_id)
            .patron(Some(me.patron_id))
            .subject(id),
    );
    audit::record_by(tx, By::Patron(me), entry("checkin.close", id, data)).await?;
    Ok(closed)
}

/// The patron's open check-in, if any.
pub async fn open_of(tx: &mut TenantTx, patron: Uuid) -> Result<Option<CheckIn>> {
    let sql = format!(
        "select {COLUMNS} from venue_checkin where tenant_id = $1 and patron_id = $2 and checked_out_at is null"
    );
    Ok(sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(patron)
        .fetch_optional(tx.conn())
        .await?)
}

/// The patron's check-ins, newest first.
pub async fn list_for_patron(tx: &mut TenantTx, patron: Uuid, limit: i64) -> Result<Vec<CheckIn>> {
    let sql = format!(
        "select {COLUMNS} from venue_checkin where tenant_id = $1 and patron_id = $2
         order by checked_in_at desc, id desc limit $3"
    );
    Ok(sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(patron)
        .bind(limit.clamp(1, 500))
        .fetch_all(tx.conn())
        .await?)
}

/// Who is in a venue now (open check-ins, oldest first): the floor. `not_found` for another tenant's venue.
pub async fn floor(tx: &mut TenantTx, venue_id: Uuid) -> Result<Vec<CheckIn>> {
    venues::get(tx, venue_id).await?;
    let sql = format!(
        "select {COLUMNS} from venue_checkin where tenant_id = $1 and venue_id = $2 and checked_out_at is null
         order by checked_in_at, id limit {}",
        crate::validate::LIST_CAP
    );
    Ok(sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(venue_id)
        .fetch_all(tx.conn())
        .await?)
}

/// How many are in a venue now (not capped like the list).
pub async fn floor_count(tx: &mut TenantTx, venue_id: Uuid) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "select count(*) from venue_checkin where tenant_id = $1 and venue_id = $2 and checked_out_at is null",
    )
    .bind(tx.tenant())
    .bind(venue_id)
    .fetch_one(tx.conn())
    .await?)
}

fn entry(action: &'static str, id: Uuid, detail: serde_json::Value) -> Entry<'static> {
    Entry {
        action,
        object_type: "venue_checkin",
        object_id: Some(id),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::distance_m;

    #[test]
    fn haversine_distances_match_known_figures() {
        // One degree of latitude is about 111.2 km; the same point is 0 m away.
        let d = distance_m((52.0, 13.0), (53.0, 13.0));
        assert!((d - 111_195.0).abs() < 50.0, "{d}");
        assert!(distance_m((52.52, 13.405), (52.52, 13.405)).abs() < 1e-6);
        // Berlin Alexanderplatz to the Brandenburg Gate: about 2.4 km.
        let d = distance_m((52.5219, 13.4132), (52.5163, 13.3777));
        assert!((2_300.0..2_600.0).contains(&d), "{d}");
        // Antipodes: half the circumference, no NaN.
        let d = distance_m((0.0, 0.0), (0.0, 180.0));
        assert!((d - std::f64::consts::PI * 6_371_008.8).abs() < 1.0, "{d}");
    }
}

//! The venue dashboard (seed 000's live station grid): each station with its running session's remaining time and
//! running cost. Served by `GET /api/v1/dashboard` and streamed by the `dashboard` subscription.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::db::TenantTx;
use crate::error::Result;
use crate::sessions::{self, SessionFilter, SessionStatus};
use crate::stations::{self, StationFilter};
use crate::{venues, Actor, StationKind, StationStatus};

#[derive(Serialize, utoipa::ToSchema)]
pub struct Dashboard {
    generated_at: DateTime<Utc>,
    venues: Vec<VenueTile>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct VenueTile {
    venue_id: Uuid,
    name: String,
    currency: String,
    /// Stations with a running session.
    busy: usize,
    stations: Vec<StationTile>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct StationTile {
    station_id: Uuid,
    name: String,
    kind: StationKind,
    status: StationStatus,
    /// The running session, if any (rentals are counted in `rentals_running` instead).
    session: Option<RunningSession>,
    /// Powerbank cabinets: rentals started here and still running.
    rentals_running: usize,
    /// What the station's device last reported through the venue's bridge (`None`: nothing yet).
    device: Option<DeviceReport>,
}

/// A device's latest report, as the floor shows it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DeviceReport {
    /// The event: `device_state` (a reading), `switched`, or another bridge event kind.
    kind: String,
    /// Whether the bridge reached the device (readings), or the PC agent is connected to it (`agent_state`).
    reachable: Option<bool>,
    /// Whether its power is on (plugs).
    on: Option<bool>,
    power_w: Option<f64>,
    reported_at: DateTime<Utc>,
}

/// The newest bridge event of each of `stations` (one index probe each).
async fn device_reports(
    tx: &mut TenantTx,
    stations: &[Uuid],
) -> Result<HashMap<Uuid, DeviceReport>> {
    let rows: Vec<(Uuid, String, serde_json::Value, DateTime<Utc>)> = sqlx::query_as(
        "select s.id, e.kind, e.body, e.occurred_at from unnest($2::uuid[]) s (id)
         cross join lateral (
           select kind, body, occurred_at from bridge_event b
           where b.tenant_id = $1 and b.station_id = s.id order by occurred_at desc limit 1
         ) e",
    )
    .bind(tx.tenant())
    .bind(stations)
    .fetch_all(tx.conn())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(station, kind, body, reported_at)| {
            let answered = if kind == "agent_state" {
                "connected"
            } else {
                "reachable"
            };
            let report = DeviceReport {
                reachable: body.get(answered).and_then(serde_json::Value::as_bool),
                kind,
                on: body.get("on").and_then(serde_json::Value::as_bool),
                power_w: body.get("power_w").and_then(serde_json::Value::as_f64),
                reported_at,
            };
            (station, report)
        })
        .collect())
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RunningSession {
    session_id: Uuid,
    /// `active` or `paused`.
    status: SessionStatus,
    patron_id: Uuid,
    patron_name: String,
    started_at: DateTime<Utc>,
    planned_end_at: Option<DateTime<Utc>>,
    remaining_seconds: Option<i64>,
    /// The cost of the usage so far, in minor units.
    running_cost: i64,
    /// What it will cost a minute after `generated_at` if nothing changes (a console ticks between the two).
    cost_in_a_minute: i64,
}

/// Every unarchived station of the tenant (or of one venue) that `actor` may see, with what is running on it, at
/// `now`. A venue outside a scoped member's venues is `not_found`.
pub async fn build(
    tx: &mut TenantTx,
    actor: &Actor,
    venue_id: Option<Uuid>,
    now: DateTime<Utc>,
) -> Result<Dashboard> {
    let mut venue_list = match venue_id {
        Some(id) => {
            actor.check_venue(id, "venue")?;
            vec![venues::get(tx, id).await?]
        }
        None => venues::list(tx, false).await?,
    };
    // A member scoped to some venues sees only those.
    venue_list.retain(|v| actor.sees_venue(v.id));
    let station_list = stations::list(
        tx,
        &StationFilter {
            venue_id,
            ..Default::default()
        },
    )
    .await?;
    let ids: Vec<Uuid> = station_list.iter().map(|s| s.id).collect();
    let mut devices = device_reports(tx, &ids).await?;
    let mut running = Vec::new();
    for status in [SessionStatus::Active, SessionStatus::Paused] {
        let filter = SessionFilter {
            status: Some(status),
            ..Default::default()
        };
        running.extend(sessions::list(tx, &filter, 10_000).await?);
    }
    let patrons: Vec<Uuid> = running.iter().map(|s| s.patron_id).collect();
    let names: HashMap<Uuid, String> = sqlx::query_as::<_, (Uuid, String)>(
        "select id, display_name from patron where tenant_id = $1 and id = any($2)",
    )
    .bind(tx.tenant())
    .bind(&patrons)
    .fetch_all(tx.conn())
    .await?
    .into_iter()
    .collect();
    let mut by_station: HashMap<Uuid, RunningSession> = HashMap::new();
    let mut rentals: HashMap<Uuid, usize> = HashMap::new();
    for s in running {
        if s.asset_id.is_some() {
            *rentals.entry(s.station_id).or_default() += 1;
            continue;
        }
        let tile = RunningSession {
            session_id: s.id,
            status: s.status,
            patron_name: names.get(&s.patron_id).cloned().unwrap_or_default(),
            patron_id: s.patron_id,
            started_at: s.started_at,
            planned_end_at: s.planned_end_at,
            remaining_seconds: s.remaining_seconds(now),
            running_cost: s.chargeable_at(now),
            cost_in_a_minute: s.chargeable_at(now + chrono::Duration::minutes(1)),
        };
        by_station.insert(s.station_id, tile);
    }
    let venues = venue_list
        .into_iter()
        .map(|v| {
            let stations: Vec<StationTile> = station_list
                .iter()
                .filter(|s| s.venue_id == v.id)
                .map(|s| StationTile {
                    station_id: s.id,
                    name: s.name.clone(),
                    kind: s.kind,
                    status: s.status,
                    session: by_station.remove(&s.id),
                    rentals_running: rentals.get(&s.id).copied().unwrap_or(0),
                    device: devices.remove(&s.id),
                })
                .collect();
            VenueTile {
                venue_id: v.id,
                name: v.name,
                currency: v.currency,
                busy: stations.iter().filter(|s| s.session.is_some()).count(),
                stations,
            }
        })
        .collect();
    Ok(Dashboard {
        generated_at: now,
        venues,
    })
}

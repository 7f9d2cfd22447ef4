//! Stations (the meterable units at a venue) and their connectors or slots.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::QueryBuilder;
use uuid::Uuid;

use crate::audit::{self, Entry};
use crate::db::{self, RowLock, TenantTx};
use crate::error::{Error, Result};
use crate::model::{Actor, StationControl, StationKind, StationStatus};
use crate::validate;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Station {
    pub id: Uuid,
    pub venue_id: Uuid,
    pub name: String,
    pub kind: StationKind,
    pub control: StationControl,
    pub status: StationStatus,
    /// How the control reaches the device (host, topic, MAC ...). Credentials are referenced, never stored here.
    #[schema(value_type = Object)]
    pub control_settings: Value,
    pub location: String,
    /// Patrons may start sessions on it themselves (patron app, QR code). Default false.
    pub self_service: bool,
    pub archived_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An EV connector or a powerbank slot.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Connector {
    pub id: Uuid,
    pub station_id: Uuid,
    /// 1-based within the station.
    pub number: i32,
    pub status: StationStatus,
    /// A cabinet's slot as the cabinet last reported it (control `cabinet`): the powerbank it holds, its charge in
    /// percent, whether it is charging, and a fault; when it was reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reported_asset: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub battery_pct: Option<i16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub charging: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reported_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NewStation {
    pub venue_id: Uuid,
    pub name: String,
    pub kind: StationKind,
    pub control: StationControl,
    pub control_settings: Option<Value>,
    pub location: Option<String>,
    /// EV connectors or powerbank slots; only for `ev_charger` (default 1) and `powerbank_cabinet` (default 0).
    pub connector_count: Option<i32>,
}

/// Fields left `None` keep their value. Kind and venue are fixed for a station's life.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StationPatch {
    pub name: Option<String>,
    pub control: Option<StationControl>,
    pub control_settings: Option<Value>,
    pub location: Option<String>,
    /// Staff can put a station in or out of `maintenance`; other states are reported by devices.
    pub status: Option<StationStatus>,
    pub self_service: Option<bool>,
}

/// Filters for lists; `None` matches all.
#[derive(Debug, Clone, Default)]
pub struct StationFilter {
    pub venue_id: Option<Uuid>,
    pub kind: Option<StationKind>,
    pub status: Option<StationStatus>,
    pub include_archived: bool,
}

const COLUMNS: &str =
    "id, venue_id, name, kind, control, status, control_settings, location, self_service,
    archived_at, created_at, updated_at";

/// A tenant's stations by name; the statement names only the filters given ([`crate::db::filter`]).
pub async fn list(tx: &mut TenantTx, filter: &StationFilter) -> Result<Vec<Station>> {
    let mut query = QueryBuilder::new(format!("select {COLUMNS} from station where tenant_id = "));
    query.push_bind(tx.tenant());
    db::filter(&mut query, "venue_id = $", filter.venue_id);
    db::filter_fixed(&mut query, "kind", filter.kind.map(StationKind::as_str));
    db::filter_fixed(
        &mut query,
        "status",
        filter.status.map(StationStatus::as_str),
    );
    if !filter.include_archived {
        query.push(" and archived_at is null");
    }
    query.push(format_args!(
        " order by lower(name), id limit {}",
        validate::LIST_CAP
    ));
    Ok(query.build_query_as().fetch_all(tx.conn()).await?)
}

/// The unarchived stations of several venues (one query for a whole list of venues).
pub async fn list_for_venues(tx: &mut TenantTx, venue_ids: &[Uuid]) -> Result<Vec<Station>> {
    let sql = format!(
        "select {COLUMNS} from station where tenant_id = $1 and venue_id = any($2) and archived_at is null
         order by lower(name), id"
    );
    Ok(sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(venue_ids)
        .fetch_all(tx.conn())
        .await?)
}

pub async fn get(tx: &mut TenantTx, id: Uuid) -> Result<Station> {
    read(tx, id, "").await
}

/// As [`get`], keeping the row from being archived to the end of the transaction (`for key share`, the lock a
/// session's reference to it takes anyway): an archiving waits, while edits, other starts and stops go on.
pub(crate) async fn get_held(tx: &mut TenantTx, id: Uuid) -> Result<Station> {
    read(tx, id, " for key share").await
}

/// As [`get`], taking the row's update lock to the end of the transaction (`for no key update`, which a start takes
/// anyway when it switches the station on): starts of one station take turns, so a start sees the session of one
/// that went before it, while sessions' references to the row (`for key share`) and other stations go on.
pub(crate) async fn get_claimed(tx: &mut TenantTx, id: Uuid) -> Result<Station> {
    read(tx, id, " for no key update").await
}

/// One station, with `lock` (a row-locking clause, or nothing) appended to its query.
async fn read(tx: &mut TenantTx, id: Uuid, lock: &'static str) -> Result<Station> {
    let sql = format!("select {COLUMNS} from station where tenant_id = $1 and id = $2{lock}");
    let station: Option<Station> = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
    station.ok_or(Error::NotFound("station"))
}

/// Connectors of several stations at once (one query for a whole list).
pub async fn connectors(tx: &mut TenantTx, station_ids: &[Uuid]) -> Result<Vec<Connector>> {
    Ok(sqlx::query_as(
        "select id, station_id, number, status, reported_asset, battery_pct, charging, fault, reported_at
         from connector where tenant_id = $1 and station_id = any($2) order by station_id, number",
    )
    .bind(tx.tenant())
    .bind(station_ids)
    .fetch_all(tx.conn())
    .await?)
}

pub async fn create(tx: &mut TenantTx, actor: &Actor, input: NewStation) -> Result<Station> {
    actor.require_manager()?;
    // Kept from being archived until this commits (an archiving waits, or this sees it archived).
    tx.lock_row("venue", input.venue_id, RowLock::Share).await?;
    let venue = crate::venues::get(tx, input.venue_id).await?;
    if venue.archived_at.is_some() {
        return Err(Error::Conflict(
            "this venue is archived; stations cannot be added to it".into(),
        ));
    }
    let name = validate::text("name", &input.name, 1, 100)?;
    let settings =
        check_control_settings(input.control, input.control_settings.unwrap_or(Value::Null))?;
    let location = validate::text("location", input.location.as_deref().unwrap_or(""), 0, 200)?;
    let connector_count = match (input.kind, input.connector_count) {
        (StationKind::EvCharger | StationKind::PowerbankCabinet, Some(n))
            if (0..=64).contains(&n) =>
        {
            n
        }
        (StationKind::EvCharger | StationKind::PowerbankCabinet, Some(_)) => {
            return Err(Error::validation(
                "connectorCount",
                "must be between 0 and 64",
            ))
        }
        (StationKind::EvCharger, None) => 1,
        (_, None | Some(0)) => 0,
        (_, Some(_)) => {
            return Err(Error::validation(
                "connectorCount",
                "only ev_charger and powerbank_cabinet stations have connectors or slots",
            ))
        }
    };
    let id = Uuid::now_v7();
    let sql = format!(
        "insert into station (tenant_id, id, venue_id, name, kind, control, control_settings, location)
         values ($1, $2, $3, $4, $5, $6, $7, $8) returning {COLUMNS}"
    );
    let station: Station = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(id)
        .bind(venue.id)
        .bind(name)
        .bind(input.kind)
        .bind(input.control)
        .bind(&settings)
        .bind(location)
        .fetch_one(tx.conn())
        .await?;
    sqlx::query(
        "insert into connector (tenant_id, id, station_id, number)
         select $1, gen_random_uuid(), $2, n from generate_series(1, $3) as n",
    )
    .bind(tx.tenant())
    .bind(id)
    .bind(connector_count)
    .execute(tx.conn())
    .await?;
    let detail = serde_json::json!({
        "venue_id": venue.id, "name": station.name, "kind": station.kind, "control": station.control,
        "connectors": connector_count,
    });
    audit::record(tx, actor, entry("station.create", id, detail)).await?;
    crate::charging::follow_station(tx, &station).await?;
    // A manual station is online from the start; one behind a bridge as soon as the bridge is.
    follow_presence(tx, station.venue_id, Some(id)).await?;
    // The venue's bridge gets a schedule with the new station (and its control settings).
    tx.wake_venue(station.venue_id).await?;
    get(tx, id).await
}

/// The status of a station out of a session and out of maintenance, as SQL over a row of `station`: `online` when
/// it can be reached, else `offline`. A manual station always can (staff switch it); an OCPP station while its
/// charger is connected; a station behind the venue's edge bridge (plug, router, PC agent, cabinet) while a bridge
/// of its venue is online and its device answered the bridge's last reading (not read yet counts as answering).
pub(crate) const IDLE_STATUS: &str = "(case when case station.control
        when 'manual' then true
        when 'ocpp' then exists (select 1 from charger c
                                  where c.tenant_id = station.tenant_id and c.station_id = station.id and c.online)
        else coalesce(station.device_reachable, true)
             and exists (select 1 from bridge b
                          where b.tenant_id = station.tenant_id and b.venue_id = station.venue_id and b.online
                            and b.revoked_at is null)
      end
    then 'online' else 'offline' end)::station_status";

/// Brings `online`/`offline` of the venue's stations (or of one of them) in line with [`IDLE_STATUS`]: after a
/// bridge, a charger or a device came or went, or a station's control changed. A station in a session or in
/// maintenance keeps that status. Each change is heard live (`station.status`, `by` `presence`).
pub(crate) async fn follow_presence(
    tx: &mut TenantTx,
    venue: Uuid,
    station: Option<Uuid>,
) -> Result<()> {
    let one = if station.is_some() {
        " and id = $3"
    } else {
        ""
    };
    let sql = format!(
        "update station set status = {IDLE_STATUS}
          where tenant_id = $1 and venue_id = $2{one} and archived_at is null and not expected_on
            and status in ('online', 'offline') and status <> {IDLE_STATUS}
          returning id, status"
    );
    let mut query = sqlx::query_as::<_, (Uuid, StationStatus)>(&sql)
        .bind(tx.tenant())
        .bind(venue);
    if let Some(station) = station {
        query = query.bind(station);
    }
    for (id, status) in query.fetch_all(tx.conn()).await? {
        let data = serde_json::json!({ "status": status, "by": "presence" });
        tx.emit(event("station.status", venue, id, data));
    }
    Ok(())
}

/// Whether the station's device said it cannot be reached (its last report through the bridge).
pub(crate) async fn unreachable(tx: &mut TenantTx, station: Uuid) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "select device_reachable is false from station where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(station)
    .fetch_optional(tx.conn())
    .await?
    .unwrap_or(false))
}

/// The device of a station behind an edge bridge answered the bridge's reading at `at` or not (a PC agent
/// connected or not): the station's status follows when that changed. A report older than one already recorded
/// (sent again after a failure, after newer ones) changes nothing.
pub(crate) async fn device_reachable(
    tx: &mut TenantTx,
    station: Uuid,
    reachable: bool,
    at: DateTime<Utc>,
) -> Result<()> {
    let venue: Option<Uuid> = sqlx::query_scalar(
        "update station set device_reachable = $3
          where tenant_id = $1 and id = $2 and device_reachable is distinct from $3
            and not exists (select 1 from bridge_event e
                             where e.tenant_id = $1 and e.station_id = $2 and e.occurred_at > $4
                               and e.kind in ('device_state', 'agent_state'))
          returning venue_id",
    )
    .bind(tx.tenant())
    .bind(station)
    .bind(reachable)
    .bind(at)
    .fetch_optional(tx.conn())
    .await?;
    match venue {
        Some(venue) => follow_presence(tx, venue, Some(station)).await,
        None => Ok(()),
    }
}

pub async fn update(
    tx: &mut TenantTx,
    actor: &Actor,
    id: Uuid,
    patch: StationPatch,
) -> Result<Station> {
    actor.require_manager()?;
    // Held before it is read: every field is written back, so a change landing between the read and the write
    // (an adoption making the station OCPP, a device's status) would be undone.
    tx.lock_row("station", id, RowLock::NoKeyUpdate).await?;
    let current = get(tx, id).await?;
    if current.archived_at.is_some() {
        return Err(Error::Conflict("this station is archived".into()));
    }
    let name = patch
        .name
        .as_deref()
        .map(|n| validate::text("name", n, 1, 100))
        .transpose()?
        .unwrap_or(&current.name)
        .to_owned();
    let control = patch.control.unwrap_or(current.control);
    let settings = match (patch.control_settings, patch.control) {
        (Some(s), _) => check_control_settings(control, s)?,
        // A new control with the old settings must still be complete for the new control.
        (None, Some(_)) => check_control_settings(control, current.control_settings.clone())?,
        (None, None) => current.control_settings.clone(),
    };
    let location = patch
        .location
        .as_deref()
        .map(|l| validate::text("location", l, 0, 200))
        .transpose()?
        .unwrap_or(&current.location)
        .to_owned();
    let status = match patch.status {
        None => current.status,
        Some(StationStatus::Maintenance) => StationStatus::Maintenance,
        Some(StationStatus::Offline) if current.status == StationStatus::Maintenance => StationStatus::Offline,
        // Maintenance already ended (asked twice): nothing to do.
        Some(StationStatus::Offline) => current.status,
        Some(_) => {
            return Err(Error::validation(
                "status",
                "staff can set maintenance, or offline to end maintenance; other states come from the device",
            ))
        }
    };
    let self_service = patch.self_service.unwrap_or(current.self_service);
    let sql = format!(
        "update station set name = $3, control = $4, control_settings = $5, location = $6,
           status = case when $7 = 'offline' and expected_on then 'in_session' else $7 end,
           self_service = $8
         where tenant_id = $1 and id = $2 returning {COLUMNS}"
    );
    let station: Station = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(id)
        .bind(name)
        .bind(control)
        .bind(&settings)
        .bind(location)
        .bind(status)
        .bind(self_service)
        .fetch_one(tx.conn())
        .await?;
    if station.control != current.control || station.control_settings != current.control_settings {
        // Another device (or the same one elsewhere): what the old one answered says nothing of it.
        sqlx::query("update station set device_reachable = null where tenant_id = $1 and id = $2")
            .bind(tx.tenant())
            .bind(id)
            .execute(tx.conn())
            .await?;
    }
    let detail = serde_json::json!({
        "name": station.name, "control": station.control, "status": station.status, "location": station.location,
        "self_service": station.self_service,
    });
    audit::record(tx, actor, entry("station.update", id, detail)).await?;
    crate::charging::follow_station(tx, &station).await?;
    // Other consoles show the station as it now is.
    let named = serde_json::json!({ "name": station.name });
    tx.emit(event("station.updated", station.venue_id, id, named));
    if station.status != current.status {
        let data = serde_json::json!({ "status": station.status, "by": "staff" });
        tx.emit(event("station.status", station.venue_id, id, data));
    }
    // A new control (or maintenance ended) may change whether it can be reached.
    follow_presence(tx, station.venue_id, Some(id)).await?;
    tx.wake_venue(station.venue_id).await?;
    get(tx, id).await
}

/// A live event of the station `id` at `venue` (`station.status`, `station.updated`, `station.archived`).
fn event(
    kind: &'static str,
    venue: Uuid,
    id: Uuid,
    data: serde_json::Value,
) -> crate::events::NewEvent {
    crate::events::NewEvent::new(kind, data)
        .venue(venue)
        .station(id)
}

/// Archives a station: it leaves the floor, the lists and its bridge's schedule (its history stays). One with a
/// session running or paused is refused: its device would be left as the session set it.
pub async fn archive(tx: &mut TenantTx, actor: &Actor, id: Uuid) -> Result<Station> {
    actor.require_manager()?;
    // Held first: a session starting on it meanwhile waits, then finds it archived.
    tx.lock_row("station", id, RowLock::Update).await?;
    let current = get(tx, id).await?;
    if current.archived_at.is_some() {
        return Ok(current);
    }
    let running: bool = sqlx::query_scalar(
        "select exists (select 1 from session where tenant_id = $1 and station_id = $2
                          and status in ('active', 'paused'))",
    )
    .bind(tx.tenant())
    .bind(id)
    .fetch_one(tx.conn())
    .await?;
    if running {
        return Err(Error::Conflict(
            "this station has a session running (or paused): stop it before archiving the station"
                .into(),
        ));
    }
    let sql = format!(
        "update station set archived_at = coalesce(archived_at, now()) where tenant_id = $1 and id = $2
         returning {COLUMNS}"
    );
    let station: Station = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(id)
        .fetch_one(tx.conn())
        .await?;
    audit::record(
        tx,
        actor,
        entry("station.archive", id, serde_json::json!({})),
    )
    .await?;
    crate::charging::follow_station(tx, &station).await?;
    // Floors and dashboards drop it at once.
    let named = serde_json::json!({ "name": station.name });
    tx.emit(event("station.archived", station.venue_id, id, named));
    tx.wake_venue(station.venue_id).await?;
    Ok(station)
}

fn entry(action: &'static str, id: Uuid, detail: Value) -> Entry<'static> {
    Entry {
        action,
        object_type: "station",
        object_id: Some(id),
        detail,
    }
}

/// Checks that the settings are an object holding what the control needs to reach the device, and no secrets.
pub fn check_control_settings(control: StationControl, settings: Value) -> Result<Value> {
    const FIELD: &str = "controlSettings";
    let settings = match settings {
        Value::Null => Value::Object(Default::default()),
        v @ Value::Object(_) => v,
        _ => return Err(Error::validation(FIELD, "must be a JSON object")),
    };
    if settings.to_string().len() > 4096 {
        return Err(Error::validation(FIELD, "must be at most 4 KiB"));
    }
    let has_text = |key: &str| {
        settings
            .get(key)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.trim().is_empty())
    };
    for secret in ["password", "secret", "token", "api_key"] {
        if settings.get(secret).is_some() {
            return Err(Error::validation(
                FIELD,
                format!("must not hold `{secret}`; store the secret elsewhere and reference it as `credentials_ref`"),
            ));
        }
    }
    let missing = |what: &str| {
        Err(Error::validation(
            FIELD,
            format!("{control:?} control needs {what}").to_lowercase(),
        ))
    };
    match control {
        StationControl::Shelly => {
            if !has_text("host") {
                return missing("`host`");
            }
            match settings.get("generation") {
                None => {}
                Some(g) if g.as_u64() == Some(1) || g.as_u64() == Some(2) => {}
                Some(_) => return Err(Error::validation(FIELD, "`generation` must be 1 or 2")),
            }
        }
        StationControl::Tasmota if !has_text("topic") => return missing("`topic`"),
        StationControl::Mikrotik
            if !has_text("host") || !(has_text("mac") || has_text("interface")) =>
        {
            return missing("`host` and either `mac` or `interface`")
        }
        StationControl::Ocpp if !has_text("charge_point_id") => {
            return missing("`charge_point_id`")
        }
        StationControl::Cabinet => {
            // One MQTT topic level: `cabinet/<cabinet_id>/...`.
            let id = settings.get("cabinet_id").and_then(Value::as_str);
            if !id.is_some_and(|id| {
                !id.trim().is_empty() && id.len() <= 64 && !id.contains(['/', '+', '#'])
            }) {
                return missing("`cabinet_id` (up to 64 characters, no `/`, `+` or `#`)");
            }
        }
        _ => {}
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn control_settings_need_what_the_control_uses() {
        assert!(check_control_settings(
            StationControl::Shelly,
            json!({"host": "10.0.0.5", "generation": 2})
        )
        .is_ok());
        assert!(check_control_settings(StationControl::Shelly, json!({"generation": 2})).is_err());
        assert!(check_control_settings(
            StationControl::Shelly,
            json!({"host": "h", "generation": 3})
        )
        .is_err());
        assert!(check_control_settings(StationControl::Tasmota, json!({"topic": "plug7"})).is_ok());
        assert!(check_control_settings(
            StationControl::Mikrotik,
            json!({"host": "r", "mac": "aa:bb"})
        )
        .is_ok());
        assert!(check_control_settings(StationControl::Mikrotik, json!({"host": "r"})).is_err());
        assert!(check_control_settings(StationControl::Ocpp, json!({})).is_err());
        assert_eq!(
            check_control_settings(StationControl::Manual, Value::Null).ok(),
            Some(json!({}))
        );
        assert!(check_control_settings(StationControl::Agent, json!([1])).is_err());
    }

    #[test]
    fn control_settings_refuse_inline_secrets() {
        let err = check_control_settings(
            StationControl::Mikrotik,
            json!({"host": "r", "mac": "m", "password": "x"}),
        );
        assert!(matches!(
            err,
            Err(Error::Validation {
                field: "controlSettings",
                ..
            })
        ));
    }
}

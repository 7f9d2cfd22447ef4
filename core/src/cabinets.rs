//! Powerbank cabinets that the edge bridge drives (control `cabinet`, the open cabinet protocol in the manual): what
//! their reports do in the cloud. An eject that failed voids its rental; a powerbank put into any slot of any of the
//! tenant's cabinets ends its rental there; slot and battery states are kept on the slots (connectors). Every report
//! can arrive twice (the bridge resends until acknowledged, a cabinet may repeat itself) and changes things once.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::db::TenantTx;
use crate::error::Result;
use crate::rentals;

/// A report that changed nothing and must be looked at: its kind (`unknown_asset` ...), the session it concerns and
/// why. The bridge module keeps it as a bridge anomaly.
pub type Anomaly = (&'static str, Option<Uuid>, Value);

/// Applies a cabinet's report (an event of kind `cabinet_*`) about `station`, a cabinet-controlled station of the
/// reporting bridge's venue. Returns the anomalies to keep.
pub async fn apply(
    tx: &mut TenantTx,
    venue: Uuid,
    station: Uuid,
    kind: &str,
    body: &Value,
    occurred_at: DateTime<Utc>,
) -> Result<Vec<Anomaly>> {
    match kind {
        "cabinet_ejected" => ejected(tx, station, body).await,
        "cabinet_returned" => returned(tx, station, body, occurred_at).await,
        "cabinet_state" => {
            state(tx, venue, station, body, occurred_at).await?;
            Ok(vec![])
        }
        _ => Ok(vec![]),
    }
}

fn slot_of(body: &Value) -> Option<i32> {
    body.get("slot")
        .and_then(Value::as_i64)
        .and_then(|n| i32::try_from(n).ok())
}

/// A label as the database keeps it (1–64 characters), or none.
fn label(text: Option<&str>) -> Option<String> {
    text.map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| t.chars().take(64).collect())
}

/// The answer to an `eject` command (`request_id` is the command's id). A success confirms what the rental's start
/// assumed; a failure voids the rental (once).
async fn ejected(tx: &mut TenantTx, station: Uuid, body: &Value) -> Result<Vec<Anomaly>> {
    let request: Option<Uuid> = body
        .get("request_id")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok());
    let command: Option<(Uuid, Option<Uuid>)> = match request {
        Some(request) => {
            let rental: Option<Option<Uuid>> = sqlx::query_scalar(
                "select session_id from device_command
                 where tenant_id = $1 and id = $2 and station_id = $3 and command = 'eject'",
            )
            .bind(tx.tenant())
            .bind(request)
            .bind(station)
            .fetch_optional(tx.conn())
            .await?;
            rental.map(|rental| (request, rental))
        }
        None => None,
    };
    let Some((request, Some(rental))) = command else {
        return Ok(vec![(
            "unknown_eject",
            None,
            json!({ "why": "no eject command of this cabinet has this request id", "report": body }),
        )]);
    };
    let ok = body.get("ok").and_then(Value::as_bool).unwrap_or(false);
    // Locked, as staff settling the same eject lock it: the report is judged against the rental as it is after them.
    let status = crate::sessions::lock(tx, rental).await?.status;
    // The cabinet's word is the eject's answer, whatever was assumed before (staff who found the slot empty, say).
    rentals::answer_eject(tx, request, if ok { "ejected" } else { "not_ejected" }).await?;
    if ok {
        // The start already took the powerbank out of its slot; a success only confirms it. One that comes after
        // the rental was voided means a powerbank is out with nobody paying for it.
        if status == crate::sessions::SessionStatus::Failed {
            return Ok(vec![(
                "eject_after_void",
                Some(rental),
                json!({ "why": "the cabinet ejected a powerbank for a rental already voided", "report": body }),
            )]);
        }
        return Ok(vec![]);
    }
    let reason = body
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or("eject failed")
        .chars()
        .take(100)
        .collect::<String>();
    rentals::eject_failed(tx, rental, station, slot_of(body), &reason).await?;
    Ok(vec![])
}

/// A powerbank was put into a slot: its running rental ends there (a rental bought out after the powerbank went in
/// is undone and ends there too); an unknown powerbank is docked and kept as an anomaly; one the cloud has elsewhere
/// is moved there (an anomaly too). The same report again changes nothing.
async fn returned(
    tx: &mut TenantTx,
    station: Uuid,
    body: &Value,
    occurred_at: DateTime<Utc>,
) -> Result<Vec<Anomaly>> {
    let (Some(number), Some(label)) = (
        slot_of(body),
        label(body.get("asset").and_then(Value::as_str)),
    ) else {
        return Ok(vec![(
            "bad_report",
            None,
            json!({ "why": "a return needs a slot and an asset", "report": body }),
        )]);
    };
    // The powerbank's rental first (running, or bought out after the powerbank went in), then the slot and the
    // powerbank: the order a stop, a failed eject and a settle by staff take them in, so a return reported while one
    // of those runs waits for it instead of deadlocking.
    let renting: Option<Uuid> = sqlx::query_scalar(
        "select s.id from session s join asset a on a.tenant_id = s.tenant_id and a.id = s.asset_id
         where s.tenant_id = $1 and lower(a.label) = lower($2)
           and (s.status in ('active', 'paused') or s.status = 'bought_out' and s.ended_at > $3)
         order by s.started_at desc limit 1",
    )
    .bind(tx.tenant())
    .bind(&label)
    .bind(occurred_at)
    .fetch_optional(tx.conn())
    .await?;
    if let Some(rental) = renting {
        crate::sessions::lock(tx, rental).await?;
    }
    let slot: Option<Uuid> = sqlx::query_scalar(
        "select id from connector where tenant_id = $1 and station_id = $2 and number = $3 for update",
    )
    .bind(tx.tenant())
    .bind(station)
    .bind(number)
    .fetch_optional(tx.conn())
    .await?;
    let Some(slot) = slot else {
        return Ok(vec![(
            "unknown_slot",
            None,
            json!({ "why": "this cabinet has no such slot", "report": body }),
        )]);
    };
    let asset: Option<(Uuid, String, Option<Uuid>)> = sqlx::query_as(
        "select id, status, connector_id from asset where tenant_id = $1 and lower(label) = lower($2) for update",
    )
    .bind(tx.tenant())
    .bind(&label)
    .fetch_optional(tx.conn())
    .await?;
    if let Some((_, _, Some(at))) = &asset {
        if *at == slot {
            // Already docked there: a repeated report.
            return Ok(vec![]);
        }
    }
    let occupant: Option<String> =
        sqlx::query_scalar("select label from asset where tenant_id = $1 and connector_id = $2")
            .bind(tx.tenant())
            .bind(slot)
            .fetch_optional(tx.conn())
            .await?;
    if let Some(occupant) = occupant {
        return Ok(vec![(
            "slot_occupied",
            None,
            json!({ "why": format!("the cloud has {occupant} in this slot"), "report": body }),
        )]);
    }
    let Some((asset, status, _)) = asset else {
        sqlx::query(
            "insert into asset (tenant_id, id, label, station_id, connector_id) values ($1, $2, $3, $4, $5)",
        )
        .bind(tx.tenant())
        .bind(Uuid::now_v7())
        .bind(&label)
        .bind(station)
        .bind(slot)
        .execute(tx.conn())
        .await?;
        return Ok(vec![(
            "unknown_asset",
            None,
            json!({ "why": "a powerbank the tenant does not know was put in; it is docked", "report": body }),
        )]);
    };
    let rental: Option<(Uuid, bool)> = sqlx::query_as(
        "select id, status = 'bought_out' from session
         where tenant_id = $1 and asset_id = $2
           and (status in ('active', 'paused') or status = 'bought_out' and ended_at > $3)
         order by started_at desc limit 1",
    )
    .bind(tx.tenant())
    .bind(asset)
    .bind(occurred_at)
    .fetch_optional(tx.conn())
    .await?;
    if let Some((rental, bought_out)) = rental {
        // Put in before its buyout, reported after it: the buyout is undone.
        let ended = if bought_out {
            rentals::returned_before_buyout(tx, rental, station, slot, occurred_at).await?
        } else {
            rentals::returned_in_slot(tx, rental, station, slot, occurred_at).await?;
            true
        };
        if ended {
            return Ok(vec![]);
        }
    }
    // Docked elsewhere, bought out, or rented without a running rental: it is here now.
    sqlx::query(
        "update asset set status = 'docked', station_id = $3, connector_id = $4, patron_id = null
         where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(asset)
    .bind(station)
    .bind(slot)
    .execute(tx.conn())
    .await?;
    Ok(vec![(
        "asset_out_of_place",
        None,
        json!({ "why": format!("the cloud had this powerbank {status}; it is docked here now"), "report": body }),
    )])
}

/// A slot as kept: number, powerbank, charge, charging, fault.
type SlotRow = (
    i32,
    Option<String>,
    Option<i16>,
    Option<bool>,
    Option<String>,
);

/// Every slot as the cabinet reports it: kept on the slot when it differs and the report is not older than the
/// last one kept, each changed slot announced (`station.slot`).
async fn state(
    tx: &mut TenantTx,
    venue: Uuid,
    station: Uuid,
    body: &Value,
    occurred_at: DateTime<Utc>,
) -> Result<()> {
    let slots = body
        .get("slots")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let (mut numbers, mut assets, mut batteries, mut charging, mut faults) =
        (vec![], vec![], vec![], vec![], vec![]);
    for slot in slots.iter().take(64) {
        let Some(number) = slot_of(slot) else {
            continue;
        };
        numbers.push(number);
        assets.push(label(slot.get("asset").and_then(Value::as_str)));
        batteries.push(
            slot.get("battery")
                .and_then(Value::as_i64)
                .map(|b| b.clamp(0, 100) as i16),
        );
        charging.push(slot.get("charging").and_then(Value::as_bool));
        faults.push(
            slot.get("fault")
                .and_then(Value::as_str)
                .map(|f| f.chars().take(100).collect::<String>())
                .filter(|f| !f.is_empty()),
        );
    }
    let changed: Vec<SlotRow> =
        sqlx::query_as(
            "update connector c set reported_asset = s.asset, battery_pct = s.battery, charging = s.charging,
               fault = s.fault, reported_at = $3
             from unnest($4::int[], $5::text[], $6::smallint[], $7::bool[], $8::text[])
               as s (number, asset, battery, charging, fault)
             where c.tenant_id = $1 and c.station_id = $2 and c.number = s.number
               and (c.reported_at is null or c.reported_at <= $3)
               and (c.reported_asset, c.battery_pct, c.charging, c.fault)
                   is distinct from (s.asset, s.battery, s.charging, s.fault)
             returning c.number, c.reported_asset, c.battery_pct, c.charging, c.fault",
        )
        .bind(tx.tenant())
        .bind(station)
        .bind(occurred_at)
        .bind(&numbers)
        .bind(&assets)
        .bind(&batteries)
        .bind(&charging)
        .bind(&faults)
        .fetch_all(tx.conn())
        .await?;
    for (slot, asset, battery, charging, fault) in changed {
        tx.emit(
            crate::events::NewEvent::new(
                "station.slot",
                json!({ "slot": slot, "asset": asset, "battery": battery, "charging": charging, "fault": fault }),
            )
            .venue(venue)
            .station(station),
        );
    }
    Ok(())
}

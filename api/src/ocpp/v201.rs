//! OCPP 2.0.1: the charging station's messages and their answers. An EVSE is a connector here (one connector per
//! EVSE, as nearly every AC and DC charger has it); `evseId` is the station's connector number.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use switchyard_core::charging::calls::{self, Request};
use switchyard_core::charging::tags::Verdict;
use switchyard_core::charging::transactions::{self, Start, Stop};
use switchyard_core::charging::{self, Boot};

use super::rpc::{decode, identifier, limit, ErrorKind, RpcError};
use super::{boot_answer, readings, running_on, Cx, Fail};

const CONNECTOR_STATUSES: [&str; 5] = [
    "Available",
    "Occupied",
    "Reserved",
    "Unavailable",
    "Faulted",
];
const EVENT_TYPES: [&str; 3] = ["Started", "Updated", "Ended"];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChargingStation {
    model: String,
    vendor_name: String,
    serial_number: Option<String>,
    firmware_version: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BootNotification {
    charging_station: ChargingStation,
    reason: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusNotification {
    timestamp: DateTime<Utc>,
    connector_status: String,
    evse_id: u32,
    #[allow(dead_code)]
    connector_id: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IdToken {
    id_token: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Authorize {
    id_token: IdToken,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TransactionInfo {
    transaction_id: String,
    stopped_reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Evse {
    id: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TransactionEvent {
    event_type: String,
    timestamp: DateTime<Utc>,
    trigger_reason: String,
    seq_no: i32,
    offline: Option<bool>,
    reservation_id: Option<i32>,
    transaction_info: TransactionInfo,
    id_token: Option<IdToken>,
    evse: Option<Evse>,
    meter_value: Option<Vec<Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MeterValues {
    evse_id: u32,
    meter_value: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DataTransfer {
    vendor_id: String,
}

fn id_token_info(verdict: &Verdict) -> Value {
    let mut info = json!({ "status": verdict.status.as_str() });
    if let Some(expiry) = verdict.expires_at {
        info["cacheExpiryDateTime"] = json!(expiry);
    }
    if let Some(parent) = &verdict.parent {
        info["groupIdToken"] = json!({ "idToken": parent, "type": "ISO14443" });
    }
    info
}

fn evse(id: u32) -> Result<i32, RpcError> {
    if (1..=64).contains(&id) {
        Ok(id as i32)
    } else {
        Err(RpcError::new(
            ErrorKind::PropertyConstraintViolation,
            "evseId must be between 1 and 64",
        ))
    }
}

fn token(id_token: &IdToken) -> Result<(), RpcError> {
    limit("type", &id_token.kind, 20)?;
    if id_token.kind == NO_AUTHORIZATION {
        limit("idToken", &id_token.id_token, 36)
    } else {
        identifier("idToken", &id_token.id_token, 36)
    }
}

/// The token type of a transaction no one authorized (free vend); its `idToken` is empty and names no one.
const NO_AUTHORIZATION: &str = "NoAuthorization";

/// A cost in minor units as the charger's display shows it, in the currency's major units: OCPP's `totalCost` is
/// a JSON number, so the exact decimal text (`money::format`) is read as the nearest double — for display only, the
/// ledger never sees it.
fn major_units(amount: i64, currency: &str) -> Value {
    let text = switchyard_core::money::format(amount, currency);
    text.parse::<f64>().map_or(Value::Null, |v| json!(v))
}

pub(super) async fn handle(cx: &mut Cx<'_>, action: &str, payload: Value) -> Result<Value, Fail> {
    let now = Utc::now();
    Ok(match action {
        "BootNotification" => {
            let boot: BootNotification = decode(payload)?;
            limit("vendorName", &boot.charging_station.vendor_name, 50)?;
            limit("model", &boot.charging_station.model, 20)?;
            limit("reason", &boot.reason, 30)?;
            if let Some(serial) = &boot.charging_station.serial_number {
                limit("serialNumber", serial, 25)?;
            }
            if let Some(firmware) = &boot.charging_station.firmware_version {
                limit("firmwareVersion", firmware, 50)?;
            }
            let status = charging::boot(
                cx.tx,
                cx.charger,
                Boot {
                    vendor: boot.charging_station.vendor_name,
                    model: boot.charging_station.model,
                    serial_number: boot.charging_station.serial_number,
                    firmware_version: boot.charging_station.firmware_version,
                    triggered: boot.reason == "Triggered",
                    connection: cx.connection,
                },
            )
            .await?;
            boot_answer(status, cx.settings, now)
        }
        "Heartbeat" => json!({ "currentTime": now }),
        "StatusNotification" => {
            let status: StatusNotification = decode(payload)?;
            if !CONNECTOR_STATUSES.contains(&status.connector_status.as_str()) {
                return Err(RpcError::new(
                    ErrorKind::PropertyConstraintViolation,
                    format!(
                        "connectorStatus must be one of {}",
                        CONNECTOR_STATUSES.join(", ")
                    ),
                )
                .into());
            }
            let number = evse(status.evse_id)?;
            charging::connector_status(
                cx.tx,
                cx.charger,
                number,
                &status.connector_status,
                None,
                status.timestamp.min(now),
            )
            .await?;
            json!({})
        }
        "Authorize" => {
            let authorize: Authorize = decode(payload)?;
            token(&authorize.id_token)?;
            let verdict =
                transactions::authorize(cx.tx, cx.charger, &authorize.id_token.id_token).await?;
            json!({ "idTokenInfo": id_token_info(&verdict) })
        }
        "TransactionEvent" => transaction_event(cx, decode(payload)?).await?,
        "MeterValues" => {
            let values: MeterValues = decode(payload)?;
            // EVSE 0 is the charging station's main meter: no transaction runs on it.
            if values.evse_id == 0 {
                return Ok(json!({}));
            }
            let number = evse(values.evse_id)?;
            let read = readings(&values.meter_value);
            if let Some(t) = running_on(cx, number).await? {
                let t = baseline(cx, t, read.baseline()).await?;
                if let Some(cost) = transactions::meter(cx.tx, &t, read.energy, read.power).await? {
                    // The running cost on the charger's display.
                    let currency = session_currency(cx, &t).await?;
                    let request = Request::cost_updated(major_units(cost, &currency), &t.ocpp_id);
                    calls::cost_updated(cx.tx, cx.charger, request, t.session_id).await?;
                }
            }
            json!({})
        }
        "DataTransfer" => {
            let transfer: DataTransfer = decode(payload)?;
            limit("vendorId", &transfer.vendor_id, 255)?;
            json!({ "status": "UnknownVendorId" })
        }
        "NotifyEvent"
        | "NotifyReport"
        | "SecurityEventNotification"
        | "FirmwareStatusNotification"
        | "LogStatusNotification"
        | "ReservationStatusUpdate"
        | "NotifyChargingLimit"
        | "ClearedChargingLimit"
        | "NotifyMonitoringReport"
        | "ReportChargingProfiles"
        | "NotifyCustomerInformation"
        | "NotifyDisplayMessages"
        | "PublishFirmwareStatusNotification" => json!({}),
        "NotifyEVChargingNeeds" => json!({ "status": "Rejected" }),
        "Get15118EVCertificate"
        | "GetCertificateStatus"
        | "SignCertificate"
        | "NotifyEVChargingSchedule" => {
            return Err(RpcError::new(
                ErrorKind::NotSupported,
                format!(
                    "{action} (ISO 15118 and certificates) is not supported by this central system"
                ),
            )
            .into())
        }
        other => {
            return Err(RpcError::new(
                ErrorKind::NotImplemented,
                format!("{other} is not an OCPP 2.0.1 action this central system knows"),
            )
            .into())
        }
    })
}

/// The reason an `Ended` event gives, if it is one a person can read: a stop is never refused, so a reason too long
/// or holding a control character counts as none, as a bad tag does.
fn stopped_reason(event: &TransactionEvent) -> Option<String> {
    let reason = event.transaction_info.stopped_reason.as_deref()?;
    limit("stoppedReason", reason, 30).ok()?;
    Some(reason.to_owned())
}

async fn transaction_event(cx: &mut Cx<'_>, event: TransactionEvent) -> Result<Value, Fail> {
    if !EVENT_TYPES.contains(&event.event_type.as_str()) {
        return Err(RpcError::new(
            ErrorKind::PropertyConstraintViolation,
            "eventType must be Started, Updated or Ended",
        )
        .into());
    }
    identifier("transactionId", &event.transaction_info.transaction_id, 36)?;
    // A bad token is refused, except in an `Ended` event: an end is never refused (the transaction would run on),
    // its token is taken as none.
    let bad_token = event.id_token.as_ref().and_then(|t| token(t).err());
    if let (Some(e), false) = (&bad_token, event.event_type == "Ended") {
        return Err(e.clone().into());
    }
    // A free-vend transaction's token names no one: it is one without a token, kept and billed to no one.
    let free_vend = event
        .id_token
        .as_ref()
        .is_some_and(|t| t.kind == NO_AUTHORIZATION);
    let id_token = event
        .id_token
        .as_ref()
        .filter(|_| !free_vend && bad_token.is_none());
    let ocpp_id = event.transaction_info.transaction_id.clone();
    let read = readings(event.meter_value.as_deref().unwrap_or_default());
    let (energy, power) = (read.energy, read.power);
    let mut existing = transactions::by_ocpp_id(cx.tx, cx.charger.id, &ocpp_id).await?;
    let mut answer = json!({});
    // A transaction becomes a billed one once a token is known (it may start before authorization, when the cable
    // is plugged in).
    if existing.is_none() && event.event_type != "Ended" {
        let connector = match &event.evse {
            Some(e) => evse(e.id)?,
            None => 1,
        };
        let offline = event.offline.unwrap_or(false) || cx.replay.is_some();
        let Some(id_token) = id_token else {
            // Kept at once with its EVSE and start, billed by no one until a token comes (if one does).
            let kind = match free_vend {
                true => transactions::Untagged::FreeVend,
                false => transactions::Untagged::Pending,
            };
            let transaction = transactions::start_untagged(
                cx.tx,
                cx.charger,
                kind,
                connector,
                &ocpp_id,
                read.baseline(),
                event.timestamp,
                offline,
            )
            .await?;
            transactions::first_seen(cx.tx, transaction.id, event.seq_no, &event.event_type)
                .await?;
            transactions::answered(cx.tx, transaction.id, event.seq_no, &answer).await?;
            return Ok(answer);
        };
        let (transaction, verdict) = transactions::start(
            cx.tx,
            cx.charger,
            Start {
                connector,
                id_tag: id_token.id_token.clone(),
                meter_start_wh: read.baseline(),
                at: event.timestamp,
                ocpp_id: Some(ocpp_id.clone()),
                reservation_id: event.reservation_id,
                offline,
                // 2.0.1 ids are the charger's own, journaled or not.
                journaled: false,
            },
        )
        .await?;
        answer["idTokenInfo"] = id_token_info(&verdict);
        if transactions::first_seen(cx.tx, transaction.id, event.seq_no, &event.event_type).await? {
            transactions::answered(cx.tx, transaction.id, event.seq_no, &answer).await?;
        }
        return Ok(answer);
    }
    let Some(mut transaction) = existing.take() else {
        // Ended for a transaction never heard of: answered and recorded.
        transactions::stop(
            cx.tx,
            cx.charger,
            &ocpp_id,
            Stop {
                meter_stop_wh: energy,
                at: event.timestamp,
                reason: stopped_reason(&event),
                journaled: cx.replay.is_some(),
            },
        )
        .await?;
        return Ok(answer);
    };
    if !transactions::first_seen(cx.tx, transaction.id, event.seq_no, &event.event_type).await? {
        // Seen before (its answer was lost): answered as it was the first time, not applied again.
        if let Some(first) = transactions::answer_of(cx.tx, transaction.id, event.seq_no).await? {
            return Ok(first);
        }
        // Seen before its answers were kept (migration 0053): the token's status as the transaction has it.
        if let Some(id_token) = id_token {
            let verdict =
                transactions::verdict_again(cx.tx, cx.charger, &transaction, &id_token.id_token)
                    .await?;
            answer["idTokenInfo"] = id_token_info(&verdict);
        }
        return Ok(answer);
    }
    transaction = baseline(cx, transaction, read.baseline()).await?;
    if let Some(id_token) = id_token {
        // A free-vend transaction given a token to start by (a tap, a cloud-started session's tag; not a tap to
        // stop it): billed from here on.
        // A pending transaction (begun before any token) takes the first token it is given however the event was
        // triggered (some chargers send it in every event), except a tap to stop it.
        let starts = matches!(event.trigger_reason.as_str(), "Authorized" | "RemoteStart")
            || (transaction.auth_status == transactions::Untagged::Pending.as_str()
                && event.trigger_reason != "StopAuthorized");
        let verdict = if transaction.id_tag.is_none()
            && transaction.stopped_at.is_none()
            && event.event_type != "Ended"
            && starts
        {
            let offline = event.offline.unwrap_or(false) || cx.replay.is_some();
            let verdict = transactions::present_token(
                cx.tx,
                cx.charger,
                &transaction,
                &id_token.id_token,
                event.timestamp,
                energy,
                offline,
            )
            .await?;
            if let Some(t) = transactions::by_ocpp_id(cx.tx, cx.charger.id, &ocpp_id).await? {
                transaction = t;
            }
            verdict
        } else {
            transactions::authorize(cx.tx, cx.charger, &id_token.id_token).await?
        };
        answer["idTokenInfo"] = id_token_info(&verdict);
    }
    match event.event_type.as_str() {
        "Ended" => {
            let stopped = transactions::stop(
                cx.tx,
                cx.charger,
                &ocpp_id,
                Stop {
                    meter_stop_wh: energy,
                    at: event.timestamp,
                    reason: stopped_reason(&event),
                    journaled: cx.replay.is_some(),
                },
            )
            .await?;
            if let transactions::Stopped::Known(t, Some(cost)) = stopped {
                let currency = session_currency(cx, &t).await?;
                answer["totalCost"] = major_units(cost, &currency);
            }
        }
        _ => {
            if let Some(cost) = transactions::meter(cx.tx, &transaction, energy, power).await? {
                let currency = session_currency(cx, &transaction).await?;
                answer["totalCost"] = major_units(cost, &currency);
            }
        }
    }
    transactions::answered(cx.tx, transaction.id, event.seq_no, &answer).await?;
    Ok(answer)
}

/// A transaction that began without a reading takes the first reading that comes as its baseline (the register
/// sampled at its begin, context `Transaction.Begin`, where the message has one, else its lowest); one with a
/// baseline is unchanged.
async fn baseline(
    cx: &mut Cx<'_>,
    mut transaction: transactions::Transaction,
    reading: Option<i64>,
) -> Result<transactions::Transaction, Fail> {
    let (None, Some(wh)) = (transaction.meter_start_wh, reading) else {
        return Ok(transaction);
    };
    transactions::meter(cx.tx, &transaction, Some(wh), None).await?;
    // As the row now is: that reading its baseline, and its last unless a higher one came before.
    transaction.meter_start_wh = Some(wh);
    transaction.meter_last_wh = transaction.meter_last_wh.max(Some(wh));
    Ok(transaction)
}

async fn session_currency(cx: &mut Cx<'_>, t: &transactions::Transaction) -> Result<String, Fail> {
    match t.session_id {
        Some(s) => Ok(switchyard_core::sessions::get(cx.tx, s).await?.currency),
        None => Ok(String::new()),
    }
}

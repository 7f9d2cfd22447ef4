//! OCPP 1.6J: the charge point's messages (Core, plus the notifications of the other profiles) and their answers.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use switchyard_core::charging::tags::Verdict;
use switchyard_core::charging::transactions::{self, Reading, Start, Stop, Stopped};
use switchyard_core::charging::{self, Boot};
use uuid::Uuid;

use super::rpc::{self, decode, identifier, limit, ErrorKind, RpcError};
use super::{boot_answer, readings, Cx, Fail};

/// A transaction whose start is older than this when it arrives was kept by the charger while it was offline.
const OFFLINE_AFTER: chrono::Duration = chrono::Duration::minutes(5);

const CONNECTOR_STATUSES: [&str; 9] = [
    "Available",
    "Preparing",
    "Charging",
    "SuspendedEVSE",
    "SuspendedEV",
    "Finishing",
    "Reserved",
    "Unavailable",
    "Faulted",
];

const ERROR_CODES: [&str; 16] = [
    "ConnectorLockFailure",
    "EVCommunicationError",
    "GroundFailure",
    "HighTemperature",
    "InternalError",
    "LocalListConflict",
    "NoError",
    "OtherError",
    "OverCurrentFailure",
    "PowerMeterFailure",
    "PowerSwitchFailure",
    "ReaderFailure",
    "ResetFailure",
    "UnderVoltage",
    "OverVoltage",
    "WeakSignal",
];

const STOP_REASONS: [&str; 11] = [
    "EmergencyStop",
    "EVDisconnected",
    "HardReset",
    "Local",
    "Other",
    "PowerLoss",
    "Reboot",
    "Remote",
    "SoftReset",
    "UnlockCommand",
    "DeAuthorized",
];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BootNotification {
    charge_point_vendor: String,
    charge_point_model: String,
    charge_point_serial_number: Option<String>,
    firmware_version: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusNotification {
    connector_id: u32,
    error_code: String,
    status: String,
    timestamp: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Authorize {
    id_tag: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartTransaction {
    connector_id: u32,
    id_tag: String,
    meter_start: i64,
    reservation_id: Option<i32>,
    timestamp: DateTime<Utc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StopTransaction {
    id_tag: Option<String>,
    meter_stop: i64,
    timestamp: DateTime<Utc>,
    transaction_id: i64,
    reason: Option<String>,
    transaction_data: Option<Vec<Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MeterValues {
    connector_id: u32,
    transaction_id: Option<i64>,
    meter_value: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DataTransfer {
    vendor_id: String,
}

fn one_of(field: &str, value: &str, allowed: &[&str]) -> Result<(), RpcError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(RpcError::new(
            ErrorKind::PropertyConstraintViolation,
            format!("{field} {value:?} is not one of {}", allowed.join(", ")),
        ))
    }
}

fn connector(id: u32) -> Result<i32, RpcError> {
    if id <= 64 {
        Ok(id as i32)
    } else {
        Err(RpcError::new(
            ErrorKind::PropertyConstraintViolation,
            "connectorId must be between 0 and 64",
        ))
    }
}

fn id_tag_info(verdict: &Verdict) -> Value {
    let mut info = json!({ "status": verdict.status.v16() });
    if let Some(expiry) = verdict.expires_at {
        info["expiryDate"] = json!(expiry);
    }
    if let Some(parent) = &verdict.parent {
        info["parentIdTag"] = json!(parent);
    }
    info
}

/// A MeterValues CALL as the reading it gives (the CALLERROR to answer if it breaks the schema).
pub(super) fn meter_reading(charger: Uuid, payload: Value) -> Result<Reading, RpcError> {
    let values: MeterValues = decode(payload)?;
    let read = readings(&values.meter_value);
    Ok(Reading {
        charger,
        transaction: values.transaction_id.map(|id| id.to_string()),
        connector: connector(values.connector_id)?,
        energy_wh: read.energy,
        power_w: read.power,
    })
}

pub(super) async fn handle(cx: &mut Cx<'_>, action: &str, payload: Value) -> Result<Value, Fail> {
    let now = Utc::now();
    Ok(match action {
        "BootNotification" => {
            let boot: BootNotification = decode(payload)?;
            limit("chargePointVendor", &boot.charge_point_vendor, 20)?;
            limit("chargePointModel", &boot.charge_point_model, 20)?;
            if let Some(serial) = &boot.charge_point_serial_number {
                limit("chargePointSerialNumber", serial, 25)?;
            }
            if let Some(firmware) = &boot.firmware_version {
                limit("firmwareVersion", firmware, 50)?;
            }
            let status = charging::boot(
                cx.tx,
                cx.charger,
                Boot {
                    vendor: boot.charge_point_vendor,
                    model: boot.charge_point_model,
                    serial_number: boot.charge_point_serial_number,
                    firmware_version: boot.firmware_version,
                    triggered: false,
                    connection: cx.connection,
                },
            )
            .await?;
            boot_answer(status, cx.settings, now)
        }
        "Heartbeat" => json!({ "currentTime": now }),
        "StatusNotification" => {
            let status: StatusNotification = decode(payload)?;
            one_of("status", &status.status, &CONNECTOR_STATUSES)?;
            one_of("errorCode", &status.error_code, &ERROR_CODES)?;
            let number = connector(status.connector_id)?;
            let error = (status.error_code != "NoError").then_some(status.error_code.as_str());
            charging::connector_status(
                cx.tx,
                cx.charger,
                number,
                &status.status,
                error,
                status.timestamp.unwrap_or(now).min(now),
            )
            .await?;
            json!({})
        }
        "Authorize" => {
            let authorize: Authorize = decode(payload)?;
            identifier("idTag", &authorize.id_tag, 20)?;
            let verdict = transactions::authorize(cx.tx, cx.charger, &authorize.id_tag).await?;
            json!({ "idTagInfo": id_tag_info(&verdict) })
        }
        "StartTransaction" => {
            let start: StartTransaction = decode(payload)?;
            identifier("idTag", &start.id_tag, 20)?;
            let number = connector(start.connector_id)?;
            if number == 0 {
                return Err(RpcError::new(
                    ErrorKind::PropertyConstraintViolation,
                    "a transaction runs on a connector from 1",
                )
                .into());
            }
            // Replayed from a bridge's journal: started while the venue was offline, under the bridge's id.
            let replay = cx.replay.take();
            let offline = replay.is_some() || start.timestamp < now - OFFLINE_AFTER;
            let (transaction, verdict) = transactions::start(
                cx.tx,
                cx.charger,
                Start {
                    connector: number,
                    id_tag: start.id_tag,
                    meter_start_wh: Some(rpc::register("meterStart", start.meter_start)?),
                    at: start.timestamp,
                    journaled: replay.is_some(),
                    ocpp_id: replay.and_then(|r| r.transaction_id),
                    reservation_id: start.reservation_id,
                    offline,
                },
            )
            .await?;
            let id: i64 = transaction.ocpp_id.parse().unwrap_or(-1);
            json!({ "idTagInfo": id_tag_info(&verdict), "transactionId": id })
        }
        "StopTransaction" => {
            let stop: StopTransaction = decode(payload)?;
            if let Some(reason) = &stop.reason {
                one_of("reason", reason, &STOP_REASONS)?;
            }
            // A stop is never refused for its tag (the transaction would run on): one that is empty, too long or
            // holds a control character is taken as no tag.
            let id_tag = stop
                .id_tag
                .as_deref()
                .filter(|tag| identifier("idTag", tag, 20).is_ok());
            let meter_stop = stop
                .transaction_data
                .as_deref()
                .map(readings)
                .and_then(|read| read.energy)
                .map_or(stop.meter_stop, |e| e.max(stop.meter_stop));
            let stopped = transactions::stop(
                cx.tx,
                cx.charger,
                &stop.transaction_id.to_string(),
                Stop {
                    // A stop is never refused (the transaction would run on); a register beyond any meter's is
                    // left out, and the last reading stands.
                    meter_stop_wh: (meter_stop <= rpc::MAX_REGISTER_WH)
                        .then_some(meter_stop.max(0)),
                    at: stop.timestamp,
                    reason: stop.reason,
                    journaled: cx.replay.is_some(),
                },
            )
            .await?;
            if let Stopped::Unknown = stopped {
                tracing::info!(charger.id = %cx.charger.id, transaction = stop.transaction_id,
                    "stop for an unknown transaction: answered and recorded");
            }
            match id_tag {
                Some(tag) => {
                    let verdict = transactions::authorize(cx.tx, cx.charger, tag).await?;
                    json!({ "idTagInfo": id_tag_info(&verdict) })
                }
                None => json!({}),
            }
        }
        "MeterValues" => {
            let reading = meter_reading(cx.charger.id, payload)?;
            transactions::record(cx.tx, &[reading]).await?;
            json!({})
        }
        "DataTransfer" => {
            let transfer: DataTransfer = decode(payload)?;
            limit("vendorId", &transfer.vendor_id, 255)?;
            json!({ "status": "UnknownVendorId" })
        }
        "DiagnosticsStatusNotification" | "FirmwareStatusNotification" => json!({}),
        "ChangeAvailability"
        | "ChangeConfiguration"
        | "ClearCache"
        | "GetConfiguration"
        | "RemoteStartTransaction"
        | "RemoteStopTransaction"
        | "Reset"
        | "UnlockConnector"
        | "GetDiagnostics"
        | "UpdateFirmware"
        | "ReserveNow"
        | "CancelReservation"
        | "SendLocalList"
        | "GetLocalListVersion"
        | "SetChargingProfile"
        | "ClearChargingProfile"
        | "GetCompositeSchedule"
        | "TriggerMessage" => {
            return Err(RpcError::new(
                ErrorKind::NotSupported,
                format!("{action} is sent by the central system, not to it"),
            )
            .into())
        }
        other => {
            return Err(RpcError::new(
                ErrorKind::NotImplemented,
                format!("{other} is not an OCPP 1.6 action this central system knows"),
            )
            .into())
        }
    })
}
